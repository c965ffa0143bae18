"""The declarative NDR codec's rules and limits: strict checks, budgets, hostile bytes,
round trips of generated [MS-OXNSPI] values (hypothesis)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcerpc import ndr_types as t
from dcerpc.errors import NdrError
from dcerpc.idl import nspi as n

# -- strategies ------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
i32 = st.integers(-(2**31), 2**31 - 1)
i16 = st.integers(-(2**15), 2**15 - 1)
guid = st.binary(min_size=16, max_size=16)
blob = st.binary(max_size=40)
s8 = st.binary(max_size=20).map(lambda b: b.replace(b"\0", b"x"))
wide = st.text(max_size=12).map(lambda s: s.replace("\0", "x"))
ft = st.integers(0, 2**64 - 1)
small = {"max_size": 4}

ARMS = {
    n.PT_SHORT: i16,
    n.PT_LONG: i32,
    n.PT_BOOLEAN: st.integers(0, 0xFFFF),
    n.PT_STRING8: st.none() | s8,
    n.PT_BINARY: st.none() | blob,
    n.PT_UNICODE: st.none() | wide,
    n.PT_CLSID: st.none() | guid,
    n.PT_SYSTIME: ft,
    n.PT_ERROR: u32,
    n.PT_MV_SHORT: st.none() | st.lists(i16, **small),
    n.PT_MV_LONG: st.none() | st.lists(i32, **small),
    n.PT_MV_STRING8: st.none() | st.lists(st.none() | s8, **small),
    n.PT_MV_BINARY: st.none() | st.lists(st.none() | blob, **small),
    n.PT_MV_CLSID: st.none() | st.lists(st.none() | guid, **small),
    n.PT_MV_UNICODE: st.none() | st.lists(st.none() | wide, **small),
    n.PT_MV_SYSTIME: st.none() | st.lists(ft, **small),
    n.PT_NULL: i32,
    n.PT_OBJECT: i32,
}


@st.composite
def prop_value(draw: st.DrawFn) -> n.PropertyValue:
    ptype = draw(st.sampled_from(sorted(ARMS)))
    tag = draw(st.integers(0, 0xFFFF)) << 16 | ptype
    return n.PropertyValue(tag, draw(ARMS[ptype]), draw(st.sampled_from([0, 7])))


rows = st.lists(
    st.builds(n.PropertyRow, st.none() | st.lists(prop_value(), max_size=5), u32), max_size=4
)
leaf_restrictions = st.one_of(
    st.builds(lambda *a: n.Restriction(n.RES_CONTENT, n.ContentRestriction(*a)), u32, u32,
              st.none() | prop_value()),
    st.builds(lambda *a: n.Restriction(n.RES_PROPERTY, n.PropertyRestriction(*a)), u32, u32,
              st.none() | prop_value()),
    st.builds(lambda *a: n.Restriction(n.RES_COMPAREPROPS, n.ComparePropsRestriction(*a)),
              u32, u32, u32),
    st.builds(lambda *a: n.Restriction(n.RES_BITMASK, n.BitMaskRestriction(*a)), u32, u32, u32),
    st.builds(lambda *a: n.Restriction(n.RES_SIZE, n.SizeRestriction(*a)), u32, u32, u32),
    st.builds(lambda *a: n.Restriction(n.RES_EXIST, n.ExistRestriction(*a)), u32, u32, u32),
)  # fmt: skip
restrictions = st.recursive(
    leaf_restrictions,
    lambda inner: st.one_of(
        st.builds(lambda r: n.Restriction(n.RES_AND, r), st.none() | st.lists(inner, max_size=3)),
        st.builds(lambda r: n.Restriction(n.RES_OR, r), st.none() | st.lists(inner, max_size=3)),
        st.builds(lambda r: n.Restriction(n.RES_NOT, r), st.none() | inner),
        st.builds(
            lambda o, r: n.Restriction(n.RES_SUBRESTRICTION, n.SubRestriction(o, r)),
            u32,
            st.none() | inner,
        ),
    ),
    max_leaves=8,
)

SEEDS = [
    t.encode(n.PropertyRowSet_r, [n.PropertyRow([n.PropertyValue(0x3001001F, "Bob"),
                                                 n.PropertyValue(0x0FFF0102, b"\x01")])]),
    t.encode(n.Restriction_r, n.Restriction(n.RES_NOT, n.Restriction(n.RES_AND, [
        n.Restriction(n.RES_EXIST, n.ExistRestriction(1))]))),
    t.encode(n.PropertyTagArray_r, [1, 2, 3]),
    t.encode(n.WStringsArray_r, ["a", None, "bc"]),
]  # fmt: skip
TYPES = [n.PropertyRowSet_r, n.Restriction_r, n.PropertyTagArray_r, n.WStringsArray_r, n.STAT,
         n.PropertyValue_r, n.StringsArray_r, n.PropertyNameSet_r]  # fmt: skip


# -- round trips -----------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_row_sets_round_trip(value):
    data = t.encode(n.PropertyRowSet_r, value)
    assert t.decode(n.PropertyRowSet_r, data) == value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(restrictions)
def test_restrictions_round_trip(value):
    assert t.decode(n.Restriction_r, t.encode(n.Restriction_r, value)) == value


@settings(max_examples=50, deadline=None)
@given(st.builds(n.Stat, u32, u32, u32, i32, u32, u32, u32, u32, u32), restrictions)
def test_get_matches_request_round_trips(stat, restriction):
    values = {"hRpc": t.decode(t.ContextHandleType(), bytes(20)), "Reserved1": 0, "pStat": stat,
              "pReserved": None, "Reserved2": 0, "Filter": restriction,
              "lpPropName": None, "ulRequested": 10, "pPropTags": [1, 2]}  # fmt: skip
    data = n.NspiGetMatches.encode_request(values)
    assert n.NspiGetMatches.decode_request(data) == values


def test_big_endian_stat():
    stat = n.Stat(1, 2, 3, -4, 5, 6, 7, 8, 9)
    data = struct.pack(">IIIiIIIII", 1, 2, 3, -4, 5, 6, 7, 8, 9)
    assert t.decode(n.STAT, data, ">") == stat


# -- hostile bytes ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_bytes_give_values_or_ndr_error(seed, data):
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        if not buf:
            break
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    for typ in TYPES:
        for stub in (bytes(buf), bytes(buf[:cut])):
            with contextlib.suppress(NdrError):
                t.decode(typ, stub, data.draw(st.sampled_from(["<", ">"])))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_values_or_ndr_error(stub):
    for typ in TYPES:
        with contextlib.suppress(NdrError):
            t.decode(typ, stub)
    for op in n.OPERATIONS.values():
        for decode in (op.decode_request, op.decode_response):
            with contextlib.suppress(NdrError):
                decode(stub)


# -- strict checks and limits ----------------------------------------------------------


def _pta(max_count: int, count: int, offset: int, actual: int, *tags: int) -> bytes:
    return struct.pack(f"<IIII{len(tags)}I", max_count, count, offset, actual, *tags)


def test_property_tag_array_counts_must_agree():
    assert t.decode(n.PropertyTagArray_r, _pta(3, 2, 0, 2, 7, 8)) == [7, 8]
    for lying in (_pta(2, 2, 0, 2, 7, 8), _pta(3, 2, 1, 2, 7, 8), _pta(3, 2, 0, 1, 7),
                  _pta(3, 1, 0, 2, 7, 8), _pta(100003, 100002, 0, 1, 7)):  # fmt: skip
        with pytest.raises(NdrError):
            t.decode(n.PropertyTagArray_r, lying)


def test_huge_conformant_sizes_are_refused_before_allocation():
    # a row set claiming 100,000 rows in 12 bytes; and a string claiming 2**32-1 units
    with pytest.raises(NdrError, match="bytes left"):
        t.decode(n.PropertyRowSet_r, struct.pack("<II", 100000, 100000) + bytes(4))
    with pytest.raises(NdrError):
        t.decode(t.String(wide=True), struct.pack("<III", 0xFFFFFFFF, 0, 0xFFFFFFFF))
    with pytest.raises(NdrError, match="range"):
        t.decode(n.PropertyRowSet_r, struct.pack("<II", 100001, 100001) + bytes(1 << 20))


def test_element_budget_is_shared_by_the_whole_stub():
    data = t.encode(n.PropertyTagArray_r, list(range(1000)))
    with pytest.raises(NdrError, match="elements"):
        t.decode(n.PropertyTagArray_r, data, limits=t.Limits(max_elements=999))
    assert len(t.decode(n.PropertyTagArray_r, data, limits=t.Limits(max_elements=1000))) == 1000
    with pytest.raises(NdrError, match="exceeds"):
        t.decode(n.PropertyTagArray_r, data, limits=t.Limits(max_bytes=100))


def test_deep_pointer_chains_are_refused_without_recursion():
    deep: n.Restriction | None = n.Restriction(n.RES_EXIST, n.ExistRestriction(1))
    for _ in range(5000):
        deep = n.Restriction(n.RES_NOT, deep)
    data = t.encode(n.Restriction_r, deep)  # the encoder does not recurse either
    with pytest.raises(NdrError, match="deeper"):
        t.decode(n.Restriction_r, data)
    back = t.decode(n.Restriction_r, data, limits=t.Limits(max_depth=6000))
    depth = 0
    while back.rt == n.RES_NOT:  # walked, not compared: dataclass == would recurse
        back, depth = back.res, depth + 1
    assert depth == 5000
    assert back == n.Restriction(n.RES_EXIST, n.ExistRestriction(1))


def test_unknown_union_arms_and_lying_discriminants():
    good = t.encode(n.PropertyValue_r, n.PropertyValue(0x39000003, 5))
    unknown = struct.pack("<IIII", 0x39000005, 0, 5, 0)  # PtypFloating64: no arm
    with pytest.raises(NdrError, match="no arm"):
        t.decode(n.PropertyValue_r, unknown)
    lying = good[:8] + struct.pack("<I", 0x0002) + good[12:]
    with pytest.raises(NdrError, match="discriminant"):
        t.decode(n.PropertyValue_r, lying)
    with pytest.raises(NdrError, match="no arm"):
        t.decode(n.Restriction_r, struct.pack("<II", 10, 10) + bytes(12))


def test_strings_need_exactly_one_terminator():
    ok = struct.pack("<III", 3, 0, 3) + b"ab\0"
    assert t.decode(t.String(wide=False), ok) == b"ab"
    for bad in (struct.pack("<III", 3, 0, 3) + b"abc", struct.pack("<III", 3, 0, 3) + b"a\0\0",
                struct.pack("<III", 0, 0, 0), struct.pack("<III", 2, 0, 3) + b"ab\0",
                struct.pack("<III", 3, 1, 2) + b"b\0"):  # fmt: skip
        with pytest.raises(NdrError):
            t.decode(t.String(wide=False), bad)


def test_trailing_bytes_and_null_ref_pointers_are_refused():
    data = t.encode(n.STAT, n.Stat())
    assert t.decode(n.STAT, data + bytes(4)) == n.Stat()  # alignment padding
    with pytest.raises(NdrError, match="unexpected"):
        t.decode(n.STAT, data + bytes(8))
    embedded_ref = t.Struct("S", [t.Field("p", t.ref(t.U32))])
    with pytest.raises(NdrError, match="NULL"):
        t.decode(embedded_ref, bytes(4))


def test_full_pointers_share_one_pointee():
    text = t.String(wide=False)
    pair = t.Struct("Pair", [t.Field("a", t.full(text)), t.Field("b", t.full(text))], Pair)
    shared = b"ab"
    data = t.encode(pair, Pair(a=shared, b=shared))
    assert data == struct.pack("<IIIII", 0x20000, 0x20000, 3, 0, 3) + b"ab\0"
    value = t.decode(pair, data)
    assert value.a == value.b == b"ab"
    with pytest.raises(NdrError, match="reused"):
        other = t.Struct("P2", [t.Field("a", t.full(text)), t.Field("b", t.full(t.U32))], Pair)
        t.decode(other, data)


class Pair:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __eq__(self, other):
        return (self.a, self.b) == (other.a, other.b)


def test_encapsulated_union_round_trips():
    u = t.Union("U", t.U16, {1: t.U32, 2: None, 3: t.unique(t.String(wide=True))},
                encapsulated=True)  # fmt: skip
    for value in ([1, 9], [2, None], [3, "x"], [3, None]):
        assert t.decode(u, t.encode(u, tuple(value))) == value
    with pytest.raises(NdrError):
        t.decode(u, struct.pack("<HHI", 4, 0, 0))


def test_encoding_checks_ranges():
    with pytest.raises(ValueError, match="range"):
        t.encode(n.PropertyRowSet_r, [n.PropertyRow([])] * 100001)
    with pytest.raises(ValueError):
        t.encode(n.PropertyValue_r, n.PropertyValue(0x39000005, 1.0))
