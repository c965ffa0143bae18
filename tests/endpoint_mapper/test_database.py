"""The endpoint database: registration, ept_lookup selection and ept_map matching."""

from __future__ import annotations

import uuid

import pytest

from dcerpc.syntax import NDR, NDR64, NIL_UUID, SyntaxId
from endpoint_mapper.database import (
    EndpointDatabase,
    EndpointEntry,
    InquiryType,
    VersionOption,
    version_matches,
)
from endpoint_mapper.towers import Floor, Tower

A = "11111111-2222-3333-4444-555555555555"
B = "99999999-8888-7777-6666-555555555555"
OBJ = uuid.UUID("0bad0bad-0000-0000-0000-000000000001")


def iface(text: str = A, major: int = 1, minor: int = 0) -> SyntaxId:
    return SyntaxId.parse(text, major, minor)


def test_register_lookup_all_and_unregister():
    db = EndpointDatabase()
    t1 = Tower.tcp(iface(), "0.0.0.0", 1000)
    t2 = Tower.http(iface(), "0.0.0.0", 593)
    h1 = db.register(iface(), [t1, t2], "store")
    h2 = db.register(iface(B), [Tower.tcp(iface(B), "0.0.0.0", 2000)], object_uuid=OBJ)
    assert h1 != h2
    assert len(db) == 3
    assert db.lookup() == [
        EndpointEntry(NIL_UUID, t1, "store"),
        EndpointEntry(NIL_UUID, t2, "store"),
        EndpointEntry(OBJ, Tower.tcp(iface(B), "0.0.0.0", 2000), ""),
    ]
    assert db.unregister(h1)
    assert not db.unregister(h1)
    assert [e.interface for e in db.lookup()] == [iface(B)]


@pytest.mark.parametrize(
    ("towers", "annotation"),
    [
        ([], ""),
        ([Tower.tcp(iface(B), "0.0.0.0", 1)], ""),  # tower for another interface
        ([Tower.tcp(iface(), "0.0.0.0", 1)], "x" * 64),  # 64 + NUL > 64
        ([Tower.tcp(iface(), "0.0.0.0", 1)], "caf\u00e9"),  # not ASCII
        ([Tower((Floor.for_syntax(iface()),) + (Floor(b"\x01", b""),) * 16)], ""),
    ],
)
def test_register_rejects_bad_registrations(towers, annotation):
    with pytest.raises(ValueError):
        EndpointDatabase().register(iface(), towers, annotation)


def test_annotation_of_63_characters_fits():
    db = EndpointDatabase()
    db.register(iface(), [Tower.tcp(iface(), "0.0.0.0", 1)], "x" * 63)
    assert db.lookup()[0].annotation == "x" * 63


def test_database_is_bounded():
    db = EndpointDatabase(max_entries=2)
    db.register(iface(), [Tower.tcp(iface(), "0.0.0.0", 1)] * 2)
    with pytest.raises(ValueError):
        db.register(iface(), [Tower.tcp(iface(), "0.0.0.0", 2)])


@pytest.mark.parametrize(
    ("registered", "requested", "option", "expected"),
    [
        ((1, 5), (1, 3), VersionOption.ALL, True),
        ((2, 0), (1, 3), VersionOption.ALL, True),
        ((1, 5), (1, 3), VersionOption.COMPATIBLE, True),
        ((1, 3), (1, 3), VersionOption.COMPATIBLE, True),
        ((1, 2), (1, 3), VersionOption.COMPATIBLE, False),
        ((2, 9), (1, 3), VersionOption.COMPATIBLE, False),
        ((1, 3), (1, 3), VersionOption.EXACT, True),
        ((1, 4), (1, 3), VersionOption.EXACT, False),
        ((1, 0), (1, 3), VersionOption.MAJOR_ONLY, True),
        ((2, 3), (1, 3), VersionOption.MAJOR_ONLY, False),
        ((1, 3), (1, 3), VersionOption.UPTO, True),
        ((0, 9), (1, 3), VersionOption.UPTO, True),
        ((1, 4), (1, 3), VersionOption.UPTO, False),
        ((1, 3), (1, 3), 0, False),  # Samba's off-by-one value: not an option
        ((1, 3), (1, 3), 6, False),
    ],
)
def test_version_options(registered, requested, option, expected):
    assert version_matches(iface(A, *registered), iface(A, *requested), option) is expected
    # a different UUID never matches
    assert not version_matches(iface(B, *registered), iface(A, *requested), option)


@pytest.fixture
def db() -> EndpointDatabase:
    db = EndpointDatabase()
    db.register(iface(A, 1, 5), [Tower.tcp(iface(A, 1, 5), "0.0.0.0", 1001)], "a15")
    db.register(iface(A, 2, 0), [Tower.tcp(iface(A, 2, 0), "0.0.0.0", 1002)], "a20")
    db.register(
        iface(B, 1, 0), [Tower.tcp(iface(B, 1, 0), "0.0.0.0", 1003)], "b-obj", object_uuid=OBJ
    )
    db.register(iface(B, 1, 0), [Tower.http(iface(B, 1, 0), "0.0.0.0", 593)], "b-http")
    return db


def annotations(entries: list[EndpointEntry]) -> list[str]:
    return [e.annotation for e in entries]


def test_lookup_by_inquiry_type(db):
    assert annotations(db.lookup(InquiryType.ALL_ELTS, interface=iface(B))) == [
        "a15",
        "a20",
        "b-obj",
        "b-http",
    ]
    assert annotations(
        db.lookup(
            InquiryType.MATCH_BY_IF, interface=iface(A, 1, 0), vers_option=VersionOption.MAJOR_ONLY
        )
    ) == ["a15"]
    assert annotations(db.lookup(InquiryType.MATCH_BY_IF, interface=iface(A))) == ["a15", "a20"]
    assert annotations(db.lookup(InquiryType.MATCH_BY_OBJ, object_uuid=OBJ)) == ["b-obj"]
    # a NULL object counts as the nil UUID
    assert annotations(db.lookup(InquiryType.MATCH_BY_OBJ)) == ["a15", "a20", "b-http"]
    assert annotations(
        db.lookup(InquiryType.MATCH_BY_BOTH, object_uuid=OBJ, interface=iface(B))
    ) == ["b-obj"]
    assert db.lookup(InquiryType.MATCH_BY_BOTH, object_uuid=OBJ, interface=iface(A)) == []
    assert db.lookup(InquiryType.MATCH_BY_IF) == []  # no interface given
    assert db.lookup(7) == []


def test_map_matches_uuid_major_and_minor_at_least(db):
    found = db.map(Tower.tcp(iface(A, 1, 3), "0.0.0.0", 0))
    assert [e.tower.port for e in found] == [1001]
    assert db.map(Tower.tcp(iface(A, 1, 6), "0.0.0.0", 0)) == []  # registered minor too old
    assert [e.tower.port for e in db.map(Tower.tcp(iface(A, 2, 0), "0.0.0.0", 0))] == [1002]
    assert db.map(Tower.tcp(iface(A, 3, 0), "0.0.0.0", 0)) == []


def test_map_matches_transfer_syntax_and_protocol(db):
    assert db.map(Tower.tcp(iface(A, 1, 0), "0.0.0.0", 0, transfer=NDR64)) == []
    assert db.map(Tower.http(iface(A, 1, 0), "0.0.0.0", 0)) == []
    http = db.map(Tower.http(iface(B), "0.0.0.0", 0))
    assert [(e.tower.protocol, e.tower.port) for e in http] == [("ncacn_http", 593)]
    short = Tower((Floor.for_syntax(iface(A)), Floor.for_syntax(NDR)))
    assert db.map(short) == []
    no_uuid_floor = Tower(
        (Floor(b"\x01", b""), Floor.for_syntax(NDR), Floor(b"\x0b", b""), Floor(b"\x07", b"\0\0"))
    )
    assert db.map(no_uuid_floor) == []


def test_map_object_preference(db):
    query = Tower.tcp(iface(B), "0.0.0.0", 0)
    assert annotations(db.map(query, OBJ)) == ["b-obj"]
    other = uuid.UUID(int=5)
    db.register(iface(B), [Tower.tcp(iface(B), "0.0.0.0", 1004)], "b-nil")
    assert annotations(db.map(query, other)) == ["b-nil"]  # falls back to nil-object entries
    assert annotations(db.map(query)) == ["b-obj", "b-nil"]
    assert annotations(db.map(query, NIL_UUID)) == ["b-obj", "b-nil"]


def test_ndr_constant_is_floor_two():
    assert Tower.tcp(iface(), "0.0.0.0", 1).transfer_syntax == NDR
