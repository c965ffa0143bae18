"""The virtual-connection table of the terminating MS-RPCH proxy ([MS-RPCH] 3.2.3.3, note D(b)).

An MS-RPCH virtual connection is two HTTP requests on two TCP connections, joined by
the 16-byte virtual-connection cookie of CONN/A1 (OUT) and CONN/B1 (IN). Each channel
handler :meth:`VcTable.join` s with its cookie; the second half must come from the same
authenticated user for the same target, else it is refused (a guessed cookie does
not let another user hijack a connection). The first half waits at most
``pair_timeout`` for the second. Successor channels of a recycle
(:mod:`tunnel.recycling`) find their VC with :meth:`VcTable.find`, under the same
user and target rule.

:class:`VirtualConnection` carries what the handlers share: the protocol state of
the VC (its sans-IO core, :class:`tunnel.proxy_vc.ProxyVc`: flow control, recycling,
the control PDUs and pending acknowledgement for the OUT writer), the backend, the
current OUT channel (an :class:`OutSink`) and its successor, and a cancel scope per
task, so ending the VC from any side (or the backend) stops them all. Every task
working for a VC holds it (:meth:`VcTable.hold`); the VC leaves the table when the last
one lets go.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Protocol

import trio

from tunnel.config import TunnelConfig
from tunnel.drivers.backend import Backend
from tunnel.policy import Target
from tunnel.proxy_vc import ProxyVc
from tunnel.vc import ReceiveWindow

#: Bytes of backend PDUs queued for the OUT writer before the backend is held back.
OUT_QUEUE_LIMIT = 256 * 1024
#: Bytes of backend PDUs queued beyond which the VC ends: replies of calls that ran in
#: their own tasks are not held back by the limit above, only by this.
OUT_QUEUE_HARD_LIMIT = 64 * 1024 * 1024


class Side(enum.Enum):
    IN = "in"
    OUT = "out"


class Waker:
    """A level-triggered wake-up for one waiting task (no lost wake-ups)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class OutSink(Protocol):
    """An OUT channel the VC's writer sends on (the HTTP/1.1 handler of its request)."""

    def send_body(self, data: bytes) -> None:
        """Queue bytes of the response body."""

    def start_out_response(self, content_length: int) -> None:
        """Queue the ``200 Success`` head."""

    async def flush(self) -> None:
        """Send what is queued."""

    def retire(self) -> None:
        """The channel was replaced by its successor: its handler may close it."""


class VirtualConnection(ProxyVc):
    """State shared by the tasks of one virtual connection: the protocol state of
    :class:`~tunnel.proxy_vc.ProxyVc`, and the tasks' events, the backend and the queues."""

    def __init__(self, cookie: bytes, user: str, target: Target, config: TunnelConfig) -> None:
        super().__init__(cookie, user, target, config)
        self.holders = 0
        self.joined: set[Side] = set()
        self.paired = trio.Event()
        self.established = trio.Event()
        self.ended = trio.Event()
        self.end_reason = ""
        self.backend: Backend | None = None
        self.out_waker = Waker()
        #: The backend's PDUs waiting for the OUT writer, and their size in bytes.
        self.out_queue: deque[bytes] = deque()
        self.out_queued = 0
        #: Woken when the OUT writer takes from the queue (a relay waiting for room).
        self.out_room = Waker()
        #: The backend will send nothing more.
        self.backend_done = False
        #: Client RPC PDUs held back while the OUT queue is full (attached backends),
        #: each with the receive window of the IN channel instance that brought it.
        self.held: deque[tuple[bytes, ReceiveWindow]] = deque()
        self.held_bytes = 0
        #: A task is handing client PDUs to the attached backend (one at a time).
        self.feeding = False
        self.out_sink: OutSink | None = None
        self.out_successor: OutSink | None = None
        #: Set when the predecessor IN channel saw IN_R2/A5 (a new Event per recycle).
        self.in_handover = trio.Event()
        self._scopes: list[trio.CancelScope] = []

    def attach(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` when the VC ends."""
        self._scopes.append(scope)
        if self.ended.is_set():
            scope.cancel()

    def detach(self, scope: trio.CancelScope) -> None:
        """``scope`` is done (a channel handed over to its successor)."""
        if scope in self._scopes:
            self._scopes.remove(scope)

    def queue_out(self, pdus: list[bytes]) -> None:
        """Queue backend PDUs for the OUT writer (no wait: the callers bound the queue).

        Raises:
            trio.BrokenResourceError: the VC has ended.
        """
        if self.ended.is_set():
            raise trio.BrokenResourceError("the virtual connection has ended")
        for pdu in pdus:
            self.out_queue.append(pdu)
            self.out_queued += len(pdu)
        if self.out_queued > OUT_QUEUE_HARD_LIMIT:
            self.end("the client does not read its replies")
            raise trio.BrokenResourceError("the virtual connection has ended")
        self.out_waker.wake()

    def take_out(self) -> bytes | None:
        """The next queued backend PDU, if any."""
        if not self.out_queue:
            return None
        pdu = self.out_queue.popleft()
        self.out_queued -= len(pdu)
        self.out_room.wake()
        return pdu

    def out_full(self) -> bool:
        return self.out_queued >= OUT_QUEUE_LIMIT

    def end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self.out_waker.wake()
        self.out_room.wake()
        self.in_handover.set()
        for scope in self._scopes:
            scope.cancel()


class VcTable:
    """Virtual connections by cookie, bounded by ``config.max_vcs``."""

    def __init__(self, config: TunnelConfig) -> None:
        self.config = config
        self._vcs: dict[bytes, VirtualConnection] = {}

    def __len__(self) -> int:
        return len(self._vcs)

    def join(
        self, cookie: bytes, side: Side, user: str, target: Target
    ) -> VirtualConnection | None:
        """Register the first channel of a side (CONN/A1, CONN/B1); returns its VC
        (held once for the caller), or None when the join is refused."""
        vc = self._vcs.get(cookie)
        if vc is None:
            if len(self._vcs) >= self.config.max_vcs:
                return None
            vc = self._vcs[cookie] = VirtualConnection(cookie, user, target, self.config)
        elif side in vc.joined or vc.user != user or vc.target != target or vc.ended.is_set():
            return None
        vc.holders += 1
        vc.joined.add(side)
        if vc.joined == {Side.IN, Side.OUT}:
            vc.paired.set()
        return vc

    def find(self, cookie: bytes, user: str, target: Target) -> VirtualConnection | None:
        """The established, live VC ``cookie`` of ``user`` to ``target`` (for a successor
        channel), or None."""
        vc = self._vcs.get(cookie)
        if (
            vc is None
            or vc.user != user
            or vc.target != target
            or not vc.established.is_set()
            or vc.ended.is_set()
        ):
            return None
        return vc

    def hold(self, vc: VirtualConnection) -> None:
        """One more task works for ``vc`` (a successor channel, the VC's runner)."""
        vc.holders += 1

    def leave(self, vc: VirtualConnection, reason: str | None) -> None:
        """A task is done with ``vc``: the VC ends with ``reason`` (None: it goes on, the
        task handed its channel over), and leaves the table when nobody holds it."""
        vc.holders -= 1
        if reason is not None:
            vc.end(reason)
        if vc.holders <= 0:
            vc.end(reason or "all channels closed")
            if self._vcs.get(vc.cookie) is vc:
                del self._vcs[vc.cookie]
