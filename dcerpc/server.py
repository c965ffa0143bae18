"""Trio driver serving DCE/RPC interfaces over byte streams (ncacn_ip_tcp and tunnels).

One task per connection owns one :class:`~dcerpc.server_connection.ServerConnection`:
it reads, feeds the core, flushes what the core queued and starts one task per
complete call in the connection's nursery, so several calls run at once and nothing
outlives the connection. A call the interface's ``inline`` handler answers at once is
answered by the reading task itself, with no task started.

An in-process relay that already holds the client's bytes (the tunnel) may instead
:meth:`RpcServer.attach` an :class:`AttachedConnection`: it feeds the bytes in its own
task and gets the replies through a callback, so an inline call costs no task switch.

Limits on connections: ``max_connections`` stream connections, of which at most
``max_connections_per_address`` from one peer address, are served at once (more are
closed at accept); attached connections are counted apart, against their own
``max_connections``, so sockets on the LAN cannot lock tunnel users out. Fragmented
requests being reassembled share one :class:`ReassemblyBudget` per server.

Timeouts: a connection that has not completed its first bind after ``bind_timeout`` is
closed; a peer that sends nothing while no call is running is dropped after
``idle_timeout``; a PDU or fragmented request that stays incomplete for
``receive_timeout`` ends the connection; a peer that does not read our replies for
``send_timeout`` is dropped. Whoever feeds a connection (its reading task, or an
attached connection's relay) only notes times on it: when it began waiting, since when
input is incomplete, since when a reply is going out. One judge,
:func:`_expired`, reads them for both kinds; a watchdog (:meth:`RpcServer._watch` for
a stream, :meth:`AttachedConnection.serve_timeouts` for an attached connection) asks
it every quarter of the shortest timeout and ends the connection its own way, so each
limit fires at most a quarter of itself late (moving a deadline per read and per reply
cost more than the call). Handler
exceptions become faults (and are logged); they never reach the peer as text and never
stop the server.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from dcerpc.auth_context import ServerSecurity
from dcerpc.config import RpcConfig
from dcerpc.errors import FaultStatus, ProtocolError, RemoteProtocolError, RpcFault
from dcerpc.events import BindReceived, CallCancelled, CallReceived, ConnectionEnded
from dcerpc.interface import CONNECTION_CLOSED, CallContext, Interface
from dcerpc.pdu import ShutdownPdu
from dcerpc.security import AuthLevel, AuthPolicy, AuthType, CallerAuth, Identity
from dcerpc.server_connection import (
    AssociationGroups,
    ConnectionState,
    InterfaceRegistry,
    ReassemblyBudget,
    ServerConnection,
)
from dcerpc.trio_util import acquire

log = logging.getLogger("dcerpc.server")

RECEIVE_SIZE = 65536

#: Takes encoded PDUs for the peer of an attached connection; may wait (backpressure).
Deliver = Callable[[list[bytes]], Awaitable[None]]


def _address(stream: trio.abc.Stream, peer: bool) -> tuple[str, int] | None:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return None
    try:
        addr = sock.getpeername() if peer else sock.getsockname()
    except OSError:
        return None
    return (str(addr[0]), int(addr[1]))


def _lowered(policy: AuthPolicy, level: int) -> AuthPolicy:
    """``policy`` with its ``min_level`` at most ``level``."""
    return replace(policy, min_level=min(policy.min_level, level))


def _only_broken_streams(exc: BaseException) -> bool:
    """True when ``exc`` (or every exception in its group, as the connection's nursery
    raises them) says the transport broke or closed."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_broken_streams(e) for e in exc.exceptions)
    return isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError)


def _note_partial(conn: _Connection) -> None:
    """After input at ``conn.active_at``: note since when input is incomplete, if it is.

    From when the incomplete input arrived (not from when the read began: the wait before
    it was idleness), and not from the last byte: a peer trickling bytes cannot keep
    pushing the limit away.
    """
    if conn.core.has_partial_input:
        if conn.partial_since is None:
            conn.partial_since = conn.active_at
    else:
        conn.partial_since = None


def _expired(conn: _Connection, config: RpcConfig, now: float) -> str:
    """Which limit ``conn`` has passed at ``now``: ``"bind"`` (no bind completed within
    ``bind_timeout`` of opening), ``"send"`` (a reply blocked for
    ``send_timeout``), ``"receive"`` (input incomplete for ``receive_timeout``),
    ``"idle"`` (nothing came, ran or left for ``idle_timeout``; a running call, a
    long-poll say, is not idleness), or ``""``."""
    if (
        conn.core.state is ConnectionState.AWAITING_BIND
        and now - conn.opened_at >= config.bind_timeout
    ):
        return "bind"
    if conn.sending_since is not None:
        return "send" if now - conn.sending_since >= config.send_timeout else ""
    if conn.partial_since is not None:
        return "receive" if now - conn.partial_since >= config.receive_timeout else ""
    if not conn.calls and now - conn.active_at >= config.idle_timeout:
        return "idle"
    return ""


def _watch_period(config: RpcConfig) -> float:
    """How often a watchdog asks :func:`_expired`: a quarter of the shortest limit."""
    return (
        min(config.send_timeout, config.receive_timeout, config.idle_timeout, config.bind_timeout)
        / 4
    )


@dataclass(slots=True)
class _Connection:
    """One connection: a byte ``stream`` read by a task, or (attached) a ``deliver``
    callback for the replies while the caller feeds the input."""

    core: ServerConnection
    stream: trio.abc.Stream | None
    peer: tuple[str, int] | None
    local: tuple[str, int] | None
    deliver: Deliver | None = None
    #: Attached connections: ends the connection when the relay broke.
    on_break: Callable[[], None] | None = None
    #: Stream connections: the reading task's scope, cancelled by its watchdog, which
    #: says why in ``expired``. Both kinds: the times :func:`_expired` judges (trio clock).
    reading: trio.CancelScope | None = None
    opened_at: float = 0.0
    active_at: float = 0.0
    partial_since: float | None = None
    sending_since: float | None = None
    expired: str = ""
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    calls: dict[int, trio.CancelScope] = field(default_factory=dict)
    orphaned: set[int] = field(default_factory=set)
    state: dict[str, Any] = field(default_factory=dict)
    #: Run once when the connection ends (:attr:`CallContext.on_close`).
    on_close: list[Callable[[], None]] = field(default_factory=list)
    broken: bool = False
    #: Attached connections: the user the relay authenticated (``attach(proxy_user=)``).
    relay_auth: CallerAuth | None = None

    def run_close_callbacks(self) -> None:
        self.state[CONNECTION_CLOSED] = True
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one service's bug must not keep the others' from running
                log.exception("a connection close callback failed")


class RpcServer:
    """Serves a fixed set of interfaces on any number of listeners or streams."""

    def __init__(
        self,
        interfaces: Sequence[Interface],
        *,
        config: RpcConfig | None = None,
        name: str = "rpc",
        security: ServerSecurity | None = None,
        attached_min_level: int | None = None,
    ) -> None:
        """``security`` offers NTLM/SPNEGO (see :class:`~dcerpc.auth_context.ServerSecurity`);
        without it every authenticated bind is refused. Each interface's
        :attr:`~dcerpc.interface.Interface.policy` says what its callers need.

        ``attached_min_level``: on attached connections (:meth:`attach`: the HTTPS
        tunnel, which TLS protects and whose proxy authenticated the user), every
        interface's ``min_level`` is lowered to at most this level (None: as on a
        stream). Whether anonymous callers are admitted does not change."""
        self.config = config or RpcConfig()
        self.security = security
        self.registry = InterfaceRegistry(interfaces)
        self.attached_registry = self.registry
        if attached_min_level is not None:
            self.attached_registry = InterfaceRegistry(
                replace(iface, policy=_lowered(iface.policy, attached_min_level))
                for iface in interfaces
            )
        self.groups = AssociationGroups()
        self.name = name
        #: Counted apart so that neither kind can take the other's slots.
        self.stream_connections = 0
        self.attached_connections = 0
        self._per_address: dict[str, int] = {}
        #: Reassembly memory shared by every connection of this server.
        self.reassembly = ReassemblyBudget(self.config.reassembly_budget)

    @property
    def active_connections(self) -> int:
        """Connections open now, of both kinds."""
        return self.stream_connections + self.attached_connections

    async def serve_tcp(
        self,
        port: int = 0,
        host: str | None = "127.0.0.1",
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0 = a dynamic port) and serve until cancelled.

        ``task_status.started()`` receives the listeners, so
        ``listeners = await nursery.start(server.serve_tcp)`` tells the port.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        for listener in listeners:
            # Small request/response PDUs must not wait for Nagle.
            listener.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await trio.serve_listeners(self.handle_stream, listeners, task_status=task_status)

    def attach(
        self,
        nursery: trio.Nursery,
        deliver: Deliver,
        *,
        peer: tuple[str, int] | None = None,
        proxy_user: str | None = None,
    ) -> AttachedConnection:
        """A connection without a byte stream, for an in-process relay: the caller feeds
        the client's bytes (:meth:`AttachedConnection.receive_data`), replies go to
        ``deliver`` (one call at a time, in order), calls that need a task run in
        ``nursery``. The caller bounds the time of each feed and runs
        :meth:`AttachedConnection.serve_timeouts` for the idle and receive timeouts;
        replies sent by call tasks are bounded by ``send_timeout`` as usual.

        ``peer`` is the relay's client (an HTTPS tunnel's), when the relay knows it:
        handlers see it as :attr:`CallContext.peer`, with :attr:`CallContext.attached`
        set. ``proxy_user``: the user the relay authenticated (the tunnel's proxy, over
        TLS); while the connection has no DCE/RPC authentication of its own, handlers
        see it as :attr:`CallContext.auth`, a :class:`~dcerpc.security.CallerAuth` of
        auth type ``AuthType.NONE`` and level ``AuthLevel.NONE`` (the relay vouches
        for the user; the interface's policy still judges the connection's own level,
        see ``attached_min_level``).

        Raises:
            ConnectionRefusedError: ``max_connections`` attached connections are open.
        """
        # No per-address limit: the relay knows its clients, we would see only the relay.
        if self.attached_connections >= self.config.max_connections:
            log.warning("%s: connection limit reached, refusing an attached connection", self.name)
            raise ConnectionRefusedError("the RPC server has too many connections")
        self.attached_connections += 1
        core = ServerConnection(
            self.attached_registry,
            self.groups,
            self.config,
            budget=self.reassembly,
            security=self._security_for(peer),
        )
        conn = _Connection(core, None, peer, None, deliver)
        if proxy_user:
            conn.relay_auth = CallerAuth(Identity(user=proxy_user), AuthType.NONE, AuthLevel.NONE)
        return AttachedConnection(self, conn, nursery)

    def _security_for(self, peer: tuple[str, int] | None) -> ServerSecurity | None:
        return self.security.for_peer(peer) if self.security is not None else None

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it ends; never raises (errors are logged)."""
        peer = _address(stream, True)
        host = peer[0] if peer is not None else ""
        if self.stream_connections >= self.config.max_connections:
            log.warning("%s: connection limit reached, refusing a connection", self.name)
            await trio.aclose_forcefully(stream)
            return
        held = self._per_address.get(host, 0)
        if peer is not None and held >= self.config.max_connections_per_address:
            log.warning("%s: %s has too many connections, refusing one", self.name, host)
            await trio.aclose_forcefully(stream)
            return
        self.stream_connections += 1
        self._per_address[host] = held + 1
        local = _address(stream, False)
        core = ServerConnection(
            self.registry,
            self.groups,
            self.config,
            secondary_address=str(local[1]) if local else "",
            budget=self.reassembly,
            security=self._security_for(peer),
        )
        conn = _Connection(core, stream, peer, local)
        try:
            await self._serve(conn, stream)
        except Exception as exc:
            if _only_broken_streams(exc):  # a peer reset or vanished: not our error
                log.debug("%s: connection from %s broke", self.name, peer)
            else:
                log.exception("%s: unexpected error on connection from %s", self.name, peer)
        finally:
            self.stream_connections -= 1
            if (left := self._per_address.pop(host) - 1) > 0:
                self._per_address[host] = left
            core.close()
            conn.run_close_callbacks()
            await trio.aclose_forcefully(stream)

    async def _serve(self, conn: _Connection, stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            # The read loop only notes times; _watch enforces the timeouts. A deadline
            # moved for every read and every reply (idle, then send) would cost every
            # call two updates of trio's deadline heap (docs/benchmarks.md).
            with trio.CancelScope() as reading:
                conn.reading = reading
                conn.opened_at = trio.current_time()
                nursery.start_soon(self._watch, conn)  # first runs after active_at is set
                while conn.core.state is not ConnectionState.CLOSED and not conn.broken:
                    conn.active_at = trio.current_time()
                    data = await stream.receive_some(RECEIVE_SIZE)
                    # Input is activity too: a reply waiting for the send lock after a
                    # long quiet spell must not look idle to the watchdog.
                    conn.active_at = trio.current_time()
                    if not self._handle_input(conn, nursery, data):
                        break
                    _note_partial(conn)
                    if conn.core.outbox_pending:
                        # Waiting behind a call's send is bounded by that send's own
                        # timeout; the watchdog times ours from when the lock is ours.
                        await acquire(conn.send_lock)
                        try:
                            conn.sending_since = trio.current_time()
                            await self._send_locked(conn)
                            conn.sending_since = None
                        finally:
                            conn.send_lock.release()
            if reading.cancelled_caught and conn.expired == "send":
                log.info("%s: %s does not read its replies, closing", self.name, conn.peer)
                await self._break(conn)
            elif reading.cancelled_caught:
                await self._time_out(conn)
            elif conn.core.outbox_pending:
                await self._flush(conn)  # the reply to a protocol error, before closing
            nursery.cancel_scope.cancel()

    async def _watch(self, conn: _Connection) -> None:
        """End the read loop (cancel ``conn.reading``) once :func:`_expired` names a
        limit; it is asked every :func:`_watch_period`."""
        period = _watch_period(self.config)
        assert conn.reading is not None
        while True:
            await trio.sleep(period)
            if reason := _expired(conn, self.config, trio.current_time()):
                conn.expired = reason
                break
        conn.reading.cancel()

    def _handle_input(
        self, conn: _Connection, nursery: trio.Nursery, data: bytes | bytearray
    ) -> bool:
        """Feed the core and start calls; False when the connection must end."""
        try:
            # Wall-clock time only where NTLM may need it (its CHALLENGE timestamp).
            now = time.time() if self.security is not None else None
            events = conn.core.receive_data(data, now=now)
        except RemoteProtocolError as exc:
            log.info("%s: protocol error from %s: %s", self.name, conn.peer, exc)
            return False
        for event in events:
            if type(event) is CallReceived:
                if event.interface.inline is not None and self._answer_inline(conn, event):
                    continue
                scope = trio.CancelScope()
                conn.calls[event.call_id] = scope
                run = self._run_call if conn.stream is not None else self._run_attached_call
                nursery.start_soon(run, conn, event, scope)
            elif isinstance(event, CallCancelled):
                if event.orphaned:
                    conn.orphaned.add(event.call_id)
                running = conn.calls.get(event.call_id)
                if running is not None:
                    running.cancel()
            elif isinstance(event, BindReceived):
                log.debug("%s: %s bound %s", self.name, conn.peer, event.accepted)
            elif isinstance(event, ConnectionEnded):
                return False
        return True

    async def _time_out(self, conn: _Connection) -> None:
        if conn.expired == "bind":
            log.info("%s: %s did not bind in time, closing", self.name, conn.peer)
            return
        if conn.core.has_partial_input:
            log.info("%s: %s sent an incomplete PDU, closing", self.name, conn.peer)
            return
        log.debug("%s: %s idle, closing", self.name, conn.peer)
        await self._say_shutdown(conn)

    async def _say_shutdown(self, conn: _Connection) -> None:
        """[C706] 12.6.4.13: a shutdown asks the client to close when it is done (once
        bound; at most a second's wait for the send)."""
        if conn.core.state is not ConnectionState.BOUND:
            return
        pdu = ShutdownPdu().encode()
        with trio.move_on_after(1):
            async with conn.send_lock:
                if conn.deliver is not None:
                    await conn.deliver([pdu])
                else:
                    assert conn.stream is not None
                    await conn.stream.send_all(pdu)

    def _context(self, conn: _Connection, event: CallReceived) -> CallContext:
        return CallContext(
            opnum=event.opnum,
            interface=event.interface.syntax,
            transfer_syntax=event.transfer_syntax,
            object_uuid=event.object_uuid,
            association_group=conn.core.assoc_group_id,
            peer=conn.peer,
            local=conn.local,
            connection_state=conn.state,
            served_interfaces=self.registry.syntaxes,
            byteorder=event.byteorder,
            on_close=conn.on_close,
            attached=conn.stream is None,
            auth=event.auth if event.auth is not None else conn.relay_auth,
        )

    def _fault_status(self, conn: _Connection, event: CallReceived, exc: Exception) -> int:
        """The fault status a handler's exception becomes (logged unless expected)."""
        if isinstance(exc, RpcFault):
            return exc.status
        if isinstance(exc, ProtocolError):
            log.info("%s: bad stub from %s: %s", self.name, conn.peer, exc)
            return exc.status
        log.error(
            "%s: %s opnum %d failed",
            self.name,
            event.interface.name,
            event.opnum,
            exc_info=exc,
        )
        return FaultStatus.FAULT_UNSPEC

    def _answer_inline(self, conn: _Connection, event: CallReceived) -> bool:
        """Try the interface's inline handler; True when the call is answered (the reply
        is queued in the core, flushed with the rest of this read)."""
        assert event.interface.inline is not None
        try:
            reply = event.interface.inline(self._context(conn, event), event.stub)
        except Exception as exc:
            conn.core.send_fault(event.call_id, self._fault_status(conn, event, exc))
            return True
        if reply is None:
            return False
        conn.core.send_response(event.call_id, reply)
        return True

    async def _run_call(
        self, conn: _Connection, event: CallReceived, scope: trio.CancelScope
    ) -> None:
        ctx = self._context(conn, event)
        reply: bytes | None = None
        status = 0
        with scope:
            try:
                reply = await event.interface.handler(ctx, event.stub)
            except Exception as exc:
                status = self._fault_status(conn, event, exc)
        conn.calls.pop(event.call_id, None)
        if not conn.calls:
            conn.active_at = trio.current_time()  # idleness starts when the last call ends
        if event.call_id in conn.orphaned:
            conn.orphaned.discard(event.call_id)
            conn.core.abandon_call(event.call_id)
            return
        if scope.cancelled_caught:
            status = FaultStatus.FAULT_CANCEL
        if conn.core.state is ConnectionState.CLOSED:
            return
        if reply is not None and not status:
            conn.core.send_response(event.call_id, reply)
        else:
            conn.core.send_fault(event.call_id, status or FaultStatus.FAULT_UNSPEC)
        await self._flush(conn)

    async def _run_attached_call(
        self, conn: _Connection, event: CallReceived, scope: trio.CancelScope
    ) -> None:
        """:meth:`_run_call` in an attached connection's relay nursery, which serves other
        clients too: an unexpected error ends this connection only (for a stream,
        :meth:`handle_stream` contains it)."""
        try:
            await self._run_call(conn, event, scope)
        except Exception:
            log.exception("%s: call on an attached connection failed", self.name)
            await self._break(conn)

    async def _flush(self, conn: _Connection) -> None:
        """Send what the core queued, bounded by ``send_timeout``."""
        if not conn.core.outbox_pending:
            return
        await acquire(conn.send_lock)  # no scheduler pass when free; the send checkpoints
        try:
            deadline = trio.current_time() + self.config.send_timeout
            with trio.CancelScope(deadline=deadline) as scope:
                await self._send_locked(conn)
            if scope.cancelled_caught:  # the peer stopped reading
                await self._break(conn)
        finally:
            conn.send_lock.release()

    async def _send_locked(self, conn: _Connection) -> None:
        """Send what the core queued (the caller holds the send lock and bounds the time)."""
        if conn.broken:
            conn.core.pdus_to_send()
            return
        try:
            if conn.deliver is not None:
                await conn.deliver(conn.core.pdus_to_send())
            elif data := conn.core.data_to_send():
                assert conn.stream is not None
                await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._break(conn)  # the peer went away: end the connection, not the server

    async def _break(self, conn: _Connection) -> None:
        conn.broken = True
        if conn.stream is not None:
            await trio.aclose_forcefully(conn.stream)
        else:
            if conn.on_break is not None:
                conn.on_break()
            await trio.lowlevel.checkpoint()


class AttachedConnection:
    """A connection of :meth:`RpcServer.attach`: fed by its caller, no reading task.

    Only one task feeds it at a time. It ends when the caller closes it, on a protocol
    error from the client, when ``deliver`` fails, or on the server's idle and receive
    timeouts (:meth:`serve_timeouts`); then :attr:`closed` is set and calls still
    running are cancelled.
    """

    def __init__(self, server: RpcServer, conn: _Connection, nursery: trio.Nursery) -> None:
        self._server = server
        self._conn = conn
        self._nursery = nursery
        self._open = True
        conn.opened_at = conn.active_at = trio.current_time()
        #: Set once the connection is over, whoever ended it.
        self.closed = trio.Event()
        conn.on_break = self._end
        assert conn.deliver is not None
        self._deliver = conn.deliver
        conn.deliver = self._deliver_noted

    async def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes from the client; ``b""`` is its EOF. Replies to calls answered at
        once are delivered before this returns. A cancel point; it schedules only if
        ``deliver`` does (the caller's next read is one anyway).

        Raises:
            trio.BrokenResourceError: the connection is over (the client broke the
                protocol: the fault was delivered first; or ``deliver`` failed).
        """
        conn = self._conn
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._open:
            raise trio.BrokenResourceError("the RPC connection is closed")
        conn.active_at = trio.current_time()
        try:
            ok = self._server._handle_input(conn, self._nursery, data)
            _note_partial(conn)
            if conn.core.outbox_pending:
                await acquire(conn.send_lock)
                try:
                    await self._server._send_locked(conn)
                finally:
                    conn.send_lock.release()
        except Exception as exc:
            # A bug, not the client's doing: this connection ends, the feeder goes on.
            log.exception("%s: attached connection failed", self._server.name)
            self._end()
            raise trio.BrokenResourceError("the RPC server failed") from exc
        if not ok or conn.broken:
            await self.aclose()
            raise trio.BrokenResourceError("the RPC server closed the connection")

    async def serve_timeouts(self) -> None:
        """Apply the server's ``bind_timeout`` (no bind completed: the end),
        ``idle_timeout`` (no input, no call running, no reply for
        that long: a shutdown PDU, then the end) and ``receive_timeout`` (an incomplete
        PDU or fragmented request), judged as for a stream (:func:`_expired`, every
        :func:`_watch_period`); return once the connection is over. The relay runs this
        for as long as it relays. (Replies are bounded by ``send_timeout`` where they
        are sent, and each feed by its caller.)"""
        server, conn = self._server, self._conn
        period = _watch_period(server.config)
        while True:
            with trio.move_on_after(period):
                await self.closed.wait()
                return
            reason = _expired(conn, server.config, trio.current_time())
            if reason == "bind":
                log.info("%s: an attached client did not bind in time", server.name)
                break
            if reason == "receive":
                log.info("%s: an attached client sent an incomplete PDU", server.name)
                break
            if reason == "idle":
                log.debug("%s: attached connection idle, closing", server.name)
                await server._say_shutdown(conn)
                break
        await self.aclose()

    async def _deliver_noted(self, pdus: list[bytes]) -> None:
        self._conn.active_at = trio.current_time()
        await self._deliver(pdus)

    async def aclose(self) -> None:
        """End the connection; calls still running are cancelled and send nothing."""
        self._end()
        await trio.lowlevel.checkpoint()

    def _end(self) -> None:
        if self._open:
            self._open = False
            self._conn.broken = True
            for scope in self._conn.calls.values():
                scope.cancel()
            self._conn.core.close()
            self._server.attached_connections -= 1
            self._conn.run_close_callbacks()
            self.closed.set()
