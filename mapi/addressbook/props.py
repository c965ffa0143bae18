"""Constants of the address book: property tags, display and object types, flags, MIds
and the error codes of [MS-OXNSPI] 2.2.

Tags are given with their Unicode type (``PT_UNICODE``); :func:`with_type` turns one
into its 8-bit form, and :func:`prop_id` / :func:`prop_type` split a tag.
"""

from __future__ import annotations

from typing import Final

from dcerpc.idl.nspi import (
    PT_BINARY,
    PT_BOOLEAN,
    PT_ERROR,
    PT_LONG,
    PT_MV_STRING8,
    PT_MV_UNICODE,
    PT_STRING8,
    PT_UNICODE,
)

PT_UNSPECIFIED: Final = 0x0000


def prop_id(tag: int) -> int:
    return (tag >> 16) & 0xFFFF


def prop_type(tag: int) -> int:
    return tag & 0xFFFF


def with_type(tag: int, typ: int) -> int:
    return (tag & 0xFFFF0000) | typ


def error_tag(tag: int) -> int:
    """The tag an error value of ``tag`` is returned under."""
    return with_type(tag, PT_ERROR)


# -- properties served ([MS-OXPROPS]; Unicode forms) ------------------------------------

PR_ENTRYID: Final = 0x0FFF0102
PR_RECORD_KEY: Final = 0x0FF90102
PR_INSTANCE_KEY: Final = 0x0FF60102
PR_MAPPING_SIGNATURE: Final = 0x0FF80102
PR_OBJECT_TYPE: Final = 0x0FFE0003
PR_DISPLAY_NAME: Final = 0x3001001F
PR_ADDRTYPE: Final = 0x3002001F
PR_EMAIL_ADDRESS: Final = 0x3003001F
PR_SEARCH_KEY: Final = 0x300B0102
PR_DEPTH: Final = 0x30050003
PR_CONTAINER_FLAGS: Final = 0x36000003
PR_ANR: Final = 0x360C001F
PR_DISPLAY_TYPE: Final = 0x39000003
PR_DISPLAY_TYPE_EX: Final = 0x39050003
PR_SMTP_ADDRESS: Final = 0x39FE001F
PR_DISPLAY_NAME_PRINTABLE: Final = 0x39FF001F
PR_ACCOUNT: Final = 0x3A00001F
PR_BUSINESS_TELEPHONE_NUMBER: Final = 0x3A08001F
PR_COMPANY_NAME: Final = 0x3A16001F
PR_TITLE: Final = 0x3A17001F
PR_DEPARTMENT_NAME: Final = 0x3A18001F
PR_OFFICE_LOCATION: Final = 0x3A19001F
PR_PRIMARY_TELEPHONE_NUMBER: Final = 0x3A1A001F
PR_TRANSMITABLE_DISPLAY_NAME: Final = 0x3A20001F
PR_EMS_AB_PROXY_ADDRESSES: Final = 0x800F101F
PR_EMS_AB_OBJECT_GUID: Final = 0x8C6D0102
PR_EMS_AB_CONTAINERID: Final = 0xFFFD0003
PR_EMS_AB_PARENT_ENTRYID: Final = 0xFFFC0102
PR_EMS_AB_IS_MASTER: Final = 0xFFFB000B

__all__ = [
    "PT_BINARY",
    "PT_BOOLEAN",
    "PT_ERROR",
    "PT_LONG",
    "PT_MV_STRING8",
    "PT_MV_UNICODE",
    "PT_STRING8",
    "PT_UNICODE",
    "PT_UNSPECIFIED",
]

# -- display types, object types, container flags ---------------------------------------

DT_MAILUSER: Final = 0x00000000
DT_CONTAINER: Final = 0x00000100
MAPI_ABCONT: Final = 4
MAPI_MAILUSER: Final = 6
AB_RECIPIENTS: Final = 0x00000001
AB_SUBCONTAINERS: Final = 0x00000002
AB_UNMODIFIABLE: Final = 0x00000008

# -- MIds, sort types, code pages, flags (2.2.1) ----------------------------------------

MID_BEGINNING_OF_TABLE: Final = 0x00000000
MID_CURRENT: Final = 0x00000001
MID_END_OF_TABLE: Final = 0x00000002
MID_UNRESOLVED: Final = 0x00000000
MID_AMBIGUOUS: Final = 0x00000001
MID_RESOLVED: Final = 0x00000002

SORT_DISPLAY_NAME: Final = 0x00000000
SORT_PHONETIC_DISPLAY_NAME: Final = 0x00000003
SORT_DISPLAY_NAME_RO: Final = 0x000003E8
SORT_DISPLAY_NAME_W: Final = 0x000003E9
TABLE_SORT_TYPES: Final = frozenset({SORT_DISPLAY_NAME, SORT_PHONETIC_DISPLAY_NAME})

CP_TELETEX: Final = 0x00004F25
CP_WINUNICODE: Final = 0x000004B0

F_SKIP_OBJECTS: Final = 0x00000001
F_EPH_ID: Final = 0x00000002
NSPI_ADDRESS_CREATION_TEMPLATES: Final = 0x00000002
NSPI_UNICODE_STRINGS: Final = 0x00000004
NSPI_UNICODE_PROPTYPES: Final = 0x80000000

# -- return values (2.2.1.2) ------------------------------------------------------------

SUCCESS: Final = 0x00000000
UNBIND_SUCCESS: Final = 0x00000001
UNBIND_FAILURE: Final = 0x00000002
ERRORS_RETURNED: Final = 0x00040380
GENERAL_FAILURE: Final = 0x80004005
NOT_SUPPORTED: Final = 0x80040102
INVALID_OBJECT: Final = 0x80040108
OUT_OF_RESOURCES: Final = 0x8004010E
NOT_FOUND: Final = 0x8004010F
LOGON_FAILED: Final = 0x80040111
TOO_COMPLEX: Final = 0x80040117
INVALID_CODEPAGE: Final = 0x80040509
INVALID_LOCALE: Final = 0x8004050A
TABLE_TOO_BIG: Final = 0x80040403
INVALID_BOOKMARK: Final = 0x80040405
ACCESS_DENIED: Final = 0x80070005
INVALID_PARAMETER: Final = 0x80070057

#: The NSPI provider's GUID in permanent entry ids ([MS-OXNSPI] 2.3.8.3), wire order.
GUID_NSPI: Final = bytes.fromhex("dca740c8c042101ab4b908002b2fe182")
