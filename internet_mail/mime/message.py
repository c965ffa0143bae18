"""The plain-data result of a MIME conversion, and its limit error.

Theory of operation
-------------------
A :class:`ConvertedMessage` is what a message is to the store, without a store: its
properties (canonical tags, :mod:`mapi.model.properties` values), its recipient rows
(each with ``PR_RECIPIENT_TYPE``) and its attachments, each either data
(``PR_ATTACH_DATA_BIN``, ``ATTACH_BY_VALUE``) or an embedded message of the same
type (``ATTACH_EMBEDDED_MSG``). Every value passes
:func:`mapi.model.properties.validate` (store limits on value sizes aside: large
bodies and attachment data are written through streams), so a delivery step can save
it through the store's objects as a client would.

Properties the store computes (``PR_DISPLAY_TO``, ``PR_HASATTACH``,
``PR_MESSAGE_SIZE``, ``PR_ATTACH_SIZE``, ``PR_ATTACH_NUM``) are never in the dicts.

``raw_mime`` holds the bytes a received message arrived as, for the delivery step to
keep in the message's stream storage under
:data:`~mapi.model.proptags.PR_MIME_ORIGINAL`; it is None for a message made through
MAPI and for embedded messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.properties import PropData

#: PR_ATTACH_FLAGS bits ([MS-OXCMSG] 2.2.2.18).
ATT_INVISIBLE_IN_HTML: Final = 0x1
ATT_INVISIBLE_IN_RTF: Final = 0x2
ATT_MHTML_REF: Final = 0x4

#: PR_PRIORITY values ([MS-OXCMSG] 2.2.1.11).
PRIO_URGENT: Final = 1
PRIO_NORMAL: Final = 0
PRIO_NONURGENT: Final = -1

#: PR_SENSITIVITY values ([MS-OXCMSG] 2.2.1.13).
SENSITIVITY_NONE: Final = 0
SENSITIVITY_PERSONAL: Final = 1
SENSITIVITY_PRIVATE: Final = 2
SENSITIVITY_COMPANY_CONFIDENTIAL: Final = 3


class MimeLimitExceeded(errors.TooComplex):
    """The MIME input is beyond a limit of :class:`~mapi.model.limits.Limits`
    (``max_mime_depth``, ``max_mime_parts``, ``max_mime_header_fields``,
    ``max_mime_header_bytes``, ``max_recipients``, ``max_attachments``,
    ``max_embedding_depth``); ``limit`` names it. MAPI_E_TOO_COMPLEX on the wire; an
    SMTP front door answers 552/554."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(slots=True, kw_only=True)
class ConvertedAttachment:
    """One attachment: its properties, and its embedded message for
    ``ATTACH_EMBEDDED_MSG`` (then the properties hold no ``PR_ATTACH_DATA_BIN``)."""

    props: dict[int, PropData] = field(default_factory=dict)
    embedded: ConvertedMessage | None = None

    @property
    def data(self) -> bytes:
        """The attachment's bytes (empty for an embedded message)."""
        value = self.props.get(pt.PR_ATTACH_DATA_BIN, b"")
        return value if isinstance(value, bytes) else b""

    @property
    def size(self) -> int:
        """The size of the data, what the store will report as PR_ATTACH_SIZE (for an
        embedded message, the store computes it when saved)."""
        return len(self.data)


@dataclass(slots=True, kw_only=True)
class ConvertedMessage:
    """A message as properties, recipient rows and attachments (see the module doc)."""

    props: dict[int, PropData] = field(default_factory=dict)
    recipients: list[dict[int, PropData]] = field(default_factory=list)
    attachments: list[ConvertedAttachment] = field(default_factory=list)
    #: The MIME bytes as received (None when made through MAPI, and when embedded).
    raw_mime: bytes | None = None
    #: What the reader repaired or could not read (the parser's defects and ours, by
    #: name), for logs and tests; never needed to use the message.
    defects: list[str] = field(default_factory=list)
