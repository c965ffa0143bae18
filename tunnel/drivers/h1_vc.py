"""The life of one MS-RPCH virtual connection on the HTTP/1.1 proxy, apart from its
channels: the backend connection, the relay of its PDUs and the OUT writer.

A VC outlives its channels: IN and OUT channels are recycled (:mod:`tunnel.recycling`)
while the backend connection, hence the DCE/RPC association and whatever session
the service keeps on it, stays the same. So :func:`run_vc` runs in the proxy's
nursery, not in a channel handler: it owns the backend, queues the PDUs it sends
(:meth:`~tunnel.drivers.backend.Backend.relay`) and writes them, with the proxy's RTS
PDUs, on whichever OUT channel is current (``vc.out_sink``).

The OUT writer, per turn: the recycling PDUs that are due (OUT_R2/A6; once OUT_R2/A7
and OUT_R2/C1 are in, the RPC PDUs the predecessor still takes, OUT_R2/B3, then
``200 Success`` on the successor and the switch), then control PDUs (the
acknowledgement of IN data, IN_R2/A4), then the next RPC PDU if the client's window and
the channel's Content-Length allow, asking for a successor (OUT_R2/A2) once fewer than
``out_recycle_threshold`` bytes are left, and a Ping when the channel has been quiet
for the keep-alive interval. Budgets follow :mod:`tunnel.recycling`: the handshake PDUs
still due are always reserved, and RPC PDUs also leave
:data:`~tunnel.recycling.CONTROL_HEADROOM`. A client that never opens a successor keeps
its VC until an RPC PDU no longer fits and ``recycle_timeout`` has passed since
OUT_R2/A2; then the VC ends cleanly, the Content-Length never exceeded.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

import trio

from tunnel import rts, rts_recycling
from tunnel.config import TunnelConfig
from tunnel.drivers.backend import Backend
from tunnel.drivers.vc_table import VcTable, VirtualConnection
from tunnel.recycling import CONTROL_HEADROOM, OutState
from tunnel.vc import SendWindow

log = logging.getLogger("tunnel.h1")

PING_SIZE = 20


class Closed(Exception):
    """The connection is over (peer gone, timeout, protocol error): stop quietly."""


async def guard(vc: VirtualConnection, work: Coroutine[Any, Any, None]) -> None:
    """Run one task of a VC; its failure ends the VC (inside a nursery, exceptions would
    arrive wrapped in an ExceptionGroup)."""
    try:
        await work
    except (Closed, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
        vc.end(str(exc) or type(exc).__name__)


async def run_vc(
    config: TunnelConfig,
    table: VcTable,
    vc: VirtualConnection,
    backend: Backend,
    address: str,
) -> None:
    """Relay the backend of ``vc`` until the VC ends; then close the backend.

    The caller holds ``vc`` once for this task (:meth:`VcTable.hold`); it is let go here.
    Never raises: it runs in the proxy's nursery, where an exception would stop every
    connection.
    """
    try:
        async with backend:
            send, receive = trio.open_memory_channel[bytes](4)
            with trio.CancelScope() as scope:
                vc.attach(scope)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(guard, vc, _relay_backend(vc, backend, send))
                    await guard(vc, _out_writer(config, vc, receive))
                    nursery.cancel_scope.cancel()
    except Exception:
        log.exception("%s: virtual connection failed", address)
        vc.end("internal error")
    finally:
        vc.end("the virtual connection stopped")
        log.info("%s: virtual connection ended: %s", address, vc.end_reason)
        table.leave(vc, None)


async def _relay_backend(
    vc: VirtualConnection, backend: Backend, send: trio.MemorySendChannel[bytes]
) -> None:
    """Queue the backend's PDUs for the OUT writer until the backend closes."""

    async def deliver(pdus: list[bytes]) -> None:
        for pdu in pdus:
            try:  # no schedule point while there is room: the caller's next read is one
                send.send_nowait(pdu)
            except trio.WouldBlock:
                await send.send(pdu)
            vc.out_waker.wake()

    async with send:
        try:
            await backend.relay(deliver, framed=True)
        finally:
            vc.out_waker.wake()


# -- the OUT writer -------------------------------------------------------------------------


async def _emit(vc: VirtualConnection, data: bytes, *, rpc: bool) -> None:
    """Send ``data`` on the current OUT channel (the caller checked the budget)."""
    sink = vc.out_sink
    assert sink is not None
    sink.send_body(data)
    vc.out_window.sent(len(data), rpc=rpc)
    await sink.flush()


def _fits(vc: VirtualConnection, size: int, *, headroom: bool) -> bool:
    """Whether ``size`` bytes fit the OUT channel and leave the recycle's reserve (and,
    for RPC PDUs and pings, the control headroom)."""
    extra = vc.out_recycle.reserve() + (CONTROL_HEADROOM if headroom else 0)
    return vc.out_window.fits_body(size + extra)


async def _switch_out(config: TunnelConfig, vc: VirtualConnection) -> None:
    """OUT_R2/B3 on the predecessor, then ``200 Success`` on the successor, which becomes
    the OUT channel with fresh flow control (3.2.4.5.10)."""
    old, new = vc.out_sink, vc.out_successor
    assert old is not None and new is not None
    await _emit(vc, rts_recycling.out_r2_b3(), rpc=False)
    a3 = vc.out_recycle.switched()
    vc.retired_out_cookies.append(vc.out_cookie)
    vc.out_cookie = a3.successor
    vc.out_window = SendWindow(
        a3.receive_window, config.out_content_length, strict=config.out_flow_control
    )
    vc.out_sink, vc.out_successor = new, None
    new.start_out_response(config.out_content_length)
    await new.flush()
    old.retire()
    log.debug("OUT channel of %s switched to its successor", vc.user)


async def _request_if_due(vc: VirtualConnection, *, blocked: bool) -> None:
    """OUT_R2/A2 once the channel runs low (or an RPC PDU no longer fits)."""
    recycle = vc.out_recycle
    if recycle.state is not OutState.OPENED:
        return
    room = vc.out_window.remaining() - recycle.reserve() - CONTROL_HEADROOM
    if blocked or recycle.should_request(room):
        await _emit(vc, rts_recycling.out_r2_a2(), rpc=False)  # always fits: reserved
        recycle.requested(trio.current_time())


async def _out_writer(
    config: TunnelConfig, vc: VirtualConnection, receive: trio.MemoryReceiveChannel[bytes]
) -> None:
    pending: bytes | None = None
    backend_done = False
    last_sent = trio.current_time()
    largest = config.out_content_length - CONTROL_HEADROOM - vc.out_recycle.reserve()
    while not vc.ended.is_set():
        if pending is None and not backend_done:
            try:
                pending = receive.receive_nowait()
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                backend_done = True
        recycle = vc.out_recycle
        if recycle.state is OutState.ATTACHED:
            await _emit(vc, rts_recycling.out_r2_a6(), rpc=False)  # always fits: reserved
            recycle.a6_sent()
        if recycle.state is OutState.SWITCHING:
            # Flush on the predecessor what its window and length still take (without
            # waiting for acknowledgements: the successor has a fresh window), then switch.
            if (
                pending is not None
                and vc.out_window.can_send(len(pending))
                and _fits(vc, len(pending), headroom=False)
            ):
                await _emit(vc, pending, rpc=True)
                pending = None
                continue
            await _switch_out(config, vc)
            last_sent = trio.current_time()
            continue
        # Control PDUs may use the headroom, never the recycle's reserve.
        if vc.pending_ack is not None and _fits(vc, len(vc.pending_ack), headroom=False):
            ack, vc.pending_ack = vc.pending_ack, None
            await _emit(vc, ack, rpc=False)
        while vc.control and _fits(vc, len(vc.control[0]), headroom=False):
            await _emit(vc, vc.control.popleft(), rpc=False)
        if pending is None and backend_done:
            vc.end("the RPC server closed the connection")
            return
        blocked = False
        if pending is not None and vc.out_window.can_send(len(pending)):
            if _fits(vc, len(pending), headroom=True):
                await _emit(vc, pending, rpc=True)
                pending = None
                last_sent = trio.current_time()
                await _request_if_due(vc, blocked=False)
                continue
            if len(pending) > largest:
                vc.end("an RPC PDU larger than an OUT channel's Content-Length")
                return
            blocked = True
        await _request_if_due(vc, blocked=blocked)
        now = trio.current_time()
        if recycle.expired(now, blocked=blocked):
            # A client that does not recycle: end the VC rather than overrun the body.
            vc.end(f"OUT channel Content-Length exhausted (recycling {recycle.state.value})")
            return
        interval = min(config.keepalive_interval, (vc.keepalive_ms or 300000) / 2000)
        deadline = last_sent + interval
        recycle_deadline = recycle.next_deadline(blocked=blocked)
        if recycle_deadline is not None:
            deadline = min(deadline, recycle_deadline)
        with trio.CancelScope(deadline=deadline):
            await vc.out_waker.wait()
        now = trio.current_time()
        if now >= last_sent + interval:
            if _fits(vc, PING_SIZE, headroom=True):  # else a recycle is due anyway
                await _emit(vc, rts.ping(), rpc=False)
            last_sent = now
