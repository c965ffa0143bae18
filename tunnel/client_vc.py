"""The client's side of an RPC over HTTP v2 virtual connection, without I/O ([MS-RPCH]
3.2.2: client role; 3.2.2.4.1 establishment, 3.2.2.5 recycling, 3.2.2.1.4 flow control).

Theory of operation
-------------------
A virtual connection is two channels, IN (the client's PDUs, in an ``RPC_IN_DATA``
request body) and OUT (the proxy's, in the body of the answer to ``RPC_OUT_DATA``),
each a series of channel instances because channels are recycled
(:mod:`tunnel.recycling`). :class:`ClientVc` holds what the client knows of it: the
cookies, the flow-control state of the current instances (:mod:`tunnel.vc`), the
recycling state machines and the PDUs that wait for room. The trio driver
(:mod:`tunnel.drivers.h1_client`) owns the connections and the tasks and asks the core
what to do:

Establishment (3.2.2.4.1)
    :meth:`ClientVc.conn_a1` goes on OUT, :meth:`ClientVc.conn_b1` on IN; OUT's body
    must then bring CONN/A3 and CONN/C2 (its IN window) and nothing else:
    :class:`Established`.
The OUT body
    :meth:`ClientVc.receive_out` takes its bytes, :meth:`ClientVc.next_out_event`
    classifies each PDU and applies it: RPC PDUs (:class:`RpcReceived`), the proxy's
    FlowControlAcks (applied to the IN window unless they name a retired IN
    instance: :class:`AckApplied`), and the recycling PDUs, each a step the driver
    takes (:class:`InSuccessorAccepted`, :class:`OutRecycleRequested`,
    :class:`OutRecycleConfirmed`, :class:`OutPredecessorEnded`). Pings and other
    notifications are skipped.
Writing on IN
    :meth:`ClientVc.send_rpc` and :meth:`ClientVc.send_control` say whether a PDU goes
    now (counted against the window and the Content-Length) or waits: an RPC PDU for
    an acknowledgement or the successor IN channel, a control PDU on a full channel
    for the successor (the newest acknowledgement replacing an older one). Both start
    an IN recycle when the channel runs low (:meth:`ClientVc.in_recycle_due`).
Recycling steps, in their order
    IN: :meth:`~ClientVc.in_recycle_due`, :meth:`~ClientVc.in_successor_opened`
    (IN_R2/A1 for the successor), IN_R2/A4 from OUT, :meth:`~ClientVc.in_handover`
    (IN_R2/A5 for the predecessor, then the PDUs that waited, for the successor).
    OUT: OUT_R2/A2 from OUT, :meth:`~ClientVc.out_successor_opened` (OUT_R2/A3),
    OUT_R2/A6 from OUT, :meth:`~ClientVc.out_confirm` (OUT_R2/A7 for IN, OUT_R2/C1 for
    the successor), OUT_R2/B3 from OUT, :meth:`~ClientVc.out_switched`.

Cookies come in as arguments (the driver draws them), so are the bytes out: every
PDU the core returns has been counted where it goes. Errors are
:class:`~tunnel.errors.TunnelError` and, for recycling PDUs out of sequence,
:class:`~tunnel.recycling.RecycleError`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from dcerpc.framing import PduFramer
from tunnel import rts, rts_recycling
from tunnel.errors import TunnelError
from tunnel.recycling import (
    CONTROL_HEADROOM,
    IN_R2_A1_SIZE,
    ClientInRecycler,
    ClientOutRecycler,
)
from tunnel.vc import ReceiveWindow, SendWindow

#: Our OUT receive window, advertised in CONN/A1 and OUT_R2/A3 (impacket and Windows
#: use 256 KiB).
OUT_WINDOW = 262144
#: We acknowledge OUT data every quarter of the window (Windows: every half). The spec
#: caps the window at 256 KiB, so in a download the proxy's credit must come back
#: while most of the window is still in flight.
OUT_ACK_AFTER = OUT_WINDOW // 4
#: Retired IN channel cookies remembered, to ignore the proxy's late acknowledgements.
RETIRED_IN_COOKIES = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class OutEvent:
    """Base of what a PDU on the OUT channel asks of the driver."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Established(OutEvent):
    """CONN/A3 and CONN/C2 arrived: the VC is open."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcReceived(OutEvent):
    """An RPC PDU for the caller (counted as received, not yet acknowledged)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AckApplied(OutEvent):
    """A FlowControlAck reopened the IN window: wake the senders."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InSuccessorAccepted(OutEvent):
    """IN_R2/A4 (or IN_R1/A4, with the new inbound proxy's window): call
    :meth:`ClientVc.in_handover`."""

    window: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutRecycleRequested(OutEvent):
    """OUT_R2/A2: open a successor OUT channel, then :meth:`ClientVc.out_successor_opened`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutRecycleConfirmed(OutEvent):
    """OUT_R2/A6: send what :meth:`ClientVc.out_confirm` returns."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutPredecessorEnded(OutEvent):
    """OUT_R2/B3: nothing more is read from this OUT channel; read the successor from
    its ``200 Success`` on, then :meth:`ClientVc.out_switched`."""


@dataclass(frozen=True, slots=True)
class Handover:
    """What an IN channel switch writes: IN_R2/A5 on the predecessor, then the control
    PDUs that waited for room, on the successor."""

    a5: bytes
    then: list[bytes]


class ClientVc:
    """One virtual connection as the client sees it."""

    def __init__(
        self,
        *,
        vc_cookie: bytes,
        in_cookie: bytes,
        out_cookie: bytes,
        assoc_group: bytes,
        lifetime: int,
        recycle_threshold: int,
        max_fragment: int,
    ) -> None:
        self.vc_cookie = vc_cookie
        self.in_cookie = in_cookie
        self.out_cookie = out_cookie
        self.assoc_group = assoc_group
        #: Content-Length of every IN channel.
        self.lifetime = lifetime
        self.max_fragment = max_fragment
        self.established = False
        self.receive_window = ReceiveWindow(OUT_WINDOW, ack_after=OUT_ACK_AFTER)
        #: RPC bytes received on the current OUT channel, not yet counted as consumed.
        self.unaccounted = 0
        self.send_window = SendWindow(OUT_WINDOW, lifetime)
        #: Completed recycles, for logs and tests.
        self.in_recycles = 0
        self.out_recycles = 0
        self.in_recycle = ClientInRecycler(recycle_threshold)
        self.out_recycle = ClientOutRecycler()
        self._out_framer = PduFramer(max_fragment)
        self._kinds: list[rts.Kind] = []
        self._retired_in_cookies: deque[bytes] = deque(maxlen=RETIRED_IN_COOKIES)
        #: The successor IN channel's cookie and window, once its IN_R2/A1 is out.
        self.in_successor: tuple[bytes, SendWindow] | None = None
        #: The successor OUT channel's cookie, once its OUT_R2/A3 is out.
        self.out_successor: bytes | None = None
        #: Control PDUs that found no room on a full IN channel; they go on its successor.
        self.deferred: list[bytes] = []
        self.owed_ack: bytes | None = None

    # -- establishment -------------------------------------------------------------------

    def conn_a1(self) -> bytes:
        """CONN/A1, the OUT request's body (h11 counts it)."""
        return rts.conn_a1(self.vc_cookie, self.out_cookie, OUT_WINDOW)

    def conn_b1(self) -> bytes:
        """CONN/B1, the first PDU of the IN channel (counted)."""
        b1 = rts.conn_b1(self.vc_cookie, self.in_cookie, self.assoc_group, lifetime=self.lifetime)
        self.send_window.sent(len(b1), rpc=False)
        return b1

    def _establishing(self, pdu: bytes) -> OutEvent | None:
        if not rts.is_rts(pdu):
            raise TunnelError("RPC data before CONN/C2")
        message = rts.decode_rts(pdu)
        kind = rts.classify(message)
        self._kinds.append(kind)
        if kind is rts.Kind.CONN_C2:
            window = rts.find_window(message)
            if window is not None:
                self.send_window.peer_window = window
        if len(self._kinds) < 2:
            return None
        if self._kinds != [rts.Kind.CONN_A3, rts.Kind.CONN_C2]:
            raise TunnelError(f"unexpected establishment sequence {self._kinds}")
        self.established = True
        return Established()

    # -- the OUT channel's body ----------------------------------------------------------

    def receive_out(self, data: bytes) -> None:
        """Bytes of the current OUT channel's response body.

        Raises:
            DecodeError: not a DCE/RPC byte stream.
        """
        self._out_framer.feed(data)

    def next_out_event(self) -> OutEvent | None:
        """Classify and apply the next PDU received on OUT; None when more data is
        needed (after :class:`OutPredecessorEnded`, until :meth:`out_switched`).

        Raises:
            TunnelError: a PDU the proxy must not send (now).
            RemoteProtocolError: a malformed PDU, or a recycling PDU out of sequence
                (:class:`~tunnel.recycling.RecycleError`).
        """
        while (pdu := self._out_framer.next_pdu()) is not None:
            if not self.established:
                event = self._establishing(pdu)
            elif not rts.is_rts(pdu):
                self.unaccounted += len(pdu)
                return RpcReceived(data=pdu)
            else:
                event = self._out_rts(rts.decode_rts(pdu))
            if event is not None:
                return event
        return None

    def _out_rts(self, message: rts.RtsMessage) -> OutEvent | None:
        kind = rts.classify(message)
        if kind is rts.Kind.FLOW_CONTROL_ACK:
            ack = rts.find_ack(message)
            assert ack is not None
            if ack.channel_cookie in self._retired_in_cookies:
                return None
            self.send_window.acknowledged(ack.bytes_received, ack.available_window)
            return AckApplied()
        if kind in (rts.Kind.IN_R2_A4, rts.Kind.IN_R1_A4):
            self.in_recycle.a4_received()
            return InSuccessorAccepted(window=rts.find_window(message))
        if kind is rts.Kind.OUT_R2_A2:
            self.out_recycle.a2_received()
            return OutRecycleRequested()
        if kind is rts.Kind.OUT_R2_A6:
            self.out_recycle.a6_received()
            return OutRecycleConfirmed()
        if kind is rts.Kind.OUT_R2_B3:
            self.out_recycle.b3_received()
            # The rest of the predecessor is not read (3.2.2.5.10): drop what is buffered.
            self._out_framer = PduFramer(self.max_fragment)
            return OutPredecessorEnded()
        if kind in (rts.Kind.RECYCLE, rts.Kind.IN_R2_A1, rts.Kind.OUT_R2_A3):
            raise TunnelError(f"unexpected {kind.value} from the proxy")
        # Ping, and anything else a proxy may send (PingTrafficSentNotify...): ignored.
        return None

    def acknowledgement(self, buffered: int) -> bytes | None:
        """Count received RPC bytes as consumed while at most a window of them
        (``buffered``) waits for the caller; the FlowControlAckWithDestination(OutProxy)
        for IN that is due, if any (to go through :meth:`send_control` with ``ack``).

        Acknowledging on receipt, not when the caller reads, keeps a whole window in
        flight during a download (the caller's processing no longer stalls the proxy);
        a caller that stops reading still stops the proxy one window later, by flow
        control rather than by a blocked socket.
        """
        if not self.unaccounted or buffered > OUT_WINDOW:
            return None
        size, self.unaccounted = self.unaccounted, 0
        ack = self.receive_window.received(size)
        if ack is None:
            return None
        return rts.flow_control_ack_to(
            rts.ForwardDestination.OUT_PROXY,
            ack.bytes_received,
            ack.available_window,
            self.out_cookie,
        )

    # -- writing on the IN channel -------------------------------------------------------

    def room(self, size: int) -> int:
        """IN bytes left after ``size`` more, the IN_R2/A5 reserve and the headroom."""
        return self.send_window.remaining() - size - self.in_recycle.reserve() - CONTROL_HEADROOM

    def in_recycle_due(self, size: int) -> bool:
        """Whether to open a successor IN channel now, ``size`` bytes being about to be
        sent (True once per recycle)."""
        if self.in_recycle.should_start(self.room(size)):
            self.in_recycle.started()
            return True
        return False

    def check_rpc_size(self, size: int) -> bool:
        """Whether an RPC PDU of ``size`` bytes fits any IN channel at all."""
        overhead = CONTROL_HEADROOM + self.in_recycle.reserve() + IN_R2_A1_SIZE
        return size + overhead <= self.lifetime

    def send_rpc(self, size: int) -> bool:
        """Whether an RPC PDU of ``size`` bytes goes on IN now (then it is counted);
        False: it waits for an acknowledgement or the successor."""
        if self.send_window.can_send(size) and self.room(size) >= 0:
            self.send_window.sent(size, rpc=True)
            return True
        return False

    def send_control(self, data: bytes, *, ack: bool = False) -> bool:
        """Whether an RTS PDU goes on IN now (then it is counted); False: it waits for
        the successor (an acknowledgement replacing an older one)."""
        if self.send_window.fits_body(len(data) + self.in_recycle.reserve()):
            self.send_window.sent(len(data), rpc=False)
            return True
        if ack:
            self.owed_ack = data
        else:
            self.deferred.append(data)
        return False

    # -- IN channel recycling ------------------------------------------------------------

    def in_successor_opened(self, cookie: bytes) -> bytes:
        """The successor IN channel's request was accepted: its IN_R2/A1 (counted on the
        successor, which keeps the proxy's IN window)."""
        window = SendWindow(self.send_window.peer_window, self.lifetime)
        a1 = rts_recycling.in_r2_a1(self.vc_cookie, self.in_cookie, cookie)
        window.sent(len(a1), rpc=False)
        self.in_successor = (cookie, window)
        self.in_recycle.a1_sent()
        return a1

    def in_handover(self, window: int | None) -> Handover:
        """IN_R2/A4 arrived (``window``: IN_R1/A4's new inbound proxy window): IN_R2/A5
        ends the predecessor, the successor becomes the IN channel with fresh flow
        control, and the control PDUs that waited go on it.

        Raises:
            TunnelError: no room for IN_R2/A5 (a bug: it is reserved).
        """
        assert self.in_successor is not None
        cookie, successor_window = self.in_successor
        if window is not None:
            successor_window.peer_window = window
        a5 = rts_recycling.in_r2_a5(cookie)
        if not self.send_window.fits_body(len(a5)):
            raise TunnelError("no room left for IN_R2/A5")
        self.send_window.sent(len(a5), rpc=False)
        self._retired_in_cookies.append(self.in_cookie)
        self.in_cookie, self.send_window = cookie, successor_window
        self.in_successor = None
        self.in_recycle.switched()
        self.in_recycles += 1
        then, self.deferred = self.deferred, []
        if self.owed_ack is not None:
            then.append(self.owed_ack)
            self.owed_ack = None
        for data in then:
            self.send_window.sent(len(data), rpc=False)
        return Handover(a5, then)

    # -- OUT channel recycling -----------------------------------------------------------

    def out_successor_opened(self, cookie: bytes) -> bytes:
        """The successor OUT channel's request was accepted: its OUT_R2/A3 (our window)."""
        self.out_successor = cookie
        self.out_recycle.a3_sent()
        return rts_recycling.out_r2_a3(self.vc_cookie, self.out_cookie, cookie, OUT_WINDOW)

    def out_confirm(self) -> tuple[bytes, bytes]:
        """OUT_R2/A6 arrived: OUT_R2/A7 (for IN, through :meth:`send_control`) and
        OUT_R2/C1 (the successor's request body ends with it)."""
        assert self.out_successor is not None
        return rts_recycling.out_r2_a7(self.out_successor), rts_recycling.out_r2_c1()

    def out_switched(self) -> None:
        """The successor OUT channel answered ``200 Success``: it is the OUT channel, with
        fresh flow control; bytes of the predecessor are acknowledged to nobody."""
        assert self.out_successor is not None
        self.out_cookie, self.out_successor = self.out_successor, None
        self.receive_window = ReceiveWindow(OUT_WINDOW, ack_after=OUT_ACK_AFTER)
        self.unaccounted = 0
        self._out_framer = PduFramer(self.max_fragment)
        self.out_recycles += 1
