"""Errors, property tags, property values and entry ids."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.entryid import EntryKind, make_entryid, parse_entryid
from mapi.model.limits import Limits
from mapi.model.properties import (
    datetime_from_filetime,
    filetime_from_datetime,
    pack_props,
    sort_key,
    unpack_props,
    validate,
)

SMALL = Limits(max_value_bytes=64, inline_value_bytes=16, max_mv_values=4)


def test_error_codes_match_ms_oxcdata() -> None:
    assert errors.NotFound().hresult == 0x8004010F
    assert errors.NoAccess().hresult == 0x80070005
    assert errors.InvalidParameter().hresult == 0x80070057
    assert errors.Computed().hresult == 0x8004011A
    assert errors.Collision().hresult == 0x80040604
    assert errors.FolderCycle().hresult == 0x8004060B
    assert errors.HasFolders().hresult == 0x80040609
    assert errors.HasMessages().hresult == 0x8004060A
    assert errors.InvalidBookmark().hresult == 0x80040405
    assert errors.UnknownEntryId().hresult == 0x80040201
    assert errors.NotInitialized().hresult == 0x80040605
    assert errors.MAPI_W_ERRORS_RETURNED == 0x00040380


def test_error_for_maps_codes_and_keeps_unknown_ones() -> None:
    exc = errors.error_for(0x8004010F, "x")
    assert isinstance(exc, errors.NotFound) and exc.hresult == 0x8004010F
    unknown = errors.error_for(0x8BADF00D)
    assert type(unknown) is errors.MapiError and unknown.hresult == 0x8BADF00D
    assert "0x8BADF00D" in str(unknown)
    with pytest.raises(ValueError):
        errors.MapiError(0x00040380)  # a warning is not an error


def test_tag_values_from_ms_oxprops() -> None:
    assert pt.PR_SUBJECT == pt.PR_SUBJECT_W == 0x0037001F
    assert pt.PR_MESSAGE_DELIVERY_TIME == 0x0E060040
    assert pt.PR_BODY_W == 0x1000001F
    assert pt.PR_ENTRYID == 0x0FFF0102
    assert pt.PR_CHANGE_KEY == 0x65E20102
    assert pt.PR_FOLDER_CHILD_COUNT == 0x66380003
    assert pt.PR_ATTACH_DATA_BIN == 0x37010102
    assert pt.PR_RECIPIENT_TYPE == 0x0C150003


def test_every_tag_name_round_trips() -> None:
    for tag, name in pt.TAG_NAMES.items():
        assert pt.tag_from_name(name) == tag
        assert pt.tag_name(tag) == name
    assert pt.tag_name(0x0037001E) == "PR_SUBJECT_A"
    assert pt.tag_from_name("PR_SUBJECT_A") == 0x0037001E
    assert pt.tag_from_name("PR_SUBJECT") == pt.PR_SUBJECT_W
    assert pt.tag_name(0x12340003) == "0x12340003"
    with pytest.raises(KeyError):
        pt.tag_from_name("PR_NO_SUCH_THING")


@given(st.integers(0, 0xFFFFFFFF))
def test_any_tag_round_trips_through_its_name(tag: int) -> None:
    assert pt.tag_from_name(pt.tag_name(tag)) == tag


@pytest.mark.parametrize(
    ("tag", "value", "exc"),
    [
        (pt.PR_IMPORTANCE, 1 << 31, errors.InvalidParameter),
        (pt.PR_IMPORTANCE, True, errors.InvalidParameter),
        (pt.PR_IMPORTANCE, "1", errors.InvalidParameter),
        (0x66010002, 40000, errors.InvalidParameter),
        (pt.PR_HASATTACH, 1, errors.InvalidParameter),
        (pt.PR_SUBJECT_W, "a\x00b", errors.InvalidParameter),
        (pt.PR_SUBJECT_W, "\ud800", errors.InvalidParameter),
        (pt.PR_SUBJECT_W, "x" * 33, errors.StringTooLong),
        (pt.PR_ENTRYID, b"x" * 65, errors.TooBig),
        (0x66020048, b"short", errors.InvalidParameter),
        (0x66030004, 1e300, errors.InvalidParameter),
        (0x66040005, math.nan, errors.InvalidParameter),
        (pt.PR_CREATION_TIME, -1, errors.InvalidParameter),
        (0x6605101F, ["a"] * 5, errors.TooBig),
        (0x6605101F, "not a list", errors.InvalidParameter),
        (0x6606000A, 5, errors.InvalidType),
        (0x6607000D, None, errors.InvalidType),
        (0x0000001F, "x", errors.InvalidParameter),
        (0x6608100B, [True], errors.InvalidType),
    ],
)
def test_validate_rejects(tag: int, value: object, exc: type[errors.MapiError]) -> None:
    with pytest.raises(exc):
        validate(tag, value, SMALL)


def test_validate_normalises() -> None:
    assert validate(0x66030004, 0.1, SMALL) == pytest.approx(0.1, rel=1e-7)
    assert validate(0x66030004, 0.1, SMALL) != 0.1  # rounded to binary32
    assert validate(0x66040005, 3, SMALL) == 3.0
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    ticks = validate(pt.PR_CREATION_TIME, when, SMALL)
    assert ticks == filetime_from_datetime(when)
    assert isinstance(ticks, int)
    assert datetime_from_filetime(ticks) == when
    assert validate(0x66090102, bytearray(b"ab"), SMALL) == b"ab"
    assert validate(0x66051003, (1, 2), SMALL) == [1, 2]


_SCALARS = {
    pt.PropType.PT_SHORT: st.integers(-(1 << 15), (1 << 15) - 1),
    pt.PropType.PT_LONG: st.integers(-(1 << 31), (1 << 31) - 1),
    pt.PropType.PT_I8: st.integers(-(1 << 63), (1 << 63) - 1),
    pt.PropType.PT_DOUBLE: st.floats(allow_nan=False),
    pt.PropType.PT_BOOLEAN: st.booleans(),
    pt.PropType.PT_UNICODE: st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
    ),
    pt.PropType.PT_BINARY: st.binary(max_size=40),
    pt.PropType.PT_SYSTIME: st.integers(0, (1 << 63) - 1),
    pt.PropType.PT_CLSID: st.binary(min_size=16, max_size=16),
}


@given(st.sampled_from(sorted(_SCALARS)).flatmap(lambda t: st.tuples(st.just(t), _SCALARS[t])))
def test_valid_values_are_accepted_unchanged_and_survive_storage(item: tuple[int, object]) -> None:
    ptype, value = item
    tag = pt.make_tag(0x6700, ptype)
    clean = validate(tag, value, Limits())
    assert clean == value
    assert unpack_props(pack_props({tag: clean})) == {tag: clean}


@given(st.one_of(st.none(), st.floats(), st.text(), st.binary(), st.lists(st.integers())))
def test_wrong_kinds_never_pass_as_long(value: object) -> None:
    with pytest.raises(errors.MapiError):
        validate(pt.PR_IMPORTANCE, value, Limits())


def test_sort_key_orders_like_sqlite_nocase() -> None:
    values = [None, "b", "A", "a", "B", "é"]
    ordered = sorted(values, key=sort_key)
    assert ordered[0] is None
    assert [v.lower() for v in ordered[1:5] if isinstance(v, str)] == ["a", "a", "b", "b"]
    assert ordered[-1] == "é"


def test_entryid_round_trip_and_rejection() -> None:
    uid = bytes(range(16))
    eid = make_entryid(uid, EntryKind.MESSAGE, 42)
    assert len(eid) == 30
    parsed = parse_entryid(eid)
    assert (parsed.provider_uid, parsed.kind, parsed.object_id) == (uid, EntryKind.MESSAGE, 42)
    assert parsed.to_bytes() == eid
    for bad in (eid[:-1], b"\x01" + eid[1:], eid[:20] + b"\x99\x99" + eid[22:], "text"):
        with pytest.raises(errors.InvalidEntryId):
            parse_entryid(bad)


def test_limits_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Limits(max_columns=0)
    with pytest.raises(ValueError):
        Limits(inline_value_bytes=10, max_value_bytes=5)
