"""The client's virtual-connection core (:mod:`tunnel.client_vc`) driven with bytes only:
establishment against impacket's encoder and our proxy's PDUs, fed whole, byte by byte
and cut at random; the classify-and-act of every OUT PDU; both recycles step by step;
and, with hypothesis, random OUT bytes (only events or protocol errors) and random send
patterns (the IN channel's Content-Length is never passed and IN_R2/A5 always fits)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import rpch

from dcerpc.errors import RemoteProtocolError
from dcerpc.pdu import RequestPdu
from tunnel import rts, rts_recycling
from tunnel.client_vc import (
    OUT_ACK_AFTER,
    OUT_WINDOW,
    AckApplied,
    ClientVc,
    Established,
    InSuccessorAccepted,
    OutEvent,
    OutPredecessorEnded,
    OutRecycleConfirmed,
    OutRecycleRequested,
    RpcReceived,
)
from tunnel.errors import TunnelError
from tunnel.recycling import CONTROL_HEADROOM, IN_R2_A5_SIZE, ClientInState, RecycleError

VC, IN, OUT, GROUP = b"v" * 16, b"i" * 16, b"o" * 16, b"g" * 16
IN_NEXT, OUT_NEXT = b"I" * 16, b"O" * 16
LIFETIME = 131072
ESTABLISHED = rts.conn_a3(120000) + rts.conn_c2(65536, 120000)


def make_vc(lifetime: int = LIFETIME, threshold: int = 8192) -> ClientVc:
    return ClientVc(
        vc_cookie=VC,
        in_cookie=IN,
        out_cookie=OUT,
        assoc_group=GROUP,
        lifetime=lifetime,
        recycle_threshold=threshold,
        max_fragment=65536,
    )


def feed(vc: ClientVc, data: bytes, cuts: str = "whole") -> list[OutEvent]:
    """Feed OUT bytes whole or byte by byte (h11's ``tr()``), collecting the events."""
    chunks = [data] if cuts == "whole" else [data[i : i + 1] for i in range(len(data))]
    events: list[OutEvent] = []
    for chunk in chunks:
        vc.receive_out(chunk)
        while (event := vc.next_out_event()) is not None:
            events.append(event)
    return events


def established(lifetime: int = LIFETIME, threshold: int = 8192) -> ClientVc:
    vc = make_vc(lifetime, threshold)
    vc.conn_b1()
    assert feed(vc, ESTABLISHED) == [Established()]
    return vc


def rpc_pdu(size: int, call_id: int = 1) -> bytes:
    stub = b"\xab" * (size - 24)
    return RequestPdu(call_id=call_id, stub=stub).encode()


# -- establishment ([MS-RPCH] 3.2.2.4.1) ---------------------------------------------------


def test_conn_a1_and_b1_are_the_bytes_impacket_builds() -> None:
    vc = make_vc(lifetime=1 << 30)  # impacket's ChannelLifetime
    assert vc.conn_a1() == rpch.hCONN_A1(VC, OUT, OUT_WINDOW)
    b1 = vc.conn_b1()
    assert b1 == rpch.hCONN_B1(VC, IN, GROUP)
    assert vc.send_window.body_sent == len(b1) == 104  # CONN/B1 is counted on IN
    assert rts.parse_conn_b1(rts.decode_rts(make_vc().conn_b1())).lifetime == LIFETIME


@pytest.mark.parametrize("cuts", ["whole", "bytewise"])
def test_conn_a3_then_c2_establish_with_the_proxys_in_window(cuts: str) -> None:
    vc = make_vc()
    assert feed(vc, rts.conn_a3(120000) + rts.conn_c2(131072, 120000), cuts) == [Established()]
    assert vc.established and vc.send_window.peer_window == 131072


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (rpc_pdu(100), "RPC data before CONN/C2"),
        (rts.conn_c2(65536, 1) + rts.conn_a3(1), "unexpected establishment sequence"),
        (rts.conn_a3(1) + rts.ping(), "unexpected establishment sequence"),
    ],
    ids=["rpc", "reversed", "ping"],
)
def test_anything_else_during_establishment_is_refused(body: bytes, error: str) -> None:
    with pytest.raises(TunnelError, match=error):
        feed(make_vc(), body)


# -- classify and act on OUT ----------------------------------------------------------------


def test_rpc_pdus_come_out_whole_and_count_for_the_acknowledgement() -> None:
    vc = established()
    pdus = [rpc_pdu(OUT_ACK_AFTER // 2, n) for n in range(3)]
    events = feed(vc, b"".join(pdus), "bytewise")
    assert events == [RpcReceived(data=p) for p in pdus]
    assert vc.acknowledgement(buffered=OUT_WINDOW + 1) is None  # the caller lags: wait
    ack = vc.acknowledgement(buffered=0)
    assert ack == rts.flow_control_ack_to(
        rts.ForwardDestination.OUT_PROXY, sum(map(len, pdus)), OUT_WINDOW, OUT
    )
    assert ack == rpch.hFlowControlAckWithDestination(
        rpch.FDOutProxy, sum(map(len, pdus)), OUT_WINDOW, OUT
    )
    assert vc.acknowledgement(buffered=0) is None  # nothing new


def test_flow_control_acks_reopen_the_in_window() -> None:
    vc = established()
    assert vc.send_rpc(60000)
    assert not vc.send_rpc(60000)  # the proxy's window (65536) is full
    assert feed(vc, rts.flow_control_ack(60000, 65536, IN)) == [AckApplied()]
    assert vc.send_rpc(60000)


@pytest.mark.parametrize(
    "pdu", [rts_recycling.in_r2_a1(VC, IN, IN_NEXT), rts_recycling.out_r2_a3(VC, OUT, OUT_NEXT, 1)]
)
def test_pdus_only_a_client_sends_are_refused(pdu: bytes) -> None:
    with pytest.raises(TunnelError, match="from the proxy"):
        feed(established(), pdu)


@pytest.mark.parametrize(
    "pdu",
    [rts_recycling.in_r2_a4(), rts_recycling.out_r2_a6(), rts_recycling.out_r2_b3()],
    ids=["IN_R2/A4", "OUT_R2/A6", "OUT_R2/B3"],
)
def test_recycling_pdus_out_of_sequence_are_protocol_errors(pdu: bytes) -> None:
    with pytest.raises(RecycleError):
        feed(established(), pdu)


def test_pings_are_skipped() -> None:
    assert feed(established(), rts.ping() * 3) == []


# -- IN channel recycling, step by step -----------------------------------------------------


def test_in_recycle_in_its_order() -> None:
    vc = established(threshold=LIFETIME)  # any send starts a recycle
    assert vc.in_recycle_due(0) and not vc.in_recycle_due(0)  # once
    a1 = vc.in_successor_opened(IN_NEXT)
    assert a1 == rts_recycling.in_r2_a1(VC, IN, IN_NEXT)
    assert vc.in_recycle.state is ClientInState.WAITING
    # A control PDU that finds no room waits for the successor; the newest ack replaces older.
    vc.send_window.sent(vc.send_window.remaining() - IN_R2_A5_SIZE - 2, rpc=False)
    a7 = rts_recycling.out_r2_a7(OUT_NEXT)
    assert not vc.send_control(a7)
    assert not vc.send_control(b"old ack", ack=True) and not vc.send_control(b"ack", ack=True)
    (event,) = feed(vc, rts_recycling.in_r2_a4())
    assert event == InSuccessorAccepted(window=None)
    old_window = vc.send_window
    handover = vc.in_handover(event.window)
    assert handover.a5 == rts_recycling.in_r2_a5(IN_NEXT)
    assert handover.then == [a7, b"ack"]
    assert old_window.remaining() == 2  # IN_R2/A5 used its reserve, nothing more
    assert vc.in_cookie == IN_NEXT and vc.in_recycles == 1
    assert vc.send_window.body_sent == len(a1) + len(a7) + len(b"ack")
    assert vc.in_recycle.state is ClientInState.OPENED
    # Late acknowledgements for the retired instance are ignored.
    assert feed(vc, rts.flow_control_ack(1, 65536, IN)) == []


def test_in_r1_a4_brings_the_new_window() -> None:
    vc = established(threshold=LIFETIME)
    assert vc.in_recycle_due(0)
    vc.in_successor_opened(IN_NEXT)
    r1_a4 = rts.encode_rts(  # [MS-RPCH] 2.2.4.11
        rts.RtsMessage(
            rts.RtsFlags.NONE,
            (
                rts.Destination(rts.ForwardDestination.CLIENT),
                rts.Version(),
                rts.ReceiveWindowSize(131072),
                rts.ConnectionTimeout(120000),
            ),
        )
    )
    (event,) = feed(vc, r1_a4)
    assert isinstance(event, InSuccessorAccepted) and event.window == 131072
    vc.in_handover(event.window)
    assert vc.send_window.peer_window == 131072


# -- OUT channel recycling, step by step ----------------------------------------------------


def test_out_recycle_in_its_order() -> None:
    vc = established()
    assert feed(vc, rts_recycling.out_r2_a2()) == [OutRecycleRequested()]
    assert vc.out_successor_opened(OUT_NEXT) == rts_recycling.out_r2_a3(
        VC, OUT, OUT_NEXT, OUT_WINDOW
    )
    assert feed(vc, rts_recycling.out_r2_a6()) == [OutRecycleConfirmed()]
    assert vc.out_confirm() == (rts_recycling.out_r2_a7(OUT_NEXT), rts_recycling.out_r2_c1())
    # Whatever follows OUT_R2/B3 on the predecessor is not read.
    assert feed(vc, rts_recycling.out_r2_b3() + rpc_pdu(100)) == [OutPredecessorEnded()]
    vc.out_switched()
    assert (vc.out_cookie, vc.out_recycles, vc.unaccounted) == (OUT_NEXT, 1, 0)
    assert feed(vc, rpc_pdu(100)) == [RpcReceived(data=rpc_pdu(100))]


# -- hypothesis -------------------------------------------------------------------------------

OUT_PDUS = [
    rpc_pdu(64),
    rts.ping(),
    rts.flow_control_ack(0, 65536, IN),
    rts.conn_a3(1),
    rts.conn_c2(65536, 1),
    rts_recycling.in_r2_a4(),
    rts_recycling.out_r2_a2(),
    rts_recycling.out_r2_a6(),
    rts_recycling.out_r2_b3(),
    rts_recycling.in_r2_a1(VC, IN, IN_NEXT),
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(OUT_PDUS), max_size=12),
    st.lists(st.integers(1, 200), max_size=12),
    st.binary(max_size=64),
)
def test_random_out_bytes_give_events_or_protocol_errors(
    pdus: list[bytes], cuts: list[int], garbage: bytes
) -> None:
    """Any OUT body, cut anywhere, gives OutEvents, a TunnelError or a protocol error."""
    vc = make_vc()
    data, at = b"".join(pdus) + garbage, 0
    try:
        for cut in [*cuts, len(data)]:
            vc.receive_out(data[at : at + cut])
            at += cut
            while (event := vc.next_out_event()) is not None:
                assert isinstance(event, OutEvent)
    except (TunnelError, RemoteProtocolError):
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["rpc", "ack", "control", "a4"]), st.integers(24, 9000))))
def test_the_in_channel_never_passes_its_content_length(steps: list[tuple[str, int]]) -> None:
    """Whatever is sent and whenever the proxy answers, each IN instance stays within
    its Content-Length, with IN_R2/A5 always in reserve."""
    vc = established(lifetime=65536, threshold=16384)
    windows = [vc.send_window]
    for step, size in steps:
        if step == "rpc" and vc.check_rpc_size(size):
            vc.in_recycle_due(size)
            vc.send_rpc(size)
        elif step == "ack":
            vc.send_window.acknowledged(vc.send_window.bytes_sent & 0xFFFFFFFF, 65536)
        elif step == "control":
            vc.send_control(b"\x00" * min(size, 56), ack=size % 2 == 0)
        elif vc.in_recycle.state is ClientInState.OPENING:
            vc.in_successor_opened(bytes([size % 256]) * 16)
        elif vc.in_recycle.state is ClientInState.WAITING:
            feed(vc, rts_recycling.in_r2_a4())
            vc.in_handover(None)  # never "no room left for IN_R2/A5"
            windows.append(vc.send_window)
        assert vc.room(0) >= -CONTROL_HEADROOM
    assert all(w.body_sent <= w.content_length for w in windows)
