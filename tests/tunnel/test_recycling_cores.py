"""Channel recycling without I/O: the RTS PDUs of the IN_R2 and OUT_R2 sequences
([MS-RPCH] 2.2.4.18-2.2.4.46: sizes, byte-exact round trips, parsers, FreeRDP's and
Wireshark's names for them) and the recycling state machines of :mod:`tunnel.recycling`
(every transition, every refusal, and random event sequences giving only valid states
or protocol errors). Wireshark's own verdict on the bytes is in
``test_recycling_wireshark.py``."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcerpc.errors import DecodeError, RemoteProtocolError
from tunnel import recycling, rts, rts_recycling
from tunnel.recycling import (
    ClientInRecycler,
    ClientInState,
    ClientOutRecycler,
    ClientOutState,
    InRecycler,
    InState,
    OutRecycler,
    OutState,
    RecycleError,
    RecycleRefused,
)

VC, OLD, NEW, OTHER = b"V" * 16, b"O" * 16, b"N" * 16, b"X" * 16

#: (builder output, size from the spec, kind, flags, command types) for every PDU.
RECYCLING_PDUS = [
    (
        rts_recycling.in_r2_a1(VC, OLD, NEW),
        88,
        rts.Kind.IN_R2_A1,
        rts.RtsFlags.RECYCLE_CHANNEL,
        (rts.Version, rts.Cookie, rts.Cookie, rts.Cookie),
    ),
    (rts_recycling.in_r2_a4(), 28, rts.Kind.IN_R2_A4, rts.RtsFlags.NONE, (rts.Destination,)),
    (rts_recycling.in_r2_a5(NEW), 40, rts.Kind.IN_R2_A5, rts.RtsFlags.NONE, (rts.Cookie,)),
    (
        rts_recycling.out_r2_a2(),
        28,
        rts.Kind.OUT_R2_A2,
        rts.RtsFlags.RECYCLE_CHANNEL,
        (rts.Destination,),
    ),
    (
        rts_recycling.out_r2_a3(VC, OLD, NEW, 262144),
        96,
        rts.Kind.OUT_R2_A3,
        rts.RtsFlags.RECYCLE_CHANNEL,
        (rts.Version, rts.Cookie, rts.Cookie, rts.Cookie, rts.ReceiveWindowSize),
    ),
    (
        rts_recycling.out_r2_a6(),
        32,
        rts.Kind.OUT_R2_A6,
        rts.RtsFlags.NONE,
        (rts.Destination, rts.Ance),
    ),
    (
        rts_recycling.out_r2_a7(NEW),
        56,
        rts.Kind.OUT_R2_A7,
        rts.RtsFlags.OUT_CHANNEL,
        (rts.Destination, rts.Cookie, rts.Version),
    ),
    (rts_recycling.out_r2_b3(), 24, rts.Kind.OUT_R2_B3, rts.RtsFlags.EOF, (rts.Ance,)),
    (rts_recycling.out_r2_c1(), 24, rts.Kind.OUT_R2_C1, rts.RtsFlags.PING, (rts.Empty,)),
]
IDS = [kind.value for _, _, kind, _, _ in RECYCLING_PDUS]


@pytest.mark.parametrize(("pdu", "size", "kind", "flags", "types"), RECYCLING_PDUS, ids=IDS)
def test_recycling_pdus_have_the_layout_of_the_spec(
    pdu: bytes, size: int, kind: rts.Kind, flags: int, types: tuple[type, ...]
) -> None:
    assert len(pdu) == size
    assert struct.unpack_from("<H", pdu, 8)[0] == size  # frag_length
    assert pdu[2] == 20 and pdu[3] == 3  # RTS, first+last fragment
    assert struct.unpack_from("<I", pdu, 12)[0] == 0  # call_id
    message = rts.decode_rts(pdu)
    assert message.flags == flags
    assert message.command_types() == types
    assert rts.classify(message) is kind
    assert rts.encode_rts(message) == pdu  # decode, then re-encode byte-exact


@pytest.mark.parametrize(("pdu", "size", "kind", "flags", "types"), RECYCLING_PDUS, ids=IDS)
def test_truncated_recycling_pdus_are_refused(
    pdu: bytes, size: int, kind: rts.Kind, flags: int, types: tuple[type, ...]
) -> None:
    del size, flags, types
    with pytest.raises(DecodeError):
        rts.decode_rts(pdu[:-1])  # truncated
    assert rts.classify(rts.decode_rts(pdu)) is kind


def test_destinations_and_cookies_are_where_the_spec_puts_them() -> None:
    assert rts.decode_rts(rts_recycling.in_r2_a4()).commands == (
        rts.Destination(rts.ForwardDestination.CLIENT),
    )
    assert rts.decode_rts(rts_recycling.out_r2_a2()).commands == (
        rts.Destination(rts.ForwardDestination.CLIENT),
    )
    a7 = rts.decode_rts(rts_recycling.out_r2_a7(NEW))
    assert a7.commands[0] == rts.Destination(rts.ForwardDestination.SERVER)
    assert rts_recycling.successor_cookie(a7) == NEW
    assert rts_recycling.successor_cookie(rts.decode_rts(rts_recycling.in_r2_a5(NEW))) == NEW
    with pytest.raises(DecodeError):
        rts_recycling.successor_cookie(rts.decode_rts(rts.ping()))


def test_parsers_return_the_fields() -> None:
    a1 = rts_recycling.parse_in_r2_a1(rts.decode_rts(rts_recycling.in_r2_a1(VC, OLD, NEW)))
    assert (a1.vc_cookie, a1.predecessor, a1.successor) == (VC, OLD, NEW)
    a3 = rts_recycling.parse_out_r2_a3(rts.decode_rts(rts_recycling.out_r2_a3(VC, OLD, NEW, 65536)))
    assert (a3.vc_cookie, a3.predecessor, a3.successor, a3.receive_window) == (
        VC,
        OLD,
        NEW,
        65536,
    )
    with pytest.raises(DecodeError, match="IN_R2/A1"):
        rts_recycling.parse_in_r2_a1(rts.decode_rts(rts.conn_b1(VC, OLD, NEW)))
    with pytest.raises(DecodeError, match="OUT_R2/A3"):
        rts_recycling.parse_out_r2_a3(rts.decode_rts(rts_recycling.in_r2_a1(VC, OLD, NEW)))
    with pytest.raises(DecodeError, match="window"):
        rts_recycling.parse_out_r2_a3(rts.decode_rts(rts_recycling.out_r2_a3(VC, OLD, NEW, 100)))


def test_parsers_refuse_another_rts_version() -> None:
    a1 = rts.RtsMessage(
        rts.RtsFlags.RECYCLE_CHANNEL,
        (rts.Version(2), rts.Cookie(VC), rts.Cookie(OLD), rts.Cookie(NEW)),
    )
    with pytest.raises(DecodeError, match="version"):
        rts_recycling.parse_in_r2_a1(rts.decode_rts(rts.encode_rts(a1)))


def test_r1_variants_and_freerdps_a7_are_recognised() -> None:
    # IN_R1/A4 (2.2.4.13) carries the new inbound proxy's window; a client follows it.
    in_r1_a4 = rts.RtsMessage(
        rts.RtsFlags.NONE,
        (
            rts.Destination(rts.ForwardDestination.CLIENT),
            rts.Version(),
            rts.ReceiveWindowSize(65536),
            rts.ConnectionTimeout(120000),
        ),
    )
    decoded = rts.decode_rts(rts.encode_rts(in_r1_a4))
    assert rts.classify(decoded) is rts.Kind.IN_R1_A4
    assert rts.find_window(decoded) == 65536
    assert rts.find_window(rts.decode_rts(rts_recycling.in_r2_a4())) is None
    # FreeRDP's signature table lists OUT_R2/A7 without RTS_FLAG_OUT_CHANNEL.
    freerdp_a7 = rts.RtsMessage(
        rts.RtsFlags.NONE,
        (rts.Destination(rts.ForwardDestination.SERVER), rts.Cookie(NEW), rts.Version()),
    )
    assert rts.classify(freerdp_a7) is rts.Kind.OUT_R2_A7
    # Any other PDU flagged RECYCLE_CHANNEL is still named as recycling; pings stay pings.
    odd = rts.RtsMessage(rts.RtsFlags.RECYCLE_CHANNEL, (rts.Empty(),))
    assert rts.classify(odd) is rts.Kind.RECYCLE
    assert rts.classify(rts.decode_rts(rts.ping())) is rts.Kind.PING


def test_handshake_sizes_match_the_builders() -> None:
    assert len(rts_recycling.in_r2_a1(VC, OLD, NEW)) == recycling.IN_R2_A1_SIZE
    assert len(rts_recycling.in_r2_a4()) == recycling.IN_R2_A4_SIZE
    assert len(rts_recycling.in_r2_a5(NEW)) == recycling.IN_R2_A5_SIZE
    assert len(rts_recycling.out_r2_a2()) == recycling.OUT_R2_A2_SIZE
    assert len(rts_recycling.out_r2_a6()) == recycling.OUT_R2_A6_SIZE
    assert len(rts_recycling.out_r2_a7(NEW)) == recycling.OUT_R2_A7_SIZE
    assert len(rts_recycling.out_r2_b3()) == recycling.OUT_R2_B3_SIZE


# -- the proxy's OUT recycling ------------------------------------------------------------


def a3(
    predecessor: bytes = OLD, successor: bytes = NEW, window: int = 65536
) -> rts_recycling.OutRecycleA3:
    return rts_recycling.OutRecycleA3(VC, predecessor, successor, window)


def test_out_recycle_happy_path_and_reserve() -> None:
    out = OutRecycler(threshold=8192, timeout=30.0)
    assert out.reserve() == 28 + 32 + 24  # A2 + A6 + B3 still to send
    assert not out.should_request(8192)
    assert out.should_request(8191)
    out.requested(now=100.0)
    assert out.state is OutState.REQUESTED and out.reserve() == 32 + 24
    assert not out.should_request(0)  # only once
    out.attach(a3(), OLD, now=101.0)
    assert out.state is OutState.ATTACHED
    out.a6_sent()
    assert out.state is OutState.CONFIRMING and out.reserve() == 24
    out.confirmed_on_in(NEW)
    assert out.state is OutState.CONFIRMING  # C1 still missing
    out.successor_pinged()
    assert out.state is OutState.SWITCHING
    successor = out.switched()
    assert (successor.successor, successor.receive_window) == (NEW, 65536)
    assert out.state is OutState.OPENED and out.successor is None
    assert out.next_deadline(blocked=True) is None


def test_out_recycle_accepts_c1_before_a6_and_a3_without_a2() -> None:
    out = OutRecycler(threshold=8192, timeout=30.0)
    out.attach(a3(), OLD, now=0.0)  # the client recycles without being asked: accepted
    out.successor_pinged()  # C1 may come right after A3 (3.2.4.5.11, B1OrC1W)
    out.a6_sent()
    out.confirmed_on_in(NEW)
    assert out.state is OutState.SWITCHING


@pytest.mark.parametrize(
    ("successor", "match"),
    [(a3(predecessor=OTHER), "current OUT channel"), (a3(successor=OLD), "reuses")],
)
def test_out_recycle_refuses_a_successor_naming_another_channel(
    successor: rts_recycling.OutRecycleA3, match: str
) -> None:
    out = OutRecycler(threshold=8192, timeout=30.0)
    with pytest.raises(RecycleRefused, match=match):
        out.attach(successor, OLD, now=0.0)
    assert out.state is OutState.OPENED  # the VC goes on untouched


def test_out_recycle_refuses_a_second_successor() -> None:
    out = OutRecycler(threshold=8192, timeout=30.0)
    out.attach(a3(), OLD, now=0.0)
    with pytest.raises(RecycleRefused, match="under way"):
        out.attach(a3(successor=OTHER), OLD, now=0.0)
    assert out.successor is not None and out.successor.successor == NEW


def test_out_recycle_protocol_errors() -> None:
    out = OutRecycler(threshold=8192, timeout=30.0)
    with pytest.raises(RecycleError):
        out.confirmed_on_in(NEW)  # A7 without a recycle
    with pytest.raises(RecycleError):
        out.successor_pinged()  # C1 without a successor
    out.attach(a3(), OLD, now=0.0)
    with pytest.raises(RecycleError):
        out.confirmed_on_in(NEW)  # A7 before A6 was sent
    out.a6_sent()
    with pytest.raises(RecycleError, match="another successor"):
        out.confirmed_on_in(OTHER)
    out.confirmed_on_in(NEW)
    with pytest.raises(RecycleError):
        out.confirmed_on_in(NEW)  # twice
    out.successor_pinged()
    with pytest.raises(RecycleError):
        out.successor_pinged()  # twice


def test_out_recycle_deadlines() -> None:
    out = OutRecycler(threshold=8192, timeout=30.0)
    assert not out.expired(1e9, blocked=True)
    out.requested(now=100.0)
    # A client ignoring OUT_R2/A2 keeps its VC while data still fits...
    assert out.next_deadline(blocked=False) is None
    assert not out.expired(1e9, blocked=False)
    # ...and loses it once a PDU waits for room past the deadline.
    assert out.next_deadline(blocked=True) == 130.0
    assert not out.expired(129.9, blocked=True)
    assert out.expired(130.0, blocked=True)
    out.attach(a3(), OLD, now=110.0)
    assert out.next_deadline(blocked=False) == 140.0  # an attached successor must finish
    assert out.expired(140.0, blocked=False)


# -- the proxy's IN recycling -------------------------------------------------------------


def test_in_recycle_hand_over() -> None:
    inr = InRecycler()
    inr.attach(rts_recycling.InRecycleA1(VC, OLD, NEW), OLD)
    assert inr.state is InState.ATTACHED
    with pytest.raises(RecycleRefused, match="under way"):
        inr.attach(rts_recycling.InRecycleA1(VC, OLD, OTHER), OLD)
    with pytest.raises(RecycleError, match="another successor"):
        inr.handed_over(OTHER)
    assert inr.handed_over(NEW) == NEW
    assert inr.state is InState.OPENED
    with pytest.raises(RecycleError, match="without a successor"):
        inr.handed_over(NEW)


def test_in_recycle_refusals_and_abort() -> None:
    inr = InRecycler()
    with pytest.raises(RecycleRefused, match="current IN channel"):
        inr.attach(rts_recycling.InRecycleA1(VC, OTHER, NEW), OLD)
    with pytest.raises(RecycleRefused, match="reuses"):
        inr.attach(rts_recycling.InRecycleA1(VC, OLD, OLD), OLD)
    inr.attach(rts_recycling.InRecycleA1(VC, OLD, NEW), OLD)
    inr.abort()
    assert inr.state is InState.OPENED and inr.successor is None
    inr.attach(rts_recycling.InRecycleA1(VC, OLD, NEW), OLD)  # a later attempt may succeed


# -- the client's side --------------------------------------------------------------------


def test_client_in_recycle() -> None:
    cin = ClientInRecycler(threshold=4096)
    assert cin.reserve() == 40
    assert not cin.should_start(4096) and cin.should_start(4095)
    with pytest.raises(RecycleError):
        cin.a4_received()  # not asked for
    cin.started()
    assert not cin.should_start(0)  # one at a time
    cin.a1_sent()
    cin.a4_received()
    assert cin.state is ClientInState.SWITCHING and not cin.should_start(0)
    cin.switched()
    assert cin.state is ClientInState.OPENED


def test_client_out_recycle() -> None:
    cout = ClientOutRecycler()
    for unexpected in (cout.a6_received, cout.b3_received):
        with pytest.raises(RecycleError):
            unexpected()
    cout.a2_received()
    with pytest.raises(RecycleError):
        cout.a2_received()  # a second A2 while the first recycle runs
    cout.a3_sent()
    with pytest.raises(RecycleError):
        cout.b3_received()  # B3 before A6
    cout.a6_received()
    cout.b3_received()
    assert cout.state is ClientOutState.OPENED


# -- random event sequences -----------------------------------------------------------------

OUT_EVENTS = ["request", "attach", "attach_other", "a6", "a7", "a7_other", "c1", "switch"]


class OutModel:
    """The outbound proxy's recycling as [MS-RPCH] 3.2.4.5.6-3.2.4.5.11 describe it, one
    event at a time: the state after the event, and whether it is a protocol error (the
    state then stays as it was)."""

    def __init__(self) -> None:
        self.state = OutState.OPENED
        self.a7 = self.c1 = False

    def step(self, event: str) -> bool:
        """Apply ``event``; True when the proxy must answer it with a protocol error."""
        s = OutState
        if event == "request":  # OUT_R2/A2 goes out: only with no recycle under way
            self.state = s.REQUESTED
        elif event == "attach":  # OUT_R2/A3 naming the current OUT channel
            if self.state not in (s.OPENED, s.REQUESTED):
                return True  # a recycle already under way
            self.state = s.ATTACHED
        elif event == "attach_other":  # OUT_R2/A3 naming another channel: refused
            return True
        elif event == "a6":  # OUT_R2/A6 went out
            self.state = s.CONFIRMING
        elif event in ("a7", "a7_other"):  # OUT_R2/A7 on IN, right or wrong successor
            if self.state is not s.CONFIRMING or self.a7 or event == "a7_other":
                return True
            self.a7 = True
        elif event == "c1":  # OUT_R2/C1 on the successor, before or after A7
            if self.state not in (s.ATTACHED, s.CONFIRMING) or self.c1:
                return True
            self.c1 = True
        elif event == "switch":  # OUT_R2/B3 went out: the successor takes over
            self.state, self.a7, self.c1 = s.OPENED, False, False
        if self.state is s.CONFIRMING and self.a7 and self.c1:
            self.state = s.SWITCHING
        return False


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(OUT_EVENTS), max_size=20))
def test_random_out_events_give_valid_states_or_protocol_errors(events: list[str]) -> None:
    """Whatever a client sends, the proxy's OUT recycler moves exactly as the spec's
    sequence says (or answers with a protocol error and stays put), and its reserve
    always covers what is owed."""
    out = OutRecycler(threshold=8192, timeout=30.0)
    model = OutModel()
    #: The calls the proxy's own writer makes only in their state (others are its bugs).
    own = {"request": OutState.OPENED, "a6": OutState.ATTACHED, "switch": OutState.SWITCHING}
    for event in events:
        if event in own and out.state is not own[event]:
            continue
        refused = False
        try:
            if event == "request":
                out.requested(0.0)
            elif event == "attach":
                out.attach(a3(), OLD, 0.0)
            elif event == "attach_other":
                out.attach(a3(predecessor=OTHER), OLD, 0.0)
            elif event == "a6":
                out.a6_sent()
            elif event == "a7":
                out.confirmed_on_in(NEW)
            elif event == "a7_other":
                out.confirmed_on_in(OTHER)
            elif event == "c1":
                out.successor_pinged()
            elif event == "switch":
                assert out.switched().successor == NEW
        except RemoteProtocolError:
            refused = True
        assert refused == model.step(event), (event, events)
        assert out.state is model.state, (event, events)
        owed = {
            OutState.OPENED: 84,
            OutState.REQUESTED: 56,
            OutState.ATTACHED: 56,
            OutState.CONFIRMING: 24,
            OutState.SWITCHING: 24,
        }[out.state]
        assert out.reserve() == owed
        assert (out.successor is None) == (out.state in (OutState.OPENED, OutState.REQUESTED))
