"""The declarative NDR codec on [MS-OXNSPI]'s types, byte for byte against impacket's nspi.py.

Each value is checked both ways: (1) ours encodes it, impacket's ``fromString`` parses
our bytes and ``getData`` writes them again, equal to ours outside the padding (impacket
pads with 0xbb-style filler, we with zeros); (2) ours decodes impacket's bytes back to
the value, and re-encodes them identically when given the same referent ids. Some values
are also built field by field with impacket's classes. Where impacket's nspi.py departs
from the IDL of [MS-OXNSPI] (NspiGetMatches and NspiResortRestriction are commented out;
NspiSeekEntries, NspiGetProps, NspiGetSpecialTable and NspiGetIDsFromNames marshal some
parameters differently), the IDL-correct call is declared here with impacket's NDR classes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from impacket.dcerpc.v5 import ndr as indr
from impacket.dcerpc.v5 import nspi as inspi
from impacket.dcerpc.v5.dtypes import DWORD, LPWSTR, NULL

from dcerpc import ndr_types as t
from dcerpc.idl import nspi as n
from dcerpc.ndr import ContextHandle

GUID = bytes(range(16))
HANDLE = ContextHandle(0, uuid.UUID("11223344-5566-7788-99aa-bbccddeeff00"))
STAT = n.Stat(0, 0, 0x1928, -1, 2, 0x16, 0x4E4, 0x409, 0x409)


def prop_values() -> list[n.PropertyValue]:
    """One property value for every PROP_VAL_UNION arm, NULL pointers included."""
    return [
        n.PropertyValue(0x3A400002, -7),
        n.PropertyValue(0x39000003, 6),
        n.PropertyValue(0x3A40000B, 1),
        n.PropertyValue(0x3003001E, b"bob@example.org"),
        n.PropertyValue(0x3003001E, None),
        n.PropertyValue(
            0x0FFF0102, bytes([0x87, 0, 0, 0]) + GUID + b"\x01\0\0\0\0\0\0\0\x07\0\0\0"
        ),
        n.PropertyValue(0x0FFF0102, b""),
        n.PropertyValue(0x0FFF0102, None),
        n.PropertyValue(0x3001001F, "Bob Björk ☃"),
        n.PropertyValue(0x8C6D0048, GUID),
        n.PropertyValue(0x30070040, 0x01D9E3C2_5A5B1C00),
        n.PropertyValue(0x3A06000A, 0x8004010F),
        n.PropertyValue(0x10001002, [1, -2, 3]),
        n.PropertyValue(0x10011003, [1, -2, 70000]),
        n.PropertyValue(0x800F101E, [b"SMTP:bob@example.org", None, b"x500:/o=x"]),
        n.PropertyValue(0x8C6A1102, [b"\x01\x02\x03", b"", None]),
        n.PropertyValue(0x80081048, [GUID, None]),
        n.PropertyValue(0x800F101F, ["SMTP:bob@example.org", "smtp:b@ex.org"]),
        n.PropertyValue(0x80101040, [1, 0xFFFFFFFF_FFFFFFFF]),
        n.PropertyValue(0x10001003, []),
        n.PropertyValue(0x10001003, None),
        n.PropertyValue(0x80000001, 0),
        n.PropertyValue(0x3001000D, 0),
    ]


def rows() -> list[n.PropertyRow]:
    values = prop_values()
    return [n.PropertyRow(values[:12]), n.PropertyRow(values[12:]), n.PropertyRow([]),
            n.PropertyRow(None, 5)]  # fmt: skip


def restrictions() -> list[n.Restriction]:
    prop = n.PropertyValue(0x3001001F, "Bob")
    leaf = [
        n.Restriction(n.RES_CONTENT, n.ContentRestriction(0x10001, 0x3001001F, prop)),
        n.Restriction(n.RES_PROPERTY, n.PropertyRestriction(4, 0x3001001F, prop)),
        n.Restriction(n.RES_PROPERTY, n.PropertyRestriction(4, 0x3001001F, None)),
        n.Restriction(n.RES_COMPAREPROPS, n.ComparePropsRestriction(1, 0x3001001F, 0x3003001F)),
        n.Restriction(n.RES_BITMASK, n.BitMaskRestriction(1, 0x0FFE0003, 6)),
        n.Restriction(n.RES_SIZE, n.SizeRestriction(2, 0x3001001F, 10)),
        n.Restriction(n.RES_EXIST, n.ExistRestriction(0x3003001F)),
    ]
    sub = n.Restriction(n.RES_SUBRESTRICTION, n.SubRestriction(0x0E12000D, leaf[0]))
    return [
        *leaf,
        sub,
        n.Restriction(n.RES_AND, leaf),
        n.Restriction(n.RES_OR, [leaf[1], n.Restriction(n.RES_NOT, leaf[6]), sub]),
        n.Restriction(n.RES_AND, []),
        n.Restriction(n.RES_AND, None),
        n.Restriction(n.RES_NOT, None),
    ]


# -- helpers ---------------------------------------------------------------------------


def _masked(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for offset, length in spans:
        out[offset : offset + length] = bytes(length)
    return bytes(out)


def _wrap(imp_type: Any) -> type[indr.NDRCALL]:
    return type("One", (indr.NDRCALL,), {"structure": (("value", imp_type),)})


def both_ways(imp_call: type[indr.NDRCALL], encode: Any, decode: Any, value: Any) -> bytes:
    """Ours -> impacket -> bytes equal; impacket's bytes -> ours -> the value, and back."""
    spans: list[tuple[int, int]] = []
    ours = encode(value, pad_spans=spans)
    theirs = imp_call(ours).getData()
    assert len(theirs) == len(ours)
    assert _masked(theirs, spans) == ours
    refs: list[int] = []
    assert decode(theirs, referents=refs) == value
    again: list[tuple[int, int]] = []
    mine = encode(value, referent_ids=refs, pad_spans=again)
    assert _masked(theirs, again) == mine
    return ours


def check_type(typ: t.NdrType, imp_type: Any, value: Any) -> bytes:
    return both_ways(
        _wrap(imp_type),
        lambda v, **kw: t.encode(typ, v, **kw),
        lambda d, **kw: t.decode(typ, d, **kw),
        value,
    )


def check_call(op: t.Operation, imp_req: Any, imp_resp: Any, req: Any, resp: Any) -> None:
    both_ways(imp_req, op.encode_request, op.decode_request, req)
    both_ways(imp_resp, op.encode_response, op.decode_response, resp)


def from_impacket(typ: t.NdrType, imp_value: Any) -> Any:
    """Decodes what impacket built; our re-encoding with its referent ids is identical."""
    call = _wrap(type(imp_value))()
    call["value"] = imp_value
    data = call.getData()
    refs: list[int] = []
    value = t.decode(typ, data, referents=refs)
    spans: list[tuple[int, int]] = []
    assert t.encode(typ, value, referent_ids=refs, pad_spans=spans) == _masked(data, spans)
    return value


# -- types -----------------------------------------------------------------------------


def test_stat_and_flat_uid():
    data = check_type(n.STAT, inspi.STAT, STAT)
    assert len(data) == 36
    check_type(n.FlatUID_r, inspi.FlatUID_r, GUID)


@pytest.mark.parametrize("value", prop_values(), ids=lambda v: f"{v.tag:08x}")
def test_property_value_every_arm(value):
    check_type(n.PropertyValue_r, inspi.PropertyValue_r, value)


def test_rows_and_row_sets():
    for row in rows():
        check_type(n.PropertyRow_r, inspi.PropertyRow_r, row)
    check_type(n.PropertyRowSet_r, inspi.PropertyRowSet_r, rows())
    check_type(n.PropertyRowSet_r, inspi.PropertyRowSet_r, [])


def test_property_tag_array_is_size_plus_one_length_n():
    data = check_type(n.PropertyTagArray_r, inspi.PropertyTagArray_r, [0x3001001F, 0x39FE001F])
    assert data[:20] == bytes.fromhex("03000000 02000000 00000000 02000000 1f000130")
    check_type(n.PropertyTagArray_r, inspi.PropertyTagArray_r, [])


@pytest.mark.parametrize("restriction", restrictions(), ids=lambda r: str(r.rt))
def test_restrictions_of_every_kind(restriction):
    check_type(n.Restriction_r, inspi.Restriction_r, restriction)


def test_names_and_string_arrays():
    check_type(n.PropertyName_r, inspi.PropertyName_r, n.PropertyName(GUID, 0x8005, 0))
    check_type(n.PropertyName_r, inspi.PropertyName_r, n.PropertyName(None, -1, 0))
    names = [n.PropertyName(GUID, 1), n.PropertyName(None, 2)]
    check_type(n.PropertyNameSet_r, inspi.PropertyNameSet_r, names)
    check_type(n.StringsArray_r, inspi.StringsArray_r, [b"/o=Org/cn=bob", None, b""])
    check_type(n.WStringsArray_r, inspi.WStringsArray_r, ["Bob", "", None, "Ålice"])
    check_type(n.BinaryArray_r, inspi.BinaryArray_r, [b"\x00\x01", b"", None])
    check_type(n.StringsArray_r, inspi.StringsArray_r, [])


def test_values_built_with_impacket():
    stat = inspi.STAT()
    stat["CurrentRec"] = 0x1928
    stat["Delta"] = -1
    stat["CodePage"] = inspi.CP_TELETEX
    assert from_impacket(n.STAT, stat) == n.Stat(current_rec=0x1928, delta=-1, code_page=0x4F25)

    tags = inspi.PropertyTagArray_r()
    for tag in (0x3001001F, 0x39FE001F):
        item = DWORD()
        item["Data"] = tag
        tags["aulPropTag"].append(item)
    tags["cValues"] = 2
    tags.fields["aulPropTag"].fields["MaximumCount"] = 3
    assert from_impacket(n.PropertyTagArray_r, tags) == [0x3001001F, 0x39FE001F]

    value = inspi.PropertyValue_r()
    value["ulPropTag"] = 0x0FFF0102
    value["Value"]["tag"] = 0x0102
    value["Value"]["bin"]["cValues"] = 3
    value["Value"]["bin"]["lpb"] = b"abc"
    assert from_impacket(n.PropertyValue_r, value) == n.PropertyValue(0x0FFF0102, b"abc")

    value = inspi.PropertyValue_r()
    value["ulPropTag"] = 0x3001001F
    value["Value"]["tag"] = 0x001F
    value["Value"]["lpszW"] = "Bob\x00"
    assert from_impacket(n.PropertyValue_r, value) == n.PropertyValue(0x3001001F, "Bob")

    names = inspi.WStringsArray_r()
    for text in ("Bob", "ali"):
        item = LPWSTR()
        item["Data"] = text + "\x00"
        names["Strings"].append(item)
    names["Count"] = 2
    assert from_impacket(n.WStringsArray_r, names) == ["Bob", "ali"]


# -- calls -----------------------------------------------------------------------------

PTA = [0x3001001F, 0x39FE001F, 0x0FFF0102]


class SeekEntriesIdl(indr.NDRCALL):
    structure = (
        ("hRpc", inspi.handle_t),
        ("Reserved", DWORD),
        ("pStat", inspi.STAT),
        ("pTarget", inspi.PropertyValue_r),
        ("lpETable", inspi.PPropertyTagArray_r),
        ("pPropTags", inspi.PPropertyTagArray_r),
    )


class GetMatchesIdl(indr.NDRCALL):
    structure = (
        ("hRpc", inspi.handle_t),
        ("Reserved1", DWORD),
        ("pStat", inspi.STAT),
        ("pReserved", inspi.PPropertyTagArray_r),
        ("Reserved2", DWORD),
        ("Filter", inspi.PRestriction_r),
        ("lpPropName", inspi.PPropertyName_r),
        ("ulRequested", DWORD),
        ("pPropTags", inspi.PPropertyTagArray_r),
    )


class GetMatchesResponseIdl(indr.NDRCALL):
    structure = (
        ("pStat", inspi.STAT),
        ("ppOutMIds", inspi.PPropertyTagArray_r),
        ("ppRows", inspi.PPropertyRowSet_r),
        ("ErrorCode", DWORD),
    )


class ResortRestrictionIdl(indr.NDRCALL):
    structure = (
        ("hRpc", inspi.handle_t),
        ("Reserved", DWORD),
        ("pStat", inspi.STAT),
        ("pInMIds", inspi.PropertyTagArray_r),
        ("ppOutMIds", inspi.PPropertyTagArray_r),
    )


class ResortRestrictionResponseIdl(indr.NDRCALL):
    structure = (
        ("pStat", inspi.STAT),
        ("ppOutMIds", inspi.PPropertyTagArray_r),
        ("ErrorCode", DWORD),
    )


class GetPropsIdl(indr.NDRCALL):
    structure = (
        ("hRpc", inspi.handle_t),
        ("dwFlags", DWORD),
        ("pStat", inspi.STAT),
        ("pPropTags", inspi.PPropertyTagArray_r),
    )


class GetSpecialTableIdl(indr.NDRCALL):
    structure = (
        ("hRpc", inspi.handle_t),
        ("dwFlags", DWORD),
        ("pStat", inspi.STAT),
        ("lpVersion", DWORD),
    )


class PropertyNamePointers(indr.NDRUniConformantArray):
    item = inspi.PPropertyName_r


class GetIDsFromNamesIdl(indr.NDRCALL):
    structure = (
        ("hRpc", inspi.handle_t),
        ("Reserved", DWORD),
        ("dwFlags", DWORD),
        ("cPropNames", DWORD),
        ("pNames", PropertyNamePointers),
    )


def _rows_out(**more: Any) -> dict[str, Any]:
    return {"pStat": STAT, "ppRows": rows(), "result": 0, **more}


CALLS = [
    (
        n.NspiBind,
        inspi.NspiBind,
        inspi.NspiBindResponse,
        {"dwFlags": 0, "pStat": STAT, "pServerGuid": GUID},
        {"pServerGuid": GUID, "contextHandle": HANDLE, "result": 0},
    ),
    (
        n.NspiBind,
        inspi.NspiBind,
        inspi.NspiBindResponse,
        {"dwFlags": 0x20, "pStat": STAT, "pServerGuid": None},
        {"pServerGuid": None, "contextHandle": HANDLE, "result": 0x80040111},
    ),
    (
        n.NspiUnbind,
        inspi.NspiUnbind,
        inspi.NspiUnbindResponse,
        {"contextHandle": HANDLE, "Reserved": 0},
        {"contextHandle": t.decode(t.ContextHandleType(), bytes(20)), "result": 1},
    ),
    (
        n.NspiUpdateStat,
        inspi.NspiUpdateStat,
        inspi.NspiUpdateStatResponse,
        {"hRpc": HANDLE, "Reserved": 0, "pStat": STAT, "plDelta": -5},
        {"pStat": STAT, "plDelta": None, "result": 0},
    ),
    (
        n.NspiQueryRows,
        inspi.NspiQueryRows,
        inspi.NspiQueryRowsResponse,
        {
            "hRpc": HANDLE,
            "dwFlags": 0,
            "pStat": STAT,
            "lpETable": [7, 8, 9],
            "Count": 50,
            "pPropTags": PTA,
        },
        _rows_out(),
    ),
    (
        n.NspiQueryRows,
        inspi.NspiQueryRows,
        inspi.NspiQueryRowsResponse,
        {
            "hRpc": HANDLE,
            "dwFlags": 1,
            "pStat": STAT,
            "lpETable": None,
            "Count": 0,
            "pPropTags": None,
        },
        {"pStat": STAT, "ppRows": None, "result": 0x80004005},
    ),
    (
        n.NspiSeekEntries,
        SeekEntriesIdl,
        inspi.NspiSeekEntriesResponse,
        {
            "hRpc": HANDLE,
            "Reserved": 0,
            "pStat": STAT,
            "pTarget": n.PropertyValue(0x3001001F, "Bo"),
            "lpETable": None,
            "pPropTags": PTA,
        },
        _rows_out(),
    ),
    (
        n.NspiGetMatches,
        GetMatchesIdl,
        GetMatchesResponseIdl,
        {
            "hRpc": HANDLE,
            "Reserved1": 0,
            "pStat": STAT,
            "pReserved": None,
            "Reserved2": 0,
            "Filter": restrictions()[9],
            "lpPropName": n.PropertyName(GUID, 5),
            "ulRequested": 50,
            "pPropTags": PTA,
        },
        _rows_out(ppOutMIds=[10, 11]),
    ),
    (
        n.NspiGetMatches,
        GetMatchesIdl,
        GetMatchesResponseIdl,
        {
            "hRpc": HANDLE,
            "Reserved1": 0,
            "pStat": STAT,
            "pReserved": [],
            "Reserved2": 0,
            "Filter": None,
            "lpPropName": None,
            "ulRequested": 0,
            "pPropTags": None,
        },
        {"pStat": STAT, "ppOutMIds": None, "ppRows": None, "result": 0x8004010F},
    ),
    (
        n.NspiResortRestriction,
        ResortRestrictionIdl,
        ResortRestrictionResponseIdl,
        {"hRpc": HANDLE, "Reserved": 0, "pStat": STAT, "pInMIds": [3, 1, 2], "ppOutMIds": None},
        {"pStat": STAT, "ppOutMIds": [1, 2, 3], "result": 0},
    ),
    (
        n.NspiDNToMId,
        inspi.NspiDNToMId,
        inspi.NspiDNToMIdResponse,
        {"hRpc": HANDLE, "Reserved": 0, "pNames": [b"/o=Org/ou=x/cn=Recipients/cn=bob"]},
        {"ppOutMIds": [0x1928], "result": 0},
    ),
    (
        n.NspiGetPropList,
        inspi.NspiGetPropList,
        inspi.NspiGetPropListResponse,
        {"hRpc": HANDLE, "dwFlags": 0, "dwMId": 0x1928, "CodePage": 0x4E4},
        {"ppPropTags": PTA, "result": 0},
    ),
    (
        n.NspiGetProps,
        GetPropsIdl,
        inspi.NspiGetPropsResponse,
        {"hRpc": HANDLE, "dwFlags": 0, "pStat": STAT, "pPropTags": PTA},
        {"ppRows": rows()[0], "result": 0x00040380},
    ),
    (
        n.NspiCompareMIds,
        inspi.NspiCompareMIds,
        inspi.NspiCompareMIdsResponse,
        {"hRpc": HANDLE, "Reserved": 0, "pStat": STAT, "MId1": 1, "MId2": 2},
        {"plResult": -1, "result": 0},
    ),
    (
        n.NspiGetSpecialTable,
        GetSpecialTableIdl,
        inspi.NspiGetSpecialTableResponse,
        {"hRpc": HANDLE, "dwFlags": 4, "pStat": STAT, "lpVersion": 0},
        {"lpVersion": 3, "ppRows": rows(), "result": 0},
    ),
    (
        n.NspiQueryColumns,
        inspi.NspiQueryColumns,
        inspi.NspiQueryColumnsResponse,
        {"hRpc": HANDLE, "Reserved": 0, "dwFlags": 0x80000000},
        {"ppColumns": PTA, "result": 0},
    ),
    (
        n.NspiGetNamesFromIDs,
        inspi.NspiGetNamesFromIDs,
        inspi.NspiGetNamesFromIDsResponse,
        {"hRpc": HANDLE, "Reserved": 0, "lpguid": GUID, "pPropTags": [0x80010003]},
        {
            "ppReturnedPropTags": [0x80010003],
            "ppNames": [n.PropertyName(GUID, 0x8005)],
            "result": 0,
        },
    ),
    (
        n.NspiGetIDsFromNames,
        GetIDsFromNamesIdl,
        inspi.NspiGetIDsFromNamesResponse,
        {
            "hRpc": HANDLE,
            "Reserved": 0,
            "dwFlags": 2,
            "pNames": [n.PropertyName(GUID, 0x8005), None, n.PropertyName(None, 3)],
        },
        {"ppPropTags": [0x80010003, 0x0000000A, 0x80020003], "result": 0},
    ),
    (
        n.NspiResolveNames,
        inspi.NspiResolveNames,
        inspi.NspiResolveNamesResponse,
        {"hRpc": HANDLE, "Reserved": 0, "pStat": STAT, "pPropTags": PTA, "paStr": [b"bob", b"al"]},
        {"ppMIds": [0, 1], "ppRows": rows()[:1], "result": 0},
    ),
    (
        n.NspiResolveNamesW,
        inspi.NspiResolveNamesW,
        inspi.NspiResolveNamesWResponse,
        {
            "hRpc": HANDLE,
            "Reserved": 0,
            "pStat": STAT,
            "pPropTags": None,
            "paWStr": ["Bob", "Ålice", "nobody"],
        },
        {"ppMIds": [2, 1, 0], "ppRows": rows()[:1], "result": 0},
    ),
]


@pytest.mark.parametrize(("op", "imp_req", "imp_resp", "req", "resp"), CALLS,
                         ids=[c[0].name for c in CALLS])  # fmt: skip
def test_calls_match_impacket(op, imp_req, imp_resp, req, resp):
    check_call(op, imp_req, imp_resp, req, resp)


def test_impacket_hnspi_query_rows_request_decodes():
    """The request impacket's own helper builds (hNspiQueryRows' field settings)."""
    request = inspi.NspiQueryRows()
    request["hRpc"]["context_handle_uuid"] = HANDLE.uuid.bytes_le
    request["dwFlags"] = inspi.fSkipObjects
    request["Count"] = 50
    request["pStat"]["ContainerID"] = 0x1928
    for tag in PTA:
        item = DWORD()
        item["Data"] = tag
        request["pPropTags"]["aulPropTag"].append(item)
    request["pPropTags"]["cValues"] = len(PTA)
    request.fields["pPropTags"].fields["Data"].fields["aulPropTag"].fields["MaximumCount"] = 4
    request["lpETable"] = NULL
    values = n.NspiQueryRows.decode_request(request.getData())
    assert values == {"hRpc": HANDLE, "dwFlags": 1, "pStat": n.Stat(container_id=0x1928),
                      "lpETable": None, "Count": 50, "pPropTags": PTA}  # fmt: skip


def test_every_opnum_is_described():
    assert sorted(n.OPERATIONS) == [*range(15), *range(16, 21)]
