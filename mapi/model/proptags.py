"""Property types, property tags and the well-known tag names.

Theory of operation
-------------------
A property tag is a 32-bit value: the high 16 bits are the property id, the low 16
bits the property type ([MS-OXCDATA] 2.9 "PropertyTag", 2.11.1 "Property Data Types").
Multi-valued types are the single-valued type with ``MV_FLAG`` (0x1000) set. Ids
0x0001..0x7FFF are tagged properties defined by [MS-OXPROPS]; ids 0x8000..0xFFFE are
named properties, mapped per store (see :mod:`mapi.model.named`).

The constants below follow [MS-OXPROPS] section 2 ("PidTag..." canonical
properties); their ``PR_*`` names follow ``mapitags.h``. String properties exist in a
UTF-16 flavour (``PT_UNICODE``, name suffix ``_W``) and an 8-bit flavour
(``PT_STRING8``, suffix ``_A``); the store keeps one value per id and answers either
flavour. ``PR_SUBJECT`` and the other unsuffixed string names are aliases of the
``_W`` tag, as in ``mapitags.h`` compiled with ``UNICODE``.

:func:`tag_name` and :func:`tag_from_name` round-trip: every tag has one canonical
name (a known ``PR_*`` name, its ``_A`` twin, or ``0xHHHHHHHH``) and every canonical
name maps back to its tag. Aliases map to their tag but are never produced.
"""

from __future__ import annotations

import enum
from typing import Final


class PropType(enum.IntEnum):
    """Property value types ([MS-OXCDATA] 2.11.1)."""

    PT_UNSPECIFIED = 0x0000
    PT_NULL = 0x0001
    PT_SHORT = 0x0002
    PT_LONG = 0x0003
    PT_FLOAT = 0x0004
    PT_DOUBLE = 0x0005
    PT_CURRENCY = 0x0006
    PT_APPTIME = 0x0007
    PT_ERROR = 0x000A
    PT_BOOLEAN = 0x000B
    PT_OBJECT = 0x000D
    PT_I8 = 0x0014
    PT_STRING8 = 0x001E
    PT_UNICODE = 0x001F
    PT_SYSTIME = 0x0040
    PT_CLSID = 0x0048
    PT_BINARY = 0x0102
    PT_MV_SHORT = 0x1002
    PT_MV_LONG = 0x1003
    PT_MV_FLOAT = 0x1004
    PT_MV_DOUBLE = 0x1005
    PT_MV_CURRENCY = 0x1006
    PT_MV_APPTIME = 0x1007
    PT_MV_I8 = 0x1014
    PT_MV_STRING8 = 0x101E
    PT_MV_UNICODE = 0x101F
    PT_MV_SYSTIME = 0x1040
    PT_MV_CLSID = 0x1048
    PT_MV_BINARY = 0x1102


MV_FLAG: Final = 0x1000
MV_INSTANCE: Final = 0x2000

#: Types a client may store (everything but PT_ERROR/PT_OBJECT/PT_NULL/PT_UNSPECIFIED).
STORABLE_TYPES: Final = frozenset(t for t in PropType if t not in (0x0000, 0x0001, 0x000A, 0x000D))


def prop_id(tag: int) -> int:
    """The 16-bit property id of ``tag``."""
    return (tag >> 16) & 0xFFFF


def prop_type(tag: int) -> int:
    """The 16-bit property type of ``tag``."""
    return tag & 0xFFFF


def make_tag(pid: int, ptype: int) -> int:
    """Build a tag from an id and a type."""
    if not 0 <= pid <= 0xFFFF or not 0 <= ptype <= 0xFFFF:
        raise ValueError("property id and type are 16-bit values")
    return (pid << 16) | ptype


def change_type(tag: int, ptype: int) -> int:
    """``tag`` with its type replaced by ``ptype``."""
    return make_tag(prop_id(tag), ptype)


def error_tag(tag: int) -> int:
    """The PT_ERROR tag answering a failed read of ``tag``."""
    return make_tag(prop_id(tag), PropType.PT_ERROR)


def is_multi(tag: int) -> bool:
    """True for multi-valued types."""
    return bool(tag & MV_FLAG)


def canonical_tag(tag: int) -> int:
    """The storage key of ``tag``: 8-bit string types fold into their UTF-16 twin."""
    ptype = prop_type(tag)
    if ptype == PropType.PT_STRING8:
        return change_type(tag, PropType.PT_UNICODE)
    if ptype == PropType.PT_MV_STRING8:
        return change_type(tag, PropType.PT_MV_UNICODE)
    return tag


def is_named_id(pid: int) -> bool:
    """True when ``pid`` lies in the named-property range 0x8000..0xFFFE."""
    return 0x8000 <= pid <= 0xFFFE


# --- Constants used with properties -------------------------------------------

# PR_OBJECT_TYPE values (mapidefs.h).
MAPI_STORE: Final = 1
MAPI_FOLDER: Final = 3
MAPI_MESSAGE: Final = 5
MAPI_MAILUSER: Final = 6
MAPI_ATTACH: Final = 7

# PR_MESSAGE_FLAGS bits ([MS-OXCMSG] 2.2.1.6).
MSGFLAG_READ: Final = 0x00000001
MSGFLAG_UNMODIFIED: Final = 0x00000002
MSGFLAG_SUBMIT: Final = 0x00000004
MSGFLAG_UNSENT: Final = 0x00000008
MSGFLAG_HASATTACH: Final = 0x00000010
MSGFLAG_FROMME: Final = 0x00000020
MSGFLAG_ASSOCIATED: Final = 0x00000040
MSGFLAG_RESEND: Final = 0x00000080
MSGFLAG_RN_PENDING: Final = 0x00000100
MSGFLAG_NRN_PENDING: Final = 0x00000200

# PR_RECIPIENT_TYPE values ([MS-OXOMSG] 2.2.3.1).
MAPI_ORIG: Final = 0
MAPI_TO: Final = 1
MAPI_CC: Final = 2
MAPI_BCC: Final = 3

# PR_ATTACH_METHOD values ([MS-OXCMSG] 2.2.2.9).
NO_ATTACHMENT: Final = 0
ATTACH_BY_VALUE: Final = 1
ATTACH_BY_REFERENCE: Final = 2
ATTACH_BY_REF_ONLY: Final = 4
ATTACH_EMBEDDED_MSG: Final = 5
ATTACH_OLE: Final = 6

# PR_FOLDER_TYPE values ([MS-OXCFOLD] 2.2.1.2).
FOLDER_ROOT: Final = 0
FOLDER_GENERIC: Final = 1
FOLDER_SEARCH: Final = 2

# PR_IMPORTANCE values.
IMPORTANCE_LOW: Final = 0
IMPORTANCE_NORMAL: Final = 1
IMPORTANCE_HIGH: Final = 2

# PR_ACCESS bits ([MS-OXPROPS] PidTagAccess).
MAPI_ACCESS_MODIFY: Final = 0x01
MAPI_ACCESS_READ: Final = 0x02
MAPI_ACCESS_DELETE: Final = 0x04
MAPI_ACCESS_CREATE_HIERARCHY: Final = 0x08
MAPI_ACCESS_CREATE_CONTENTS: Final = 0x10
MAPI_ACCESS_CREATE_ASSOCIATED: Final = 0x20

# --- Well-known tags ([MS-OXPROPS] 2.x) ------------------------------------------

PR_NULL: Final = 0x00000001
PR_IMPORTANCE: Final = 0x00170003
PR_MESSAGE_CLASS_W: Final = 0x001A001F
PR_ORIGINATOR_DELIVERY_REPORT_REQUESTED: Final = 0x0023000B
PR_PRIORITY: Final = 0x00260003
PR_READ_RECEIPT_REQUESTED: Final = 0x0029000B
PR_SENSITIVITY: Final = 0x00360003
PR_SUBJECT_W: Final = 0x0037001F
PR_CLIENT_SUBMIT_TIME: Final = 0x00390040
PR_SENT_REPRESENTING_SEARCH_KEY: Final = 0x003B0102
PR_SUBJECT_PREFIX_W: Final = 0x003D001F
PR_RECEIVED_BY_ENTRYID: Final = 0x003F0102
PR_RECEIVED_BY_NAME_W: Final = 0x0040001F
PR_SENT_REPRESENTING_ENTRYID: Final = 0x00410102
PR_SENT_REPRESENTING_NAME_W: Final = 0x0042001F
PR_RCVD_REPRESENTING_ENTRYID: Final = 0x00430102
PR_RCVD_REPRESENTING_NAME_W: Final = 0x0044001F
PR_REPLY_RECIPIENT_ENTRIES: Final = 0x004F0102
PR_REPLY_RECIPIENT_NAMES_W: Final = 0x0050001F
PR_RECEIVED_BY_SEARCH_KEY: Final = 0x00510102
PR_RCVD_REPRESENTING_SEARCH_KEY: Final = 0x00520102
PR_MESSAGE_TO_ME: Final = 0x0057000B
PR_MESSAGE_CC_ME: Final = 0x0058000B
PR_MESSAGE_RECIP_ME: Final = 0x0059000B
PR_SENT_REPRESENTING_ADDRTYPE_W: Final = 0x0064001F
PR_SENT_REPRESENTING_EMAIL_ADDRESS_W: Final = 0x0065001F
PR_CONVERSATION_TOPIC_W: Final = 0x0070001F
PR_CONVERSATION_INDEX: Final = 0x00710102
PR_RECEIVED_BY_ADDRTYPE_W: Final = 0x0075001F
PR_RECEIVED_BY_EMAIL_ADDRESS_W: Final = 0x0076001F
PR_RCVD_REPRESENTING_ADDRTYPE_W: Final = 0x0077001F
PR_RCVD_REPRESENTING_EMAIL_ADDRESS_W: Final = 0x0078001F
PR_TRANSPORT_MESSAGE_HEADERS_W: Final = 0x007D001F
PR_SENDER_ENTRYID: Final = 0x0C190102
PR_SENDER_NAME_W: Final = 0x0C1A001F
PR_RECIPIENT_TYPE: Final = 0x0C150003
PR_SENDER_SEARCH_KEY: Final = 0x0C1D0102
PR_SENDER_ADDRTYPE_W: Final = 0x0C1E001F
PR_SENDER_EMAIL_ADDRESS_W: Final = 0x0C1F001F
PR_DELETE_AFTER_SUBMIT: Final = 0x0E01000B
PR_DISPLAY_BCC_W: Final = 0x0E02001F
PR_DISPLAY_CC_W: Final = 0x0E03001F
PR_DISPLAY_TO_W: Final = 0x0E04001F
PR_MESSAGE_DELIVERY_TIME: Final = 0x0E060040
PR_MESSAGE_FLAGS: Final = 0x0E070003
PR_MESSAGE_SIZE: Final = 0x0E080003
PR_MESSAGE_SIZE_EXTENDED: Final = 0x0E080014
PR_PARENT_ENTRYID: Final = 0x0E090102
PR_SENTMAIL_ENTRYID: Final = 0x0E0A0102
PR_RESPONSIBILITY: Final = 0x0E0F000B
PR_MESSAGE_RECIPIENTS: Final = 0x0E12000D
PR_MESSAGE_ATTACHMENTS: Final = 0x0E13000D
PR_SUBMIT_FLAGS: Final = 0x0E140003
PR_MSG_STATUS: Final = 0x0E170003
PR_HASATTACH: Final = 0x0E1B000B
PR_NORMALIZED_SUBJECT_W: Final = 0x0E1D001F
PR_ATTACH_SIZE: Final = 0x0E200003
PR_ATTACH_NUM: Final = 0x0E210003
PR_ACCESS: Final = 0x0FF40003
PR_ROW_TYPE: Final = 0x0FF50003
PR_INSTANCE_KEY: Final = 0x0FF60102
PR_ACCESS_LEVEL: Final = 0x0FF70003
PR_MAPPING_SIGNATURE: Final = 0x0FF80102
PR_RECORD_KEY: Final = 0x0FF90102
PR_STORE_RECORD_KEY: Final = 0x0FFA0102
PR_STORE_ENTRYID: Final = 0x0FFB0102
PR_OBJECT_TYPE: Final = 0x0FFE0003
PR_ENTRYID: Final = 0x0FFF0102
PR_BODY_W: Final = 0x1000001F
PR_RTF_COMPRESSED: Final = 0x10090102
PR_HTML: Final = 0x10130102
PR_NATIVE_BODY_INFO: Final = 0x10160003
PR_INTERNET_MESSAGE_ID_W: Final = 0x1035001F
PR_INTERNET_REFERENCES_W: Final = 0x1039001F
PR_IN_REPLY_TO_ID_W: Final = 0x1042001F
PR_ICON_INDEX: Final = 0x10800003
PR_LAST_VERB_EXECUTED: Final = 0x10810003
PR_LAST_VERB_EXECUTION_TIME: Final = 0x10820040
PR_FLAG_STATUS: Final = 0x10900003
PR_FLAG_COMPLETE_TIME: Final = 0x10910040
PR_FOLLOWUP_ICON: Final = 0x10950003
PR_ROWID: Final = 0x30000003
PR_DISPLAY_NAME_W: Final = 0x3001001F
PR_ADDRTYPE_W: Final = 0x3002001F
PR_EMAIL_ADDRESS_W: Final = 0x3003001F
PR_COMMENT_W: Final = 0x3004001F
PR_DEPTH: Final = 0x30050003
PR_PROVIDER_DISPLAY_W: Final = 0x3006001F
PR_CREATION_TIME: Final = 0x30070040
PR_LAST_MODIFICATION_TIME: Final = 0x30080040
PR_RESOURCE_FLAGS: Final = 0x30090003
PR_SEARCH_KEY: Final = 0x300B0102
PR_DEFAULT_STORE: Final = 0x3400000B
PR_STORE_SUPPORT_MASK: Final = 0x340D0003
PR_MDB_PROVIDER: Final = 0x34140102
PR_VALID_FOLDER_MASK: Final = 0x35DF0003
PR_IPM_SUBTREE_ENTRYID: Final = 0x35E00102
PR_IPM_OUTBOX_ENTRYID: Final = 0x35E20102
PR_IPM_WASTEBASKET_ENTRYID: Final = 0x35E30102
PR_IPM_SENTMAIL_ENTRYID: Final = 0x35E40102
PR_VIEWS_ENTRYID: Final = 0x35E50102
PR_COMMON_VIEWS_ENTRYID: Final = 0x35E60102
PR_FINDER_ENTRYID: Final = 0x35E70102
PR_CONTAINER_FLAGS: Final = 0x36000003
PR_FOLDER_TYPE: Final = 0x36010003
PR_CONTENT_COUNT: Final = 0x36020003
PR_CONTENT_UNREAD: Final = 0x36030003
PR_SELECTABLE: Final = 0x3609000B
PR_SUBFOLDERS: Final = 0x360A000B
PR_CONTAINER_CLASS_W: Final = 0x3613001F
PR_ASSOC_CONTENT_COUNT: Final = 0x36170003
PR_IPM_APPOINTMENT_ENTRYID: Final = 0x36D00102
PR_IPM_CONTACT_ENTRYID: Final = 0x36D10102
PR_IPM_JOURNAL_ENTRYID: Final = 0x36D20102
PR_IPM_NOTE_ENTRYID: Final = 0x36D30102
PR_IPM_TASK_ENTRYID: Final = 0x36D40102
PR_IPM_DRAFTS_ENTRYID: Final = 0x36D70102
PR_ATTACH_DATA_BIN: Final = 0x37010102
PR_ATTACH_DATA_OBJ: Final = 0x3701000D
PR_ATTACH_ENCODING: Final = 0x37020102
PR_ATTACH_EXTENSION_W: Final = 0x3703001F
PR_ATTACH_FILENAME_W: Final = 0x3704001F
PR_ATTACH_METHOD: Final = 0x37050003
PR_ATTACH_LONG_FILENAME_W: Final = 0x3707001F
PR_ATTACH_PATHNAME_W: Final = 0x3708001F
PR_RENDERING_POSITION: Final = 0x370B0003
PR_ATTACH_MIME_TAG_W: Final = 0x370E001F
PR_ATTACH_CONTENT_ID_W: Final = 0x3712001F
PR_ATTACH_CONTENT_LOCATION_W: Final = 0x3713001F
PR_ATTACH_FLAGS: Final = 0x37140003
PR_DISPLAY_TYPE: Final = 0x39000003
PR_SMTP_ADDRESS_W: Final = 0x39FE001F
PR_TRANSMITABLE_DISPLAY_NAME_W: Final = 0x3A20001F
PR_INTERNET_CPID: Final = 0x3FDE0003
PR_MESSAGE_LOCALE_ID: Final = 0x3FF10003
PR_CREATOR_NAME_W: Final = 0x3FF8001F
PR_CREATOR_ENTRYID: Final = 0x3FF90102
PR_LAST_MODIFIER_NAME_W: Final = 0x3FFA001F
PR_LAST_MODIFIER_ENTRYID: Final = 0x3FFB0102
PR_READ_RECEIPT_EMAIL_ADDRESS_W: Final = 0x402A001F
PR_SENDER_SMTP_ADDRESS_W: Final = 0x5D01001F
PR_SENT_REPRESENTING_SMTP_ADDRESS_W: Final = 0x5D02001F
PR_RECEIVED_BY_SMTP_ADDRESS_W: Final = 0x5D07001F
PR_RCVD_REPRESENTING_SMTP_ADDRESS_W: Final = 0x5D08001F
PR_RECIPIENT_FLAGS: Final = 0x5FFD0003
PR_RECIPIENT_TRACK_STATUS: Final = 0x5FFF0003
PR_SOURCE_KEY: Final = 0x65E00102
PR_PARENT_SOURCE_KEY: Final = 0x65E10102
PR_CHANGE_KEY: Final = 0x65E20102
PR_PREDECESSOR_CHANGE_LIST: Final = 0x65E30102
PR_MAILBOX_OWNER_ENTRYID: Final = 0x661B0102
PR_MAILBOX_OWNER_NAME_W: Final = 0x661C001F
PR_FOLDER_CHILD_COUNT: Final = 0x66380003
PR_RIGHTS: Final = 0x66390003
PR_HIERARCHY_CHANGE_NUM: Final = 0x663E0003
PR_MEMBER_ID: Final = 0x66710014
PR_MEMBER_NAME_W: Final = 0x6672001F
PR_MEMBER_RIGHTS: Final = 0x66730003
PR_LOCAL_COMMIT_TIME: Final = 0x67090040
#: Ours, not [MS-OXPROPS]: the MIME bytes of a message exactly as they arrived
#: (:mod:`internet_mail.mime`), kept so reading the message back as MIME gives those bytes. An id
#: in 0x6600..0x67FF, the range MAPI leaves to the store provider for non-transmittable
#: properties: the original MIME is the receiving store's record, never sent on.
PR_MIME_ORIGINAL: Final = 0x67F00102
PR_ATTACHMENT_FLAGS: Final = 0x7FFD0003
PR_ATTACHMENT_HIDDEN: Final = 0x7FFE000B

# Unsuffixed aliases of the UTF-16 string tags (mapitags.h with UNICODE defined).
PR_MESSAGE_CLASS: Final = PR_MESSAGE_CLASS_W
PR_SUBJECT: Final = PR_SUBJECT_W
PR_SENDER_NAME: Final = PR_SENDER_NAME_W
PR_SENDER_EMAIL_ADDRESS: Final = PR_SENDER_EMAIL_ADDRESS_W
PR_SENT_REPRESENTING_NAME: Final = PR_SENT_REPRESENTING_NAME_W
PR_DISPLAY_TO: Final = PR_DISPLAY_TO_W
PR_DISPLAY_CC: Final = PR_DISPLAY_CC_W
PR_DISPLAY_BCC: Final = PR_DISPLAY_BCC_W
PR_BODY: Final = PR_BODY_W
PR_DISPLAY_NAME: Final = PR_DISPLAY_NAME_W
PR_ADDRTYPE: Final = PR_ADDRTYPE_W
PR_EMAIL_ADDRESS: Final = PR_EMAIL_ADDRESS_W
PR_COMMENT: Final = PR_COMMENT_W
PR_CONTAINER_CLASS: Final = PR_CONTAINER_CLASS_W
PR_ATTACH_FILENAME: Final = PR_ATTACH_FILENAME_W
PR_ATTACH_LONG_FILENAME: Final = PR_ATTACH_LONG_FILENAME_W
PR_ATTACH_MIME_TAG: Final = PR_ATTACH_MIME_TAG_W
PR_NORMALIZED_SUBJECT: Final = PR_NORMALIZED_SUBJECT_W

_ALIASES: Final = frozenset(
    {
        "PR_MESSAGE_CLASS", "PR_SUBJECT", "PR_SENDER_NAME", "PR_SENDER_EMAIL_ADDRESS",
        "PR_SENT_REPRESENTING_NAME", "PR_DISPLAY_TO", "PR_DISPLAY_CC", "PR_DISPLAY_BCC",
        "PR_BODY", "PR_DISPLAY_NAME", "PR_ADDRTYPE", "PR_EMAIL_ADDRESS", "PR_COMMENT",
        "PR_CONTAINER_CLASS", "PR_ATTACH_FILENAME", "PR_ATTACH_LONG_FILENAME",
        "PR_ATTACH_MIME_TAG", "PR_NORMALIZED_SUBJECT",
    }
)  # fmt: skip


def _build_tables() -> tuple[dict[int, str], dict[str, int]]:
    by_tag: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for name, value in globals().items():
        if not name.startswith("PR_") or not isinstance(value, int):
            continue
        by_name[name] = value
        if name in _ALIASES:
            continue
        if value in by_tag:  # pragma: no cover - guarded by a test
            raise AssertionError(f"duplicate tag {value:#010x}: {by_tag[value]} and {name}")
        by_tag[value] = name
    return by_tag, by_name


TAG_NAMES, NAME_TAGS = _build_tables()


def tag_name(tag: int) -> str:
    """The canonical name of ``tag`` (``PR_*``, its ``_A`` twin, or ``0xHHHHHHHH``)."""
    name = TAG_NAMES.get(tag)
    if name is not None:
        return name
    ptype = prop_type(tag)
    if ptype in (PropType.PT_STRING8, PropType.PT_MV_STRING8):
        wide = TAG_NAMES.get(canonical_tag(tag))
        if wide is not None and wide.endswith("_W"):
            return wide[:-2] + "_A"
    return f"0x{tag:08X}"


def tag_from_name(name: str) -> int:
    """The tag named ``name``; accepts canonical names, aliases and hex spellings.

    Raises:
        KeyError: the name is unknown.
    """
    tag = NAME_TAGS.get(name)
    if tag is not None:
        return tag
    if name.endswith("_A"):
        wide = NAME_TAGS.get(name[:-2] + "_W")
        if wide is not None:
            return change_type(wide, PropType.PT_STRING8 | (wide & MV_FLAG))
    if name.startswith("0x") and len(name) == 10:
        try:
            return int(name, 16)
        except ValueError:
            pass
    raise KeyError(name)
