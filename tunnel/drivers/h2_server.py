"""HTTP/2 handler: each authenticated ``POST /rpc/rpcproxy.dll?<server>:<port>`` stream is
one virtual connection, relayed byte for byte to a TCP connection to the target.

Tasks, all inside the connection's nursery: the reader feeds :class:`H2Glue` and
dispatches its events; one task per stream authenticates, checks the allow list,
connects, answers ``200`` and then runs two pumps. *Up* writes the client's DATA to
the backend and only then returns the credit (so the client can never make us hold
more than one window). *Down* reads from the backend at most what the client's
windows accept, so a client that does not read stops us reading the backend. All
writes to the TLS stream go through :meth:`_H2Connection.flush` (one writer, a lock,
a send timeout that drops a peer that does not read).

An ``Authorization: NTLM`` or ``Negotiate`` request gets RST_STREAM(HTTP_1_1_REQUIRED)
as from IIS: those schemes authenticate a connection, which an HTTP/2 stream is not
bound to (the client retries on HTTP/1.1; Basic works here).

The mail autoconfig document (:mod:`tunnel.autoconfig`) is answered before, and
without, any authentication; it does not count as the authenticated request an
anonymous connection must carry within ``head_timeout``.

Status codes: 401 (+ the ``WWW-Authenticate`` offers) without valid credentials, 503 (+
``Retry-After``) when they were not checked for too many checks in progress, 403 for
a target off the allow list (no connection is attempted), 404 for other paths, 405
for other methods, 429 over a per-user limit, 502 when the allowed backend refuses.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import h2.errors
import trio

from dcerpc.trio_util import acquire, send_within
from tunnel import autoconfig, autodiscover
from tunnel.drivers.backend import Backend
from tunnel.drivers.context import AUTH_RETRY_AFTER, ProxyContext
from tunnel.h2_glue import (
    ConnectionEnded,
    DataReceived,
    Event,
    H2Glue,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowOpened,
)
from tunnel.http_auth import MechToken, parse_credentials
from tunnel.policy import is_rpc_path, parse_rpc_target

log = logging.getLogger("tunnel.h2")

TEXT = "text/plain; charset=utf-8"


@dataclass(slots=True)
class _Stream:
    request: RequestReceived
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    inbox: deque[bytes] = field(default_factory=deque)
    ended: bool = False
    wake: trio.Event = field(default_factory=trio.Event)
    body_size: int = 0

    def notify(self) -> None:
        self.wake.set()

    async def wait(self) -> None:
        await self.wake.wait()
        self.wake = trio.Event()


class _H2Connection:
    def __init__(self, ctx: ProxyContext, stream: trio.abc.Stream, address: str) -> None:
        self.ctx = ctx
        self.stream = stream
        self.address = address
        self.glue = H2Glue(ctx.config)
        self.lock = trio.Lock()
        self.streams: dict[int, _Stream] = {}
        self.window = trio.Event()
        self.broken = False
        self.nursery: trio.Nursery | None = None
        #: The read loop's deadline (see :meth:`_read_deadline`).
        self.idle = trio.CancelScope()
        self.reading = False
        #: A connection must carry an authenticated request by then, or it is closed.
        self.authenticate_by = trio.current_time() + ctx.config.head_timeout
        self.authenticated = False
        #: When the peer's unfinished header block must be complete.
        self.block_by: float | None = None

    async def flush(self) -> None:
        await acquire(self.lock)
        try:
            await self._flush_locked()
        finally:
            self.lock.release()

    async def _flush_locked(self) -> None:
        data = self.glue.data_to_send()
        if not data or self.broken:
            return
        try:
            await send_within(self.stream, data, self.ctx.config.send_timeout)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("%s: h2 peer stopped reading or went away", self.address)
            self.broken = True
            if self.nursery is not None:
                self.nursery.cancel_scope.cancel()

    async def wait_window(self) -> None:
        await self.window.wait()

    def open_window(self) -> None:
        self.window.set()
        self.window = trio.Event()

    # -- reading -------------------------------------------------------------------------

    def _read_deadline(self) -> float:
        """When the reader gives up: ``idle_timeout`` after the last read while no stream
        is open (none while streams are relayed), but always ``head_timeout`` for a
        header block to complete, and for the connection's first authenticated request
        (so a peer that pings, or drips a header block, without credentials is closed)."""
        cfg = self.ctx.config
        deadline = math.inf if self.streams else trio.current_time() + cfg.idle_timeout
        if not self.authenticated:
            deadline = min(deadline, self.authenticate_by)
        if self.block_by is not None:
            deadline = min(deadline, self.block_by)
        return deadline

    def _reset_deadline(self) -> None:
        if self.reading:
            self.idle.deadline = self._read_deadline()

    async def run(self) -> None:
        cfg = self.ctx.config
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await self.flush()
            # One restartable deadline for every read (cheaper than a scope per read).
            with self.idle as idle:
                while not self.glue.closed and not self.broken:
                    self.reading = True
                    idle.deadline = self._read_deadline()
                    try:
                        data = bytes(await self.stream.receive_some(cfg.receive_size))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    self.reading = False
                    idle.deadline = math.inf  # what follows is not reading
                    for event in self.glue.receive_data(data):
                        self._dispatch(nursery, event)
                    if not self.glue.header_block_open:
                        self.block_by = None
                    elif self.block_by is None:
                        self.block_by = trio.current_time() + cfg.head_timeout
                    await self.flush()
            if idle.cancelled_caught:
                why = "idle" if self.authenticated else "no authenticated request in time"
                if self.block_by is not None and trio.current_time() >= self.block_by:
                    why = "header block not finished in time"
                log.info("%s: h2 connection closed: %s", self.address, why)
                self.glue.close()
                await self.flush()
            nursery.cancel_scope.cancel()

    def _dispatch(self, nursery: trio.Nursery, event: Event) -> None:
        if isinstance(event, RequestReceived):
            new = _Stream(event, ended=event.ended)
            self.streams[event.stream_id] = new
            nursery.start_soon(self._serve_stream, new)
            return
        s = self.streams.get(getattr(event, "stream_id", -1))
        if isinstance(event, DataReceived):
            if s is None:
                self.glue.stream_finished(event.stream_id)
                return
            s.inbox.append(event.data)
            s.body_size += len(event.data)
            s.notify()
        elif isinstance(event, StreamEnded):
            if s is not None:
                s.ended = True
                s.notify()
        elif isinstance(event, StreamReset):
            if s is not None:
                s.scope.cancel()
        elif isinstance(event, WindowOpened):
            self.open_window()
        elif isinstance(event, ConnectionEnded):
            if event.error_code:
                log.info("%s: h2 connection ended: %s", self.address, event.reason)
            for s in self.streams.values():
                s.scope.cancel()

    # -- one stream ----------------------------------------------------------------------

    async def _serve_stream(self, s: _Stream) -> None:
        sid = s.request.stream_id
        try:
            with s.scope:
                try:
                    await self._route(s)
                except (
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    trio.TooSlowError,
                ) as exc:
                    log.info("%s: h2 stream %d ended: %r", self.address, sid, exc)
                    s.scope.cancel()
        finally:
            self.streams.pop(sid, None)
            if not self.streams:  # the reader may be waiting with no deadline: set it
                self._reset_deadline()
            if not self.glue.closed and s.scope.cancelled_caught:
                self.glue.reset(sid, h2.errors.ErrorCodes.CANCEL)
            self.glue.stream_finished(sid)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.flush()

    async def _answer(
        self, sid: int, status: int, text: str, extra: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.glue.respond(sid, status, [("content-type", TEXT), *extra], text.encode() + b"\n")
        await self.flush()

    async def _route(self, s: _Stream) -> None:
        req = s.request
        sid = req.stream_id
        if autoconfig.is_autoconfig_path(req.path):
            # Asked before the client has a password: answered to anyone, the same to all.
            site = self.ctx.site
            await self._small_request(
                s,
                autoconfig.MAX_BODY,
                lambda body: autoconfig.answer(site, req.method, req.path, body),
                allow="GET",
            )
            return
        mech = parse_credentials(req.headers.get("authorization"))
        if isinstance(mech, MechToken):
            # NTLM and Negotiate authenticate a connection, which HTTP/2 streams are not
            # bound to (RFC 9113 9.2.3): answer as IIS does, the client retries on 1.1.
            log.info(
                "%s: h2 %s %s with %s: RST_STREAM(HTTP_1_1_REQUIRED)",
                self.address, req.method, req.path.partition("?")[0], mech.scheme.token,
            )  # fmt: skip
            self.glue.reset(sid, h2.errors.ErrorCodes.HTTP_1_1_REQUIRED)
            await self.flush()
            return
        outcome = await self.ctx.check_credentials(req.headers, self.address)
        user = outcome.user
        if user is not None and not self.authenticated:
            self.authenticated = True
            self._reset_deadline()
        if user is None:
            path = req.path.partition("?")[0]
            refusal = outcome.refusal(self.address)
            log.info("%s: h2 %s %s%s", self.address, req.method, path, refusal)
        if outcome.busy:
            # Not checked: too many checks in progress. 503, not 401 (see AuthOutcome).
            retry = [("retry-after", str(AUTH_RETRY_AFTER))]
            await self._answer(sid, 503, "too many logons in progress, retry later", retry)
            return
        if user is None:
            challenges = [("www-authenticate", c) for c in self.ctx.challenges]
            await self._answer(sid, 401, "authentication required", challenges)
            return
        if autodiscover.is_autodiscover_path(req.path):
            await self._autodiscover(s, user)
            return
        if not is_rpc_path(req.path):
            await self._answer(sid, 404, "not found")
            return
        if req.method != "POST":
            await self._answer(sid, 405, "use POST", [("allow", "POST")])
            return
        target = parse_rpc_target(req.path)
        backend = self.ctx.allow.resolve(target) if target is not None else None
        if backend is None:
            log.warning(
                "%s: %s asked for a target off the allow list: %s", self.address, user, req.path
            )
            await self._answer(sid, 403, "RPC target not allowed")
            return
        if not self.ctx.acquire_vc(user):
            await self._answer(sid, 429, "too many virtual connections")
            return
        try:
            await self._relay(s, user, backend)
        finally:
            self.ctx.release_vc(user)

    async def _autodiscover(self, s: _Stream, user: str) -> None:
        def reply(body: bytes) -> autodiscover.Reply:
            return autodiscover.answer(
                self.ctx.site, s.request.method, s.request.path, body, user=user
            )

        await self._small_request(s, autodiscover.MAX_BODY, reply, allow="GET, POST")

    async def _small_request(
        self,
        s: _Stream,
        limit: int,
        reply: Callable[[bytes], autodiscover.Reply],
        *,
        allow: str,
    ) -> None:
        """Answer a request with a small body (read up to just past ``limit``, within
        ``head_timeout``) with ``reply(body)``; ``allow`` is the 405's ``allow``."""
        with trio.move_on_after(self.ctx.config.head_timeout) as body_wait:
            while not s.ended and s.body_size <= limit:
                await s.wait()
        if body_wait.cancelled_caught:
            await self._answer(s.request.stream_id, 408, "request body not received in time")
            return
        body = b"".join(s.inbox)
        s.inbox.clear()
        answer = reply(body)
        headers = [("content-type", answer.content_type)]
        if answer.status == 405:
            headers.append(("allow", allow))
        self.glue.respond(s.request.stream_id, answer.status, headers, answer.body)
        await self.flush()

    async def _relay(self, s: _Stream, user: str, address: tuple[str, int]) -> None:
        sid = s.request.stream_id
        try:
            backend = await self.ctx.connect_backend(address, self.address, user)
        except OSError as exc:
            log.warning("%s: backend %s unreachable: %s", self.address, address, exc)
            await self._answer(sid, 502, "RPC server unavailable")
            return
        log.info("%s: h2 stream %d of %s relayed to %s", self.address, sid, user, address)
        async with backend:
            self.glue.respond(
                sid, 200, [("content-type", "application/rpc"), ("cache-control", "no-cache")]
            )
            await self.flush()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, s, self._up(s, backend))
                await self._pump(s, self._down(s, backend))
                # The backend closed: the client's remaining data has nowhere to go.
                nursery.cancel_scope.cancel()

    async def _pump(self, s: _Stream, work: Coroutine[Any, Any, None]) -> None:
        """Run one direction; a broken backend or a peer that does not read resets the
        stream (caught here: inside a nursery it would arrive as an ExceptionGroup)."""
        try:
            await work
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            log.info("%s: h2 stream %d relay ended: %r", self.address, s.request.stream_id, exc)
            s.scope.cancel()

    async def _up(self, s: _Stream, backend: Backend) -> None:
        """The client's DATA to the backend; the credit goes back once the backend took it
        (an attached service has then also answered what it answers at once)."""
        sid = s.request.stream_id
        while True:
            while s.inbox:
                chunk = s.inbox.popleft()
                await send_within(backend, chunk, self.ctx.config.send_timeout)
                self.glue.consumed(sid, len(chunk))
            await self.flush()
            if s.ended:
                await backend.send_eof()
                return
            await s.wait()

    async def _down(self, s: _Stream, backend: Backend) -> None:
        """The backend's bytes to the client as DATA, as fast as its windows open: while
        they are shut, the delivery waits, so nothing more is read from the backend."""
        sid = s.request.stream_id

        async def deliver(chunks: list[bytes]) -> None:
            for data in chunks:
                sent = self.glue.send_data(sid, data)
                while sent < len(data):
                    await self.flush()
                    # Checked after the flush, which yields: a window opened meanwhile
                    # must not be waited for. A peer that keeps its windows shut is a
                    # peer that does not read: send_timeout (TooSlowError resets).
                    with trio.fail_after(self.ctx.config.send_timeout):
                        while self.glue.sendable(sid) <= 0:
                            if not self.glue.may_send(sid) or s.scope.cancel_called or self.broken:
                                raise trio.BrokenResourceError("the HTTP/2 stream is gone")
                            await self.wait_window()
                    sent += self.glue.send_data(sid, data[sent:])
            await self.flush()

        await backend.relay(deliver, framed=False)
        self.glue.end_stream(sid)
        await self.flush()


async def serve_h2(ctx: ProxyContext, stream: trio.abc.Stream, address: str) -> None:
    """Serve one HTTP/2 connection until it ends."""
    await _H2Connection(ctx, stream, address).run()
