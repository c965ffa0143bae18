"""Trio DCE/RPC client: bind, call, alter_context over any byte stream.

``async with open_tcp_rpc_client(host, port) as rpc`` connects over TCP; any
``trio.abc.Stream`` (TLS, a tunnel transport) works with :func:`open_rpc_client`.

Several calls may be outstanding at once, and there is no reader task: the callers
take turns reading (leader/follower). A caller waiting for its reply reads the stream
itself when nobody else is reading, feeds the sans-IO
:class:`~dcerpc.client_connection.ClientConnection` and hands every reply to its
waiter; once its own reply is in, it passes the reading on to a caller still
waiting. A lone call thus costs one wake-up for its reply instead of two (a reader's
and then the caller's). The stream's ``receive_some`` must therefore lose nothing
when cancelled, as trio's socket streams and our tunnel streams guarantee. A caller
that is cancelled while waiting orphans its call ([C706] 12.6.4.12), so the server
can stop working on it and the connection stays usable. Server PDUs that answer no
call (a shutdown request, the close of the connection) are seen at the next call.

Authentication: ``open_tcp_rpc_client(host, port, auth=ClientAuth(user=..., password=...,
auth_level=AuthLevel.PKT_PRIVACY))`` makes the first bind authenticate (NTLM, or
SPNEGO with ``auth_type=AuthType.SPNEGO``); the core queues the auth3 or
alter_context legs, which the reader sends as soon as they are queued.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from dcerpc.auth_context import ClientAuth
from dcerpc.client_connection import ClientConnection, ClientState
from dcerpc.config import RpcConfig
from dcerpc.errors import BindRejected, ConnectionClosed, ProtocolError, RpcFault
from dcerpc.events import (
    BindAckReceived,
    BindNakReceived,
    ConnectionEnded,
    Event,
    FaultReceived,
    ResponseReceived,
    ShutdownReceived,
)
from dcerpc.pdu import BindNakReason, ContextElement, ContextResultCode, ProviderReason
from dcerpc.syntax import NDR, SyntaxId
from dcerpc.trio_util import acquire

log = logging.getLogger("dcerpc.client")

T = TypeVar("T")

#: Largest send made without a deadline (``RpcConfig.send_timeout`` bounds larger ones;
#: see ``RpcClient._send_queued``), on a TCP socket or on a stream whose class sets
#: ``bounded_waits = True``: its ``send_all`` waits without bound for nothing but the
#: socket under it (the tunnel streams bound their waits for flow-control credit). On
#: any other stream every send gets the deadline.
UNBOUNDED_SEND = 8192


class _Waiter:
    """One caller waiting for its reply: ``wake`` is set when the reply (or the error
    that ends the connection) is in ``event``, or when the caller must take a turn at
    reading."""

    __slots__ = ("event", "sent", "wake")

    def __init__(self) -> None:
        self.wake = trio.Event()
        self.event: Event | BaseException | None = None
        #: The request is out; until then the caller is sending, not able to read.
        self.sent = False

    def resolve(self, value: Event | BaseException) -> None:
        if self.event is None:
            self.event = value
            self.wake.set()


class RpcClient:
    """One DCE/RPC connection from the client side. Create it with the ``open_*`` helpers."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        config: RpcConfig | None = None,
        *,
        auth: ClientAuth | None = None,
    ) -> None:
        self.stream = stream
        # See UNBOUNDED_SEND: a TCP socket, or a stream that bounds its own waits.
        self._small_sends_free = isinstance(stream, trio.SocketStream) or getattr(
            stream, "bounded_waits", False
        )
        self.config = config or RpcConfig()
        self.core = ClientConnection(self.config, auth=auth)
        self._waiters: dict[int, _Waiter] = {}
        self._send_lock = trio.Lock()
        self._bind_lock = trio.Lock()
        self._next_context_id = 0
        self._closed: BaseException | None = None
        #: A caller is reading the stream (the leader); the others wait to be woken.
        self._reading = False
        self.shutdown_requested = False
        #: Transfer syntax chosen by the server for each bound context id.
        self.transfer_syntaxes: dict[int, SyntaxId] = {}

    async def bind(
        self, interface: SyntaxId, transfer_syntaxes: Sequence[SyntaxId] = (NDR,)
    ) -> int:
        """Negotiate a presentation context for ``interface``; returns its context id.

        The first call sends a bind, later ones an alter_context on the same connection.

        Raises:
            BindRejected: the server refused the interface, the syntaxes or the bind.
            ConnectionClosed: the connection ended.
        """
        async with self._bind_lock:
            context_id = self._next_context_id
            self._next_context_id += 1
            element = ContextElement(context_id, interface, tuple(transfer_syntaxes))
            event = await self._exchange(lambda: self.core.bind([element], now=time.time()))
            if isinstance(event, BindNakReceived):
                raise BindRejected(
                    f"bind refused: {_name(BindNakReason, event.reason)}", reason=event.reason
                )
            if isinstance(event, FaultReceived):
                raise BindRejected(f"bind answered by fault 0x{event.status:08X}")
            assert isinstance(event, BindAckReceived)
            result = event.results[0] if event.results else None
            if result is None or result.result != ContextResultCode.ACCEPTANCE:
                code, reason = (result.result, result.reason) if result else (2, 0)
                raise BindRejected(
                    f"{interface} refused: {_name(ProviderReason, reason)}",
                    result=code,
                    reason=reason,
                )
            self.transfer_syntaxes[context_id] = result.transfer_syntax
            return context_id

    async def call(
        self, context_id: int, opnum: int, stub: bytes, *, object_uuid: uuid.UUID | None = None
    ) -> bytes:
        """Make one call and return the response stub.

        Raises:
            RpcFault: the server answered with a fault PDU.
            ConnectionClosed: the connection ended before the answer.
        """
        if self._closed is not None or self.core.state is ClientState.CLOSED:
            raise ConnectionClosed(f"the connection is closed ({self._closed or 'by the server'})")
        queued: list[int] = []

        def request() -> int:
            queued.append(self.core.request(context_id, opnum, stub, object_uuid=object_uuid))
            return queued[0]

        try:
            event = await self._exchange(request)
        except trio.Cancelled:
            if queued and self._closed is None:  # tell a live server to stop working on it
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(1),
                    contextlib.suppress(ConnectionClosed),
                ):
                    await self._send(lambda: self.core.orphan(queued[0]))
            raise
        if isinstance(event, FaultReceived):
            raise RpcFault(event.status)
        assert isinstance(event, ResponseReceived)
        return event.stub

    async def aclose(self) -> None:
        self._fail_all(ConnectionClosed("client closed"))
        await trio.aclose_forcefully(self.stream)

    # -- internals -------------------------------------------------------------------------

    async def _exchange(self, queue: Callable[[], int]) -> Event:
        """Queue a PDU (``queue`` returns its call id), send it, then wait for the
        answer, reading whenever it is this caller's turn."""
        if self._closed is not None:
            raise ConnectionClosed(str(self._closed))
        waiter = _Waiter()

        def register() -> int:
            call_id = queue()
            self._waiters[call_id] = waiter
            return call_id

        try:
            call_id = await self._send(register)
        except BaseException:
            self._waiters = {k: w for k, w in self._waiters.items() if w is not waiter}
            raise
        waiter.sent = True  # from now on it may be handed the reading
        try:
            while waiter.event is None:
                if not self._reading:
                    await self._read_until(waiter)
                else:
                    await waiter.wake.wait()
                    if waiter.event is None:  # woken to take a turn at reading
                        waiter.wake = trio.Event()
        finally:
            self._waiters.pop(call_id, None)
            if not self._reading:
                self._hand_off()  # a turn we were given, and cannot take, goes on
        if isinstance(waiter.event, BaseException):
            raise ConnectionClosed(str(waiter.event)) from waiter.event
        assert waiter.event is not None
        return waiter.event

    async def _send(self, queue: Callable[[], T]) -> T:
        """Queue PDUs with ``queue`` and send them, under the send lock: each caller sends
        only what it queued, so a caller blocked in a send never carries another's
        request, and any caller whose request is out can take the reading (otherwise a
        server blocked on a reply nobody reads would never read the rest)."""
        await acquire(self._send_lock)  # no scheduler pass when free; the send checkpoints
        try:
            result = queue()
            await self._send_queued()
            return result
        finally:
            self._send_lock.release()

    async def _send_queued(self) -> None:
        data = self.core.data_to_send()
        if not data:
            return
        failure: BaseException | None = None
        timed_out = False
        try:
            if len(data) <= UNBOUNDED_SEND and self._small_sends_free:
                # A request this small blocks only on a server that has stopped reading,
                # and then its reply would never come either: the caller's own timeout
                # is what ends that wait. A deadline scope is a noticeable part of a
                # small call's round trip (docs/benchmarks.md), so only larger sends
                # (where waiting on flow control is normal, and a stall must end the
                # connection) get one.
                await self.stream.send_all(data)
            else:
                deadline = trio.current_time() + self.config.send_timeout
                with trio.CancelScope(deadline=deadline) as scope:
                    await self.stream.send_all(data)
                timed_out = scope.cancelled_caught
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            failure = exc
        except trio.Cancelled:
            # The caller gave up mid-send: part of a PDU may be on the wire, so the stream
            # can no longer be framed. End the connection rather than desynchronise it.
            self._fail_all(ConnectionClosed("a request was interrupted while being sent"))
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
            raise
        if timed_out:
            failure = trio.TooSlowError("the server did not read our request in time")
        if failure is not None:
            self._fail_all(failure)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)  # wakes a caller reading it
            raise ConnectionClosed(f"send failed: {failure!r}") from failure

    def _fail_all(self, exc: BaseException) -> None:
        if self._closed is None:
            self._closed = exc
        for waiter in self._waiters.values():
            waiter.resolve(exc)

    async def _read_until(self, waiter: _Waiter) -> None:
        """Read as the leader, dispatching every reply, until ``waiter`` has its own."""
        self._reading = True
        try:
            while waiter.event is None:
                if self.core.state is ClientState.CLOSED:
                    self._fail_all(ConnectionClosed("server closed the connection"))
                    break
                data = await self.stream.receive_some(65536)
                for event in self.core.receive_data(data):
                    self._dispatch(event)
                if self.core.outbox_pending:
                    # An authentication leg (auth3, alter_context) the bind_ack called for.
                    await self._send(lambda: None)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail_all(exc)
        except ProtocolError as exc:
            log.warning("server broke the protocol: %s", exc)
            self._fail_all(exc)
        finally:
            self._reading = False
            self._hand_off()

    def _hand_off(self) -> None:
        """Wake one caller still waiting, whose request is out, to read next (it checks
        again when it runs; a caller still sending reads when its send is done)."""
        for other in self._waiters.values():
            if other.event is None and other.sent:
                other.wake.set()
                return

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, ConnectionEnded):
            self._fail_all(ConnectionClosed("server closed the connection"))
            return
        if isinstance(event, ShutdownReceived):
            self.shutdown_requested = True
            return
        call_id = getattr(event, "call_id", None)
        if call_id == 0 and isinstance(event, FaultReceived):
            # A fault on call 0 refers to the connection as a whole.
            self._fail_all(RpcFault(event.status))
            return
        waiter = self._waiters.get(call_id) if call_id is not None else None
        if waiter is not None:
            waiter.resolve(event)


def _name(enum_type: type, value: int) -> str:
    try:
        return str(enum_type(value).name).lower()
    except ValueError:
        return str(value)


@asynccontextmanager
async def open_rpc_client(
    stream: trio.abc.Stream, config: RpcConfig | None = None, *, auth: ClientAuth | None = None
) -> AsyncIterator[RpcClient]:
    """Run an :class:`RpcClient` over an established stream; closes it on exit.
    ``auth``: authenticate the first bind (see the module docstring)."""
    client = RpcClient(stream, config, auth=auth)
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


@asynccontextmanager
async def open_tcp_rpc_client(
    host: str,
    port: int,
    *,
    config: RpcConfig | None = None,
    connect_timeout: float = 10.0,
    auth: ClientAuth | None = None,
) -> AsyncIterator[RpcClient]:
    """Connect to ``host:port`` over TCP (ncacn_ip_tcp) and yield an :class:`RpcClient`.

    Raises:
        ConnectionClosed: the connection could not be made within ``connect_timeout``.
    """
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as exc:
        raise ConnectionClosed(f"cannot connect to {host}[{port}]: {exc}") from exc
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    async with open_rpc_client(stream, config, auth=auth) as client:
        yield client
