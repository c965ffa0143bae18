"""The proxy's virtual-connection core (:mod:`tunnel.proxy_vc`) driven with bytes only:
what a channel's first PDU asks, CONN/A1..C2 against our client core, the classify-and-act
of every IN PDU, the OUT writer's turns through a whole OUT recycle in the order of its
steps, and, with hypothesis, random writer histories (an OUT channel never passes its
Content-Length and OUT_R2/B3 always fits) and random IN PDUs (only actions or VcError)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcerpc.errors import RemoteProtocolError
from tunnel import rts, rts_recycling
from tunnel.client_vc import ClientVc, Established
from tunnel.config import TunnelConfig
from tunnel.policy import Target
from tunnel.proxy_vc import (
    ChannelOpening,
    InAction,
    OutNext,
    ProxyVc,
    VcError,
    open_in_channel,
    open_out_channel,
)
from tunnel.recycling import CONTROL_HEADROOM, OutState, RecycleRefused
from tunnel.rts_recycling import InRecycleA1, OutRecycleA3

VC, IN, OUT, GROUP = b"v" * 16, b"i" * 16, b"o" * 16, b"g" * 16
IN_NEXT, OUT_NEXT = b"I" * 16, b"O" * 16
CFG = TunnelConfig(port=0, out_content_length=131072, out_recycle_threshold=16384)
TARGET = Target("localhost", 135)


def message(pdu: bytes) -> rts.RtsMessage:
    return rts.decode_rts(pdu)


def open_vc(config: TunnelConfig = CFG) -> ProxyVc:
    vc = ProxyVc(VC, "alice", TARGET, config)
    opening = open_out_channel(message(rts.conn_a1(VC, OUT, 262144)))
    assert isinstance(opening.first, rts.ConnA1)
    vc.out_opened(opening.first)
    opening = open_in_channel(message(rts.conn_b1(VC, IN, GROUP)))
    assert isinstance(opening.first, rts.ConnB1)
    vc.in_opened(opening.first)
    vc.conn_c2()
    return vc


# -- opening channels ----------------------------------------------------------------------


def test_first_pdus_say_which_channel_opens() -> None:
    a1 = open_out_channel(message(rts.conn_a1(VC, OUT, 262144)))
    assert a1.first == rts.ConnA1(VC, OUT, 262144) and not a1.successor
    a3 = open_out_channel(message(rts_recycling.out_r2_a3(VC, OUT, OUT_NEXT, 65536)))
    assert a3.first == OutRecycleA3(VC, OUT, OUT_NEXT, 65536) and a3.successor
    b1 = open_in_channel(message(rts.conn_b1(VC, IN, GROUP, keepalive_ms=1)))
    assert isinstance(b1.first, rts.ConnB1) and b1.first.keepalive_ms == 60000
    r2 = open_in_channel(message(rts_recycling.in_r2_a1(VC, IN, IN_NEXT)))
    assert r2.first == InRecycleA1(VC, IN, IN_NEXT) and r2.successor


@pytest.mark.parametrize(
    ("opener", "pdu", "successor", "error"),
    [
        (open_out_channel, rts.ping(), False, "bad CONN/A1"),
        (open_out_channel, rts.conn_a1(VC, OUT, 10), False, "bad CONN/A1"),
        (open_in_channel, rts.conn_a1(VC, OUT, 262144), False, "bad CONN/B1"),
        (open_out_channel, rts_recycling.out_r2_a3(VC, OUT, OUT_NEXT, 10), True, "bad OUT_R2/A3"),
    ],
)
def test_bad_first_pdus_are_refused(
    opener: Callable[[rts.RtsMessage], ChannelOpening], pdu: bytes, successor: bool, error: str
) -> None:
    opening = opener(message(pdu))
    assert opening.first is None and opening.successor == successor
    assert opening.error.startswith(error)


def test_establishment_against_the_client_core() -> None:
    """Our client's CONN/A1 and B1 in, CONN/A3 and C2 out, establish our client."""
    client = ClientVc(
        vc_cookie=VC,
        in_cookie=IN,
        out_cookie=OUT,
        assoc_group=GROUP,
        lifetime=1 << 30,
        recycle_threshold=8192,
        max_fragment=65536,
    )
    vc = ProxyVc(VC, "alice", TARGET, CFG)
    a1 = open_out_channel(message(client.conn_a1())).first
    b1 = open_in_channel(message(client.conn_b1())).first
    assert isinstance(a1, rts.ConnA1) and isinstance(b1, rts.ConnB1)
    out_body = vc.out_opened(a1)
    vc.in_opened(b1)
    out_body += vc.conn_c2()
    assert out_body == rts.conn_a3(CFG.connection_timeout_ms) + rts.conn_c2(
        CFG.in_window, CFG.connection_timeout_ms
    )
    assert vc.out_window.body_sent == len(out_body)  # counted on OUT
    assert (vc.out_cookie, vc.in_cookie, vc.out_window.peer_window) == (OUT, IN, 262144)
    client.receive_out(out_body)
    assert client.next_out_event() == Established()
    assert client.send_window.peer_window == CFG.in_window


# -- classify and act on IN -----------------------------------------------------------------


def test_acknowledgements_of_out_data() -> None:
    vc = open_vc()
    vc.out_window.sent(50000, rpc=True)
    assert vc.in_rts(message(rts.flow_control_ack(50000, 262144, OUT))) is InAction.WAKE_OUT
    assert vc.out_window.available() == 262144
    with pytest.raises(VcError, match="bad flow control ack"):
        vc.in_rts(message(rts.flow_control_ack(60000, 262144, OUT)))


def test_keep_alive_is_applied_and_pings_do_nothing() -> None:
    vc = open_vc()
    assert vc.in_rts(message(rts.keep_alive(90000))) is InAction.NONE
    assert vc.keepalive_ms == 90000 and vc.keepalive_interval() == min(CFG.keepalive_interval, 45.0)
    assert vc.in_rts(message(rts.ping())) is InAction.NONE


@pytest.mark.parametrize(
    "pdu",
    [
        rts_recycling.in_r2_a1(VC, IN, IN_NEXT),
        rts_recycling.out_r2_a3(VC, OUT, OUT_NEXT, 65536),
        rts.encode_rts(rts.RtsMessage(rts.RtsFlags.RECYCLE_CHANNEL, (rts.Empty(),))),
    ],
    ids=["IN_R2/A1", "OUT_R2/A3", "recycle"],
)
def test_pdus_that_open_channels_are_refused_on_in(pdu: bytes) -> None:
    with pytest.raises(VcError, match="on the IN channel"):
        open_vc().in_rts(message(pdu))


def test_acks_of_in_data_are_queued_for_the_current_instance_only() -> None:
    vc = open_vc()
    window = vc.in_window
    assert not vc.ack_in(window, CFG.in_window // 4)
    assert vc.ack_in(window, 1)
    assert vc.pending_ack == rts.flow_control_ack_to(
        rts.ForwardDestination.CLIENT, CFG.in_window // 4 + 1, CFG.in_window, IN
    )


def test_in_recycle_in_its_order() -> None:
    vc = open_vc()
    with pytest.raises(VcError, match="IN channel recycling"):
        vc.in_rts(message(rts_recycling.in_r2_a5(IN_NEXT)))
    with pytest.raises(RecycleRefused):
        vc.attach_in_successor(InRecycleA1(VC, IN_NEXT, IN_NEXT))  # not the current one
    vc.attach_in_successor(InRecycleA1(VC, IN, IN_NEXT))
    assert list(vc.control) == [rts_recycling.in_r2_a4()]
    old_window = vc.in_window
    assert vc.in_rts(message(rts_recycling.in_r2_a5(IN_NEXT))) is InAction.HANDED_OVER
    assert vc.in_cookie == IN_NEXT and vc.in_window is not old_window
    assert vc.in_successor_current(IN_NEXT)
    # An acknowledgement due on the retired instance is not sent.
    assert not vc.ack_in(old_window, CFG.in_window)


def test_an_in_successor_that_gives_up_leaves_the_current_channel() -> None:
    vc = open_vc()
    vc.attach_in_successor(InRecycleA1(VC, IN, IN_NEXT))
    assert not vc.in_successor_current(IN_NEXT)
    vc.attach_in_successor(InRecycleA1(VC, IN, b"J" * 16))  # a new recycle may start


# -- the OUT writer's turns -----------------------------------------------------------------


def run_until_wait(vc: ProxyVc, pending: int | None = None, now: float = 0.0) -> list[bytes]:
    """Turns until the writer waits, the PDUs they wrote (RPC PDUs as ``b"rpc"``)."""
    out: list[bytes] = []
    while True:
        turn = vc.out_turn(pending, backend_done=False, now=now, last_sent=now)
        out += turn.emit
        if turn.next in (OutNext.SEND, OutNext.SEND_LAST):
            out.append(b"rpc")
            pending = None
        elif turn.next is OutNext.SWITCH:
            out.append(vc.predecessor_end())
            vc.out_switched()
        else:
            assert turn.next is OutNext.WAIT, turn
            return out


def test_out_recycle_in_its_order() -> None:
    vc = open_vc()
    assert run_until_wait(vc) == []  # nothing to do: wait
    # A large PDU brings the channel below the threshold: OUT_R2/A2 after it.
    vc.out_window.acknowledged(0, 1 << 20)
    size = CFG.out_content_length - vc.out_window.body_sent - 15000
    turn = vc.out_turn(size, backend_done=False, now=1.0, last_sent=0.0)
    assert turn.next is OutNext.SEND
    assert vc.recycle_request(blocked=False, now=1.0) == rts_recycling.out_r2_a2()
    assert vc.out_recycle.state is OutState.REQUESTED
    vc.attach_out_successor(OutRecycleA3(VC, OUT, OUT_NEXT, 65536), now=2.0)
    assert run_until_wait(vc, now=2.0) == [rts_recycling.out_r2_a6()]
    assert vc.in_rts(message(rts_recycling.out_r2_a7(OUT_NEXT))) is InAction.WAKE_OUT
    assert vc.successor_out_rts(message(rts_recycling.out_r2_c1()))
    assert run_until_wait(vc, pending=100, now=3.0) == [b"rpc", rts_recycling.out_r2_b3()]
    assert (vc.out_cookie, vc.out_window.peer_window, vc.out_window.body_sent) == (
        OUT_NEXT,
        65536,
        0,
    )
    assert OUT in vc.retired_out_cookies
    assert vc.in_rts(message(rts.flow_control_ack(1, 65536, OUT))) is InAction.NONE  # moot


def test_a_client_that_never_recycles_loses_its_vc_cleanly() -> None:
    vc = open_vc(replace(CFG, recycle_timeout=5.0))
    vc.out_window.sent(CFG.out_content_length - vc.out_window.body_sent - 2000, rpc=False)
    turn = vc.out_turn(3000, backend_done=False, now=0.0, last_sent=0.0)
    assert turn.emit == [rts_recycling.out_r2_a2()] and turn.next is OutNext.WAIT
    assert turn.deadline == 5.0  # blocked: the recycle must come in time
    turn = vc.out_turn(3000, backend_done=False, now=5.0, last_sent=0.0)
    assert turn.next is OutNext.END and "Content-Length exhausted" in turn.reason


def test_the_end_of_the_backend_and_oversized_pdus_end_the_vc() -> None:
    vc = open_vc()
    assert vc.out_turn(None, backend_done=True, now=0, last_sent=0).next is OutNext.END
    vc.out_window.acknowledged(0, 1 << 30)
    turn = vc.out_turn(CFG.out_content_length, backend_done=False, now=0, last_sent=0)
    assert turn.next is OutNext.END and "larger than" in turn.reason


def test_acknowledgements_and_control_pdus_go_first_and_pings_when_quiet() -> None:
    vc = open_vc()
    vc.pending_ack = b"ack"
    vc.control.append(b"ctl")
    turn = vc.out_turn(None, backend_done=False, now=10.0, last_sent=9.0)
    assert turn.emit == [b"ack", b"ctl"] and turn.next is OutNext.WAIT
    assert turn.ping_at == 9.0 + vc.keepalive_interval() == turn.deadline
    assert vc.ping() == rts.ping()


# -- hypothesis -------------------------------------------------------------------------------

WRITER_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["rpc", "ack", "control", "attach", "a7", "c1", "time"]),
        st.integers(24, 20000),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(WRITER_STEPS)
def test_an_out_channel_never_passes_its_content_length(
    steps: list[tuple[str, int]],
) -> None:
    """Whatever the backend sends and the client answers, every OUT instance stays
    within its Content-Length and the recycle's PDUs always fit."""
    vc = open_vc(replace(CFG, out_content_length=65536, out_recycle_threshold=8192))
    windows = [vc.out_window]
    now, pending = 0.0, None
    for step, size in steps:
        if step == "rpc" and pending is None:
            pending = size
        elif step == "ack":
            vc.out_window.acknowledged(vc.out_window.bytes_sent & 0xFFFFFFFF, 65536)
        elif step == "control":
            vc.control.append(b"\x00" * 28)
        elif step == "attach" and vc.out_recycle.state in (OutState.OPENED, OutState.REQUESTED):
            successor = bytes([size % 256]) * 16
            try:
                vc.attach_out_successor(OutRecycleA3(VC, vc.out_cookie, successor, 65536), now)
            except RecycleRefused:
                assert successor == vc.out_cookie
        elif step in ("a7", "c1") and vc.out_recycle.successor is not None:
            a7 = rts_recycling.out_r2_a7(vc.out_recycle.successor.successor)
            try:
                if step == "a7":
                    vc.in_rts(message(a7))
                else:
                    vc.successor_out_rts(message(rts_recycling.out_r2_c1()))
            except VcError:
                break  # out of sequence (a repeat, A7 before A6): the VC ends
        elif step == "time":
            now += size / 1000
        turn = vc.out_turn(pending, backend_done=False, now=now, last_sent=now)
        if turn.next in (OutNext.SEND, OutNext.SEND_LAST):
            pending = None
        elif turn.next is OutNext.SWITCH:
            vc.predecessor_end()
            vc.out_switched()
            windows.append(vc.out_window)
        elif turn.next is OutNext.END:
            break
        if vc.out_recycle.state is OutState.OPENED:
            assert vc.out_window.remaining() >= vc.out_recycle.reserve() or pending is not None
    assert all(w.body_sent <= w.content_length for w in windows)


IN_PDUS = [
    rts.ping(),
    rts.keep_alive(0),
    rts.flow_control_ack(0, 65536, OUT),
    rts.flow_control_ack(5, 65536, OUT),
    rts_recycling.in_r2_a5(IN_NEXT),
    rts_recycling.out_r2_a7(OUT_NEXT),
    rts_recycling.in_r2_a1(VC, IN, IN_NEXT),
    rts.conn_b1(VC, IN, GROUP),
    rts.echo(),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(IN_PDUS), max_size=10), st.booleans())
def test_random_in_pdus_give_actions_or_vc_errors(pdus: list[bytes], recycling: bool) -> None:
    vc = open_vc()
    if recycling:
        vc.attach_in_successor(InRecycleA1(VC, IN, IN_NEXT))
    for pdu in pdus:
        try:
            assert isinstance(vc.in_rts(message(pdu)), InAction)
        except VcError as exc:
            assert isinstance(exc, RemoteProtocolError)
            return
    assert vc.out_window.fits_body(CONTROL_HEADROOM)
