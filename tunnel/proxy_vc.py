"""The proxy's side of an RPC over HTTP v2 virtual connection, without I/O ([MS-RPCH]
3.2.3 inbound and 3.2.4 outbound proxy roles, played at once by a terminating proxy;
3.2.4.4.1 establishment, 3.2.3.5.5 and 3.2.4.5.6-3.2.4.5.11 recycling).

Theory of operation
-------------------
A VC is an IN channel (the client's request body: its PDUs) and an OUT channel (the
body of our answer: the backend's PDUs and our RTS PDUs), each replaced by a successor
when its Content-Length runs low (:mod:`tunnel.recycling`), while the backend
connection stays. :class:`ProxyVc` holds the protocol state of one VC: the cookies,
flow control of the current channel instances (:mod:`tunnel.vc`), both recycling
state machines, the client's keep-alive and the RTS PDUs waiting for the OUT channel.
The trio driver (:mod:`tunnel.drivers.h1_server`, :mod:`tunnel.drivers.h1_vc`; its
``VirtualConnection`` adds the tasks' events, the backend and the queues) reads and
writes, and asks the core:

Opening a channel
    :func:`open_out_channel` and :func:`open_in_channel` say what the first PDU of an
    accepted channel asks (:class:`ChannelOpening`): the first channel of its side
    (CONN/A1, CONN/B1) or a successor (OUT_R2/A3, IN_R2/A1), or why it is refused.
    :meth:`ProxyVc.out_opened` takes CONN/A1 and gives CONN/A3,
    :meth:`ProxyVc.in_opened` takes CONN/B1, :meth:`ProxyVc.conn_c2` ends the
    establishment once both halves are there; a successor is taken with
    :meth:`ProxyVc.attach_out_successor` or :meth:`ProxyVc.attach_in_successor`.
The IN channel's RTS PDUs
    :meth:`ProxyVc.in_rts` classifies and applies each (FlowControlAck for OUT,
    Keep-Alive, IN_R2/A5, OUT_R2/A7) and says what the driver must do
    (:class:`InAction`); :meth:`ProxyVc.ack_in` counts the client's RPC bytes and
    queues the acknowledgement that is due. A successor OUT channel's OUT_R2/C1 goes to
    :meth:`ProxyVc.successor_out_rts`.
The OUT writer
    Each turn, :meth:`ProxyVc.out_turn` gives the RTS PDUs due first, in the order of
    the recycling steps (OUT_R2/A6 once a successor is attached; the acknowledgement
    and control PDUs such as IN_R2/A4 while they fit; OUT_R2/A2 once the channel runs
    low), then what comes next (:class:`OutNext`): the waiting RPC PDU (more go in the
    same flush while :meth:`ProxyVc.take_rpc` allows), the last PDUs and then the
    switch to the successor (:meth:`ProxyVc.predecessor_end`,
    :meth:`ProxyVc.out_switched`), the end of the VC, or a wait until a deadline,
    after which a Ping may be due (:meth:`ProxyVc.ping`).

Budgets follow :mod:`tunnel.recycling`: the handshake PDUs still due are always
reserved, and RPC PDUs and Pings also leave
:data:`~tunnel.recycling.CONTROL_HEADROOM`. Every PDU the core hands out has been
counted against the window and the Content-Length of the channel it goes on. Times
come in as arguments. Protocol errors are :class:`VcError` (the VC ends) and
:class:`~tunnel.recycling.RecycleRefused` (only the successor channel is refused).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dcerpc.errors import DecodeError, RemoteProtocolError
from tunnel import rts, rts_recycling
from tunnel.config import TunnelConfig
from tunnel.recycling import CONTROL_HEADROOM, InRecycler, OutRecycler, OutState, RecycleError
from tunnel.rts_recycling import InRecycleA1, OutRecycleA3
from tunnel.vc import ReceiveWindow, SendWindow

if TYPE_CHECKING:
    from tunnel.policy import Target

#: Cookies of retired OUT channels remembered, to ignore their late acknowledgements.
RETIRED_COOKIES = 4
PING_SIZE = 20
#: The client's keep-alive interval until CONN/B1 says otherwise ([MS-RPCH] 2.2.3.5.6).
DEFAULT_KEEPALIVE_MS = 300000


class VcError(RemoteProtocolError):
    """The client broke the VC's protocol on a live channel: end the VC."""


@dataclass(frozen=True, slots=True)
class ChannelOpening:
    """What the first PDU of an accepted RPC channel asks."""

    #: Its parsed fields; None when the channel is refused (``error`` says why).
    first: rts.ConnA1 | rts.ConnB1 | OutRecycleA3 | InRecycleA1 | None
    #: A successor channel of a recycle (refused with ``503 RPC Error: 6c0`` on error;
    #: a first channel is dropped).
    successor: bool
    error: str = ""


def open_out_channel(message: rts.RtsMessage) -> ChannelOpening:
    """An OUT channel opens with CONN/A1, or with OUT_R2/A3 for a successor."""
    if rts.classify(message) is rts.Kind.OUT_R2_A3:
        try:
            return ChannelOpening(rts_recycling.parse_out_r2_a3(message), successor=True)
        except DecodeError as exc:
            return ChannelOpening(None, successor=True, error=f"bad OUT_R2/A3: {exc}")
    try:
        return ChannelOpening(rts.parse_conn_a1(message), successor=False)
    except DecodeError as exc:
        return ChannelOpening(None, successor=False, error=f"bad CONN/A1: {exc}")


def open_in_channel(message: rts.RtsMessage) -> ChannelOpening:
    """An IN channel opens with CONN/B1, or with IN_R2/A1 (IN_R1/A1) for a successor."""
    if rts.classify(message) is rts.Kind.IN_R2_A1:
        try:
            return ChannelOpening(rts_recycling.parse_in_r2_a1(message), successor=True)
        except DecodeError as exc:
            return ChannelOpening(None, successor=True, error=f"bad IN_R2/A1: {exc}")
    try:
        return ChannelOpening(rts.parse_conn_b1(message), successor=False)
    except DecodeError as exc:
        return ChannelOpening(None, successor=False, error=f"bad CONN/B1: {exc}")


class InAction(enum.Enum):
    """What an RTS PDU from the IN channel asks of the driver."""

    NONE = "none"
    WAKE_OUT = "wake-out"  # the OUT writer has something new to do
    HANDED_OVER = "handed-over"  # IN_R2/A5: stop reading; the successor reads on


class OutNext(enum.Enum):
    """What the OUT writer does after a turn's RTS PDUs."""

    SEND = "send"  # the waiting RPC PDU (counted), and more while take_rpc allows
    SEND_LAST = "send-last"  # the waiting RPC PDU (counted) on the predecessor; next turn
    SWITCH = "switch"  # OUT_R2/B3 and the switch to the successor; next turn
    END = "end"  # end the VC with ``reason``
    WAIT = "wait"  # until ``deadline`` or a wake-up; a Ping is due from ``ping_at``


@dataclass(frozen=True, slots=True)
class OutTurn:
    """One turn of the OUT writer: RTS PDUs to write first (counted), then ``next``."""

    emit: list[bytes] = field(default_factory=list)
    next: OutNext = OutNext.WAIT
    reason: str = ""
    deadline: float = 0.0
    ping_at: float = 0.0


class ProxyVc:
    """The protocol state of one virtual connection on the proxy."""

    def __init__(self, cookie: bytes, user: str, target: Target, config: TunnelConfig) -> None:
        self.cookie = cookie
        self.user = user
        self.target = target
        self.config = config
        self.in_cookie = b"\x00" * 16
        self.out_cookie = b"\x00" * 16
        self.retired_out_cookies: deque[bytes] = deque(maxlen=RETIRED_COOKIES)
        self.keepalive_ms = DEFAULT_KEEPALIVE_MS
        self.out_window = SendWindow(
            65536, config.out_content_length, strict=config.out_flow_control
        )
        # Acknowledged every quarter (not half) of the window: the spec caps it at 256 KiB,
        # and credit must come back while most of it is still in flight (HTTP/1.1
        # uploads are faster: docs/benchmarks.md), as our client does for OUT data.
        self.in_window = self._new_in_window()
        self.pending_ack: bytes | None = None
        #: RTS PDUs for the OUT writer besides acknowledgements (IN_R2/A4).
        self.control: deque[bytes] = deque()
        self.out_recycle = OutRecycler(config.out_recycle_threshold, config.recycle_timeout)
        self.in_recycle = InRecycler()
        #: The largest RPC PDU an OUT channel can ever carry.
        self.largest_rpc = config.out_content_length - CONTROL_HEADROOM - self.out_recycle.reserve()

    def _new_in_window(self) -> ReceiveWindow:
        return ReceiveWindow(self.config.in_window, ack_after=self.config.in_window // 4)

    def _sent(self, data: bytes) -> bytes:
        """``data``, an RTS PDU, counted on the current OUT channel."""
        self.out_window.sent(len(data), rpc=False)
        return data

    # -- establishment ([MS-RPCH] 3.2.4.4.1) ---------------------------------------------

    def out_opened(self, a1: rts.ConnA1) -> bytes:
        """The OUT channel's CONN/A1: its cookie and the client's window; CONN/A3 (counted)
        goes first in the OUT response body."""
        self.out_cookie = a1.out_cookie
        self.out_window.peer_window = a1.receive_window
        return self._sent(rts.conn_a3(self.config.connection_timeout_ms))

    def in_opened(self, b1: rts.ConnB1) -> None:
        """The IN channel's CONN/B1: its cookie and the client's keep-alive."""
        self.in_cookie = b1.in_cookie
        self.keepalive_ms = b1.keepalive_ms

    def conn_c2(self) -> bytes:
        """CONN/C2 (counted), our IN window: both halves are there, the VC is open."""
        return self._sent(rts.conn_c2(self.config.in_window, self.config.connection_timeout_ms))

    # -- the IN channel ------------------------------------------------------------------

    def ack_in(self, window: ReceiveWindow, size: int) -> bool:
        """Count ``size`` bytes of client RPC PDUs (of the IN channel instance that owns
        ``window``) as consumed; True when an acknowledgement was queued for OUT (none
        for an instance recycled since)."""
        ack = window.received(size)
        if ack is None or window is not self.in_window:
            return False
        # Acknowledge IN data on OUT, as Windows clients expect ([MS-RPCH] 3.2.3.1.4;
        # without it they stall after one window, openchange PR #161).
        self.pending_ack = rts.flow_control_ack_to(
            rts.ForwardDestination.CLIENT, ack.bytes_received, ack.available_window, self.in_cookie
        )
        return True

    def in_rts(self, message: rts.RtsMessage) -> InAction:
        """Apply an RTS PDU from the current IN channel.

        Raises:
            VcError: a bad acknowledgement, a recycling PDU out of sequence, or a PDU
                the client must not send on IN.
        """
        kind = rts.classify(message)
        if kind is rts.Kind.FLOW_CONTROL_ACK:
            ack = rts.find_ack(message)
            assert ack is not None
            if ack.channel_cookie in self.retired_out_cookies:
                return InAction.NONE  # late, for an OUT channel recycled since: moot
            try:
                self.out_window.acknowledged(ack.bytes_received, ack.available_window)
            except DecodeError as exc:
                raise VcError(f"bad flow control ack: {exc}") from exc
            return InAction.WAKE_OUT
        if kind is rts.Kind.KEEP_ALIVE:
            cmd = message.commands[0]
            if isinstance(cmd, rts.ClientKeepalive):
                self.keepalive_ms = rts.client_keepalive_ms(cmd.value)
            return InAction.NONE
        if kind is rts.Kind.IN_R2_A5:
            try:
                self.in_cookie = self.in_recycle.handed_over(
                    rts_recycling.successor_cookie(message)
                )
            except RecycleError as exc:
                raise VcError(f"IN channel recycling: {exc}") from exc
            # The successor is a new channel instance: fresh flow control (3.2.1.1.4).
            self.in_window = self._new_in_window()
            self.pending_ack = None
            return InAction.HANDED_OVER
        if kind is rts.Kind.OUT_R2_A7:
            try:
                self.out_recycle.confirmed_on_in(rts_recycling.successor_cookie(message))
            except RecycleError as exc:
                raise VcError(f"OUT channel recycling: {exc}") from exc
            return InAction.WAKE_OUT
        if kind in (rts.Kind.RECYCLE, rts.Kind.IN_R2_A1, rts.Kind.OUT_R2_A3):
            raise VcError(f"unexpected {kind.value} on the IN channel")
        # Ping and anything else: nothing to do (they only keep the channel alive).
        return InAction.NONE

    # -- successor channels --------------------------------------------------------------

    def attach_in_successor(self, a1: InRecycleA1) -> None:
        """A successor IN channel opened with IN_R2/A1; IN_R2/A4 is queued for OUT and
        the successor waits, unread, for the predecessor's IN_R2/A5.

        Raises:
            RecycleRefused: it does not name the current IN channel, or a recycle is
                under way.
        """
        self.in_recycle.attach(a1, self.in_cookie)
        self.control.append(rts_recycling.in_r2_a4())

    def in_successor_current(self, cookie: bytes) -> bool:
        """Whether the successor ``cookie`` became the IN channel; if not, it gives up
        (the VC keeps its current IN channel)."""
        if self.in_cookie == cookie:
            return True
        if self.in_recycle.successor == cookie:
            self.in_recycle.abort()
        return False

    def attach_out_successor(self, a3: OutRecycleA3, now: float) -> None:
        """A successor OUT channel opened with OUT_R2/A3 (the OUT writer sends OUT_R2/A6).

        Raises:
            RecycleRefused: as :meth:`~tunnel.recycling.OutRecycler.attach`.
        """
        self.out_recycle.attach(a3, self.out_cookie, now)

    def successor_out_rts(self, message: rts.RtsMessage) -> bool:
        """An RTS PDU on a successor OUT channel's request body; True when it was
        OUT_R2/C1 (or a Ping in its place): wake the OUT writer.

        Raises:
            VcError: OUT_R2/C1 out of sequence.
        """
        if rts.classify(message) not in (rts.Kind.OUT_R2_C1, rts.Kind.PING):
            return False
        try:
            self.out_recycle.successor_pinged()
        except RecycleError as exc:
            raise VcError(f"OUT channel recycling: {exc}") from exc
        return True

    # -- the OUT writer ------------------------------------------------------------------

    def fits(self, size: int, *, headroom: bool) -> bool:
        """Whether ``size`` bytes fit the OUT channel and leave the recycle's reserve (and,
        for RPC PDUs and pings, the control headroom)."""
        extra = self.out_recycle.reserve() + (CONTROL_HEADROOM if headroom else 0)
        return self.out_window.fits_body(size + extra)

    def take_rpc(self, size: int) -> bool:
        """Whether one more RPC PDU of ``size`` bytes goes in the current flush (then it is
        counted): the client's window and the channel allow it."""
        if self.out_window.can_send(size) and self.fits(size, headroom=True):
            self.out_window.sent(size, rpc=True)
            return True
        return False

    def keepalive_interval(self) -> float:
        """Seconds of silence on OUT after which a Ping goes: ours, or half the client's
        keep-alive if that is shorter."""
        return min(self.config.keepalive_interval, (self.keepalive_ms or 300000) / 2000)

    def recycle_request(self, *, blocked: bool, now: float) -> bytes | None:
        """OUT_R2/A2 (counted), once the channel runs low or an RPC PDU no longer fits."""
        recycle = self.out_recycle
        if recycle.state is not OutState.OPENED:
            return None
        room = self.out_window.remaining() - recycle.reserve() - CONTROL_HEADROOM
        if not (blocked or recycle.should_request(room)):
            return None
        a2 = self._sent(rts_recycling.out_r2_a2())  # always fits: reserved
        recycle.requested(now)
        return a2

    def out_turn(
        self, pending: int | None, *, backend_done: bool, now: float, last_sent: float
    ) -> OutTurn:
        """One turn of the OUT writer, ``pending`` being the size of the RPC PDU waiting
        (if any), ``backend_done`` true once the backend is closed and nothing waits, and
        ``last_sent`` when data last went on OUT."""
        emit: list[bytes] = []
        recycle = self.out_recycle
        if recycle.state is OutState.ATTACHED:
            emit.append(self._sent(rts_recycling.out_r2_a6()))  # always fits: reserved
            recycle.a6_sent()
        if recycle.state is OutState.SWITCHING:
            # Flush on the predecessor what its window and length still take (without
            # waiting for acknowledgements: the successor has a fresh window), then switch.
            if (
                pending is not None
                and self.out_window.can_send(pending)
                and self.fits(pending, headroom=False)
            ):
                self.out_window.sent(pending, rpc=True)
                return OutTurn(emit, OutNext.SEND_LAST)
            return OutTurn(emit, OutNext.SWITCH)
        # Control PDUs may use the headroom, never the recycle's reserve.
        if self.pending_ack is not None and self.fits(len(self.pending_ack), headroom=False):
            emit.append(self._sent(self.pending_ack))
            self.pending_ack = None
        while self.control and self.fits(len(self.control[0]), headroom=False):
            emit.append(self._sent(self.control.popleft()))
        if backend_done:
            return OutTurn(emit, OutNext.END, "the RPC server closed the connection")
        blocked = False
        if pending is not None and self.out_window.can_send(pending):
            if self.take_rpc(pending):
                return OutTurn(emit, OutNext.SEND)
            if pending > self.largest_rpc:
                reason = "an RPC PDU larger than an OUT channel's Content-Length"
                return OutTurn(emit, OutNext.END, reason)
            blocked = True
        a2 = self.recycle_request(blocked=blocked, now=now)
        if a2 is not None:
            emit.append(a2)
        if recycle.expired(now, blocked=blocked):
            # A client that does not recycle: end the VC rather than overrun the body.
            reason = f"OUT channel Content-Length exhausted (recycling {recycle.state.value})"
            return OutTurn(emit, OutNext.END, reason)
        ping_at = last_sent + self.keepalive_interval()
        deadline = ping_at
        recycle_deadline = recycle.next_deadline(blocked=blocked)
        if recycle_deadline is not None:
            deadline = min(deadline, recycle_deadline)
        return OutTurn(emit, OutNext.WAIT, deadline=deadline, ping_at=ping_at)

    def ping(self) -> bytes | None:
        """A Ping (counted) for a quiet OUT channel, unless it no longer fits (then a
        recycle is due anyway)."""
        if not self.fits(PING_SIZE, headroom=True):
            return None
        return self._sent(rts.ping())

    def predecessor_end(self) -> bytes:
        """OUT_R2/B3 (counted), the last PDU of the predecessor OUT channel."""
        return self._sent(rts_recycling.out_r2_b3())

    def out_switched(self) -> None:
        """OUT_R2/B3 is out: the successor is the OUT channel, with fresh flow control
        (3.2.4.5.10) and the window of its OUT_R2/A3."""
        a3 = self.out_recycle.switched()
        self.retired_out_cookies.append(self.out_cookie)
        self.out_cookie = a3.successor
        self.out_window = SendWindow(
            a3.receive_window,
            self.config.out_content_length,
            strict=self.config.out_flow_control,
        )
