"""Trio DCE/RPC client: bind, call, alter_context over any byte stream.

``async with open_tcp_rpc_client(host, port) as rpc`` connects over TCP; any
``trio.abc.Stream`` (TLS, a tunnel transport) works with :func:`open_rpc_client`.
A reader task, inside the context manager's nursery, feeds the sans-IO
:class:`~dcerpc.client_connection.ClientConnection` and wakes the callers waiting
for each ``call_id``, so several calls may be outstanding at once. A caller that is
cancelled while waiting orphans its call ([C706] 12.6.4.12), so the server can stop
working on it and the connection stays usable.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

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
from dcerpc.trio_util import acquire, single_errors

log = logging.getLogger("dcerpc.client")


class _Waiter:
    __slots__ = ("done", "event")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.event: Event | BaseException | None = None

    def resolve(self, value: Event | BaseException) -> None:
        if not self.done.is_set():
            self.event = value
            self.done.set()


class RpcClient:
    """One DCE/RPC connection from the client side. Create it with the ``open_*`` helpers."""

    def __init__(self, stream: trio.abc.Stream, config: RpcConfig | None = None) -> None:
        self.stream = stream
        self.config = config or RpcConfig()
        self.core = ClientConnection(self.config)
        self._waiters: dict[int, _Waiter] = {}
        self._send_lock = trio.Lock()
        self._bind_lock = trio.Lock()
        self._next_context_id = 0
        self._closed: BaseException | None = None
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
            call_id = self.core.bind([element])
            event = await self._exchange(call_id)
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
        call_id = self.core.request(context_id, opnum, stub, object_uuid=object_uuid)
        try:
            event = await self._exchange(call_id)
        except trio.Cancelled:
            if self._closed is None:  # tell a live server to stop working on it
                self.core.orphan(call_id)
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(1),
                    contextlib.suppress(ConnectionClosed),
                ):
                    await self._flush()
            raise
        if isinstance(event, FaultReceived):
            raise RpcFault(event.status)
        assert isinstance(event, ResponseReceived)
        return event.stub

    async def aclose(self) -> None:
        self._fail_all(ConnectionClosed("client closed"))
        await trio.aclose_forcefully(self.stream)

    # -- internals -------------------------------------------------------------------------

    async def _exchange(self, call_id: int) -> Event:
        if self._closed is not None:
            raise ConnectionClosed(str(self._closed))
        waiter = self._waiters[call_id] = _Waiter()
        try:
            await self._flush()
            await waiter.done.wait()
        finally:
            self._waiters.pop(call_id, None)
        if isinstance(waiter.event, BaseException):
            raise ConnectionClosed(str(waiter.event)) from waiter.event
        assert waiter.event is not None
        return waiter.event

    async def _flush(self) -> None:
        await acquire(self._send_lock)  # no scheduler pass when free; the send checkpoints
        try:
            await self._send_queued()
        finally:
            self._send_lock.release()

    async def _send_queued(self) -> None:
        data = self.core.data_to_send()
        if not data:
            return
        failure: BaseException | None = None
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.config.send_timeout) as scope:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            failure = exc
        except trio.Cancelled:
            # The caller gave up mid-send: part of a PDU may be on the wire, so the stream
            # can no longer be framed. End the connection rather than desynchronise it.
            self._fail_all(ConnectionClosed("a request was interrupted while being sent"))
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
            raise
        if failure is None and scope.cancelled_caught:
            failure = trio.TooSlowError("the server did not read our request in time")
        if failure is not None:
            self._fail_all(failure)
            raise ConnectionClosed(f"send failed: {failure!r}") from failure

    def _fail_all(self, exc: BaseException) -> None:
        if self._closed is None:
            self._closed = exc
        for waiter in self._waiters.values():
            waiter.resolve(exc)

    async def _reader(self) -> None:
        try:
            while self.core.state is not ClientState.CLOSED:
                data = await self.stream.receive_some(65536)
                for event in self.core.receive_data(data):
                    self._dispatch(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail_all(exc)
        except ProtocolError as exc:
            log.warning("server broke the protocol: %s", exc)
            self._fail_all(exc)
        else:
            self._fail_all(ConnectionClosed("server closed the connection"))

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
    stream: trio.abc.Stream, config: RpcConfig | None = None
) -> AsyncIterator[RpcClient]:
    """Run an :class:`RpcClient` over an established stream; closes it on exit."""
    client = RpcClient(stream, config)
    # The reader task never raises, so a lone exception is the caller's own: give it
    # back as it was raised, not wrapped in the nursery's group.
    with single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._reader)
            try:
                yield client
            finally:
                # Close before cancelling the reader: a checkpoint under the cancelled
                # nursery scope would raise Cancelled and swallow the body's exception.
                with trio.CancelScope(shield=True):
                    await client.aclose()
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_tcp_rpc_client(
    host: str,
    port: int,
    *,
    config: RpcConfig | None = None,
    connect_timeout: float = 10.0,
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
    async with open_rpc_client(stream, config) as client:
        yield client
