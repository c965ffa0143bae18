"""HTTP/1.1 handler: RPC over HTTP v2 channels, echo requests and autodiscover.

One task per TLS connection owns a :class:`~tunnel.channel.ServerChannel`. Requests
are decided in this order: mail autoconfig (:mod:`tunnel.autoconfig`, without
authentication), autodiscover (after authentication), path (404), method
(405), authentication (401 with the ``WWW-Authenticate`` offers of ``[tunnel]
auth_schemes``, or with the next NTLM/Negotiate leg, see :mod:`tunnel.http_auth`:
the identity an NTLM handshake proves is this connection's; ``503 RPC Error: 6bb``
with ``Retry-After`` when the credentials were not checked because too many checks
were in progress, a plain 503 for autodiscover), echo (Content-Length
≤ 16: ``200 Success`` + echo RTS), target (``503 RPC Error: 6ba`` without a
connection attempt), limits (``503 RPC Error: 6bb``). An accepted channel gets
``100 Continue`` (when expected) and becomes one channel of a virtual connection:

* OUT (``RPC_OUT_DATA``) with CONN/A1: connects to the backend (``503 RPC Error:
  6ba`` if it refuses), answers ``200 Success`` + Content-Length + CONN/A3, waits for
  the IN half, sends CONN/C2, then starts the VC's runner (:mod:`tunnel.drivers.h1_vc`:
  backend reader and OUT writer, in the proxy's nursery) and serves as its OUT channel
  until the client hangs up or the channel is recycled.
* OUT with OUT_R2/A3: a successor OUT channel ([MS-RPCH] OUT_R2). It joins the
  live VC whose current OUT channel it names, reads OUT_R2/C1 and waits for the writer
  to switch to it (``200 Success`` after OUT_R2/B3 on the predecessor).
* IN (``RPC_IN_DATA``) with CONN/B1: waits until the VC is established, then writes
  RPC PDUs to the backend, acknowledges them on OUT every half window, applies the
  client's acknowledgements of OUT data, and handles OUT_R2/A7. On IN_R2/A5 it hands
  the VC over to the successor IN channel and closes.
* IN with IN_R2/A1 (or IN_R1/A1): a successor IN channel ([MS-RPCH] IN_R2). It joins
  the live VC whose current IN channel it names, has IN_R2/A4 sent on OUT and reads
  nothing until the predecessor saw IN_R2/A5; then it is the IN channel.

A successor that names an unknown VC, another user's VC, a channel that is not the
current one, or comes while a recycle of its side is under way gets ``503 RPC Error:
6c0`` (RPC_S_PROTOCOL_ERROR) and the VC goes on untouched.

What the first PDU of a channel asks, the establishment PDUs, the classify-and-act of
the IN channel's RTS PDUs and the attach of successors are the sans-IO core's
(:mod:`tunnel.proxy_vc`); this handler reads, decides authentication and targets,
writes and waits.

Every wait is bounded: the request head and a rejected body's drain (``head_timeout``
each, in all, not per read: slowloris), the idle connection (``idle_timeout``), the
missing half (``pair_timeout``), an idle VC (``vc_idle_timeout``), a peer that does
not read (``send_timeout``), a recycle (``recycle_timeout``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque

import trio

from dcerpc.trio_util import acquire, send_within
from tunnel import autoconfig, autodiscover, rts
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
from tunnel.drivers.context import AUTH_RETRY_AFTER, AuthOutcome, ProxyContext
from tunnel.drivers.h1_vc import Closed as _Closed
from tunnel.drivers.h1_vc import ack_in, offer_to_attached, run_vc
from tunnel.drivers.vc_table import Side, VirtualConnection
from tunnel.http_auth import MechToken, Step, parse_credentials
from tunnel.policy import (
    RPC_S_PROTOCOL_ERROR,
    RPC_S_SERVER_TOO_BUSY,
    RPC_S_SERVER_UNAVAILABLE,
    Target,
    is_rpc_path,
    parse_rpc_target,
)
from tunnel.proxy_vc import InAction, VcError, open_in_channel, open_out_channel
from tunnel.recycling import RecycleRefused
from tunnel.rts_recycling import InRecycleA1, OutRecycleA3

log = logging.getLogger("tunnel.h1")

MAX_ECHO_BODY = 16
TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class _H1Connection:
    def __init__(self, ctx: ProxyContext, stream: trio.abc.Stream, address: str) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.stream = stream
        self.address = address
        self.channel = ServerChannel(ctx.config)
        self.pending: deque[Event] = deque()
        self.send_lock = trio.Lock()
        #: Set once this OUT channel was replaced by its successor.
        self.retired = False
        self._sink_scope: trio.CancelScope | None = None
        #: The unauthenticated wait under way (a request head, a rejected body being
        #: drained) and its deadline: one for the whole wait, not one per read, or a
        #: client dripping a byte now and then would hold the connection for ever.
        self._bounded: tuple[str, float] | None = None
        #: NTLM/Negotiate of this connection (None: not offered).
        self.auth = ctx.connection_auth(address)

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

    async def next_event(self, idle: float | None) -> Event:
        """The next channel event, reading as needed; ``idle`` bounds each read, unless
        None: the caller's own scope bounds it. A request head, from its first byte, and
        the drain of a rejected body get ``head_timeout`` in all instead.

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
            data: bytes | None = None
            if idle is None:
                data = await self._receive()
            else:
                with trio.CancelScope(deadline=self._read_deadline(idle)):
                    data = await self._receive()
            if data is None:
                raise _Closed("timed out")
            try:
                self.pending.extend(self.channel.receive_data(data))
            except ChannelError as exc:
                await self._fail(exc)
        event = self.pending.popleft()
        if isinstance(event, RequestReceived):
            self._bounded = None  # a pipelined head after it starts its own deadline
        return event

    def _read_deadline(self, idle: float) -> float:
        now = trio.current_time()
        if self.channel.has_partial_head:
            wait = "head"
        elif self.channel.is_draining:
            wait = "drain"
        else:
            self._bounded = None
            return now + idle
        if self._bounded is None or self._bounded[0] != wait:
            self._bounded = (wait, now + self.cfg.head_timeout)
        return self._bounded[1]

    async def _receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(self.cfg.receive_size))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

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
                # A connection in the middle of an NTLM handshake has ``head_timeout``
                # for its next leg, not ``idle_timeout``: a stalled handshake is dropped.
                pending = self.auth is not None and self.auth.pending
                event = await self.next_event(
                    self.cfg.head_timeout if pending else self.cfg.idle_timeout
                )
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
        if autoconfig.is_autoconfig_path(req.path):
            # Asked before the client has a password: answered to anyone, the same to all.
            if (req.content_length or 0) > autoconfig.MAX_BODY:
                ch.reject(413, "Payload Too Large", TEXT)
                return
            body = await self._read_body(autoconfig.MAX_BODY)
            reply = autoconfig.answer(self.ctx.site, req.method, req.path, body)
            allow = [("Allow", "GET")] if reply.status == 405 else []
            headers = [("Content-Type", reply.content_type), *allow]
            ch.respond(reply.status, _reason(reply.status), headers, reply.body)
            return
        if autodiscover.is_autodiscover_path(req.path):
            user = await self._authenticate(req)
            if user is None:
                return
            if (req.content_length or 0) > autodiscover.MAX_BODY:
                ch.reject(413, "Payload Too Large", TEXT)
                return
            body = await self._read_body(autodiscover.MAX_BODY)
            reply = autodiscover.answer(self.ctx.site, req.method, req.path, body, user=user)
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
        user = await self._authenticate(req)
        if user is None:
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

    async def _authenticate(self, req: RequestReceived) -> str | None:
        """The user ``req`` is authenticated as, or None once its refusal (or the next
        leg of an NTLM handshake) is queued.

        Basic is checked per request (:meth:`ProxyContext.check_credentials`). An NTLM or
        Negotiate token is a leg of this connection's handshake; once one completed, a
        request without ``Authorization`` is the connection's user."""
        value = req.headers.get("authorization")
        if value is None and self.auth is not None and self.auth.user is not None:
            await trio.lowlevel.checkpoint()
            return self.auth.user
        parsed = parse_credentials(value)
        if not isinstance(parsed, MechToken):
            outcome = await self.ctx.check_credentials(req.headers, self.address)
            if outcome.user is None:
                self._unauthorized(req, outcome)
            return outcome.user
        await trio.lowlevel.checkpoint()
        step = self._ntlm_step(parsed)
        if step.user is not None:
            if step.final is not None:
                self.channel.response_headers.append(("WWW-Authenticate", step.final))
            log.debug("%s: %s authenticated as %s", self.address, parsed.scheme.token, step.user)
            return step.user
        if step.challenge is not None:
            self.channel.reject(401, "Unauthorized", [("WWW-Authenticate", step.challenge)])
            if self.channel.state is not ChannelState.DRAIN and self.auth is not None:
                self.auth.abandon()  # the connection closes: the handshake cannot go on
            return None
        path = req.path.partition("?")[0]
        who = f" of {step.offered!r}" if step.offered else ""
        log.info(
            "%s: %s %s: 401: failed %s logon%s from %s (%s)",
            self.address, req.method, path, parsed.scheme.token, who, self.address, step.reason,
        )  # fmt: skip
        self._unauthorized(req, AuthOutcome(None, step.offered or ""), logged=True)
        if step.close:
            self.channel.close()  # the 401 is flushed, then the connection ends
        return None

    def _ntlm_step(self, token: MechToken) -> Step:
        if self.auth is None:
            return Step(reason=f"{token.scheme.token} is not offered")
        try:
            return self.auth.step(token, time.time())
        except Exception:
            log.exception("%s: the NTLM directory failed", self.address)
            self.auth.abandon()
            return Step(reason="internal error")

    def _unauthorized(
        self, req: RequestReceived, outcome: AuthOutcome, *, logged: bool = False
    ) -> None:
        """401 for missing or wrong credentials; 503 + Retry-After when they were not
        checked because too many checks were in progress (see :class:`AuthOutcome`):
        on an RPC channel in the MS-RPCH form (``503 RPC Error: 6bb``,
        RPC_S_SERVER_TOO_BUSY), which closes the connection (its body may be 1 GiB)."""
        path = req.path.partition("?")[0]
        if not logged:
            log.info("%s: %s %s%s", self.address, req.method, path, outcome.refusal(self.address))
        if outcome.busy:
            retry = [("Retry-After", str(AUTH_RETRY_AFTER))]
            if req.method in RPC_METHODS:
                self.channel.refuse_rpc(RPC_S_SERVER_TOO_BUSY, retry)
            else:
                self.channel.reject(503, "Service Unavailable", [*TEXT, *retry])
            return
        headers = [("WWW-Authenticate", c) for c in self.ctx.challenges]
        self.channel.reject(401, "Unauthorized", headers)

    async def _first_rts(self) -> rts.RtsMessage:
        event = await self.next_event(self.cfg.head_timeout)
        if not isinstance(event, RtsReceived):
            raise _Closed(f"expected an RTS PDU, got {type(event).__name__}")
        return event.message

    # -- OUT channel: the sink the VC's writer sends on (tunnel.drivers.vc_table.OutSink) --

    def send_body(self, data: bytes) -> None:
        self.channel.send_body(data)

    def start_out_response(self, content_length: int) -> None:
        self.channel.start_out_response(content_length)

    def retire(self) -> None:
        self.retired = True
        if self._sink_scope is not None:
            self._sink_scope.cancel()

    async def _refuse_successor(self, side: str, reason: str) -> None:
        log.warning("%s: successor %s channel refused: %s", self.address, side, reason)
        self.channel.refuse_rpc(RPC_S_PROTOCOL_ERROR)
        await self.flush()

    async def _send_out(self, data: bytes) -> None:
        """Send RTS PDUs the core counted."""
        self.channel.send_body(data)
        await self.flush()

    async def _out_channel(self, user: str, target: Target, backend: tuple[str, int]) -> None:
        first = await self._first_rts()
        opening = open_out_channel(first)
        if opening.successor:
            await self._out_successor(user, target, first)
            return
        a1 = opening.first
        if not isinstance(a1, rts.ConnA1):
            raise _Closed(opening.error)
        try:
            conn = await self.ctx.connect_backend(backend, self.address, user)
        except OSError as exc:
            log.warning("%s: backend %s unreachable: %s", self.address, backend, exc)
            self.channel.refuse_rpc(RPC_S_SERVER_UNAVAILABLE)
            await self.flush()
            return
        runner_started = False
        try:
            vc = self.ctx.vc_table.join(a1.vc_cookie, Side.OUT, user, target)
            if vc is None:
                raise _Closed("OUT channel refused: cookie in use or table full")
            try:
                a3 = vc.out_opened(a1)
                self.channel.start_out_response(self.cfg.out_content_length)
                await self._send_out(a3)
                with trio.move_on_after(self.cfg.pair_timeout):
                    await vc.paired.wait()
                if not vc.paired.is_set():
                    raise _Closed("no IN channel joined the virtual connection")
                vc.backend = conn
                await self._send_out(vc.conn_c2())
                vc.out_sink = self
                if self.ctx.nursery is None:
                    raise _Closed("the proxy has no nursery for virtual connections")
                self.ctx.vc_table.hold(vc)
                self.ctx.nursery.start_soon(
                    run_vc, self.cfg, self.ctx.vc_table, vc, conn, self.address
                )
                runner_started = True
                vc.established.set()
                log.info(
                    "%s: virtual connection of %s to %s:%d established",
                    self.address,
                    user,
                    target.server,
                    target.port,
                )
                await self._serve_out(vc, successor=False)
            finally:
                self.ctx.vc_table.leave(
                    vc, None if self.retired else "client closed the OUT channel"
                )
        finally:
            if not runner_started:
                await trio.aclose_forcefully(conn)

    async def _out_successor(self, user: str, target: Target, first: rts.RtsMessage) -> None:
        """A successor OUT channel: OUT_R2/A3 read; attach it to its VC ([MS-RPCH]
        3.2.4.5.6.1), read OUT_R2/C1, serve once the writer switched to it."""
        opening = open_out_channel(first)
        a3 = opening.first
        if not isinstance(a3, OutRecycleA3):
            await self._refuse_successor("OUT", opening.error)
            return
        vc = self.ctx.vc_table.find(a3.vc_cookie, user, target)
        if vc is None:
            await self._refuse_successor("OUT", "no such virtual connection")
            return
        try:
            vc.attach_out_successor(a3, trio.current_time())
        except RecycleRefused as exc:
            await self._refuse_successor("OUT", str(exc))
            return
        vc.out_successor = self
        self.ctx.vc_table.hold(vc)
        vc.out_waker.wake()
        log.debug("%s: successor OUT channel attached", self.address)
        try:
            await self._serve_out(vc, successor=True)
        finally:
            # A successor that fails before the switch leaves the recycle stuck: end the VC.
            self.ctx.vc_table.leave(vc, None if self.retired else "client closed the OUT channel")

    async def _serve_out(self, vc: VirtualConnection, *, successor: bool) -> None:
        """Read this OUT channel's request (OUT_R2/C1 on a successor) until the client
        hangs up (the VC ends) or the writer switches away from it (it returns)."""
        with trio.CancelScope() as scope:
            self._sink_scope = scope
            vc.attach(scope)
            try:
                while True:
                    event = await self.next_event(math.inf)
                    if isinstance(event, PeerClosed):
                        break
                    if isinstance(event, RtsReceived) and successor:
                        try:
                            if vc.successor_out_rts(event.message):
                                vc.out_waker.wake()
                        except VcError as exc:
                            raise _Closed(str(exc)) from exc
            except _Closed as exc:
                log.debug("%s: OUT channel: %s", self.address, exc)
            finally:
                vc.detach(scope)
        if not self.retired:
            vc.end("client closed the OUT channel")

    # -- IN channel --------------------------------------------------------------------------

    async def _in_channel(self, user: str, target: Target) -> None:
        first = await self._first_rts()
        opening = open_in_channel(first)
        if opening.successor:
            await self._in_successor(user, target, first)
            return
        b1 = opening.first
        if not isinstance(b1, rts.ConnB1):
            raise _Closed(opening.error)
        vc = self.ctx.vc_table.join(b1.vc_cookie, Side.IN, user, target)
        if vc is None:
            raise _Closed("IN channel refused: cookie in use or table full")
        handed_over = False
        try:
            vc.in_opened(b1)
            with trio.CancelScope() as scope:
                vc.attach(scope)
                # Detached however it ends: the VC would otherwise keep the dead scope.
                try:
                    with trio.move_on_after(self.cfg.pair_timeout + self.cfg.connect_timeout):
                        await vc.established.wait()
                    if not vc.established.is_set():
                        raise _Closed("the virtual connection was not established in time")
                    handed_over = await self._run_in(vc)
                finally:
                    vc.detach(scope)
        finally:
            self.ctx.vc_table.leave(vc, None if handed_over else "IN channel closed")

    async def _in_successor(self, user: str, target: Target, first: rts.RtsMessage) -> None:
        """A successor IN channel: IN_R2/A1 read ([MS-RPCH] 3.2.3.5.5.1). Its body is left
        unread (plugged) until the predecessor delivers IN_R2/A5."""
        opening = open_in_channel(first)
        a1 = opening.first
        if not isinstance(a1, InRecycleA1):
            await self._refuse_successor("IN", opening.error)
            return
        vc = self.ctx.vc_table.find(a1.vc_cookie, user, target)
        if vc is None:
            await self._refuse_successor("IN", "no such virtual connection")
            return
        try:
            vc.attach_in_successor(a1)
        except RecycleRefused as exc:
            await self._refuse_successor("IN", str(exc))
            return
        handover = vc.in_handover = trio.Event()
        vc.out_waker.wake()
        self.ctx.vc_table.hold(vc)
        log.debug("%s: successor IN channel attached", self.address)
        current = handed_over = False
        try:
            with trio.CancelScope() as scope:
                vc.attach(scope)
                # Detached however it ends: the VC would otherwise keep the dead scope.
                try:
                    with trio.move_on_after(self.cfg.recycle_timeout):
                        await handover.wait()
                    if vc.ended.is_set():
                        return
                    if not vc.in_successor_current(a1.successor):
                        raise _Closed("the IN channel recycle did not complete in time")
                    current = True
                    handed_over = await self._run_in(vc)
                finally:
                    vc.detach(scope)
        finally:
            reason = "IN channel closed" if current and not handed_over else None
            self.ctx.vc_table.leave(vc, reason)

    async def _run_in(self, vc: VirtualConnection) -> bool:
        """Relay this IN channel until it ends (the VC ends: False) or hands over to its
        successor on IN_R2/A5 (True)."""
        backend = vc.backend
        assert backend is not None
        idle = self.cfg.vc_idle_timeout
        # One scope bounds the whole relay; its deadline moves at most every ``slack``
        # seconds (a scope per read cost more than the rest of relaying a small PDU).
        # What runs between reads is bounded by ``send_timeout``, well inside ``idle``.
        slack = min(1.0, idle / 8)
        with trio.CancelScope(deadline=trio.current_time() + idle) as scope:
            while True:
                now = trio.current_time()
                if scope.deadline - now < idle - slack:
                    scope.deadline = now + idle
                event = await self.next_event(None)
                if isinstance(event, RpcPduReceived):
                    try:
                        if backend.attached:
                            await offer_to_attached(vc, backend, event.data)
                            continue
                        await send_within(backend, event.data, self.cfg.send_timeout)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                        vc.end("the RPC server stopped reading")
                        return False
                    except _Closed as exc:
                        vc.end(str(exc))
                        return False
                    ack_in(vc, vc.in_window, len(event.data))
                elif isinstance(event, RtsReceived):
                    if self._in_rts(vc, event.message):
                        log.debug("%s: IN channel handed over to its successor", self.address)
                        return True
                elif isinstance(event, BodyEnded | PeerClosed):
                    vc.end("the client closed the IN channel")
                    return False
        vc.end("the IN channel was idle too long")
        return False

    def _in_rts(self, vc: VirtualConnection, message: rts.RtsMessage) -> bool:
        """Apply an RTS PDU from the IN channel (:meth:`ProxyVc.in_rts`); True on
        IN_R2/A5 (hand over)."""
        try:
            action = vc.in_rts(message)
        except VcError as exc:
            raise _Closed(str(exc)) from exc
        if action is InAction.WAKE_OUT:
            vc.out_waker.wake()
        elif action is InAction.HANDED_OVER:
            vc.in_handover.set()
            return True
        return False


def _reason(status: int) -> str:
    return {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}.get(
        status, "Error"
    )


async def serve_h1(ctx: ProxyContext, stream: trio.abc.Stream, address: str) -> None:
    """Serve one HTTP/1.1 connection until it ends."""
    await _H1Connection(ctx, stream, address).run()
