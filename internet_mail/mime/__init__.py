"""MIME <-> MAPI conversion ([MS-OXCMAIL]), sans-IO: bytes and properties in and out.

:func:`mime_to_mapi` reads an Internet message into a :class:`ConvertedMessage`
(properties, recipient rows, attachments, embedded messages, the original bytes);
:func:`mapi_to_mime` renders one back to MIME, byte-stable. The mapping and the
limits are in ``docs/mime.md``.
"""

from internet_mail.mime.message import (
    ATT_INVISIBLE_IN_HTML,
    ATT_INVISIBLE_IN_RTF,
    ATT_MHTML_REF,
    ConvertedAttachment,
    ConvertedMessage,
    MimeLimitExceeded,
)
from internet_mail.mime.parse import mime_to_mapi
from internet_mail.mime.render import mapi_to_mime

__all__ = [
    "ATT_INVISIBLE_IN_HTML",
    "ATT_INVISIBLE_IN_RTF",
    "ATT_MHTML_REF",
    "ConvertedAttachment",
    "ConvertedMessage",
    "MimeLimitExceeded",
    "mapi_to_mime",
    "mime_to_mapi",
]
