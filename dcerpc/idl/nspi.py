"""[MS-OXNSPI] (the address book, NSPI), described for :mod:`dcerpc.ndr_types`.

Theory of operation
-------------------
Each IDL type of [MS-OXNSPI] 2.2 and Appendix A becomes an NDR type object, built from
the IDL in the same order and with the same attributes (``size_is``, ``length_is``,
``range``, ``switch_is``); each operation becomes an :class:`~dcerpc.ndr_types.Operation`
whose parameters carry the IDL names. Nothing here knows what a call *means*; that is
the service's business.

Python values:

* structures with members of their own are the frozen dataclasses below (:class:`Stat`,
  :class:`PropertyValue`, :class:`PropertyRow`, :class:`Restriction`, ...), with
  snake_case attributes;
* a structure that is only a count and an array (``PropertyTagArray_r``,
  ``PropertyRowSet_r``, ``StringsArray_r``, ``BinaryArray_r``, the multi-valued
  ``*Array_r``) is a list, its count derived from the list; a pointer member that is
  NULL is None (so an ``AndRestriction_r`` with ``lpRes`` NULL is None, not ``[]``);
* ``Binary_r`` is :class:`bytes` (None for a NULL ``lpb``), ``FlatUID_r`` 16 bytes,
  ``FILETIME`` an integer, 8-bit strings :class:`bytes` (in the code page of the STAT),
  wide strings :class:`str`, error codes (``PtypErrorCode``, return values) unsigned.

Top-level parameters: ``[in] STAT* pStat`` is a ``[ref]`` pointer (nothing on the wire
but the STAT); ``[out] PropertyRowSet_r** ppRows`` is a ``[ref]`` pointer to a
``[unique]`` one (a referent id, 0 for NULL, then the row set). The binding handle
``handle_t hRpc`` of ``NspiBind`` is not marshalled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dcerpc.ndr_types import (
    I16,
    I32,
    U8,
    U16,
    U32,
    ConformantArray,
    ConformantVaryingArray,
    ContextHandleType,
    Field,
    Filetime,
    FixedBytes,
    Operation,
    String,
    Struct,
    Union,
    unique,
)
from dcerpc.syntax import SyntaxId

NSPI_SYNTAX = SyntaxId.parse("f5cc5a18-4264-101a-8c59-08002b2f8426", 56, 0)

#: ``[range]`` bounds of the IDL.
MAX_VALUES = 100_000
MAX_PROP_TAGS = 100_001
MAX_BINARY = 2_097_152

# Property types with a PROP_VAL_UNION arm ([MS-OXNSPI] 2.2.2.1, [MS-OXCDATA] 2.11.1).
PT_SHORT = 0x0002
PT_LONG = 0x0003
PT_ERROR = 0x000A
PT_BOOLEAN = 0x000B
PT_OBJECT = 0x000D  # PtypEmbeddedTable
PT_NULL = 0x0001
PT_STRING8 = 0x001E
PT_UNICODE = 0x001F
PT_SYSTIME = 0x0040
PT_CLSID = 0x0048
PT_BINARY = 0x0102
PT_MV_SHORT = 0x1002
PT_MV_LONG = 0x1003
PT_MV_STRING8 = 0x101E
PT_MV_UNICODE = 0x101F
PT_MV_SYSTIME = 0x1040
PT_MV_CLSID = 0x1048
PT_MV_BINARY = 0x1102

# Restriction types (RestrictionUnion_r arms, [MS-OXNSPI] 2.2.5).
RES_AND = 0
RES_OR = 1
RES_NOT = 2
RES_CONTENT = 3
RES_PROPERTY = 4
RES_COMPAREPROPS = 5
RES_BITMASK = 6
RES_SIZE = 7
RES_EXIST = 8
RES_SUBRESTRICTION = 9


# -- values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stat:
    """``STAT`` ([MS-OXNSPI] 2.2.8): a position in an address book container."""

    sort_type: int = 0
    container_id: int = 0
    current_rec: int = 0
    delta: int = 0
    num_pos: int = 0
    total_recs: int = 0
    code_page: int = 0
    template_locale: int = 0
    sort_locale: int = 0


@dataclass(frozen=True, slots=True)
class PropertyValue:
    """``PropertyValue_r``: a tag and the ``PROP_VAL_UNION`` arm its type selects."""

    tag: int
    value: Any
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class PropertyRow:
    """``PropertyRow_r``: the values of one row (None: ``lpProps`` NULL)."""

    props: list[PropertyValue] | None
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class PropertyName:
    """``PropertyName_r``: a named property (``guid`` None: ``lpguid`` NULL)."""

    guid: bytes | None
    id: int
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class Restriction:
    """``Restriction_r``: ``rt`` selects the arm ``res`` holds.

    ``res`` is a list of :class:`Restriction` (or None) for ``RES_AND``/``RES_OR``, a
    :class:`Restriction` (or None) for ``RES_NOT``, else the arm's dataclass below.
    """

    rt: int
    res: Any


@dataclass(frozen=True, slots=True)
class ContentRestriction:
    fuzzy_level: int
    prop_tag: int
    prop: PropertyValue | None


@dataclass(frozen=True, slots=True)
class PropertyRestriction:
    relop: int
    prop_tag: int
    prop: PropertyValue | None


@dataclass(frozen=True, slots=True)
class ComparePropsRestriction:
    relop: int
    prop_tag1: int
    prop_tag2: int


@dataclass(frozen=True, slots=True)
class BitMaskRestriction:
    rel_bmr: int
    prop_tag: int
    mask: int


@dataclass(frozen=True, slots=True)
class SizeRestriction:
    relop: int
    prop_tag: int
    cb: int


@dataclass(frozen=True, slots=True)
class ExistRestriction:
    prop_tag: int
    reserved1: int = 0
    reserved2: int = 0


@dataclass(frozen=True, slots=True)
class SubRestriction:
    sub_object: int
    res: Restriction | None


# -- types -----------------------------------------------------------------------------

FlatUID_r = FixedBytes(16)
STRING8 = String(wide=False)
WSTRING = String(wide=True)
CONTEXT_HANDLE = ContextHandleType()


def _counted(name: str, count: str, member: str, typ: Any, high: int = MAX_VALUES) -> Struct:
    """``{ [range(0, high)] DWORD count; [size_is(count)] <typ> member; }`` as a list."""
    return Struct(
        name,
        [
            Field(count, U32, count_of=member, value_range=(0, high)),
            Field(member, typ, size_is=(count, 0)),
        ],
    )


PropertyTagArray_r = Struct(
    "PropertyTagArray_r",
    [
        Field("cValues", U32, count_of="aulPropTag", value_range=(0, MAX_PROP_TAGS)),
        Field(
            "aulPropTag",
            ConformantVaryingArray(U32),
            size_is=("cValues", 1),
            length_is=("cValues", 0),
        ),
    ],
)
Binary_r = Struct(
    "Binary_r",
    [
        Field("cb", U32, count_of="lpb", value_range=(0, MAX_BINARY)),
        Field("lpb", unique(ConformantArray(U8)), size_is=("cb", 0)),
    ],
)
ShortArray_r = _counted("ShortArray_r", "cValues", "lpi", unique(ConformantArray(I16)))
LongArray_r = _counted("LongArray_r", "cValues", "lpl", unique(ConformantArray(I32)))
StringArray_r = _counted(
    "StringArray_r", "cValues", "lppszA", unique(ConformantArray(unique(STRING8)))
)
BinaryArray_r = _counted("BinaryArray_r", "cValues", "lpbin", unique(ConformantArray(Binary_r)))
FlatUIDArray_r = _counted(
    "FlatUIDArray_r", "cValues", "lpguid", unique(ConformantArray(unique(FlatUID_r)))
)
WStringArray_r = _counted(
    "WStringArray_r", "cValues", "lppszW", unique(ConformantArray(unique(WSTRING)))
)
DateTimeArray_r = _counted(
    "DateTimeArray_r", "cValues", "lpft", unique(ConformantArray(Filetime()))
)

PROP_VAL_UNION = Union(
    "PROP_VAL_UNION",
    U32,  # switch_type(long); property types are positive
    {
        PT_SHORT: I16,
        PT_LONG: I32,
        PT_BOOLEAN: U16,
        PT_STRING8: unique(STRING8),
        PT_BINARY: Binary_r,
        PT_UNICODE: unique(WSTRING),
        PT_CLSID: unique(FlatUID_r),
        PT_SYSTIME: Filetime(),
        PT_ERROR: U32,  # long in the IDL; MAPI error codes read better unsigned
        PT_MV_SHORT: ShortArray_r,
        PT_MV_LONG: LongArray_r,
        PT_MV_STRING8: StringArray_r,
        PT_MV_BINARY: BinaryArray_r,
        PT_MV_CLSID: FlatUIDArray_r,
        PT_MV_UNICODE: WStringArray_r,
        PT_MV_SYSTIME: DateTimeArray_r,
        PT_NULL: I32,
        PT_OBJECT: I32,
    },
)

PropertyValue_r = Struct(
    "PropertyValue_r",
    [
        Field("ulPropTag", U32, attr="tag"),
        Field("ulReserved", U32, attr="reserved"),
        Field("Value", PROP_VAL_UNION, attr="value", switch_is=("ulPropTag", 0xFFFF)),
    ],
    PropertyValue,
)

PropertyRow_r = Struct(
    "PropertyRow_r",
    [
        Field("Reserved", U32, attr="reserved"),
        Field("cValues", U32, count_of="lpProps", value_range=(0, MAX_VALUES)),
        Field(
            "lpProps",
            unique(ConformantArray(PropertyValue_r)),
            attr="props",
            size_is=("cValues", 0),
        ),
    ],
    PropertyRow,
)
PropertyRowSet_r = _counted("PropertyRowSet_r", "cRows", "aRow", ConformantArray(PropertyRow_r))

Restriction_r = Struct("Restriction_r", [], Restriction)
AndRestriction_r = _counted(
    "AndRestriction_r", "cRes", "lpRes", unique(ConformantArray(Restriction_r))
)
OrRestriction_r = AndRestriction_r
NotRestriction_r = Struct("NotRestriction_r", [Field("lpRes", unique(Restriction_r))])
ContentRestriction_r = Struct(
    "ContentRestriction_r",
    [
        Field("ulFuzzyLevel", U32, attr="fuzzy_level"),
        Field("ulPropTag", U32, attr="prop_tag"),
        Field("lpProp", unique(PropertyValue_r), attr="prop"),
    ],
    ContentRestriction,
)
BitMaskRestriction_r = Struct(
    "BitMaskRestriction_r",
    [
        Field("relBMR", U32, attr="rel_bmr"),
        Field("ulPropTag", U32, attr="prop_tag"),
        Field("ulMask", U32, attr="mask"),
    ],
    BitMaskRestriction,
)
PropertyRestriction_r = Struct(
    "PropertyRestriction_r",
    [
        Field("relop", U32),
        Field("ulPropTag", U32, attr="prop_tag"),
        Field("lpProp", unique(PropertyValue_r), attr="prop"),
    ],
    PropertyRestriction,
)
ComparePropsRestriction_r = Struct(
    "ComparePropsRestriction_r",
    [
        Field("relop", U32),
        Field("ulPropTag1", U32, attr="prop_tag1"),
        Field("ulPropTag2", U32, attr="prop_tag2"),
    ],
    ComparePropsRestriction,
)
SubRestriction_r = Struct(
    "SubRestriction_r",
    [
        Field("ulSubObject", U32, attr="sub_object"),
        Field("lpRes", unique(Restriction_r), attr="res"),
    ],
    SubRestriction,
)
SizeRestriction_r = Struct(
    "SizeRestriction_r",
    [
        Field("relop", U32),
        Field("ulPropTag", U32, attr="prop_tag"),
        Field("cb", U32),
    ],
    SizeRestriction,
)
ExistRestriction_r = Struct(
    "ExistRestriction_r",
    [
        Field("ulReserved1", U32, attr="reserved1"),
        Field("ulPropTag", U32, attr="prop_tag"),
        Field("ulReserved2", U32, attr="reserved2"),
    ],
    ExistRestriction,
)
RestrictionUnion_r = Union(
    "RestrictionUnion_r",
    U32,
    {
        RES_AND: AndRestriction_r,
        RES_OR: OrRestriction_r,
        RES_NOT: NotRestriction_r,
        RES_CONTENT: ContentRestriction_r,
        RES_PROPERTY: PropertyRestriction_r,
        RES_COMPAREPROPS: ComparePropsRestriction_r,
        RES_BITMASK: BitMaskRestriction_r,
        RES_SIZE: SizeRestriction_r,
        RES_EXIST: ExistRestriction_r,
        RES_SUBRESTRICTION: SubRestriction_r,
    },
)
Restriction_r.set_fields(
    [
        Field("rt", U32),
        Field("res", RestrictionUnion_r, switch_is=("rt", 0xFFFFFFFF)),
    ]
)

PropertyName_r = Struct(
    "PropertyName_r",
    [
        Field("lpguid", unique(FlatUID_r), attr="guid"),
        Field("ulReserved", U32, attr="reserved"),
        Field("lID", I32, attr="id"),
    ],
    PropertyName,
)
PropertyNameSet_r = _counted(
    "PropertyNameSet_r", "cNames", "aNames", ConformantArray(PropertyName_r)
)
StringsArray_r = _counted("StringsArray_r", "Count", "Strings", ConformantArray(unique(STRING8)))
WStringsArray_r = _counted("WStringsArray_r", "Count", "Strings", ConformantArray(unique(WSTRING)))

STAT = Struct(
    "STAT",
    [
        Field("SortType", U32, attr="sort_type"),
        Field("ContainerID", U32, attr="container_id"),
        Field("CurrentRec", U32, attr="current_rec"),
        Field("Delta", I32, attr="delta"),
        Field("NumPos", U32, attr="num_pos"),
        Field("TotalRecs", U32, attr="total_recs"),
        Field("CodePage", U32, attr="code_page"),
        Field("TemplateLocale", U32, attr="template_locale"),
        Field("SortLocale", U32, attr="sort_locale"),
    ],
    Stat,
)


# -- operations ([MS-OXNSPI] 3.1.4.1) ---------------------------------------------------

_HANDLE = Field("hRpc", CONTEXT_HANDLE)
_RESULT = Field("result", U32)  # long; HRESULT-like codes read better unsigned
P_PTA = unique(PropertyTagArray_r)
P_ROWS = unique(PropertyRowSet_r)
P_ROW = unique(PropertyRow_r)


def _u32(name: str) -> Field:
    return Field(name, U32)


NspiBind = Operation(
    "NspiBind",
    0,
    [_u32("dwFlags"), Field("pStat", STAT), Field("pServerGuid", unique(FlatUID_r))],
    [Field("pServerGuid", unique(FlatUID_r)), Field("contextHandle", CONTEXT_HANDLE), _RESULT],
)
NspiUnbind = Operation(
    "NspiUnbind",
    1,
    [Field("contextHandle", CONTEXT_HANDLE), _u32("Reserved")],
    [Field("contextHandle", CONTEXT_HANDLE), _RESULT],
)
NspiUpdateStat = Operation(
    "NspiUpdateStat",
    2,
    [_HANDLE, _u32("Reserved"), Field("pStat", STAT), Field("plDelta", unique(I32))],
    [Field("pStat", STAT), Field("plDelta", unique(I32)), _RESULT],
)
NspiQueryRows = Operation(
    "NspiQueryRows",
    3,
    [
        _HANDLE,
        _u32("dwFlags"),
        Field("pStat", STAT),
        Field("dwETableCount", U32, count_of="lpETable", value_range=(0, MAX_VALUES)),
        Field("lpETable", unique(ConformantArray(U32)), size_is=("dwETableCount", 0)),
        _u32("Count"),
        Field("pPropTags", P_PTA),
    ],
    [Field("pStat", STAT), Field("ppRows", P_ROWS), _RESULT],
)
NspiSeekEntries = Operation(
    "NspiSeekEntries",
    4,
    [
        _HANDLE,
        _u32("Reserved"),
        Field("pStat", STAT),
        Field("pTarget", PropertyValue_r),
        Field("lpETable", P_PTA),
        Field("pPropTags", P_PTA),
    ],
    [Field("pStat", STAT), Field("ppRows", P_ROWS), _RESULT],
)
NspiGetMatches = Operation(
    "NspiGetMatches",
    5,
    [
        _HANDLE,
        _u32("Reserved1"),
        Field("pStat", STAT),
        Field("pReserved", P_PTA),
        _u32("Reserved2"),
        Field("Filter", unique(Restriction_r)),
        Field("lpPropName", unique(PropertyName_r)),
        _u32("ulRequested"),
        Field("pPropTags", P_PTA),
    ],
    [Field("pStat", STAT), Field("ppOutMIds", P_PTA), Field("ppRows", P_ROWS), _RESULT],
)
NspiResortRestriction = Operation(
    "NspiResortRestriction",
    6,
    [
        _HANDLE,
        _u32("Reserved"),
        Field("pStat", STAT),
        Field("pInMIds", PropertyTagArray_r),
        Field("ppOutMIds", P_PTA),
    ],
    [Field("pStat", STAT), Field("ppOutMIds", P_PTA), _RESULT],
)
NspiDNToMId = Operation(
    "NspiDNToMId",
    7,
    [_HANDLE, _u32("Reserved"), Field("pNames", StringsArray_r)],
    [Field("ppOutMIds", P_PTA), _RESULT],
)
NspiGetPropList = Operation(
    "NspiGetPropList",
    8,
    [_HANDLE, _u32("dwFlags"), _u32("dwMId"), _u32("CodePage")],
    [Field("ppPropTags", P_PTA), _RESULT],
)
NspiGetProps = Operation(
    "NspiGetProps",
    9,
    [_HANDLE, _u32("dwFlags"), Field("pStat", STAT), Field("pPropTags", P_PTA)],
    [Field("ppRows", P_ROW), _RESULT],
)
NspiCompareMIds = Operation(
    "NspiCompareMIds",
    10,
    [_HANDLE, _u32("Reserved"), Field("pStat", STAT), _u32("MId1"), _u32("MId2")],
    [Field("plResult", I32), _RESULT],
)
NspiModProps = Operation(
    "NspiModProps",
    11,
    [
        _HANDLE,
        _u32("Reserved"),
        Field("pStat", STAT),
        Field("pPropTags", P_PTA),
        Field("pRow", PropertyRow_r),
    ],
    [_RESULT],
)
NspiGetSpecialTable = Operation(
    "NspiGetSpecialTable",
    12,
    [_HANDLE, _u32("dwFlags"), Field("pStat", STAT), _u32("lpVersion")],
    [_u32("lpVersion"), Field("ppRows", P_ROWS), _RESULT],
)
NspiGetTemplateInfo = Operation(
    "NspiGetTemplateInfo",
    13,
    [
        _HANDLE,
        _u32("dwFlags"),
        _u32("ulType"),
        Field("pDN", unique(STRING8)),
        _u32("dwCodePage"),
        _u32("dwLocaleID"),
    ],
    [Field("ppData", P_ROW), _RESULT],
)
NspiModLinkAtt = Operation(
    "NspiModLinkAtt",
    14,
    [
        _HANDLE,
        _u32("dwFlags"),
        _u32("ulPropTag"),
        _u32("dwMId"),
        Field("lpEntryIds", BinaryArray_r),
    ],
    [_RESULT],
)
NspiQueryColumns = Operation(
    "NspiQueryColumns",
    16,
    [_HANDLE, _u32("Reserved"), _u32("dwFlags")],
    [Field("ppColumns", P_PTA), _RESULT],
)
NspiGetNamesFromIDs = Operation(
    "NspiGetNamesFromIDs",
    17,
    [_HANDLE, _u32("Reserved"), Field("lpguid", unique(FlatUID_r)), Field("pPropTags", P_PTA)],
    [
        Field("ppReturnedPropTags", P_PTA),
        Field("ppNames", unique(PropertyNameSet_r)),
        _RESULT,
    ],
)
NspiGetIDsFromNames = Operation(
    "NspiGetIDsFromNames",
    18,
    [
        _HANDLE,
        _u32("Reserved"),
        _u32("dwFlags"),
        Field("cPropNames", U32, count_of="pNames", value_range=(0, MAX_VALUES)),
        Field("pNames", ConformantArray(unique(PropertyName_r)), size_is=("cPropNames", 0)),
    ],
    [Field("ppPropTags", P_PTA), _RESULT],
)
NspiResolveNames = Operation(
    "NspiResolveNames",
    19,
    [
        _HANDLE,
        _u32("Reserved"),
        Field("pStat", STAT),
        Field("pPropTags", P_PTA),
        Field("paStr", StringsArray_r),
    ],
    [Field("ppMIds", P_PTA), Field("ppRows", P_ROWS), _RESULT],
)
NspiResolveNamesW = Operation(
    "NspiResolveNamesW",
    20,
    [
        _HANDLE,
        _u32("Reserved"),
        Field("pStat", STAT),
        Field("pPropTags", P_PTA),
        Field("paWStr", WStringsArray_r),
    ],
    [Field("ppMIds", P_PTA), Field("ppRows", P_ROWS), _RESULT],
)

#: Operations by opnum (15 is never used on the wire).
OPERATIONS: dict[int, Operation] = {
    op.opnum: op
    for op in (
        NspiBind,
        NspiUnbind,
        NspiUpdateStat,
        NspiQueryRows,
        NspiSeekEntries,
        NspiGetMatches,
        NspiResortRestriction,
        NspiDNToMId,
        NspiGetPropList,
        NspiGetProps,
        NspiCompareMIds,
        NspiModProps,
        NspiGetSpecialTable,
        NspiGetTemplateInfo,
        NspiModLinkAtt,
        NspiQueryColumns,
        NspiGetNamesFromIDs,
        NspiGetIDsFromNames,
        NspiResolveNames,
        NspiResolveNamesW,
    )
}
