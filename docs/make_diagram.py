"""Render docs/architecture.dot into docs/architecture.svg and docs/architecture.png.

Needs Graphviz's ``dot`` on the PATH (Debian/Ubuntu: ``apt-get install graphviz``)::

    python3 docs/make_diagram.py          # rewrite both images
    python3 docs/make_diagram.py --check  # exit 1 if the SVG is not what the source makes

Edit the ``.dot`` file, never the images; commit the source and both images together.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SOURCE = DOCS / "architecture.dot"
#: Output format -> extra ``dot`` arguments (the PNG at 110 dpi reads well on a screen).
FORMATS = {"svg": [], "png": ["-Gdpi=110"]}


def render(fmt: str) -> bytes:
    """The image ``dot`` makes from :data:`SOURCE` in format ``fmt``."""
    result = subprocess.run(
        ["dot", f"-T{fmt}", *FORMATS[fmt], str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare the committed SVG with a fresh render"
    )
    args = parser.parse_args()
    if shutil.which("dot") is None:
        print("make_diagram: Graphviz 'dot' not found (apt-get install graphviz)", file=sys.stderr)
        return 2
    if args.check:
        target = SOURCE.with_suffix(".svg")
        if not target.is_file() or target.read_bytes() != render("svg"):
            print(f"make_diagram: {target.name} is stale: run it again", file=sys.stderr)
            return 1
        return 0
    for fmt in FORMATS:
        target = SOURCE.with_suffix(f".{fmt}")
        target.write_bytes(render(fmt))
        print(f"wrote {target.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
