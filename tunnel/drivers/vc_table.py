"""The virtual-connection table of the terminating MS-RPCH proxy ([MS-RPCH] 3.2.3.3, note D(b)).

An MS-RPCH virtual connection is two HTTP requests on two TCP connections, joined by
the 16-byte virtual-connection cookie of CONN/A1 (OUT) and CONN/B1 (IN). Each channel
handler :meth:`VcTable.join` s with its cookie; the second half must come from the same
authenticated user for the same target, else it is refused (a guessed cookie does
not let another user hijack a connection). The first half waits at most
``pair_timeout`` for the second. :class:`VirtualConnection` carries what both handlers
share: the flow-control state (:mod:`tunnel.vc`), the backend stream, the pending
acknowledgement for the OUT writer and a cancel scope per handler, so ending the VC
from either side (or the backend) stops both.
"""

from __future__ import annotations

import enum

import trio

from tunnel.config import TunnelConfig
from tunnel.policy import Target
from tunnel.vc import ReceiveWindow, SendWindow


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


class VirtualConnection:
    """State shared by the IN and OUT handlers of one virtual connection."""

    def __init__(self, cookie: bytes, user: str, target: Target, config: TunnelConfig) -> None:
        self.cookie = cookie
        self.user = user
        self.target = target
        self.sides: set[Side] = set()
        self.joined: set[Side] = set()
        self.paired = trio.Event()
        self.established = trio.Event()
        self.ended = trio.Event()
        self.end_reason = ""
        self.backend: trio.abc.HalfCloseableStream | None = None
        self.in_cookie = b"\x00" * 16
        self.out_cookie = b"\x00" * 16
        self.keepalive_ms = 300000
        self.out_window = SendWindow(
            65536, config.out_content_length, strict=config.out_flow_control
        )
        self.in_window = ReceiveWindow(config.in_window)
        self.pending_ack: bytes | None = None
        self.out_waker = Waker()
        self._scopes: list[trio.CancelScope] = []

    def attach(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` when the VC ends."""
        self._scopes.append(scope)
        if self.ended.is_set():
            scope.cancel()

    def end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self.out_waker.wake()
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
        """Register one channel; returns its VC, or None when the join is refused."""
        vc = self._vcs.get(cookie)
        if vc is None:
            if len(self._vcs) >= self.config.max_vcs:
                return None
            vc = self._vcs[cookie] = VirtualConnection(cookie, user, target, self.config)
        elif side in vc.joined or vc.user != user or vc.target != target or vc.ended.is_set():
            return None
        vc.sides.add(side)
        vc.joined.add(side)
        if vc.sides == {Side.IN, Side.OUT}:
            vc.paired.set()
        return vc

    def leave(self, vc: VirtualConnection, side: Side) -> None:
        """A channel handler is done; the VC ends and goes when its last channel leaves."""
        vc.sides.discard(side)
        vc.end(f"{side.value} channel closed")
        if not vc.sides and self._vcs.get(vc.cookie) is vc:
            del self._vcs[vc.cookie]
