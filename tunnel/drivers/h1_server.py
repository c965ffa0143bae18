"""HTTP/1.1 handler: RPC over HTTP v2 channels, echo requests and autodiscover.

One task per TLS connection owns a :class:`~tunnel.channel.ServerChannel`. Requests
are decided in this order: autodiscover (after authentication), path (404), method
(405), authentication (401 with ``WWW-Authenticate: Basic``), echo (Content-Length
≤ 16: ``200 Success`` + echo RTS), target (``503 RPC Error: 6ba`` without a
connection attempt), limits (``503 RPC Error: 6bb``). An accepted channel gets
``100 Continue`` (when expected) and becomes one half of a virtual connection:

* OUT (``RPC_OUT_DATA``): reads CONN/A1, connects to the backend (``503 RPC Error:
  6ba`` if it refuses), answers ``200 Success`` + Content-Length + CONN/A3, waits for
  the IN half, sends CONN/C2, then runs the backend reader (PDU framing, a leading
  ``ncacn_http/1.0`` greeting dropped) and the OUT writer: acknowledgements first,
  then PDUs within the client's window and the Content-Length, a Ping when idle.
* IN (``RPC_IN_DATA``): reads CONN/B1, waits until the VC is established, then writes
  RPC PDUs to the backend, acknowledges them on OUT every half window, and applies
  the client's acknowledgements of OUT data. Recycling is refused (the VC ends).

Every wait is bounded: the request head (``head_timeout``, slowloris), the idle
connection (``idle_timeout``), the missing half (``pair_timeout``), an idle VC
(``vc_idle_timeout``), a peer that does not read (``send_timeout``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Coroutine
from typing import Any

import trio

from dcerpc.errors import DecodeError
from dcerpc.framing import PduFramer
from dcerpc.trio_util import acquire, send_within
from tunnel import autodiscover, rts
from tunnel.channel import (
    RPC_METHODS,
    BodyEnded,
    BodyReceived,
    ChannelError,
    ChannelState,
    Event,
    PeerClosed,
    RequestReceived,
    RpcPduReceived,
    RtsReceived,
    ServerChannel,
)
from tunnel.drivers.context import ProxyContext
from tunnel.drivers.vc_table import Side, VirtualConnection
from tunnel.policy import (
    CHALLENGES,
    RPC_S_SERVER_TOO_BUSY,
    RPC_S_SERVER_UNAVAILABLE,
    Target,
    is_rpc_path,
    parse_rpc_target,
)

log = logging.getLogger("tunnel.h1")

GREETING = b"ncacn_http/1.0"
MAX_ECHO_BODY = 16
TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class _Closed(Exception):
    """The connection is over (peer gone, timeout, protocol error): stop quietly."""


class _H1Connection:
    def __init__(self, ctx: ProxyContext, stream: trio.abc.Stream, address: str) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.stream = stream
        self.address = address
        self.channel = ServerChannel(ctx.config)
        self.pending: deque[Event] = deque()
        self.send_lock = trio.Lock()

    # -- I/O helpers -----------------------------------------------------------------------

    async def flush(self) -> None:
        await acquire(self.send_lock)
        try:
            data = self.channel.data_to_send()
            if not data:
                return
            try:
                await send_within(self.stream, data, self.cfg.send_timeout)
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _Closed(f"send failed: {exc!r}") from exc
        finally:
            self.send_lock.release()

    async def next_event(self, idle: float) -> Event:
        """The next channel event, reading as needed; ``idle`` bounds the wait
        (``head_timeout`` instead while part of a request head is in).

        Raises:
            _Closed: timeout, the peer broke the protocol or the connection broke.
        """
        if not self.pending:
            try:
                self.pending.extend(self.channel.next_events())
            except ChannelError as exc:
                await self._fail(exc)
        while not self.pending:
            if self.channel.state is ChannelState.CLOSED:
                raise _Closed("channel closed")
            limit = self.cfg.head_timeout if self.channel.has_partial_head else idle
            data = None
            with trio.CancelScope(deadline=trio.current_time() + limit):
                try:
                    data = bytes(await self.stream.receive_some(self.cfg.receive_size))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
            if data is None:
                raise _Closed("timed out")
            try:
                self.pending.extend(self.channel.receive_data(data))
            except ChannelError as exc:
                await self._fail(exc)
        return self.pending.popleft()

    async def _fail(self, exc: ChannelError) -> None:
        log.info("%s: %s", self.address, exc)
        try:
            await self.flush()
        finally:
            raise _Closed(str(exc))

    # -- request cycle -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                event = await self.next_event(self.cfg.idle_timeout)
                if isinstance(event, PeerClosed):
                    return
                if not isinstance(event, RequestReceived):
                    continue
                await self.decide(event)
                await self.flush()
                if self.channel.state in (ChannelState.CLOSED, ChannelState.RPC):
                    return
        except _Closed as exc:
            log.debug("%s: connection ends: %s", self.address, exc)

    async def _read_body(self, limit: int) -> bytes:
        self.channel.read_body()
        await self.flush()
        body = bytearray()
        while True:
            event = await self.next_event(self.cfg.head_timeout)
            if isinstance(event, BodyReceived):
                body += event.data
                if len(body) > limit:
                    raise _Closed("request body too large")
            elif isinstance(event, BodyEnded):
                return bytes(body)
            elif isinstance(event, PeerClosed):
                raise _Closed("peer closed during the body")

    async def decide(self, req: RequestReceived) -> None:
        ch = self.channel
        if autodiscover.is_autodiscover_path(req.path):
            user = await self.ctx.check_credentials(req.headers)
            if user is None:
                self._unauthorized(req)
                return
            if (req.content_length or 0) > autodiscover.MAX_BODY:
                ch.reject(413, "Payload Too Large", TEXT)
                return
            body = await self._read_body(autodiscover.MAX_BODY)
            reply = autodiscover.answer(self.ctx.site, req.method, req.path, body)
            ch.respond(
                reply.status,
                _reason(reply.status),
                [("Content-Type", reply.content_type)],
                reply.body,
            )
            return
        if not is_rpc_path(req.path):
            ch.reject(404, "Not Found", TEXT, b"not found\n")
            return
        if req.method not in RPC_METHODS:
            ch.reject(405, "Method Not Allowed", [*TEXT, ("Allow", ", ".join(RPC_METHODS))])
            return
        user = await self.ctx.check_credentials(req.headers)
        if user is None:
            self._unauthorized(req)
            return
        if req.content_length is None:
            ch.reject(411, "Length Required", TEXT)
            return
        if req.content_length <= MAX_ECHO_BODY:
            # Echo request ([MS-RPCH] 2.1.2.1.7): answer with an echo RTS PDU.
            await self._read_body(MAX_ECHO_BODY)
            ch.respond(200, "Success", [("Content-Type", "application/rpc")], rts.echo())
            return
        target = parse_rpc_target(req.path)
        backend = self.ctx.allow.resolve(target) if target is not None else None
        if target is None or backend is None:
            log.warning(
                "%s: %s asked for a target off the allow list: %s", self.address, user, req.path
            )
            ch.refuse_rpc(RPC_S_SERVER_UNAVAILABLE)
            return
        if not self.ctx.acquire_vc(user, 1):
            ch.refuse_rpc(RPC_S_SERVER_TOO_BUSY)
            return
        try:
            ch.accept_rpc()
            await self.flush()
            if req.method == "RPC_OUT_DATA":
                await self._out_channel(user, target, backend)
            else:
                await self._in_channel(user, target)
        finally:
            self.ctx.release_vc(user, 1)
            ch.close()

    def _unauthorized(self, req: RequestReceived) -> None:
        headers = [("WWW-Authenticate", c) for c in CHALLENGES]
        log.info("%s: %s %s: 401", self.address, req.method, req.path.partition("?")[0])
        self.channel.reject(401, "Unauthorized", headers)

    async def _first_rts(self) -> rts.RtsMessage:
        event = await self.next_event(self.cfg.head_timeout)
        if not isinstance(event, RtsReceived):
            raise _Closed(f"expected an RTS PDU, got {type(event).__name__}")
        return event.message

    # -- OUT channel -------------------------------------------------------------------------

    async def _send_out(self, vc: VirtualConnection, data: bytes, *, rpc: bool) -> None:
        self.channel.send_body(data)
        vc.out_window.sent(len(data), rpc=rpc)
        await self.flush()

    async def _out_channel(self, user: str, target: Target, backend: tuple[str, int]) -> None:
        try:
            a1 = rts.parse_conn_a1(await self._first_rts())
        except DecodeError as exc:
            raise _Closed(f"bad CONN/A1: {exc}") from exc
        try:
            conn = await self.ctx.connect_backend(backend)
        except OSError as exc:
            log.warning("%s: backend %s unreachable: %s", self.address, backend, exc)
            self.channel.refuse_rpc(RPC_S_SERVER_UNAVAILABLE)
            await self.flush()
            return
        async with conn:
            vc = self.ctx.vc_table.join(a1.vc_cookie, Side.OUT, user, target)
            if vc is None:
                raise _Closed("OUT channel refused: cookie in use or table full")
            try:
                vc.out_cookie = a1.out_cookie
                vc.out_window.peer_window = a1.receive_window
                self.channel.start_out_response(self.cfg.out_content_length)
                await self._send_out(vc, rts.conn_a3(self.cfg.connection_timeout_ms), rpc=False)
                with trio.move_on_after(self.cfg.pair_timeout):
                    await vc.paired.wait()
                if not vc.paired.is_set():
                    raise _Closed("no IN channel joined the virtual connection")
                vc.backend = conn
                await self._send_out(
                    vc, rts.conn_c2(self.cfg.in_window, self.cfg.connection_timeout_ms), rpc=False
                )
                vc.established.set()
                log.info(
                    "%s: virtual connection of %s to %s:%d established",
                    self.address,
                    user,
                    target.server,
                    target.port,
                )
                await self._run_out(vc, conn)
            finally:
                self.ctx.vc_table.leave(vc, Side.OUT)

    async def _run_out(self, vc: VirtualConnection, conn: trio.abc.HalfCloseableStream) -> None:
        send, receive = trio.open_memory_channel[bytes](4)
        with trio.CancelScope() as scope:
            vc.attach(scope)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_guard, vc, self._backend_reader(vc, conn, send))
                nursery.start_soon(_guard, vc, self._watch_out(vc))
                await _guard(vc, self._out_writer(vc, receive))
                nursery.cancel_scope.cancel()
        log.info("%s: virtual connection ended: %s", self.address, vc.end_reason)

    async def _watch_out(self, vc: VirtualConnection) -> None:
        """The OUT request is complete after CONN/A1; notice when the client hangs up."""
        try:
            while True:
                event = await self.next_event(math.inf)
                if isinstance(event, PeerClosed):
                    break
        except _Closed:
            pass
        vc.end("client closed the OUT channel")

    async def _backend_reader(
        self,
        vc: VirtualConnection,
        conn: trio.abc.HalfCloseableStream,
        send: trio.MemorySendChannel[bytes],
    ) -> None:
        framer = PduFramer(self.cfg.max_fragment)
        head = b""
        greeting_checked = False
        async with send:
            try:
                while True:
                    data = await conn.receive_some(self.cfg.receive_size)
                    if not data:
                        return
                    if not greeting_checked:
                        # An ncacn_http endpoint greets first; an ncacn_ip_tcp one does not.
                        head += data
                        if len(head) < len(GREETING) and GREETING.startswith(head):
                            continue
                        data, greeting_checked = head.removeprefix(GREETING), True
                    framer.feed(data)
                    while (pdu := framer.next_pdu()) is not None:
                        await send.send(pdu)
                        vc.out_waker.wake()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except DecodeError as exc:
                log.warning("%s: backend sent a bad PDU: %s", self.address, exc)
            finally:
                vc.out_waker.wake()

    async def _out_writer(
        self, vc: VirtualConnection, receive: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        window = vc.out_window
        pending: bytes | None = None
        backend_done = False
        interval = min(self.cfg.keepalive_interval, (vc.keepalive_ms or 300000) / 2000)
        while not vc.ended.is_set():
            if vc.pending_ack is not None:
                ack, vc.pending_ack = vc.pending_ack, None
                if not window.fits_body(len(ack)):
                    vc.end("OUT channel Content-Length exhausted")
                    return
                await self._send_out(vc, ack, rpc=False)
            if pending is None and not backend_done:
                try:
                    pending = receive.receive_nowait()
                except trio.WouldBlock:
                    pass
                except trio.EndOfChannel:
                    backend_done = True
            if pending is None and backend_done:
                vc.end("the RPC server closed the connection")
                return
            if pending is not None and window.can_send(len(pending)):
                if not window.fits_body(len(pending)):
                    # No OUT recycling: end the VC cleanly rather than overrun the body.
                    vc.end("OUT channel Content-Length exhausted")
                    return
                await self._send_out(vc, pending, rpc=True)
                pending = None
                continue
            with trio.CancelScope(deadline=trio.current_time() + interval) as idle:
                await vc.out_waker.wait()
            if idle.cancelled_caught and window.fits_body(20):
                await self._send_out(vc, rts.ping(), rpc=False)

    # -- IN channel --------------------------------------------------------------------------

    async def _in_channel(self, user: str, target: Target) -> None:
        first = await self._first_rts()
        if rts.classify(first) is rts.Kind.RECYCLE:
            raise _Closed("IN channel recycling is not supported")
        try:
            b1 = rts.parse_conn_b1(first)
        except DecodeError as exc:
            raise _Closed(f"bad CONN/B1: {exc}") from exc
        vc = self.ctx.vc_table.join(b1.vc_cookie, Side.IN, user, target)
        if vc is None:
            raise _Closed("IN channel refused: cookie in use or table full")
        try:
            vc.in_cookie = b1.in_cookie
            vc.keepalive_ms = b1.keepalive_ms
            with trio.CancelScope() as scope:
                vc.attach(scope)
                with trio.move_on_after(self.cfg.pair_timeout + self.cfg.connect_timeout):
                    await vc.established.wait()
                if not vc.established.is_set():
                    raise _Closed("the virtual connection was not established in time")
                await self._run_in(vc)
        finally:
            self.ctx.vc_table.leave(vc, Side.IN)

    async def _run_in(self, vc: VirtualConnection) -> None:
        backend = vc.backend
        assert backend is not None
        while True:
            event = await self.next_event(self.cfg.vc_idle_timeout)
            if isinstance(event, RpcPduReceived):
                try:
                    await send_within(backend, event.data, self.cfg.send_timeout)
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                    vc.end("the RPC server stopped reading")
                    return
                ack = vc.in_window.received(len(event.data))
                if ack is not None:
                    # Acknowledge IN data on OUT, as Windows clients expect ([MS-RPCH] 3.2.3.1.4;
                    # without it they stall after one window, openchange PR #161).
                    vc.pending_ack = rts.flow_control_ack_to(
                        rts.ForwardDestination.CLIENT,
                        ack.bytes_received,
                        ack.available_window,
                        vc.in_cookie,
                    )
                    vc.out_waker.wake()
            elif isinstance(event, RtsReceived):
                self._in_rts(vc, event.message)
            elif isinstance(event, BodyEnded | PeerClosed):
                vc.end("the client closed the IN channel")
                return

    def _in_rts(self, vc: VirtualConnection, message: rts.RtsMessage) -> None:
        kind = rts.classify(message)
        if kind is rts.Kind.FLOW_CONTROL_ACK:
            ack = rts.find_ack(message)
            assert ack is not None
            try:
                vc.out_window.acknowledged(ack.bytes_received, ack.available_window)
            except DecodeError as exc:
                raise _Closed(f"bad flow control ack: {exc}") from exc
            vc.out_waker.wake()
        elif kind is rts.Kind.KEEP_ALIVE:
            cmd = message.commands[0]
            if isinstance(cmd, rts.ClientKeepalive):
                vc.keepalive_ms = cmd.value
        elif kind is rts.Kind.RECYCLE:
            raise _Closed("channel recycling is not supported")
        # Ping and anything else: nothing to do (they only keep the channel alive).


async def _guard(vc: VirtualConnection, work: Coroutine[Any, Any, None]) -> None:
    """Run one task of a VC; its failure ends the VC (inside a nursery, exceptions would
    arrive wrapped in an ExceptionGroup)."""
    try:
        await work
    except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
        vc.end(str(exc) or type(exc).__name__)


def _reason(status: int) -> str:
    return {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}.get(
        status, "Error"
    )


async def serve_h1(ctx: ProxyContext, stream: trio.abc.Stream, address: str) -> None:
    """Serve one HTTP/1.1 connection until it ends."""
    await _H1Connection(ctx, stream, address).run()
