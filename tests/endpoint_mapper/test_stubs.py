"""EPM and mgmt stubs, byte-level against impacket's NDRCALL classes both ways, plus
big-endian input, round trips and fuzzing (values or NdrError only)."""

from __future__ import annotations

import contextlib
import socket
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import epm, mgmt
from impacket.dcerpc.v5.ndr import NULL

from dcerpc.errors import NdrError
from dcerpc.ndr import NULL_HANDLE, ContextHandle
from dcerpc.syntax import NDR, NIL_UUID, SyntaxId
from endpoint_mapper import stubs
from endpoint_mapper.database import EndpointEntry
from endpoint_mapper.stubs import (
    EPM_SYNTAX,
    EPT_S_NOT_REGISTERED,
    MGMT_SYNTAX,
    InqIfIdsResponse,
    LookupRequest,
    LookupResponse,
    MapRequest,
    MapResponse,
)
from endpoint_mapper.towers import Floor, Tower

STORE = SyntaxId.parse("12345678-1234-abcd-ef00-0123456789ab", 1, 2)
OBJ = uuid.UUID("0bad0bad-1111-2222-3333-444455556666")
HANDLE = ContextHandle(0, uuid.UUID("cafef00d-0000-4000-8000-000000000001"))


def imp_handle(handle: ContextHandle) -> epm.ept_lookup_handle_t:
    h = epm.ept_lookup_handle_t()
    h["context_handle_attributes"] = handle.attributes
    h["context_handle_uuid"] = handle.uuid.bytes_le
    return h


def our_handle(h) -> ContextHandle:
    return ContextHandle(
        h["context_handle_attributes"], uuid.UUID(bytes_le=h["context_handle_uuid"])
    )


# -- ept_lookup request -------------------------------------------------------


def test_impacket_lookup_request_all_null():
    req = epm.ept_lookup()
    req["inquiry_type"] = epm.RPC_C_EP_ALL_ELTS
    req["object"] = NULL
    req["Ifid"] = NULL
    req["vers_option"] = epm.RPC_C_VERS_ALL
    req["entry_handle"] = epm.ept_lookup_handle_t()
    req["max_ents"] = 500
    data = req.getData()
    assert len(data) == 40
    assert stubs.decode_lookup_request(data) == LookupRequest(0, None, None, 1, NULL_HANDLE, 500)
    assert stubs.encode_lookup_request(LookupRequest()) == data


def impacket_lookup_by_both() -> bytes:
    req = epm.ept_lookup()
    req["inquiry_type"] = 3
    req["object"] = OBJ.bytes_le
    req["Ifid"]["Uuid"] = STORE.uuid.bytes_le
    req["Ifid"]["VersMajor"] = STORE.major
    req["Ifid"]["VersMinor"] = STORE.minor
    req["vers_option"] = epm.RPC_C_VERS_COMPATIBLE
    req["entry_handle"] = imp_handle(HANDLE)
    req["max_ents"] = 10
    req.fields["object"].fields["ReferentID"] = 1
    req.fields["Ifid"].fields["ReferentID"] = 2
    return req.getData()


def test_impacket_lookup_request_with_object_interface_and_handle():
    data = impacket_lookup_by_both()
    expected = LookupRequest(3, OBJ, STORE, 2, HANDLE, 10)
    assert stubs.decode_lookup_request(data) == expected
    assert stubs.encode_lookup_request(expected) == data  # byte-exact (same referent ids)


def test_big_endian_lookup_request():
    data = (
        struct.pack(">II", 1, 0)
        + struct.pack(">I", 0x20000)
        + STORE.encode(">")
        + struct.pack(">II", 3, 0)
        + HANDLE.uuid.bytes
        + struct.pack(">I", 7)
    )
    assert stubs.decode_lookup_request(data, ">") == LookupRequest(1, None, STORE, 3, HANDLE, 7)


# -- ept_lookup response ------------------------------------------------------


def entries() -> tuple[EndpointEntry, ...]:
    return (
        EndpointEntry(NIL_UUID, Tower.tcp(STORE, "10.0.0.5", 49152), "Store service"),
        EndpointEntry(OBJ, Tower.http(STORE, "10.0.0.5", 593), ""),
        EndpointEntry(NIL_UUID, Tower.tcp(EPM_SYNTAX, "127.0.0.1", 135), "x" * 63),
    )


def test_lookup_response_parses_with_impacket():
    data = stubs.encode_lookup_response(LookupResponse(HANDLE, entries(), 0, 500))
    resp = epm.ept_lookupResponse(data)
    assert our_handle(resp["entry_handle"]) == HANDLE
    assert resp["num_ents"] == 3
    assert resp["status"] == 0
    got = []
    for entry in resp["entries"]:
        tower = epm.EPMTower(b"".join(entry["tower"]["tower_octet_string"]))
        got.append(
            (
                uuid.UUID(bytes_le=entry["object"]),
                b"".join(entry["annotation"]),
                entry["tower"]["tower_length"],
                str(tower["Floors"][0]),
                epm.PrintStringBinding(tower["Floors"]),
            )
        )
    assert got == [
        (
            NIL_UUID,
            b"Store service\x00",
            75,
            f"{str(STORE.uuid).upper()} v1.2",
            "ncacn_ip_tcp:10.0.0.5[49152]",
        ),
        (OBJ, b"\x00", 75, f"{str(STORE.uuid).upper()} v1.2", "ncacn_http:10.0.0.5[593]"),
        (
            NIL_UUID,
            b"x" * 63 + b"\x00",
            75,
            "E1AF8308-5D1F-11C9-91A4-08002B14A0FA v3.0",
            "ncacn_ip_tcp:127.0.0.1[135]",
        ),
    ]
    # the array's max_count is the request's max_ents (impacket checks nothing here)
    assert struct.unpack_from("<4I", data, 20) == (3, 500, 0, 3)


def test_empty_lookup_response_layout():
    data = stubs.encode_lookup_response(LookupResponse(NULL_HANDLE, (), EPT_S_NOT_REGISTERED, 500))
    assert data == bytes(20) + struct.pack("<5I", 0, 500, 0, 0, EPT_S_NOT_REGISTERED)
    resp = epm.ept_lookupResponse(data)
    assert resp["entry_handle"].isNull()
    assert resp["num_ents"] == 0
    assert resp["status"] == EPT_S_NOT_REGISTERED


def test_lookup_response_round_trip():
    resp = LookupResponse(HANDLE, entries(), 0, 4)
    assert stubs.decode_lookup_response(stubs.encode_lookup_response(resp)) == resp


def test_lookup_response_decoder_drops_null_towers_and_checks_counts():
    one = stubs.encode_lookup_response(LookupResponse(NULL_HANDLE, entries()[:1], 0, 1))
    # NULL the tower referent: the entry is dropped and no tower is expected
    ref_at = 20 + 16 + 16
    annotation = one[ref_at + 4 : ref_at + 8 + 4 + 14]  # offset, count, "Store service\0"
    nulled = one[:ref_at] + bytes(4) + annotation + bytes(2) + struct.pack("<I", 0)
    assert stubs.decode_lookup_response(nulled).entries == ()
    with pytest.raises(NdrError):  # num_ents disagrees with actual_count
        stubs.decode_lookup_response(one[:20] + struct.pack("<I", 2) + one[24:])
    with pytest.raises(NdrError):
        stubs.decode_lookup_response(one[:-5])


# -- ept_map ------------------------------------------------------------------


def impacket_map(tower_octets: bytes, max_towers: int = 4) -> bytes:
    """ept_map exactly as impacket's hept_map builds it (referent ids 1 and 2)."""
    req = epm.ept_map()
    req["obj"] = NIL_UUID.bytes_le
    req["max_towers"] = max_towers
    req["map_tower"]["tower_length"] = len(tower_octets)
    req["map_tower"]["tower_octet_string"] = tower_octets
    req.fields["obj"].fields["ReferentID"] = 1
    req.fields["map_tower"].fields["ReferentID"] = 2
    return req.getData()


def test_impacket_map_request_decodes_and_matches_our_bytes():
    query = Tower.tcp(STORE, "0.0.0.0", 0)
    data = impacket_map(query.encode())
    assert len(data) == 132
    req = stubs.decode_map_request(data)
    assert req == MapRequest(NIL_UUID, query, NULL_HANDLE, 4)
    assert req.tower is not None and req.tower.protocol == "ncacn_ip_tcp"
    # byte-exact but for the pad byte after the tower, which impacket fills with 0xAB
    assert data[107] == 0xAB
    assert stubs.encode_map_request(req) == data[:107] + b"\x00" + data[108:]


def test_impacket_map_request_with_named_pipe_tower():
    pipe = Tower(
        (
            Floor.for_syntax(STORE),
            Floor.for_syntax(NDR),
            Floor(b"\x0b", b"\0\0"),
            Floor(b"\x0f", b"\x00"),
            Floor(b"\x11", b"127.0.0.1\x00"),
        )
    )
    req = stubs.decode_map_request(impacket_map(pipe.encode(), 1))
    assert req.tower == pipe
    assert req.tower.protocol == "ncacn_np"
    assert req.max_towers == 1


def test_map_request_with_null_pointers():
    data = stubs.encode_map_request(MapRequest(None, None, HANDLE, 2))
    assert data == bytes(8) + struct.pack("<I", 0) + HANDLE.uuid.bytes_le + struct.pack("<I", 2)
    assert stubs.decode_map_request(data) == MapRequest(None, None, HANDLE, 2)


def test_map_response_parses_with_impacket():
    towers = (Tower.tcp(STORE, "192.168.1.20", 49666), Tower.http(STORE, "192.168.1.20", 593))
    data = stubs.encode_map_response(MapResponse(NULL_HANDLE, towers, 0, 4))
    resp = epm.ept_mapResponse(data)
    assert resp["entry_handle"].isNull()
    assert resp["num_towers"] == 2
    assert resp["status"] == 0
    bindings = [
        epm.PrintStringBinding(epm.EPMTower(b"".join(t["Data"]["tower_octet_string"]))["Floors"])
        for t in resp["ITowers"]
    ]
    assert bindings == ["ncacn_ip_tcp:192.168.1.20[49666]", "ncacn_http:192.168.1.20[593]"]
    port_floor = epm.EPMTower(b"".join(resp["ITowers"][0]["Data"]["tower_octet_string"]))
    assert epm.EPMPortAddr(port_floor["Floors"][3].getData())["IpPort"] == 49666
    assert stubs.decode_map_response(data) == MapResponse(NULL_HANDLE, towers, 0, 4)


def test_empty_map_response():
    data = stubs.encode_map_response(MapResponse(NULL_HANDLE, (), EPT_S_NOT_REGISTERED, 4))
    assert data == bytes(20) + struct.pack("<5I", 0, 4, 0, 0, EPT_S_NOT_REGISTERED)
    assert epm.ept_mapResponse(data)["status"] == EPT_S_NOT_REGISTERED


def test_twr_length_must_equal_its_max_count():
    data = bytearray(impacket_map(Tower.tcp(STORE, "0.0.0.0", 0).encode()))
    struct.pack_into("<I", data, 24, 74)  # tower_length after max_count (at 20)
    with pytest.raises(NdrError):
        stubs.decode_map_request(bytes(data))


# -- handle free, fixed-status answers ---------------------------------------


def test_handle_free_layouts():
    assert stubs.encode_handle_free_request(HANDLE) == bytes(4) + HANDLE.uuid.bytes_le
    assert stubs.decode_handle_free_request(bytes(4) + HANDLE.uuid.bytes_le) == HANDLE
    data = stubs.encode_handle_response(NULL_HANDLE, 0)
    assert data == bytes(24)
    assert stubs.decode_handle_response(data) == (NULL_HANDLE, 0)
    assert stubs.encode_status(0x6D8) == b"\xd8\x06\x00\x00"
    assert stubs.encode_inq_object_response(NIL_UUID, 0x6D8) == bytes(16) + b"\xd8\x06\x00\x00"


# -- mgmt ---------------------------------------------------------------------


def test_inq_if_ids_response_parses_with_impacket():
    data = stubs.encode_inq_if_ids_response(InqIfIdsResponse((EPM_SYNTAX, MGMT_SYNTAX, STORE)))
    resp = mgmt.inq_if_idsResponse(data)
    assert resp["status"] == 0
    vector = resp["if_id_vector"]
    assert vector["count"] == 3
    got = [(uuid.UUID(bytes_le=i["Uuid"]), i["VersMajor"], i["VersMinor"]) for i in vector["if_id"]]
    assert got == [(s.uuid, s.major, s.minor) for s in (EPM_SYNTAX, MGMT_SYNTAX, STORE)]
    assert stubs.decode_inq_if_ids_response(data) == InqIfIdsResponse(
        (EPM_SYNTAX, MGMT_SYNTAX, STORE), 0
    )


def test_inq_if_ids_empty_and_count_mismatch():
    empty = stubs.encode_inq_if_ids_response(InqIfIdsResponse(()))
    assert empty == struct.pack("<4I", 1, 0, 0, 0)
    assert mgmt.inq_if_idsResponse(empty)["if_id_vector"]["count"] == 0
    with pytest.raises(NdrError):
        stubs.decode_inq_if_ids_response(struct.pack("<4I", 1, 1, 0, 0))
    assert stubs.decode_inq_if_ids_response(struct.pack("<2I", 0, 5)) == InqIfIdsResponse((), 5)


def test_inq_stats_request_and_response_with_impacket():
    req = mgmt.inq_stats()
    req["count"] = 4
    assert stubs.decode_inq_stats_request(req.getData()) == 4
    data = stubs.encode_inq_stats_response((10, 11, 12, 13), 0)
    resp = mgmt.inq_statsResponse(data)
    assert resp["count"] == 4
    assert list(resp["statistics"]) == [10, 11, 12, 13]
    assert resp["status"] == 0


def test_is_server_listening_and_stop_responses():
    data = stubs.encode_is_server_listening_response(True, 0)
    assert data == struct.pack("<2I", 0, 1)  # [out] status, then the boolean32 result
    assert mgmt.is_server_listeningResponse(data)["status"] == 0
    stop = stubs.encode_status(stubs.ERROR_ACCESS_DENIED)
    assert mgmt.stop_server_listeningResponse(stop)["status"] == 5


def test_inq_princ_name_with_impacket():
    req = mgmt.inq_princ_name()
    req["authn_proto"] = 9
    req["princ_name_size"] = 6
    assert stubs.decode_inq_princ_name_request(req.getData()) == stubs.InqPrincNameRequest(9, 6)
    data = stubs.encode_inq_princ_name_response("host/server.example", 6, 0)
    assert data == struct.pack("<3I", 6, 0, 6) + b"host/\x00" + bytes(2) + bytes(4)
    resp = mgmt.inq_princ_nameResponse(data)
    assert b"".join(resp["princ_name"]) == b"host/\x00"
    assert resp["status"] == 0
    none = stubs.encode_inq_princ_name_response("", 0, stubs.RPC_S_UNKNOWN_AUTHN_SERVICE)
    assert none == struct.pack("<4I", 0, 0, 0, 0x6D3)
    assert mgmt.inq_princ_nameResponse(none)["status"] == 0x6D3


# -- fuzzing ------------------------------------------------------------------

DECODERS = [
    stubs.decode_lookup_request,
    stubs.decode_lookup_response,
    stubs.decode_map_request,
    stubs.decode_map_response,
    stubs.decode_handle_free_request,
    stubs.decode_handle_response,
    stubs.decode_inq_if_ids_response,
    stubs.decode_inq_stats_request,
    stubs.decode_inq_princ_name_request,
]
SEEDS = [
    impacket_lookup_by_both(),
    stubs.encode_lookup_response(LookupResponse(HANDLE, entries(), 0, 500)),
    impacket_map(Tower.tcp(STORE, "0.0.0.0", 0).encode()),
    stubs.encode_map_response(MapResponse(NULL_HANDLE, (Tower.tcp(STORE, "1.2.3.4", 5),), 0, 4)),
    stubs.encode_inq_if_ids_response(InqIfIdsResponse((STORE, NDR))),
]


def mutate(seed: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    return bytes(data[: max(0, len(data) - cut)])


inputs = st.one_of(
    st.binary(max_size=300),
    st.builds(
        mutate,
        st.sampled_from(SEEDS),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
        st.integers(0, 8),
    ),
)


@settings(max_examples=500, deadline=None)
@given(data=inputs, decoder=st.sampled_from(DECODERS), order=st.sampled_from(["<", ">"]))
def test_fuzz_decoders_give_values_or_ndr_error(data, decoder, order):
    with contextlib.suppress(NdrError):
        decoder(data, order)


syntaxes = st.builds(SyntaxId, st.uuids(), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
ips = st.builds(socket.inet_ntoa, st.binary(min_size=4, max_size=4))
towers = st.builds(Tower.tcp, syntaxes, ips, st.integers(0, 0xFFFF))
handles = st.builds(ContextHandle, st.integers(0, 2**32 - 1), st.uuids())
annotations = st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=63)


@settings(max_examples=100, deadline=None)
@given(
    handle=handles,
    ents=st.lists(st.builds(EndpointEntry, st.uuids(), towers, annotations), max_size=8),
    status=st.integers(0, 2**32 - 1),
)
def test_round_trips(handle, ents, status):
    lookup = LookupResponse(handle, tuple(ents), status, 500)
    assert stubs.decode_lookup_response(stubs.encode_lookup_response(lookup)) == lookup
    mapped = MapResponse(handle, tuple(e.tower for e in ents), status, 8)
    assert stubs.decode_map_response(stubs.encode_map_response(mapped)) == mapped
    ids = InqIfIdsResponse(tuple(e.tower.interface for e in ents), status)
    assert stubs.decode_inq_if_ids_response(stubs.encode_inq_if_ids_response(ids)) == ids
    if ents:
        req = MapRequest(ents[0].object_uuid, ents[0].tower, handle, status)
        assert stubs.decode_map_request(stubs.encode_map_request(req)) == req


def test_response_full_pointers_follow_the_request_ones():
    """[ptr] referent ids are per call: the request's object (1) and tower (2) come
    first, so the response's tower pointer is 3 (as Windows answers, and as Wireshark
    expects: a reused id makes it skip the tower)."""
    tower = Tower.tcp(EPM_SYNTAX, "127.0.0.1", 1135)
    req = stubs.MapRequest(uuid.UUID(int=0), tower)
    assert req.next_referent == 3
    assert stubs.LookupRequest().next_referent == 1
    data = stubs.encode_map_response(
        stubs.MapResponse(NULL_HANDLE, (tower,), 0, 4, req.next_referent)
    )
    # handle(20) num(4) max_count(4) offset(4) actual(4), then the tower's referent id
    assert struct.unpack_from("<I", data, 36)[0] == 3
