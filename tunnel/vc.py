"""Flow control and channel budgets of an MS-RPCH virtual connection ([MS-RPCH] 3.2.1.1.4,
3.2.2.3, 3.2.3.3).

Theory of operation
-------------------
Only RPC PDUs are flow controlled; RTS PDUs and HTTP heads are not (3.2.1.1.4). Each
receiver advertises a window (the client in CONN/A1 for the OUT channel, the proxy in
CONN/C2 for the IN channel), counts the RPC bytes it received (``BytesReceived``) and
acknowledges with a FlowControlAck carrying that total and the window it offers now.
The sender may have at most ``AvailableWindow - (BytesSent - BytesReceived)`` bytes in
flight. Separately, every byte sent in a channel body (RTS included) counts against
the Content-Length of that HTTP message; a channel must never exceed it.

* :class:`SendWindow` is the OUT side of the proxy (and the IN side of a client):
  :meth:`SendWindow.can_send` says whether the next PDU fits the peer's window
  (always True when ``strict`` is off, for clients that never acknowledge, e.g.
  Samba) and :meth:`SendWindow.fits_body` whether it fits the Content-Length.
* :class:`ReceiveWindow` is the IN side of the proxy (and the OUT side of a client):
  :meth:`ReceiveWindow.received` returns an acknowledgement to send once more than
  ``ack_after`` is unacknowledged (by default half the window, as Windows does; the
  proxy's IN side and our client's OUT side use a quarter, so credit returns while
  most of the 256 KiB the spec allows is still in flight). Bytes are counted as consumed
  when received, because the terminating proxy hands them to the backend at once.

Both count one channel *instance*: when a channel is recycled
(:mod:`tunnel.recycling`) the successor gets fresh windows.

Pure arithmetic: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcerpc.errors import DecodeError

U32 = 0xFFFFFFFF


class SendWindow:
    """Sender-side accounting for one channel."""

    __slots__ = (
        "body_sent",
        "bytes_sent",
        "content_length",
        "peer_received",
        "peer_window",
        "strict",
    )

    def __init__(self, window: int, content_length: int, *, strict: bool = True) -> None:
        self.peer_window = window
        self.peer_received = 0
        self.bytes_sent = 0
        self.body_sent = 0
        self.content_length = content_length
        self.strict = strict

    def available(self) -> int:
        """Window left for RPC PDUs (may be negative if the peer shrank it)."""
        return self.peer_window - (self.bytes_sent - self.peer_received)

    def can_send(self, size: int) -> bool:
        """Whether an RPC PDU of ``size`` bytes may be sent now."""
        if not self.strict:
            return True
        # A PDU larger than the whole window may go once nothing is in flight.
        return size <= self.available() or self.bytes_sent == self.peer_received

    def fits_body(self, size: int) -> bool:
        """Whether ``size`` more bytes stay within the channel's Content-Length."""
        return self.body_sent + size <= self.content_length

    def remaining(self) -> int:
        """Bytes of the channel's Content-Length not yet used."""
        return self.content_length - self.body_sent

    def sent(self, size: int, *, rpc: bool) -> None:
        """Account for bytes put in the channel body (``rpc``: an RPC PDU, flow controlled)."""
        self.body_sent += size
        if rpc:
            self.bytes_sent += size

    def acknowledged(self, bytes_received: int, available_window: int) -> None:
        """Apply a FlowControlAck from the peer.

        ``BytesReceived`` is a u32 that wraps after 4 GiB; we compare modulo 2**32.

        Raises:
            DecodeError: the peer acknowledged bytes we never sent.
        """
        sent_mod = self.bytes_sent & U32
        if (sent_mod - bytes_received) & U32 > self.bytes_sent:
            raise DecodeError(
                f"acknowledged {bytes_received} bytes, only {self.bytes_sent} were sent"
            )
        in_flight = (sent_mod - bytes_received) & U32
        self.peer_received = self.bytes_sent - in_flight
        self.peer_window = available_window


@dataclass(frozen=True, slots=True)
class Ack:
    """What a FlowControlAck we owe the peer says."""

    bytes_received: int
    available_window: int


class ReceiveWindow:
    """Receiver-side accounting for one channel."""

    __slots__ = ("ack_after", "bytes_received", "unacked", "window")

    def __init__(self, window: int, *, ack_after: int | None = None) -> None:
        self.window = window
        #: Acknowledge once more than this is unacknowledged: by default once the free
        #: space falls below half the window, as Windows does.
        self.ack_after = window - window // 2 if ack_after is None else ack_after
        self.bytes_received = 0
        self.unacked = 0

    def received(self, size: int) -> Ack | None:
        """Account for an RPC PDU; returns the acknowledgement due now, if any."""
        self.bytes_received += size
        self.unacked += size
        if self.unacked > self.ack_after:
            self.unacked = 0
            return Ack(self.bytes_received & U32, self.window)
        return None

    def overrun(self) -> bool:
        """The peer has more unacknowledged data in flight than the window allows."""
        return self.unacked > self.window
