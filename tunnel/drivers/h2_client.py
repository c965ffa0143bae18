"""Client side of the HTTP/2 tunnel: one stream carrying the raw DCE/RPC byte stream.

:class:`H2TunnelStream` is a ``trio.abc.HalfCloseableStream``: ``send_all`` becomes DATA
frames within the server's windows (waiting for WINDOW_UPDATE when they are spent),
``receive_some`` returns response body bytes and only then hands the credit back, so
a slow reader throttles the server, ``send_eof`` ends our half (END_STREAM). A reader
task, run by :func:`h2_tunnel`'s nursery, owns the socket's receive side.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial

import trio

from dcerpc.trio_util import acquire, finish_shielded, single_errors
from tunnel.config import TunnelConfig
from tunnel.errors import TunnelError
from tunnel.h2_glue import (
    ConnectionEnded,
    DataReceived,
    Event,
    H2Glue,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowOpened,
)

MAX_ERROR_BODY = 4096


class H2TunnelStream(trio.abc.HalfCloseableStream):
    """The client's end of one tunnel stream. Create it with :func:`h2_tunnel`."""

    #: send_all waits for flow-control credit at most ``config.send_timeout`` (see
    #: dcerpc.client.UNBOUNDED_SEND).
    bounded_waits = True

    def __init__(self, transport: trio.abc.Stream, config: TunnelConfig) -> None:
        self.transport = transport
        self.config = config
        self.glue = H2Glue(config, client_side=True)
        self.sid = 0
        self.response: ResponseReceived | None = None
        self._inbox: deque[bytes] = deque()
        self._eof = False
        self._error: BaseException | None = None
        self._changed = trio.Event()
        self._write_lock = trio.Lock()
        self._send_guard = trio.Lock()
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _flush(self, drained: bytes = b"") -> None:
        """Send what h2 queued; ``drained``: bytes already taken from it, sent first."""
        await acquire(self._write_lock)
        try:
            data = drained + self.glue.data_to_send()
            if data:
                try:
                    await self.transport.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._fail(exc)
                    raise trio.BrokenResourceError("tunnel connection broke") from exc
        finally:
            self._write_lock.release()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._notify()

    async def _reader(self) -> None:
        try:
            while not self.glue.closed:
                data = bytes(await self.transport.receive_some(self.config.receive_size))
                for event in self.glue.receive_data(data):
                    self._dispatch(event)
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(exc)
        self._fail(TunnelError("tunnel connection closed"))

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, ResponseReceived) and event.stream_id == self.sid:
            self.response = event
            if event.ended:
                self._eof = True
        elif isinstance(event, DataReceived) and event.stream_id == self.sid:
            self._inbox.append(event.data)
        elif isinstance(event, StreamEnded) and event.stream_id == self.sid:
            self._eof = True
        elif isinstance(event, StreamReset) and event.stream_id == self.sid:
            self._fail(TunnelError(f"stream reset by the proxy (code {event.error_code})"))
        elif isinstance(event, ConnectionEnded):
            self._fail(TunnelError(f"tunnel connection ended: {event.reason}"))
        elif not isinstance(event, WindowOpened):
            return
        self._notify()

    async def open(self, authority: str, path: str, headers: list[tuple[str, str]]) -> None:
        """Send the request and wait for a 200.

        Raises:
            TunnelError: another status, or the connection ended first.
        """
        self.sid = self.glue.send_request(authority, path, headers)
        await self._flush()
        while self.response is None:
            if self._error is not None:
                raise TunnelError(f"no answer from the proxy: {self._error}")
            await self._changed.wait()
        if self.response.status != 200:
            body = b""
            while not self._eof and self._error is None and len(body) < MAX_ERROR_BODY:
                body += b"".join(self._inbox)
                self._inbox.clear()
                await self._changed.wait()
            body += b"".join(self._inbox)
            text = body[:200].decode("utf-8", "replace").strip()
            raise TunnelError(
                f"proxy answered {self.response.status}: {text}", status=self.response.status
            )

    # -- trio.abc.HalfCloseableStream ----------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await acquire(self._send_guard)
        try:
            if self._closed:
                raise trio.ClosedResourceError
            view = bytes(data)
            sent = 0
            credit_deadline: float | None = None
            while sent < len(view):
                if self._error is not None:
                    raise trio.BrokenResourceError(str(self._error))
                n = self.glue.send_data(self.sid, view[sent:])
                sent += n
                await self._flush()  # the transport's send checkpoints
                if sent < len(view) and n == 0:
                    if credit_deadline is None:
                        credit_deadline = trio.current_time() + self.config.send_timeout
                    await self._wait_for_credit(credit_deadline)
            if not view:
                await trio.lowlevel.checkpoint()
        finally:
            self._send_guard.release()

    async def _wait_for_credit(self, deadline: float) -> None:
        """Wait for a change (a WINDOW_UPDATE, usually); a proxy that grants no credit
        until ``deadline`` has stopped reading: the tunnel fails."""
        with trio.move_on_at(deadline) as scope:
            await self._changed.wait()
        if scope.cancelled_caught:
            self._fail(trio.TooSlowError("the proxy granted no flow-control credit in time"))
            raise trio.BrokenResourceError("the proxy stopped reading our requests")

    async def wait_send_all_might_not_block(self) -> None:
        while self.glue.sendable(self.sid) <= 0 and self._error is None:
            await self._changed.wait()

    async def send_eof(self) -> None:
        async with self._send_guard:
            self.glue.end_stream(self.sid)
            await self._flush()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError
        limit = max_bytes or self.config.receive_size
        while not self._inbox:
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            if self._error is not None:
                raise trio.BrokenResourceError(str(self._error))
            await self._changed.wait()
        chunk = self._inbox.popleft()
        if len(chunk) > limit:
            self._inbox.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self.glue.consumed(self.sid, len(chunk))
        update = self.glue.data_to_send()  # a window update, once enough was consumed
        if update and not await finish_shielded(partial(self._flush, update)):
            self._fail(trio.TooSlowError("the tunnel connection stopped taking data"))
        return chunk

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with trio.move_on_after(1) as scope:
            scope.shield = True
            if not self._eof and self._error is None:
                self.glue.reset(self.sid)
            self.glue.close()
            with suppress(trio.BrokenResourceError):
                await self._flush()
        await trio.aclose_forcefully(self.transport)


@asynccontextmanager
async def h2_tunnel(
    transport: trio.abc.Stream,
    config: TunnelConfig,
    authority: str,
    path: str,
    headers: list[tuple[str, str]],
    open_timeout: float,
) -> AsyncIterator[H2TunnelStream]:
    """Open one tunnel stream over an established TLS stream that negotiated h2.

    Raises:
        TunnelError: the proxy refused, or did not answer within ``open_timeout``.
    """
    stream = H2TunnelStream(transport, config)
    with single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream._reader)
            try:
                try:
                    with trio.fail_after(open_timeout):
                        await stream.open(authority, path, headers)
                except trio.TooSlowError as exc:
                    raise TunnelError("the proxy did not answer in time") from exc
                yield stream
            finally:
                await stream.aclose()
                nursery.cancel_scope.cancel()
