"""Channel recycling of RPC over HTTP v2: the IN_R2 and OUT_R2 state machines
([MS-RPCH] 3.2.1.5.3 for the sequences; 3.2.2.5 client, 3.2.3.5.5 inbound proxy,
3.2.4.5.6-3.2.4.5.11 outbound proxy).

Theory of operation
-------------------
Each channel of a virtual connection is one HTTP message whose Content-Length is the
channel's lifetime: every byte sent in it (RPC and RTS alike) counts, and the message
can never grow. A long-lived VC therefore replaces ("recycles") its channels: a new
HTTP request, the *successor*, takes over from the *predecessor* without the
DCE/RPC byte stream noticing. A terminating proxy plays the inbound proxy, the
outbound proxy and the server of the spec at once, so only the client-facing PDUs
appear on the wire:

IN channel (client-initiated, IN_R2)::

    client                                            proxy
      | new RPC_IN_DATA + IN_R2/A1 (VC, pred, succ) -->|  find VC, pred == current IN
      |<-- IN_R2/A4 on OUT ----------------------------|  successor plugged (not read)
      |--- IN_R2/A5 (succ) on the predecessor -------->|  last PDU of the predecessor
      |--- RPC PDUs on the successor ----------------->|  switch, close the predecessor

OUT channel (proxy-initiated, OUT_R2)::

    client                                            proxy
      |<-- OUT_R2/A2 on the predecessor ---------------|  Content-Length nearly spent
      | new RPC_OUT_DATA + OUT_R2/A3 (VC, pred, succ, |
      |   window) ------------------------------------>|  find VC, pred == current OUT
      |<-- OUT_R2/A6 on the predecessor ---------------|
      |--- OUT_R2/A7 (succ) on IN -------------------->|
      |--- OUT_R2/C1 on the successor ---------------->|  (A7 and C1 in either order)
      |<-- RPC PDUs, then OUT_R2/B3 on the predecessor-|  last PDU of the predecessor
      |<-- 200 Success, RPC PDUs on the successor -----|  switch, close the predecessor

Each party reads the predecessor up to its last PDU (A5, B3) and only then the
successor, so RPC PDUs keep their order and none is lost or repeated. Flow control
counters belong to a channel *instance* (3.2.1.1.4: ``BytesSent``/``BytesReceived``
count what "the IN channel or OUT channel instance" carried, and a FlowControlAck
names the instance by its cookie): the successor starts from zero, with the window
the receiver advertised for it (OUT_R2/A3's ReceiveWindowSize; for IN_R2 the proxy's
unchanged IN window), and acknowledgements naming a retired instance are ignored.

The classes here hold only state and rules (no I/O, no clock of their own; times
come in as arguments): :class:`OutRecycler` and :class:`InRecycler` are the proxy's
side of one VC, :class:`ClientOutRecycler` and :class:`ClientInRecycler` the
client's. The budget rules keep a recycle from ever being starved by a full channel:

* the handshake PDUs still to come on a predecessor are reserved
  (:meth:`OutRecycler.reserve`, :data:`IN_R2_A5_SIZE` on the client's IN);
* RPC PDUs must also leave :data:`CONTROL_HEADROOM` free, so control PDUs the other
  recycle needs (IN_R2/A4 on OUT, OUT_R2/A7 on IN, acknowledgements) always fit, and
  an IN and an OUT recycle can run at the same time without waiting on each other.
"""

from __future__ import annotations

import enum

from dcerpc.errors import RemoteProtocolError
from tunnel.rts_recycling import InRecycleA1, OutRecycleA3

#: Wire sizes of the handshake PDUs that go on a predecessor channel.
IN_R2_A1_SIZE = 88
OUT_R2_A2_SIZE = 28
OUT_R2_A6_SIZE = 32
OUT_R2_B3_SIZE = 24
IN_R2_A4_SIZE = 28
IN_R2_A5_SIZE = 40
OUT_R2_A7_SIZE = 56
#: Room RPC PDUs leave free on a channel for control PDUs (acknowledgements, the other
#: direction's recycle PDUs, pings): about 18 acknowledgements.
CONTROL_HEADROOM = 1024


class RecycleRefused(RemoteProtocolError):
    """A successor channel names no VC we can recycle (unknown or foreign VC, wrong
    predecessor cookie, a recycle already under way): refuse that channel only."""


class RecycleError(RemoteProtocolError):
    """A recycling PDU out of sequence (or with the wrong cookie) on a live channel: a
    protocol error of the VC ([MS-RPCH] 3.2.3.5.10, 3.2.4.5.14)."""


# -- proxy side ---------------------------------------------------------------------------


class OutState(enum.Enum):
    """The proxy's view of OUT channel recycling (3.2.4 outbound proxy states)."""

    OPENED = "opened"  # no recycle under way
    REQUESTED = "requested"  # OUT_R2/A2 sent; no successor yet
    ATTACHED = "attached"  # a successor sent OUT_R2/A3; OUT_R2/A6 is due
    CONFIRMING = "confirming"  # A6 sent; waiting for OUT_R2/A7 (IN) and OUT_R2/C1
    SWITCHING = "switching"  # both arrived: flush, OUT_R2/B3, switch


#: Bytes of handshake PDUs still to send on the predecessor, by state.
_OUT_OWED = {
    OutState.OPENED: OUT_R2_A2_SIZE + OUT_R2_A6_SIZE + OUT_R2_B3_SIZE,
    OutState.REQUESTED: OUT_R2_A6_SIZE + OUT_R2_B3_SIZE,
    OutState.ATTACHED: OUT_R2_A6_SIZE + OUT_R2_B3_SIZE,
    OutState.CONFIRMING: OUT_R2_B3_SIZE,
    OutState.SWITCHING: OUT_R2_B3_SIZE,
}


class OutRecycler:
    """The proxy's OUT channel recycling for one VC.

    The OUT writer asks :meth:`should_request` after each send and sends OUT_R2/A2 when
    it says so; the successor's handler calls :meth:`attach`; the writer sends
    OUT_R2/A6 in state ``ATTACHED``; the IN handler reports OUT_R2/A7
    (:meth:`confirmed_on_in`), the successor's handler OUT_R2/C1
    (:meth:`successor_pinged`); in state ``SWITCHING`` the writer sends OUT_R2/B3 and
    switches (:meth:`switched`).
    """

    def __init__(self, threshold: int, timeout: float) -> None:
        self.threshold = threshold
        self.timeout = timeout
        self.state = OutState.OPENED
        self.successor: OutRecycleA3 | None = None
        self.deadline: float | None = None
        self._a7 = False
        self._c1 = False

    def reserve(self) -> int:
        """Bytes the predecessor must keep free for the handshake PDUs still to come."""
        return _OUT_OWED[self.state]

    def should_request(self, remaining: int) -> bool:
        """Whether to send OUT_R2/A2 now, ``remaining`` bytes being left in the channel
        (its Content-Length minus what was sent, minus :meth:`reserve`)."""
        return self.state is OutState.OPENED and remaining < self.threshold

    def requested(self, now: float) -> None:
        """OUT_R2/A2 was sent: a successor is expected within ``timeout``."""
        if self.state is not OutState.OPENED:
            raise AssertionError(f"OUT_R2/A2 in state {self.state}")
        self.state = OutState.REQUESTED
        self.deadline = now + self.timeout

    def attach(self, a3: OutRecycleA3, current_cookie: bytes, now: float) -> None:
        """A successor OUT channel opened with OUT_R2/A3 (3.2.4.5.6.1).

        Raises:
            RecycleRefused: a recycle is already under way, or the predecessor cookie is
                not the current OUT channel's.
        """
        if self.state not in (OutState.OPENED, OutState.REQUESTED):
            raise RecycleRefused("an OUT channel recycle is already under way")
        if a3.predecessor != current_cookie:
            raise RecycleRefused("OUT_R2/A3 does not name the current OUT channel")
        if a3.successor == current_cookie:
            raise RecycleRefused("OUT_R2/A3 reuses the current OUT channel's cookie")
        self.successor = a3
        self.state = OutState.ATTACHED
        self.deadline = now + self.timeout

    def a6_sent(self) -> None:
        if self.state is not OutState.ATTACHED:
            raise AssertionError(f"OUT_R2/A6 in state {self.state}")
        self.state = OutState.CONFIRMING
        self._advance()

    def confirmed_on_in(self, cookie: bytes) -> None:
        """OUT_R2/A7 arrived on the IN channel.

        Raises:
            RecycleError: not expected now, or it names another successor.
        """
        if self.state is not OutState.CONFIRMING or self._a7:
            raise RecycleError(f"unexpected OUT_R2/A7 (OUT recycling {self.state.value})")
        assert self.successor is not None
        if cookie != self.successor.successor:
            raise RecycleError("OUT_R2/A7 names another successor OUT channel")
        self._a7 = True
        self._advance()

    def successor_pinged(self) -> None:
        """OUT_R2/C1 arrived on the successor (3.2.4.5.11: accepted before or after A7).

        Raises:
            RecycleError: not expected now.
        """
        if self.state not in (OutState.ATTACHED, OutState.CONFIRMING) or self._c1:
            raise RecycleError(f"unexpected OUT_R2/C1 (OUT recycling {self.state.value})")
        self._c1 = True
        self._advance()

    def _advance(self) -> None:
        if self.state is OutState.CONFIRMING and self._a7 and self._c1:
            self.state = OutState.SWITCHING

    def switched(self) -> OutRecycleA3:
        """OUT_R2/B3 went out on the predecessor: the successor is now the OUT channel.

        Returns:
            The successor's OUT_R2/A3 fields (cookie and receive window).
        """
        if self.state is not OutState.SWITCHING or self.successor is None:
            raise AssertionError(f"switch in state {self.state}")
        successor = self.successor
        self.state, self.successor, self.deadline = OutState.OPENED, None, None
        self._a7 = self._c1 = False
        return successor

    def next_deadline(self, *, blocked: bool) -> float | None:
        """When :meth:`expired` may become true: always once a successor is attached;
        while only requested, only if an RPC PDU is waiting for room (a client that
        ignores OUT_R2/A2 keeps its VC until the Content-Length is spent)."""
        if self.state is OutState.OPENED:
            return None
        if self.state is OutState.REQUESTED and not blocked:
            return None
        return self.deadline

    def expired(self, now: float, *, blocked: bool) -> bool:
        """The recycle did not complete in time: end the VC cleanly."""
        deadline = self.next_deadline(blocked=blocked)
        return deadline is not None and now >= deadline


class InState(enum.Enum):
    """The proxy's view of IN channel recycling (3.2.3 inbound proxy states)."""

    OPENED = "opened"
    ATTACHED = "attached"  # a successor sent IN_R2/A1; waiting for IN_R2/A5 (Opened_A5W)


class InRecycler:
    """The proxy's IN channel recycling for one VC.

    The successor's handler calls :meth:`attach` (then IN_R2/A4 goes out on OUT and the
    successor waits, unread); the predecessor's handler calls :meth:`handed_over` on
    IN_R2/A5 and stops reading; the successor then reads on. A successor that never
    sees its IN_R2/A5 is dropped with :meth:`abort`, the VC keeping its IN channel.
    """

    def __init__(self) -> None:
        self.state = InState.OPENED
        self.successor: bytes | None = None

    def attach(self, a1: InRecycleA1, current_cookie: bytes) -> None:
        """A successor IN channel opened with IN_R2/A1 (3.2.3.5.5.1).

        Raises:
            RecycleRefused: a recycle is already under way, or the predecessor cookie is
                not the current IN channel's.
        """
        if self.state is not InState.OPENED:
            raise RecycleRefused("an IN channel recycle is already under way")
        if a1.predecessor != current_cookie:
            raise RecycleRefused("IN_R2/A1 does not name the current IN channel")
        if a1.successor == current_cookie:
            raise RecycleRefused("IN_R2/A1 reuses the current IN channel's cookie")
        self.state = InState.ATTACHED
        self.successor = a1.successor

    def handed_over(self, cookie: bytes) -> bytes:
        """IN_R2/A5 arrived on the predecessor: the successor becomes the IN channel.

        Returns:
            The successor's cookie (the VC's IN channel cookie from now on).

        Raises:
            RecycleError: no successor is attached, or A5 names another one.
        """
        if self.state is not InState.ATTACHED or self.successor is None:
            raise RecycleError("IN_R2/A5 without a successor IN channel")
        if cookie != self.successor:
            raise RecycleError("IN_R2/A5 names another successor IN channel")
        successor = self.successor
        self.state, self.successor = InState.OPENED, None
        return successor

    def abort(self) -> None:
        """The attached successor gave up before the hand-over."""
        self.state, self.successor = InState.OPENED, None


# -- client side --------------------------------------------------------------------------


class ClientInState(enum.Enum):
    OPENED = "opened"
    OPENING = "opening"  # the successor request is being opened
    WAITING = "waiting"  # IN_R2/A1 sent; waiting for IN_R2/A4 (Opened_A4W)
    SWITCHING = "switching"  # IN_R2/A4 received; IN_R2/A5 and the switch are under way


class ClientInRecycler:
    """The client's IN channel recycling (3.2.2.5.12): start when fewer than
    ``threshold`` bytes would be left; RPC PDUs stop at the reserve plus headroom."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.state = ClientInState.OPENED

    @staticmethod
    def reserve() -> int:
        """Bytes the IN channel keeps for its IN_R2/A5."""
        return IN_R2_A5_SIZE

    def should_start(self, remaining: int) -> bool:
        """Whether to open a successor, ``remaining`` bytes being left after the PDU
        about to be sent (and the reserve)."""
        return self.state is ClientInState.OPENED and remaining < self.threshold

    def started(self) -> None:
        if self.state is not ClientInState.OPENED:
            raise AssertionError(f"IN recycle started in state {self.state}")
        self.state = ClientInState.OPENING

    def a1_sent(self) -> None:
        if self.state is not ClientInState.OPENING:
            raise AssertionError(f"IN_R2/A1 in state {self.state}")
        self.state = ClientInState.WAITING

    def a4_received(self) -> None:
        """IN_R2/A4 (or IN_R1/A4): send IN_R2/A5 on the predecessor and switch.

        Raises:
            RecycleError: we did not ask for a successor IN channel.
        """
        if self.state is not ClientInState.WAITING:
            raise RecycleError(f"unexpected IN_R2/A4 (IN recycling {self.state.value})")
        self.state = ClientInState.SWITCHING

    def switched(self) -> None:
        """IN_R2/A5 went out on the predecessor; the successor is the IN channel."""
        if self.state is not ClientInState.SWITCHING:
            raise AssertionError(f"IN switch in state {self.state}")
        self.state = ClientInState.OPENED


class ClientOutState(enum.Enum):
    OPENED = "opened"
    OPENING = "opening"  # OUT_R2/A2 received; the successor request is being opened
    A6_WAIT = "a6-wait"  # OUT_R2/A3 sent (Opened_A6W)
    B3_WAIT = "b3-wait"  # OUT_R2/A7 and OUT_R2/C1 sent; reading up to OUT_R2/B3


class ClientOutRecycler:
    """The client's side of OUT channel recycling (OUT_R2/A2, A6 and B3 processing,
    3.2.2.5)."""

    def __init__(self) -> None:
        self.state = ClientOutState.OPENED

    def _expect(self, state: ClientOutState, pdu: str) -> None:
        if self.state is not state:
            raise RecycleError(f"unexpected {pdu} (OUT recycling {self.state.value})")

    def a2_received(self) -> None:
        """OUT_R2/A2: open a successor OUT channel.

        Raises:
            RecycleError: a recycle is already under way.
        """
        self._expect(ClientOutState.OPENED, "OUT_R2/A2")
        self.state = ClientOutState.OPENING

    def a3_sent(self) -> None:
        if self.state is not ClientOutState.OPENING:
            raise AssertionError(f"OUT_R2/A3 in state {self.state}")
        self.state = ClientOutState.A6_WAIT

    def a6_received(self) -> None:
        """OUT_R2/A6: send OUT_R2/A7 on IN and OUT_R2/C1 on the successor.

        Raises:
            RecycleError: not expected now.
        """
        self._expect(ClientOutState.A6_WAIT, "OUT_R2/A6")
        self.state = ClientOutState.B3_WAIT

    def b3_received(self) -> None:
        """OUT_R2/B3: the predecessor is done; read the successor from now on.

        Raises:
            RecycleError: not expected now.
        """
        self._expect(ClientOutState.B3_WAIT, "OUT_R2/B3")
        self.state = ClientOutState.OPENED
