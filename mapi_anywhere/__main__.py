"""``python -m mapi_anywhere`` is the ``mapi-anywhere`` command."""

import sys

from mapi_anywhere.cli import main

sys.exit(main())
