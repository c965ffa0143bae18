"""The sans-IO server core: negotiation, reassembly, and every hostile input of the issue,
each answered with the protocol's own error (fault or bind_nak) and a close."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcerpc.client_connection import ClientConnection
from dcerpc.config import RpcConfig
from dcerpc.errors import FaultStatus, RemoteProtocolError
from dcerpc.events import (
    BindAckReceived,
    CallCancelled,
    CallReceived,
    FaultReceived,
    ResponseReceived,
)
from dcerpc.interface import Interface
from dcerpc.pdu import (
    AlterContextPdu,
    BindAckPdu,
    BindNakPdu,
    BindNakReason,
    BindPdu,
    CoCancelPdu,
    ContextElement,
    ContextResult,
    FaultPdu,
    OrphanedPdu,
    PfcFlags,
    RequestPdu,
    ResponsePdu,
    decode_pdu,
    request_fragments,
)
from dcerpc.server_connection import (
    AssociationGroups,
    ConnectionState,
    InterfaceRegistry,
    ServerConnection,
)
from dcerpc.syntax import MSGPACK, NDR, NDR64, SyntaxId

ECHO = SyntaxId(uuid.UUID("12345678-1234-1234-1234-123456789abc"), 1, 2)
STORE = SyntaxId(uuid.UUID("aaaaaaaa-1234-1234-1234-123456789abc"), 1, 0)
BTFN = SyntaxId.parse("6cb71c2c-9812-4540-0300-000000000000", 1)


async def _never(ctx, stub):  # pragma: no cover - the core never calls handlers
    raise AssertionError


def make_server(**config) -> ServerConnection:
    registry = InterfaceRegistry(
        [
            Interface(ECHO, _never, 3),
            Interface(STORE, _never, 4, transfer_syntaxes=(MSGPACK,)),
        ]
    )
    return ServerConnection(
        registry, AssociationGroups(), RpcConfig(**config), secondary_address="135"
    )


def pdus(data: bytes) -> list:
    out, pos = [], 0
    while pos < len(data):
        length = struct.unpack_from("<H", data, pos + 8)[0]
        out.append(decode_pdu(data[pos : pos + length]))
        pos += length
    return out


def bound_server(**config) -> ServerConnection:
    server = make_server(**config)
    server.receive_data(BindPdu(call_id=1, contexts=(ContextElement(0, ECHO, (NDR,)),)).encode())
    server.data_to_send()
    return server


def test_bind_negotiates_each_context_like_windows():
    server = make_server()
    bind = BindPdu(
        call_id=1,
        max_xmit_frag=4280,
        max_recv_frag=4280,
        contexts=(
            ContextElement(0, ECHO, (NDR,)),
            ContextElement(1, ECHO, (NDR64,)),
            ContextElement(2, ECHO, (BTFN,)),
            ContextElement(3, SyntaxId(uuid.uuid4(), 1), (NDR,)),
            ContextElement(4, STORE, (NDR, MSGPACK)),
        ),
    )
    server.receive_data(bind.encode())
    (ack,) = pdus(server.data_to_send())
    assert isinstance(ack, BindAckPdu)
    assert ack.call_id == 1
    assert ack.secondary_address == "135"
    assert ack.assoc_group_id != 0
    assert (ack.max_xmit_frag, ack.max_recv_frag) == (4280, 4280)
    assert ack.results == (
        ContextResult(0, 0, NDR),
        ContextResult(2, 2),  # NDR64 not supported: provider rejection, reason 2
        ContextResult(3, 2),  # BTFN: negotiate_ack, keep-connection-on-orphan granted
        ContextResult(2, 1),  # unknown interface: abstract syntax not supported
        ContextResult(0, 0, MSGPACK),  # the store's own transfer syntax
    )
    assert server.state is ConnectionState.BOUND


def test_newer_minor_version_is_refused_older_accepted():
    server = make_server()
    newer = SyntaxId(ECHO.uuid, 1, 3)
    older = SyntaxId(ECHO.uuid, 1, 0)
    server.receive_data(
        BindPdu(
            contexts=(ContextElement(0, newer, (NDR,)), ContextElement(1, older, (NDR,)))
        ).encode()
    )
    (ack,) = pdus(server.data_to_send())
    assert [r.result for r in ack.results] == [2, 0]


def test_alter_context_adds_a_context_in_the_same_group():
    server = bound_server()
    server.receive_data(
        AlterContextPdu(call_id=2, contexts=(ContextElement(1, STORE, (MSGPACK,)),)).encode()
    )
    (resp,) = pdus(server.data_to_send())
    assert type(resp).__name__ == "AlterContextRespPdu"
    assert resp.results == (ContextResult(0, 0, MSGPACK),)
    events = server.receive_data(
        RequestPdu(call_id=3, context_id=1, opnum=3, stub=b"\x90").encode()
    )
    assert isinstance(events[0], CallReceived)
    assert events[0].interface.syntax == STORE
    assert events[0].transfer_syntax == MSGPACK


def test_association_group_shared_and_unknown_group_refused():
    groups = AssociationGroups()
    registry = InterfaceRegistry([Interface(ECHO, _never, 1)])
    first = ServerConnection(registry, groups)
    first.receive_data(BindPdu(contexts=(ContextElement(0, ECHO, (NDR,)),)).encode())
    group = pdus(first.data_to_send())[0].assoc_group_id
    second = ServerConnection(registry, groups)
    second.receive_data(
        BindPdu(assoc_group_id=group, contexts=(ContextElement(0, ECHO, (NDR,)),)).encode()
    )
    assert pdus(second.data_to_send())[0].assoc_group_id == group
    third = ServerConnection(registry, groups)
    with pytest.raises(RemoteProtocolError):
        third.receive_data(
            BindPdu(assoc_group_id=group + 1, contexts=(ContextElement(0, ECHO, (NDR,)),)).encode()
        )
    (nak,) = pdus(third.data_to_send())
    assert isinstance(nak, BindNakPdu)
    first.close()
    second.close()
    assert len(groups) == 0


def test_fragmented_request_reassembled_and_response_fragmented():
    server = bound_server(max_fragment=1432)
    stub = bytes(range(256)) * 30
    events = []
    for frag in request_fragments(call_id=5, context_id=0, opnum=2, stub=stub, max_fragment=1432):
        events += server.receive_data(frag)
    (call,) = events
    assert isinstance(call, CallReceived)
    assert (call.call_id, call.opnum, call.stub) == (5, 2, stub)
    server.send_response(5, stub[::-1])
    frags = pdus(server.data_to_send())
    assert len(frags) > 1
    assert all(isinstance(f, ResponsePdu) and f.call_id == 5 for f in frags)
    assert b"".join(f.stub for f in frags) == stub[::-1]


def test_interleaved_calls_on_one_connection():
    server = bound_server(max_fragment=1432)
    a = request_fragments(call_id=10, context_id=0, opnum=0, stub=b"a" * 3000, max_fragment=1432)
    b = request_fragments(call_id=11, context_id=0, opnum=1, stub=b"b" * 3000, max_fragment=1432)
    events = []
    for fa, fb in zip(a, b, strict=True):
        events += server.receive_data(fa + fb)
    assert [(e.call_id, e.stub) for e in events] == [(10, b"a" * 3000), (11, b"b" * 3000)]
    assert server.executing == {10, 11}


def test_client_and_server_cores_talk():
    client = ClientConnection()
    server = make_server()
    client.bind([ContextElement(0, ECHO, (NDR,))])
    server.receive_data(client.data_to_send())
    (ack,) = client.receive_data(server.data_to_send())
    assert isinstance(ack, BindAckReceived)
    call_id = client.request(0, 1, b"ping" * 5000)
    (call,) = server.receive_data(client.data_to_send())
    server.send_response(call.call_id, call.stub.upper())
    (resp,) = client.receive_data(server.data_to_send())
    assert resp == ResponseReceived(call_id=call_id, stub=b"PING" * 5000)


# -- hostile input -------------------------------------------------------------------------


def expect_fault_and_close(server: ServerConnection, data: bytes, status: int) -> FaultPdu:
    with pytest.raises(RemoteProtocolError):
        server.receive_data(data)
    (fault,) = pdus(server.data_to_send())
    assert isinstance(fault, FaultPdu)
    assert fault.status == status
    assert server.state is ConnectionState.CLOSED
    return fault


def test_request_before_bind_gets_protocol_error():
    fault = expect_fault_and_close(
        make_server(), RequestPdu(call_id=4).encode(), FaultStatus.PROTO_ERROR
    )
    assert fault.call_id == 4


def test_bind_with_no_contexts_is_nakked():
    server = make_server()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(BindPdu(call_id=1).encode())
    (nak,) = pdus(server.data_to_send())
    assert isinstance(nak, BindNakPdu)
    assert nak.reason == BindNakReason.NOT_SPECIFIED


def test_authenticated_bind_is_nakked_with_auth_reason():
    server = make_server()
    bind = BindPdu(
        contexts=(ContextElement(0, ECHO, (NDR,)),),
        auth_verifier=b"\x0a\x02\x00\x00\x00\x00\x00\x00" + b"N" * 40,
    )
    with pytest.raises(RemoteProtocolError):
        server.receive_data(bind.encode())
    (nak,) = pdus(server.data_to_send())
    assert nak.reason == BindNakReason.AUTHENTICATION_TYPE_NOT_RECOGNIZED


def test_second_bind_is_nakked():
    server = bound_server()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(
            BindPdu(call_id=2, contexts=(ContextElement(0, ECHO, (NDR,)),)).encode()
        )
    assert isinstance(pdus(server.data_to_send())[0], BindNakPdu)


def test_opnum_out_of_range_faults_and_keeps_serving():
    server = bound_server()
    assert server.receive_data(RequestPdu(call_id=2, opnum=3).encode()) == []
    (fault,) = pdus(server.data_to_send())
    assert (fault.call_id, fault.status) == (2, FaultStatus.OP_RNG_ERROR)
    assert fault.pfc_flags & PfcFlags.DID_NOT_EXECUTE
    events = server.receive_data(RequestPdu(call_id=3, opnum=2).encode())
    assert isinstance(events[0], CallReceived)


def test_unknown_context_faults_unknown_interface():
    server = bound_server()
    server.receive_data(RequestPdu(call_id=2, context_id=9).encode())
    (fault,) = pdus(server.data_to_send())
    assert fault.status == FaultStatus.UNK_IF
    assert server.state is ConnectionState.BOUND


def test_truncated_header_then_eof():
    server = make_server()
    assert server.receive_data(b"\x05\x00\x0b") == []
    assert server.has_partial_input
    events = server.receive_data(b"")
    assert type(events[0]).__name__ == "ConnectionEnded"


def test_frag_length_smaller_than_header():
    server = bound_server()
    data = b"\x05\x00\x00\x03\x10\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00"
    fault = expect_fault_and_close(server, data, FaultStatus.PROTO_ERROR)
    assert fault.call_id == 7


def test_malformed_bind_is_nakked():
    server = make_server()
    data = b"\x05\x00\x0b\x03\x10\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00"
    with pytest.raises(RemoteProtocolError):
        server.receive_data(data)
    (nak,) = pdus(server.data_to_send())
    assert isinstance(nak, BindNakPdu)
    assert nak.call_id == 7


def test_frag_length_larger_than_negotiated():
    server = bound_server(max_fragment=4280)
    big = RequestPdu(call_id=2, stub=b"x" * 5000).encode()
    expect_fault_and_close(server, big, FaultStatus.PROTO_ERROR)


def test_unknown_pdu_type():
    server = bound_server()
    data = bytearray(RequestPdu(call_id=2).encode())
    data[2] = 99
    expect_fault_and_close(server, bytes(data), FaultStatus.PROTO_ERROR)


def test_server_side_pdu_from_client_is_protocol_error():
    server = bound_server()
    expect_fault_and_close(server, ResponsePdu(call_id=2).encode(), FaultStatus.PROTO_ERROR)


def test_fragment_stream_that_never_ends_is_bounded():
    server = bound_server(max_fragment=4280, max_request_size=64 * 1024)
    first = RequestPdu(call_id=2, pfc_flags=PfcFlags.FIRST_FRAG, stub=b"x" * 4000).encode()
    middle = RequestPdu(call_id=2, pfc_flags=0, stub=b"x" * 4000).encode()
    server.receive_data(first)
    with pytest.raises(RemoteProtocolError):
        for _ in range(100):
            server.receive_data(middle)
    (fault,) = pdus(server.data_to_send())
    assert fault.status == FaultStatus.ACCESS_DENIED
    assert server.state is ConnectionState.CLOSED


def test_huge_alloc_hint_refused_before_buffering():
    server = bound_server()
    data = RequestPdu(call_id=2, pfc_flags=PfcFlags.FIRST_FRAG, alloc_hint=0xFFFFFFFF).encode()
    expect_fault_and_close(server, data, FaultStatus.ACCESS_DENIED)


def test_middle_fragment_of_unknown_call():
    server = bound_server()
    data = RequestPdu(call_id=2, pfc_flags=PfcFlags.LAST_FRAG).encode()
    expect_fault_and_close(server, data, FaultStatus.PROTO_ERROR)


def test_duplicate_call_id_while_executing():
    server = bound_server()
    server.receive_data(RequestPdu(call_id=2).encode())
    expect_fault_and_close(server, RequestPdu(call_id=2).encode(), FaultStatus.PROTO_ERROR)


def test_too_many_concurrent_calls_answered_busy():
    server = bound_server(max_concurrent_calls=2)
    server.receive_data(RequestPdu(call_id=2).encode() + RequestPdu(call_id=3).encode())
    server.receive_data(RequestPdu(call_id=4).encode())
    (fault,) = pdus(server.data_to_send())
    assert (fault.call_id, fault.status) == (4, FaultStatus.SERVER_TOO_BUSY)
    assert server.state is ConnectionState.BOUND


def test_cancel_and_orphan_of_executing_call():
    server = bound_server()
    server.receive_data(RequestPdu(call_id=2).encode() + RequestPdu(call_id=3).encode())
    events = server.receive_data(CoCancelPdu(call_id=2).encode() + OrphanedPdu(call_id=3).encode())
    assert events == [
        CallCancelled(call_id=2, orphaned=False),
        CallCancelled(call_id=3, orphaned=True),
    ]


def test_client_core_rejects_unsolicited_response():
    client = ClientConnection()
    client.bind([ContextElement(0, ECHO, (NDR,))])
    client.receive_data(BindAckPdu(call_id=1, results=(ContextResult(0, 0, NDR),)).encode())
    with pytest.raises(RemoteProtocolError):
        client.receive_data(ResponsePdu(call_id=77).encode())


def test_client_core_reports_fault():
    client = ClientConnection()
    client.bind([ContextElement(0, ECHO, (NDR,))])
    client.receive_data(BindAckPdu(call_id=1, results=(ContextResult(0, 0, NDR),)).encode())
    call_id = client.request(0, 0, b"")
    assert client.receive_data(FaultPdu(call_id=call_id, status=5).encode()) == [
        FaultReceived(call_id=call_id, status=5)
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_fuzz_server_core_never_raises_anything_else(chunks):
    """Garbage after a valid bind yields events or RemoteProtocolError, nothing else."""
    server = bound_server(max_fragment=4280)
    for chunk in chunks:
        try:
            server.receive_data(b"\x05\x00" + chunk)
        except RemoteProtocolError:
            assert server.state is ConnectionState.CLOSED
            return
        server.data_to_send()


def test_big_endian_request_reaches_handler_with_its_byte_order():
    server = bound_server()
    body = struct.pack(">IHH", 3, 0, 1) + b"\x00\x00\x00\x07"
    header = struct.pack(">BBBB4sHHI", 5, 0, 0, 3, b"\x00\x00\x00\x00", 16 + len(body), 0, 9)
    (call,) = server.receive_data(header + body)
    assert (call.call_id, call.opnum, call.byteorder) == (9, 1, ">")
    assert struct.unpack(call.byteorder + "I", call.stub)[0] == 7


def test_flood_of_unfinished_fragmented_calls_is_refused():
    server = bound_server(max_concurrent_calls=4)
    with pytest.raises(RemoteProtocolError):
        for call_id in range(2, 10_000):
            server.receive_data(RequestPdu(call_id=call_id, pfc_flags=PfcFlags.FIRST_FRAG).encode())
    assert len(server._partial) <= 4
    assert server.state is ConnectionState.CLOSED


def test_interleaved_requests_have_a_byte_budget():
    server = bound_server(max_fragment=4280, max_request_size=16_000)
    with pytest.raises(RemoteProtocolError):
        for i in range(20):
            for call_id in (2, 3, 4):
                flags = PfcFlags.FIRST_FRAG if i == 0 else 0
                server.receive_data(
                    RequestPdu(call_id=call_id, pfc_flags=flags, stub=b"x" * 4000).encode()
                )
    (fault,) = pdus(server.data_to_send())
    assert fault.status == FaultStatus.ACCESS_DENIED


def test_fault_of_an_executed_call_does_not_claim_it_did_not_execute():
    server = bound_server()
    (call,) = server.receive_data(RequestPdu(call_id=2).encode())
    server.send_fault(call.call_id, FaultStatus.FAULT_UNSPEC)
    (fault,) = pdus(server.data_to_send())
    assert not fault.pfc_flags & PfcFlags.DID_NOT_EXECUTE


def test_client_drops_the_late_response_of_an_orphaned_call():
    client = ClientConnection()
    client.bind([ContextElement(0, ECHO, (NDR,))])
    client.receive_data(BindAckPdu(call_id=1, results=(ContextResult(0, 0, NDR),)).encode())
    first = client.request(0, 0, b"a")
    second = client.request(0, 0, b"b")
    third = client.request(0, 0, b"c")
    client.orphan(first)
    client.orphan(second)
    assert client.receive_data(ResponsePdu(call_id=first, stub=b"late").encode()) == []
    assert client.receive_data(FaultPdu(call_id=second, status=5).encode()) == []
    assert client.receive_data(ResponsePdu(call_id=third, stub=b"C").encode()) == [
        ResponseReceived(call_id=third, stub=b"C")
    ]
