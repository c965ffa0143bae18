"""The trio driver of the IMAP core: sockets, TLS, worker threads, timeouts, IDLE.

Theory of operation. :func:`serve_imap` listens on TCP and runs one
:class:`~internet_mail.imap.session.ImapSession` per connection over a backend of its
own (``new_backend(peer)``; ``serve`` is the composition root that makes them over the
store, so this package never imports it). The core calls its backend synchronously and
the store's calls block, so every call into the core (``receive_data``, ``resume``,
``poll``) runs in a worker thread, at most ``limiter``'s worth at once; the event loop
only moves bytes. One listener is plain with ``STARTTLS`` (143) or implicit TLS (993,
``implicit_tls=True``); both need ``ssl_context``, and without one the plain listener
offers no STARTTLS and so no login at all (the core refuses credentials in clear).

Bounds (:class:`DriverLimits`), each answered ``* BYE`` and a close:

* connections beyond ``max_connections`` (shared by the listeners given the same
  :class:`ConnectionGate`): ``* BYE [UNAVAILABLE]``;
* a client silent for ``login_timeout`` before it logs in, or ``idle_timeout`` after
  ([RFC 9051] 5.4: an autologout timer of at least 30 minutes once authenticated);
* an ``IDLE`` longer than ``idle_limit`` (RFC 2177 asks clients to re-issue IDLE at
  least every 29 minutes); while idling, ``* OK still here`` every ``keepalive``;
* a TLS handshake longer than ``handshake_timeout``;
* a client that does not read: the core queues at most about
  :attr:`~internet_mail.imap.config.ImapLimits.max_pending_output` bytes before it
  stops running pipelined commands (``wants_read``), the driver reads nothing more
  until they are sent, and a send that takes longer than ``send_timeout`` ends the
  connection.

IDLE is pushed, not polled: on :class:`~internet_mail.imap.session.IdleStarted` the
driver subscribes with ``backend.watch(mailbox, notify)``; ``notify`` (called from any
thread) wakes the connection's task, which runs ``session.poll()`` in a worker thread
and sends what it queued. ``IdleEnded`` or the end of the connection unsubscribes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .backend import Backend
from .config import ImapLimits
from .session import (
    Authenticated,
    CloseRequested,
    Event,
    IdleEnded,
    IdleStarted,
    ImapSession,
    StartTLSRequested,
    State,
)

log = logging.getLogger("internet_mail.imap")

_READ = 65536

#: Makes one connection's backend; the argument is the client's IP address.
NewBackend = Callable[[str], Backend]


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverLimits:
    """Bounds on connections and time (seconds) of the IMAP listeners."""

    max_connections: int = 256
    login_timeout: float = 60.0
    idle_timeout: float = 1800.0
    idle_limit: float = 1740.0
    keepalive: float = 120.0
    handshake_timeout: float = 30.0
    send_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in (
            "login_timeout", "idle_timeout", "idle_limit", "keepalive", "handshake_timeout",
            "send_timeout",
        ):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


class ConnectionGate:
    """Counts the connections of one or more listeners against one limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> bool:
        """Take a place; False when all ``limit`` are taken."""
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


class _Closed(Exception):
    """The connection ends: ``bye`` is the last line to send (may be empty)."""

    def __init__(self, bye: bytes = b"") -> None:
        super().__init__(bye.decode("ascii", "replace").strip())
        self.bye = bye


class _Connection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        session: ImapSession,
        backend: Backend,
        *,
        peer: str,
        ssl_context: ssl.SSLContext | None,
        limits: DriverLimits,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.stream = stream
        self.session = session
        self.backend = backend
        self.peer = peer
        self.ssl_context = ssl_context
        self.limits = limits
        self.limiter = limiter
        self.id = secrets.token_hex(6)
        self.token = trio.lowlevel.current_trio_token()
        self.wake = trio.Event()
        self.unwatch: Callable[[], None] | None = None
        self.idling = False

    async def core(self, call: Callable[[], list[Event] | None]) -> list[Event]:
        """Run one call into the core in a worker thread (the backend blocks)."""
        events = await trio.to_thread.run_sync(call, limiter=self.limiter)
        return events or []

    async def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            with trio.fail_after(self.limits.send_timeout):
                await self.stream.send_all(out)

    async def run(self) -> None:
        await self.flush()  # the greeting
        while self.session.state is not State.LOGOUT:
            if self.session.wants_read:
                events = await self.core(
                    functools.partial(self.session.receive_data, await self.read())
                )
            else:
                events = await self.core(self.session.resume)
            await self.flush()
            for event in events:
                await self.act(event)

    async def read(self) -> bytes:
        if self.idling:
            return await self.read_idling()
        if self.session.state is State.NOT_AUTHENTICATED:
            timeout = self.limits.login_timeout
        else:
            timeout = self.limits.idle_timeout
        with trio.move_on_after(timeout):
            return bytes(await self.stream.receive_some(_READ))
        raise _Closed(b"* BYE autologout: idle for too long\r\n")

    async def read_idling(self) -> bytes:
        """Read while the client idles, answering the store's notifications (and
        keeping the connection alive) until the client sends something."""
        got: bytes | None = None
        failure: Exception | None = None
        with trio.move_on_after(self.limits.idle_limit):
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    nonlocal got, failure
                    try:
                        got = bytes(await self.stream.receive_some(_READ))
                    except Exception as exc:  # raised below, outside the nursery
                        failure = exc
                    nursery.cancel_scope.cancel()

                async def pusher() -> None:
                    nonlocal failure
                    try:
                        await self.push()
                    except Exception as exc:
                        failure = exc
                    nursery.cancel_scope.cancel()

                nursery.start_soon(reader)
                nursery.start_soon(pusher)
        if failure is not None:
            raise failure
        if got is None:
            raise _Closed(b"* BYE IDLE for too long: re-issue IDLE at least every 29 minutes\r\n")
        return got

    async def push(self) -> None:
        """Send the store's changes as they come (and a keepalive when none do)."""
        while True:
            with trio.move_on_after(self.limits.keepalive) as quiet:
                await self.wake.wait()
            self.wake = trio.Event()
            # A poll and its answer are never cut in half by the client's DONE.
            with trio.CancelScope(shield=True):
                if quiet.cancelled_caught:
                    with trio.fail_after(self.limits.send_timeout):
                        await self.stream.send_all(b"* OK still here\r\n")
                else:
                    await self.core(self.session.poll)
                    await self.flush()

    def notify(self) -> None:
        """The watched mailbox may have changed (called from any thread)."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        self.wake.set()

    async def act(self, event: Event) -> None:
        if isinstance(event, StartTLSRequested):
            await self.start_tls()
        elif isinstance(event, IdleStarted):
            await self.watch()
        elif isinstance(event, IdleEnded):
            await self.unwatch_now()
        elif isinstance(event, Authenticated):
            log.info("imap %s: %s logged in from %s", self.id, event.user, self.peer)
        elif isinstance(event, CloseRequested):
            raise _Closed()

    async def start_tls(self) -> None:
        if self.ssl_context is None:  # the core offers STARTTLS only with a context
            raise _Closed(b"* BYE TLS is not available\r\n")
        tls = trio.SSLStream(self.stream, self.ssl_context, server_side=True)
        with trio.fail_after(self.limits.handshake_timeout):
            await tls.do_handshake()
        self.stream = tls
        self.session.tls_established()

    async def watch(self) -> None:
        self.idling = True
        mailbox = self.session.selected
        if mailbox is None:
            return
        self.unwatch = await trio.to_thread.run_sync(
            self.backend.watch, mailbox, self.notify, limiter=self.limiter
        )
        self.wake.set()  # what changed between the last command and the subscription

    async def unwatch_now(self) -> None:
        self.idling = False
        unwatch, self.unwatch = self.unwatch, None
        if unwatch is not None:
            await trio.to_thread.run_sync(unwatch, limiter=self.limiter)

    async def close(self, bye: bytes) -> None:
        """Send ``bye`` (best effort), unsubscribe, close."""
        with trio.CancelScope(shield=True):
            if bye:
                with trio.move_on_after(self.limits.send_timeout):
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.stream.send_all(self.session.data_to_send() + bye)
            try:
                await self.unwatch_now()
            finally:
                try:
                    await trio.to_thread.run_sync(self.backend.close, limiter=self.limiter)
                finally:
                    await trio.aclose_forcefully(self.stream)


def _peer_of(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "unknown"


async def serve_imap(
    new_backend: NewBackend,
    port: int,
    host: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    limits: ImapLimits | None = None,
    driver_limits: DriverLimits | None = None,
    gate: ConnectionGate | None = None,
    limiter: trio.CapacityLimiter | None = None,
    greeting: str = "IMAP4rev2 server ready",
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host``:``port`` (0: a free port) and serve IMAP until cancelled.

    Args:
        new_backend: makes one connection's backend (called in a worker thread).
        ssl_context: serve's certificate; needed for ``implicit_tls`` and STARTTLS.
        implicit_tls: TLS from the first byte (993) instead of STARTTLS (143).
        limits: the core's limits; ``driver_limits``: connections and time.
        gate: the connection count shared with other listeners (default: this one's
            own, of ``driver_limits.max_connections``).
        limiter: worker threads for the cores of every connection (default: 16).
        task_status: receives the listeners (their port) once listening.
    """
    if implicit_tls and ssl_context is None:
        raise ValueError("implicit TLS needs an ssl_context")
    dlimits = driver_limits or DriverLimits()
    gate = gate or ConnectionGate(dlimits.max_connections)
    limiter = limiter or trio.CapacityLimiter(16)
    kind = "imaps" if implicit_tls else "imap"

    async def handle(raw: trio.SocketStream) -> None:
        peer = _peer_of(raw)
        stream: trio.abc.Stream = raw
        try:
            if implicit_tls:
                assert ssl_context is not None
                tls = trio.SSLStream(raw, ssl_context, server_side=True)
                with trio.fail_after(dlimits.handshake_timeout):
                    await tls.do_handshake()
                stream = tls
            if not gate.enter():
                with trio.move_on_after(dlimits.send_timeout):
                    await stream.send_all(b"* BYE [UNAVAILABLE] too many connections\r\n")
                log.warning("%s: refused %s: %d connections", kind, peer, gate.active)
                return
            try:
                await _serve_one(stream, peer, implicit_tls)
            finally:
                gate.leave()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            log.debug("%s: connection from %s ended: %r", kind, peer, exc)
        except ssl.SSLError as exc:
            log.info("%s: TLS with %s failed: %s", kind, peer, exc)
        except Exception:  # one connection's bug never takes the listener down
            log.exception("%s: connection from %s failed", kind, peer)
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_one(stream: trio.abc.Stream, peer: str, tls: bool) -> None:
        backend = await trio.to_thread.run_sync(new_backend, peer, limiter=limiter)
        session = ImapSession(backend, limits, tls=tls, greeting=greeting)
        conn = _Connection(
            stream, session, backend, peer=peer, ssl_context=ssl_context, limits=dlimits,
            limiter=limiter,
        )  # fmt: skip
        bye = b""
        try:
            await conn.run()
        except _Closed as exc:
            bye = exc.bye
        except trio.TooSlowError:
            log.info("imap %s: %s does not read its responses: closed", conn.id, peer)
        finally:
            await conn.close(bye)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners)
    await trio.serve_listeners(handle, listeners)


__all__ = ["ConnectionGate", "DriverLimits", "NewBackend", "serve_imap"]
