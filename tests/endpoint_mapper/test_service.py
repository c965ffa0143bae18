"""EPM and mgmt handlers called directly with a CallContext (requests built by impacket,
responses parsed by impacket), the client helpers over an in-process RpcCaller, and an
end-to-end run over loopback TCP with our runtime, our client and impacket's."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest
import trio
from impacket.dcerpc.v5 import epm, mgmt
from impacket.dcerpc.v5 import transport as imp_transport
from impacket.dcerpc.v5.ndr import NULL
from impacket.uuid import uuidtup_to_bin

import endpoint_mapper.client as epm_client
from dcerpc.errors import FaultStatus, NdrError, RpcFault
from dcerpc.interface import CallContext, Interface
from dcerpc.ndr import NULL_HANDLE, ContextHandle
from dcerpc.syntax import NDR, NIL_UUID, SyntaxId
from endpoint_mapper import stubs
from endpoint_mapper.client import EndpointNotRegistered, EpmError, lookup_on, map_endpoint_on
from endpoint_mapper.database import EndpointDatabase
from endpoint_mapper.service import epm_interface, mgmt_interface
from endpoint_mapper.stubs import (
    EPM_SYNTAX,
    EPT_S_CANT_PERFORM_OP,
    EPT_S_NOT_REGISTERED,
    MGMT_SYNTAX,
    LookupRequest,
    LookupResponse,
    MapRequest,
)
from endpoint_mapper.towers import Tower

STORE = SyntaxId.parse("12345678-1234-abcd-ef00-0123456789ab", 1, 2)
OTHER = SyntaxId.parse("99999999-8888-7777-6666-555555555555", 4, 0)
LOCAL = ("10.9.8.7", 135)


def make_ctx(
    opnum: int,
    state: dict[str, Any] | None = None,
    *,
    local=LOCAL,
    served: tuple[SyntaxId, ...] = (),
) -> CallContext:
    return CallContext(
        opnum=opnum,
        interface=EPM_SYNTAX,
        transfer_syntax=NDR,
        object_uuid=None,
        association_group=1,
        peer=("10.0.0.1", 50000),
        local=local,
        connection_state={} if state is None else state,
        served_interfaces=served,
    )


def store_db(count: int = 1, ip: str = "0.0.0.0") -> EndpointDatabase:
    db = EndpointDatabase(max_entries=2000)
    for i in range(count):
        db.register(STORE, [Tower.tcp(STORE, ip, 20000 + i)], f"store {i}")
    return db


def impacket_lookup(
    handle: ContextHandle = NULL_HANDLE, max_ents: int = 500, interface: SyntaxId | None = None
) -> bytes:
    req = epm.ept_lookup()
    req["inquiry_type"] = 0 if interface is None else epm.RPC_C_EP_MATCH_BY_IF
    req["object"] = NULL
    if interface is None:
        req["Ifid"] = NULL
    else:
        req["Ifid"]["Uuid"] = interface.uuid.bytes_le
        req["Ifid"]["VersMajor"] = interface.major
        req["Ifid"]["VersMinor"] = interface.minor
    req["vers_option"] = epm.RPC_C_VERS_ALL
    h = epm.ept_lookup_handle_t()
    h["context_handle_attributes"] = handle.attributes
    h["context_handle_uuid"] = handle.uuid.bytes_le
    req["entry_handle"] = h
    req["max_ents"] = max_ents
    return req.getData()


def impacket_map(
    interface: SyntaxId, protocol: int = epm.FLOOR_TCPPORT_IDENTIFIER, max_towers: int = 4
) -> bytes:
    build = Tower.http if protocol == epm.FLOOR_HTTP_IDENTIFIER else Tower.tcp
    query = build(interface, "0.0.0.0", 0).encode()
    req = epm.ept_map()
    req["obj"] = NIL_UUID.bytes_le
    req["max_towers"] = max_towers
    req["map_tower"]["tower_length"] = len(query)
    req["map_tower"]["tower_octet_string"] = query
    return req.getData()


def handle_of(resp) -> ContextHandle:
    h = resp["entry_handle"]
    return ContextHandle(
        h["context_handle_attributes"], uuid.UUID(bytes_le=h["context_handle_uuid"])
    )


def ports_of(resp) -> list[int]:
    return [
        epm.EPMPortAddr(
            epm.EPMTower(b"".join(e["tower"]["tower_octet_string"]))["Floors"][3].getData()
        )["IpPort"]
        for e in resp["entries"]
    ]


# -- ept_lookup ---------------------------------------------------------------


async def test_lookup_iterates_in_batches_and_ends_with_status_0_and_null_handle():
    iface = epm_interface(store_db(1200))
    state: dict[str, Any] = {}
    handle, seen, batches = NULL_HANDLE, [], []
    for _ in range(5):
        reply = await iface.handler(make_ctx(2, state), impacket_lookup(handle))
        resp = epm.ept_lookupResponse(reply)
        batches.append((resp["num_ents"], resp["status"], handle_of(resp).is_null))
        seen += ports_of(resp)
        new_handle = handle_of(resp)
        if not handle.is_null and not new_handle.is_null:
            assert new_handle == handle  # the iteration keeps its handle
        handle = new_handle
        if handle.is_null:
            break
    assert batches == [(500, 0, False), (500, 0, False), (200, 0, True)]
    assert seen == list(range(20000, 21200))
    assert len(state["endpoint_mapper.iterations"]) == 0


def samba_lookup(handle: ContextHandle = NULL_HANDLE) -> bytes:
    """The stub Samba 4.17's ``rpcclient epmlookup`` sends (from a capture): inquiry
    type 0, NULL object, NULL interface, vers_option 0, the handle, max_ents 1."""
    return (
        bytes(16)
        + handle.attributes.to_bytes(4, "little")
        + handle.uuid.bytes_le
        + (b"\x01\x00\x00\x00")
    )


async def test_samba_one_at_a_time_iteration_ends_with_not_registered():
    """rpcclient epmlookup loops until the status is not 0 and starts over from the
    top on a NULL handle: every entry once, then EPT_S_NOT_REGISTERED (issue 18, 8)."""
    iface = epm_interface(store_db(3))
    state: dict[str, Any] = {}
    handle, seen, statuses, handles = NULL_HANDLE, [], [], []
    for _ in range(10):  # bounded: the bug was an endless loop
        resp = epm.ept_lookupResponse(await iface.handler(make_ctx(2, state), samba_lookup(handle)))
        statuses.append(resp["status"])
        seen += ports_of(resp)
        handle = handle_of(resp)
        handles.append(handle)
        if resp["status"] != 0:
            break
    assert seen == [20000, 20001, 20002]
    assert statuses == [0, 0, 0, EPT_S_NOT_REGISTERED]
    assert not handles[0].is_null and handles[:3] == [handles[0]] * 3
    assert handles[3] == NULL_HANDLE
    assert len(state["endpoint_mapper.iterations"]) == 0


@pytest.mark.parametrize(("count", "max_ents"), [(1000, 500), (4, 2), (1, 1)])
async def test_a_full_last_batch_keeps_the_handle_and_the_next_call_ends(count, max_ents):
    iface = epm_interface(store_db(count))
    state: dict[str, Any] = {}
    handle, seen, shapes = NULL_HANDLE, [], []
    for _ in range(count + 2):
        resp = stubs.decode_lookup_response(
            await iface.handler(make_ctx(2, state), impacket_lookup(handle, max_ents))
        )
        seen += [e.tower.port for e in resp.entries]
        shapes.append((len(resp.entries), resp.status, resp.entry_handle.is_null))
        handle = resp.entry_handle
        if handle.is_null:
            break
    batches = count // max_ents
    assert shapes == [(max_ents, 0, False)] * batches + [(0, EPT_S_NOT_REGISTERED, True)]
    assert seen == list(range(20000, 20000 + count))
    assert len(state["endpoint_mapper.iterations"]) == 0


async def test_lookup_reports_the_local_address_and_annotations():
    reply = await epm_interface(store_db(2)).handler(make_ctx(2), impacket_lookup())
    resp = epm.ept_lookupResponse(reply)
    assert resp["status"] == 0 and handle_of(resp) == NULL_HANDLE
    towers = [epm.EPMTower(b"".join(e["tower"]["tower_octet_string"])) for e in resp["entries"]]
    assert [epm.PrintStringBinding(t["Floors"]) for t in towers] == [
        "ncacn_ip_tcp:10.9.8.7[20000]",
        "ncacn_ip_tcp:10.9.8.7[20001]",
    ]
    assert [b"".join(e["annotation"]) for e in resp["entries"]] == [b"store 0\x00", b"store 1\x00"]


async def test_empty_lookup_is_not_registered_with_null_handle():
    reply = await epm_interface(EndpointDatabase()).handler(make_ctx(2), impacket_lookup())
    resp = epm.ept_lookupResponse(reply)
    assert (resp["num_ents"], resp["status"], handle_of(resp)) == (
        0,
        EPT_S_NOT_REGISTERED,
        NULL_HANDLE,
    )


async def test_lookup_by_interface():
    db = store_db(1)
    db.register(OTHER, [Tower.tcp(OTHER, "1.1.1.1", 7)], "other")
    iface = epm_interface(db)
    resp = epm.ept_lookupResponse(
        await iface.handler(make_ctx(2), impacket_lookup(interface=OTHER))
    )
    assert ports_of(resp) == [7]
    missing = SyntaxId(uuid.UUID(int=1), 1)
    resp = epm.ept_lookupResponse(
        await iface.handler(make_ctx(2), impacket_lookup(interface=missing))
    )
    assert resp["status"] == EPT_S_NOT_REGISTERED


async def test_unknown_handle_faults_with_context_mismatch():
    iface = epm_interface(store_db(3))
    bogus = ContextHandle(0, uuid.uuid4())
    with pytest.raises(RpcFault) as info:
        await iface.handler(make_ctx(2), impacket_lookup(bogus))
    assert info.value.status == FaultStatus.FAULT_CONTEXT_MISMATCH
    # a handle from another connection is unknown here too
    reply = await iface.handler(make_ctx(2, {}), impacket_lookup(max_ents=1))
    handle = stubs.decode_lookup_response(reply).entry_handle
    assert not handle.is_null
    with pytest.raises(RpcFault):
        await iface.handler(make_ctx(2, {}), impacket_lookup(handle))


async def test_open_iterations_are_bounded_oldest_dropped():
    iface = epm_interface(store_db(2), max_open_handles=4)
    state: dict[str, Any] = {}
    handles = []
    for _ in range(5):
        reply = await iface.handler(make_ctx(2, state), impacket_lookup(max_ents=1))
        handles.append(stubs.decode_lookup_response(reply).entry_handle)
    assert len(set(handles)) == 5
    assert len(state["endpoint_mapper.iterations"]) == 4
    with pytest.raises(RpcFault):
        await iface.handler(make_ctx(2, state), impacket_lookup(handles[0]))
    last = stubs.decode_lookup_response(
        await iface.handler(make_ctx(2, state), impacket_lookup(handles[4]))
    )
    assert [e.tower.port for e in last.entries] == [20001]
    # asked for 500, got 1: a short batch is the last, NULL handle and status 0
    assert last.entry_handle == NULL_HANDLE and last.status == 0
    assert len(state["endpoint_mapper.iterations"]) == 3


async def test_handle_free_closes_the_iteration():
    iface = epm_interface(store_db(3))
    state: dict[str, Any] = {}
    reply = await iface.handler(make_ctx(2, state), impacket_lookup(max_ents=1))
    handle = stubs.decode_lookup_response(reply).entry_handle
    freed = await iface.handler(make_ctx(4, state), stubs.encode_handle_free_request(handle))
    assert freed == bytes(24)  # NULL handle, status 0
    with pytest.raises(RpcFault):
        await iface.handler(make_ctx(2, state), impacket_lookup(handle))
    # freeing an unknown handle is harmless
    again = await iface.handler(make_ctx(4, state), stubs.encode_handle_free_request(handle))
    assert stubs.decode_handle_response(again) == (NULL_HANDLE, 0)


async def test_max_ents_zero_cannot_progress():
    reply = await epm_interface(store_db(1)).handler(make_ctx(2), impacket_lookup(max_ents=0))
    resp = stubs.decode_lookup_response(reply)
    assert (resp.entries, resp.entry_handle, resp.status) == (
        (),
        NULL_HANDLE,
        EPT_S_CANT_PERFORM_OP,
    )


async def test_bad_stub_raises_ndr_error():
    iface = epm_interface(store_db(1))
    for opnum, stub in [(2, impacket_lookup()[:30]), (3, b"\x01\x00\x00\x00"), (4, b"")]:
        with pytest.raises(NdrError):
            await iface.handler(make_ctx(opnum), stub)


# -- ept_map ------------------------------------------------------------------


async def test_map_returns_the_tower_with_the_reached_address():
    iface = epm_interface(store_db(1))
    resp = epm.ept_mapResponse(
        await iface.handler(make_ctx(3), impacket_map(SyntaxId(STORE.uuid, 1, 0)))
    )
    assert resp["status"] == 0 and resp["num_towers"] == 1
    assert handle_of(resp) == NULL_HANDLE
    tower = epm.EPMTower(b"".join(resp["ITowers"][0]["Data"]["tower_octet_string"]))
    assert epm.PrintStringBinding(tower["Floors"]) == "ncacn_ip_tcp:10.9.8.7[20000]"
    assert epm.EPMPortAddr(tower["Floors"][3].getData())["IpPort"] == 20000


@pytest.mark.parametrize(("local", "expected"), [(None, "0.0.0.0"), (("::1", 135), "0.0.0.0")])
async def test_map_keeps_unspecified_address_without_an_ipv4_local(local, expected):
    reply = await epm_interface(store_db(1)).handler(make_ctx(3, local=local), impacket_map(STORE))
    assert stubs.decode_map_response(reply).towers[0].address == expected


async def test_map_keeps_a_specific_registered_address():
    reply = await epm_interface(store_db(1, "192.0.2.1")).handler(make_ctx(3), impacket_map(STORE))
    assert stubs.decode_map_response(reply).towers[0].address == "192.0.2.1"


@pytest.mark.parametrize(
    "query",
    [
        impacket_map(OTHER),
        impacket_map(SyntaxId(STORE.uuid, 1, 3)),  # newer minor than registered
        impacket_map(STORE, protocol=epm.FLOOR_HTTP_IDENTIFIER),
        stubs.encode_map_request(MapRequest(None, None)),
    ],
)
async def test_map_not_registered(query):
    resp = epm.ept_mapResponse(await epm_interface(store_db(1)).handler(make_ctx(3), query))
    assert (resp["num_towers"], resp["status"], handle_of(resp)) == (
        0,
        EPT_S_NOT_REGISTERED,
        NULL_HANDLE,
    )


async def test_map_iterates_when_more_towers_than_max_towers():
    iface = epm_interface(store_db(3))
    state: dict[str, Any] = {}
    first = stubs.decode_map_response(
        await iface.handler(make_ctx(3, state), impacket_map(STORE, max_towers=2))
    )
    assert [t.port for t in first.towers] == [20000, 20001]
    assert not first.entry_handle.is_null and first.status == 0
    with pytest.raises(RpcFault):  # a map handle is not a lookup handle
        await iface.handler(make_ctx(2, {}), impacket_lookup(first.entry_handle))
    nxt = MapRequest(NIL_UUID, Tower.tcp(STORE, "0.0.0.0", 0), first.entry_handle, 2)
    second = stubs.decode_map_response(
        await iface.handler(make_ctx(3, state), stubs.encode_map_request(nxt))
    )
    assert [t.port for t in second.towers] == [20002]
    assert second.entry_handle == NULL_HANDLE and second.status == 0


async def test_map_with_a_full_last_batch_keeps_the_handle_until_not_registered():
    iface = epm_interface(store_db(2))
    state: dict[str, Any] = {}
    first = stubs.decode_map_response(
        await iface.handler(make_ctx(3, state), impacket_map(STORE, max_towers=2))
    )
    assert [t.port for t in first.towers] == [20000, 20001]
    assert not first.entry_handle.is_null and first.status == 0
    nxt = MapRequest(NIL_UUID, Tower.tcp(STORE, "0.0.0.0", 0), first.entry_handle, 2)
    end = stubs.decode_map_response(
        await iface.handler(make_ctx(3, state), stubs.encode_map_request(nxt))
    )
    assert (end.towers, end.entry_handle, end.status) == ((), NULL_HANDLE, EPT_S_NOT_REGISTERED)
    assert len(state["endpoint_mapper.iterations"]) == 0


@pytest.mark.parametrize(
    ("opnum", "expected"),
    [
        (0, b"\xd8\x06\x00\x00"),
        (1, b"\xd8\x06\x00\x00"),
        (5, bytes(16) + b"\xd8\x06\x00\x00"),
        (6, b"\xd8\x06\x00\x00"),
    ],
)
async def test_refused_operations_answer_cant_perform(opnum, expected):
    assert await epm_interface(store_db(1)).handler(make_ctx(opnum), b"anything") == expected


async def test_out_of_range_opnum_and_interface_shape():
    iface = epm_interface(EndpointDatabase())
    with pytest.raises(RpcFault) as info:
        await iface.handler(make_ctx(7), b"")
    assert info.value.status == FaultStatus.OP_RNG_ERROR
    assert (iface.syntax, iface.opnum_count, iface.transfer_syntaxes) == (EPM_SYNTAX, 7, (NDR,))
    m = mgmt_interface()
    assert (m.syntax, m.opnum_count) == (MGMT_SYNTAX, 5)
    assert str(MGMT_SYNTAX) == "afa8bd80-7d8a-11c9-bef4-08002b102989 v1.0"


# -- mgmt ---------------------------------------------------------------------


async def test_mgmt_inq_if_ids_lists_served_interfaces():
    served = (EPM_SYNTAX, MGMT_SYNTAX, STORE)
    reply = await mgmt_interface().handler(make_ctx(0, served=served), mgmt.inq_if_ids().getData())
    resp = mgmt.inq_if_idsResponse(reply)
    got = [
        SyntaxId(uuid.UUID(bytes_le=i["Uuid"]), i["VersMajor"], i["VersMinor"])
        for i in resp["if_id_vector"]["if_id"]
    ]
    assert got == list(served)
    assert resp["status"] == 0


async def test_mgmt_inq_stats():
    req = mgmt.inq_stats()
    req["count"] = 2
    resp = mgmt.inq_statsResponse(await mgmt_interface().handler(make_ctx(1), req.getData()))
    assert (resp["count"], list(resp["statistics"]), resp["status"]) == (2, [0, 0], 0)
    req["count"] = 10
    counted = mgmt_interface(statistics=lambda: (5, 6, 7, 8))
    resp = mgmt.inq_statsResponse(await counted.handler(make_ctx(1), req.getData()))
    assert (resp["count"], list(resp["statistics"])) == (4, [5, 6, 7, 8])


async def test_mgmt_listening_and_stop_refused():
    reply = await mgmt_interface().handler(make_ctx(2), b"")
    assert reply == struct.pack("<2I", 0, 1)
    reply = await mgmt_interface().handler(make_ctx(3), b"")
    assert mgmt.stop_server_listeningResponse(reply)["status"] == 5


async def test_mgmt_inq_princ_name():
    m = mgmt_interface(principal_names={9: "host/srv.example.org"})
    req = mgmt.inq_princ_name()
    req["authn_proto"] = 9
    req["princ_name_size"] = 64
    resp = mgmt.inq_princ_nameResponse(await m.handler(make_ctx(4), req.getData()))
    assert b"".join(resp["princ_name"]) == b"host/srv.example.org\x00"
    assert resp["status"] == 0
    req["authn_proto"] = 10
    resp = mgmt.inq_princ_nameResponse(await m.handler(make_ctx(4), req.getData()))
    assert b"".join(resp["princ_name"]) == b"\x00"
    assert resp["status"] == stubs.RPC_S_UNKNOWN_AUTHN_SERVICE
    with pytest.raises(NdrError):
        await m.handler(make_ctx(4), b"\x09\x00\x00\x00")
    with pytest.raises(RpcFault):
        await m.handler(make_ctx(5), b"")


# -- client helpers over an in-process caller ---------------------------------


class LocalRpc:
    """An RpcCaller that calls interface handlers directly, with one connection state."""

    def __init__(self, *interfaces: Interface) -> None:
        self.interfaces = interfaces
        self.bound: list[Interface] = []
        self.state: dict[str, Any] = {}
        self.calls: list[int] = []

    async def bind(self, syntax: SyntaxId) -> int:
        self.bound.append(next(i for i in self.interfaces if i.syntax == syntax))
        return len(self.bound) - 1

    async def call(self, ctx_id: int, opnum: int, stub: bytes) -> bytes:
        self.calls.append(opnum)
        return await self.bound[ctx_id].handler(make_ctx(opnum, self.state), stub)


async def test_lookup_on_collects_every_batch():
    rpc = LocalRpc(epm_interface(store_db(1100)))
    found = await lookup_on(rpc)
    assert [e.tower.port for e in found] == list(range(20000, 21100))
    assert found[5].annotation == "store 5"
    assert found[5].interface == STORE
    assert rpc.calls == [2, 2, 2]
    assert len(rpc.state["endpoint_mapper.iterations"]) == 0


async def test_lookup_on_ends_on_not_registered_after_a_full_last_batch():
    rpc = LocalRpc(epm_interface(store_db(1000)))
    found = await lookup_on(rpc)
    assert [e.tower.port for e in found] == list(range(20000, 21000))
    assert rpc.calls == [2, 2, 2]  # 500, 500, then EPT_S_NOT_REGISTERED: no free needed
    assert len(rpc.state["endpoint_mapper.iterations"]) == 0


async def test_lookup_on_empty():
    assert await lookup_on(LocalRpc(epm_interface(EndpointDatabase()))) == []


class ScriptedRpc:
    """Answers ept_lookup from a script of (handle, status) and records frees."""

    def __init__(self, script: list[tuple[ContextHandle, int]]) -> None:
        self.script = script
        self.freed: list[ContextHandle] = []
        self.lookups = 0

    async def bind(self, syntax: SyntaxId) -> int:
        return 0

    async def call(self, ctx_id: int, opnum: int, stub: bytes) -> bytes:
        if opnum == stubs.OP_EPT_LOOKUP_HANDLE_FREE:
            self.freed.append(stubs.decode_handle_free_request(stub))
            return stubs.encode_handle_response(NULL_HANDLE, 0)
        assert stubs.decode_lookup_request(stub) == LookupRequest(
            entry_handle=stubs.decode_lookup_request(stub).entry_handle
        )
        handle, status = self.script[min(self.lookups, len(self.script) - 1)]
        self.lookups += 1
        entry = stubs.EndpointEntry(NIL_UUID, Tower.tcp(STORE, "1.2.3.4", self.lookups), "")
        return stubs.encode_lookup_response(LookupResponse(handle, (entry,), status, 500))


async def test_lookup_on_accepts_samba_style_end_and_frees_the_handle():
    live = ContextHandle(0, uuid.uuid4())
    rpc = ScriptedRpc([(live, 0), (live, EPT_S_NOT_REGISTERED)])
    found = await lookup_on(rpc)
    assert [e.tower.port for e in found] == [1, 2]
    assert rpc.freed == [live]


async def test_lookup_on_raises_on_error_status_and_frees():
    live = ContextHandle(0, uuid.uuid4())
    rpc = ScriptedRpc([(live, 0x6D8)])
    with pytest.raises(EpmError) as info:
        await lookup_on(rpc)
    assert info.value.status == 0x6D8
    assert rpc.freed == [live]


async def test_lookup_on_is_bounded_against_endless_servers():
    live = ContextHandle(0, uuid.uuid4())
    rpc = ScriptedRpc([(live, 0)])
    with pytest.raises(EpmError):
        await lookup_on(rpc)
    assert rpc.lookups == epm_client.MAX_LOOKUP_ROUNDS
    assert rpc.freed == [live]


async def test_map_endpoint_on():
    db = store_db(1)
    db.register(STORE, [Tower.http(STORE, "0.0.0.0", 593)], "http")
    rpc = LocalRpc(epm_interface(db))
    tower = await map_endpoint_on(rpc, SyntaxId(STORE.uuid, 1, 0))
    assert tower is not None and tower.string_binding() == "ncacn_ip_tcp:10.9.8.7[20000]"
    http = await map_endpoint_on(rpc, STORE, "ncacn_http")
    assert http is not None and http.port == 593
    assert await map_endpoint_on(rpc, OTHER) is None
    with pytest.raises(ValueError):
        await map_endpoint_on(rpc, STORE, "ncacn_np")


async def test_resolve_over_a_patched_transport(monkeypatch):
    from contextlib import asynccontextmanager

    opened: list[tuple[str, int]] = []

    @asynccontextmanager
    async def fake_open(host: str, port: int):
        opened.append((host, port))
        yield LocalRpc(epm_interface(store_db(1)))

    monkeypatch.setattr(epm_client, "open_tcp_rpc_client", fake_open)
    assert await epm_client.resolve(STORE, "epm.example", 1135) == ("epm.example", 20000)
    with pytest.raises(EndpointNotRegistered) as info:
        await epm_client.resolve(OTHER, "epm.example")
    assert info.value.status == EPT_S_NOT_REGISTERED
    assert opened == [("epm.example", 1135), ("epm.example", 135)]
    assert [e.tower.port for e in await epm_client.lookup("h")] == [20000]


# -- end to end: our runtime on loopback, our client and impacket's -------------


def impacket_session(port: int) -> dict[str, Any]:
    """What impacket's rpcdump and rpcmap do: hept_lookup, hept_map, mgmt inq_if_ids.

    One connection each: every helper binds, and a second bind on one connection is
    refused by the runtime (as Samba does).
    """
    binding = f"ncacn_ip_tcp:127.0.0.1[{port}]"

    def over_new_connection(call):
        dce = imp_transport.DCERPCTransportFactory(binding).get_dce_rpc()
        dce.connect()
        try:
            return call(dce)
        finally:
            dce.disconnect()

    def inq_if_ids(dce):
        dce.bind(mgmt.MSRPC_UUID_MGMT)
        return mgmt.hinq_if_ids(dce)

    entries = over_new_connection(lambda dce: epm.hept_lookup(None, dce=dce))
    store = uuidtup_to_bin((str(STORE.uuid), "1.0"))
    mapped = over_new_connection(
        lambda dce: epm.hept_map("127.0.0.1", store, dce=dce, protocol="ncacn_ip_tcp")
    )
    ids = over_new_connection(inq_if_ids)
    return {
        "bindings": [epm.PrintStringBinding(e["tower"]["Floors"]) for e in entries],
        "annotations": [e["annotation"] for e in entries],
        "mapped": mapped,
        "ids": [uuid.UUID(bytes_le=i["Uuid"]) for i in ids["if_id_vector"]["if_id"]],
    }


async def test_end_to_end_over_tcp(nursery):
    from dcerpc.server import RpcServer

    db = EndpointDatabase()
    for i in range(3):
        db.register(STORE, [Tower.tcp(STORE, "0.0.0.0", 30000 + i)], f"store {i}")
    server = RpcServer([epm_interface(db), mgmt_interface()], name="epm")
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(20):
        found = await epm_client.lookup("127.0.0.1", port)
        assert [e.tower.string_binding() for e in found] == [
            f"ncacn_ip_tcp:127.0.0.1[{30000 + i}]" for i in range(3)
        ]
        assert await epm_client.resolve(STORE, "127.0.0.1", port) == ("127.0.0.1", 30000)
        with pytest.raises(EndpointNotRegistered):
            await epm_client.resolve(OTHER, "127.0.0.1", port)
        seen = await trio.to_thread.run_sync(impacket_session, port)
    assert seen["bindings"] == [f"ncacn_ip_tcp:127.0.0.1[{30000 + i}]" for i in range(3)]
    assert seen["annotations"] == [f"store {i}\x00".encode() for i in range(3)]
    assert seen["mapped"] == "ncacn_ip_tcp:127.0.0.1[30000]"
    assert seen["ids"] == [EPM_SYNTAX.uuid, MGMT_SYNTAX.uuid]


async def test_big_endian_lookup_request_read_in_its_byte_order():
    # ept_lookup by interface (STORE v1.2, vers_option EXACT=3), as a big-endian
    # (drep 0x00) client marshals it: the GUID's fields and every integer are big-endian.
    ifid = STORE.uuid.bytes + struct.pack(">HH", STORE.major, STORE.minor)
    stub = struct.pack(">III", 1, 0, 0x20000) + ifid + struct.pack(">I", 3)
    stub += bytes(20) + struct.pack(">I", 500)
    db = store_db(3)
    db.register(OTHER, [Tower.tcp(OTHER, "0.0.0.0", 30000)], "other")
    handler = epm_interface(db).handler
    ctx = make_ctx(stubs.OP_EPT_LOOKUP)
    ctx.byteorder = ">"
    resp = stubs.decode_lookup_response(await handler(ctx, stub))
    assert resp.status == 0
    assert [e.annotation for e in resp.entries] == ["store 0", "store 1", "store 2"]


async def test_end_to_end_iteration_ends_one_at_a_time_and_on_a_full_last_batch(nursery):
    """Issue 18, item 8 over TCP: Samba's one-entry-at-a-time loop (until the status is
    not 0) sees every entry once and stops; our client, asking 500 of exactly 500,
    stops on EPT_S_NOT_REGISTERED after the full batch."""
    from dcerpc.client import open_tcp_rpc_client
    from dcerpc.server import RpcServer

    db = EndpointDatabase(max_entries=2000)
    for i in range(500):
        db.register(STORE, [Tower.tcp(STORE, "0.0.0.0", 20000 + i)], f"store {i}")
    server = RpcServer([epm_interface(db)], name="epm")
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(30):
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            ctx_id = await rpc.bind(EPM_SYNTAX)
            handle, ports, statuses = NULL_HANDLE, [], []
            for _ in range(600):  # bounded: the bug was an endless loop
                reply = await rpc.call(ctx_id, stubs.OP_EPT_LOOKUP, samba_lookup(handle))
                resp = stubs.decode_lookup_response(reply)
                ports += [e.tower.port for e in resp.entries]
                statuses.append(resp.status)
                handle = resp.entry_handle
                if resp.status != 0:
                    break
        assert ports == list(range(20000, 20500))
        assert statuses == [0] * 500 + [EPT_S_NOT_REGISTERED] and handle == NULL_HANDLE
        found = await epm_client.lookup("127.0.0.1", port)
        assert [e.tower.port for e in found] == list(range(20000, 20500))
