"""The life of one MS-RPCH virtual connection on the HTTP/1.1 proxy, apart from its
channels: the backend connection, the relay of its PDUs and the OUT writer.

A VC outlives its channels: IN and OUT channels are recycled (:mod:`tunnel.recycling`)
while the backend connection, hence the DCE/RPC association and whatever session
the service keeps on it, stays the same. So :func:`run_vc` runs in the proxy's
nursery, not in a channel handler: it owns the backend, queues the PDUs it sends
(:meth:`~tunnel.drivers.backend.Backend.relay`) and writes them, with the proxy's RTS
PDUs, on whichever OUT channel is current (``vc.out_sink``).

The OUT writer follows the turns of the sans-IO core
(:meth:`tunnel.proxy_vc.ProxyVc.out_turn`), which decide, per turn: the recycling PDUs
that are due (OUT_R2/A6; once OUT_R2/A7 and OUT_R2/C1 are in, the RPC PDUs the
predecessor still takes, OUT_R2/B3, then ``200 Success`` on the successor and the
switch), then control PDUs (the acknowledgement of IN data, IN_R2/A4), then the next RPC
PDU if the client's window and the channel's Content-Length allow, asking for a
successor (OUT_R2/A2) once fewer than ``out_recycle_threshold`` bytes are left, and a
Ping when the channel has been quiet for the keep-alive interval. Budgets follow
:mod:`tunnel.recycling`: the handshake PDUs still due are always reserved, and RPC PDUs
also leave :data:`~tunnel.recycling.CONTROL_HEADROOM`. A client that never opens a
successor keeps its VC until an RPC PDU no longer fits and ``recycle_timeout`` has
passed since OUT_R2/A2; then the VC ends cleanly, the Content-Length never exceeded.
This module performs the turns: it writes, flushes, feeds the backend and waits.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

import trio

from tunnel.config import TunnelConfig
from tunnel.drivers.backend import Backend
from tunnel.drivers.vc_table import VcTable, VirtualConnection
from tunnel.proxy_vc import OutNext
from tunnel.vc import ReceiveWindow

log = logging.getLogger("tunnel.h1")

#: Bytes of RPC PDUs the OUT writer sends in one flush. Small PDUs share a flush; a
#: large one goes alone, so the client's acknowledgements (read by the IN channel's
#: task on this same thread) are not kept waiting behind a long TLS write.
BATCH_LIMIT = 64 * 1024


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
            with trio.CancelScope() as scope:
                vc.attach(scope)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(guard, vc, _relay_backend(vc, backend))
                    await guard(vc, _out_writer(config, vc, backend))
                    nursery.cancel_scope.cancel()
    except Exception:
        log.exception("%s: virtual connection failed", address)
        vc.end("internal error")
    finally:
        vc.end("the virtual connection stopped")
        log.info("%s: virtual connection ended: %s", address, vc.end_reason)
        table.leave(vc, None)


async def _relay_backend(vc: VirtualConnection, backend: Backend) -> None:
    """Queue the backend's PDUs for the OUT writer until the backend closes.

    A stream backend's relay (this task) waits while the queue is full. An attached
    backend's replies arrive from the tasks that feed it and never wait: the queue is
    bounded instead by holding the client's PDUs back (:func:`offer_to_attached`).
    """

    async def deliver_waiting(pdus: list[bytes]) -> None:
        vc.queue_out(pdus)
        while vc.out_full() and not vc.ended.is_set():
            await vc.out_room.wait()

    async def deliver_at_once(pdus: list[bytes]) -> None:
        vc.queue_out(pdus)
        await trio.lowlevel.checkpoint_if_cancelled()

    try:
        await backend.relay(deliver_at_once if backend.attached else deliver_waiting, framed=True)
    finally:
        vc.backend_done = True
        vc.out_waker.wake()


# -- client PDUs to an attached backend -----------------------------------------------------


async def offer_to_attached(vc: VirtualConnection, backend: Backend, pdu: bytes) -> None:
    """Hand a client RPC PDU to an attached backend now, or hold it back while the OUT
    queue is full (the OUT writer feeds it once there is room).

    The IN channel's reader must keep reading, whatever the backend's replies wait for:
    the client's flow-control acknowledgements for the OUT channel come that way. A held
    PDU is acknowledged (IN flow control) only once fed, so a client that keeps to its
    window cannot make us hold more than it; one that does not ends the VC.

    Raises:
        Closed: the client overran its IN window.
    """
    window = vc.in_window
    if vc.held or vc.feeding or vc.out_full():
        vc.held.append((pdu, window))
        vc.held_bytes += len(pdu)
        # Two windows: a recycled IN channel's successor starts with a fresh one.
        if vc.held_bytes > 2 * window.window:
            raise Closed("the client overran its IN window")
        vc.out_waker.wake()
        return
    vc.feeding = True
    try:
        await _feed(vc, backend, pdu, window)
    finally:
        vc.feeding = False


async def _feed_held(vc: VirtualConnection, backend: Backend) -> None:
    """Feed held client PDUs while the OUT queue has room (the OUT writer's turn)."""
    if vc.feeding:
        return
    vc.feeding = True
    try:
        while vc.held and not vc.out_full():
            pdu, window = vc.held.popleft()
            vc.held_bytes -= len(pdu)
            await _feed(vc, backend, pdu, window)
    finally:
        vc.feeding = False


async def _feed(vc: VirtualConnection, backend: Backend, pdu: bytes, window: ReceiveWindow) -> None:
    try:
        await backend.send_all(pdu)
    except trio.BrokenResourceError:
        # The service closed the connection (a protocol error: its fault or bind_nak is
        # queued). Drop what the client still sends; the relay ends, and the OUT writer
        # ends the VC once the queued PDUs are out, as when a TCP backend closes.
        return
    ack_in(vc, window, len(pdu))


def ack_in(vc: VirtualConnection, window: ReceiveWindow, size: int) -> None:
    """Count ``size`` bytes of client RPC PDUs as consumed (:meth:`ProxyVc.ack_in`);
    wake the OUT writer when an acknowledgement is due."""
    if vc.ack_in(window, size):
        vc.out_waker.wake()


# -- the OUT writer -------------------------------------------------------------------------


async def _emit(vc: VirtualConnection, data: bytes) -> None:
    """Send ``data`` on the current OUT channel (the core counted it)."""
    sink = vc.out_sink
    assert sink is not None
    sink.send_body(data)
    await sink.flush()


async def _emit_all(vc: VirtualConnection, pdus: list[bytes]) -> None:
    for data in pdus:
        await _emit(vc, data)


async def _emit_rpc_batch(vc: VirtualConnection, first: bytes) -> bytes | None:
    """Send ``first`` (the core counted it) and the queued RPC PDUs after it that the
    window and the channel take now, up to :data:`BATCH_LIMIT` bytes, in one flush;
    returns the next PDU left for later, if any."""
    sink = vc.out_sink
    assert sink is not None
    sink.send_body(first)
    batch = len(first)
    pdu: bytes | None = None
    while batch < BATCH_LIMIT:
        pdu = vc.take_out()
        if pdu is None or not vc.take_rpc(len(pdu)):
            break
        sink.send_body(pdu)
        batch += len(pdu)
        pdu = None
    await sink.flush()
    return pdu


async def _switch_out(config: TunnelConfig, vc: VirtualConnection) -> None:
    """OUT_R2/B3 on the predecessor, then ``200 Success`` on the successor, which becomes
    the OUT channel with fresh flow control (3.2.4.5.10)."""
    old, new = vc.out_sink, vc.out_successor
    assert old is not None and new is not None
    await _emit(vc, vc.predecessor_end())
    vc.out_switched()
    vc.out_sink, vc.out_successor = new, None
    new.start_out_response(config.out_content_length)
    await new.flush()
    old.retire()
    log.debug("OUT channel of %s switched to its successor", vc.user)


async def _out_writer(config: TunnelConfig, vc: VirtualConnection, backend: Backend) -> None:
    """Write on OUT what the core's turns say (:meth:`ProxyVc.out_turn`), feeding held
    client PDUs to an attached backend between turns."""
    pending: bytes | None = None
    last_sent = trio.current_time()
    while not vc.ended.is_set():
        if vc.held:
            await _feed_held(vc, backend)
        if pending is None:
            pending = vc.take_out()
        turn = vc.out_turn(
            None if pending is None else len(pending),
            backend_done=vc.backend_done and pending is None and not vc.out_queue,
            now=trio.current_time(),
            last_sent=last_sent,
        )
        await _emit_all(vc, turn.emit)
        if turn.next is OutNext.SEND_LAST:
            assert pending is not None
            await _emit(vc, pending)
            pending = None
            continue
        if turn.next is OutNext.SWITCH:
            await _switch_out(config, vc)
            last_sent = trio.current_time()
            continue
        if turn.next is OutNext.END:
            vc.end(turn.reason)
            return
        if turn.next is OutNext.SEND:
            assert pending is not None
            pending = await _emit_rpc_batch(vc, pending)
            last_sent = trio.current_time()
            a2 = vc.recycle_request(blocked=False, now=last_sent)
            if a2 is not None:
                await _emit(vc, a2)
            continue
        with trio.CancelScope(deadline=turn.deadline):
            await vc.out_waker.wait()
        now = trio.current_time()
        if now >= turn.ping_at:
            ping = vc.ping()
            if ping is not None:
                await _emit(vc, ping)
            last_sent = now
