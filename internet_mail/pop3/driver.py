"""The trio driver of the POP3 core: sockets, TLS, worker threads, timeouts, the lock.

Theory of operation. :func:`serve_pop3` listens on TCP and runs one
:class:`~internet_mail.pop3.session.Pop3Session` per connection over a backend of its
own (``new_backend(peer)``; ``serve`` makes them over the store). Every call into the
core and the backend (which block on the store) runs in a worker thread, at most
``limiter``'s worth at once. One listener is plain with ``STLS`` (110) or implicit TLS
(995, ``implicit_tls=True``); without ``ssl_context`` the plain listener offers no STLS
and so no logon at all (the core refuses credentials in clear).

The core asks the driver to check credentials (``AuthenticationRequested``): the
driver calls ``backend.authenticate(user, password)`` (throttled by the store's
backend), which returns the maildrop owner's login name or None, and answers
``authentication_result``; an exception there answers ``-ERR [SYS/TEMP]``.

The maildrop lock is released however the connection ends (QUIT, end of input, a
reset, a timeout, cancellation when ``serve`` stops): ``connection_lost()`` (no
deletion: [RFC 1939] 6 applies them at QUIT only), then ``backend.close()``, both
shielded from cancellation.

Bounds (:class:`~internet_mail.imap.driver.DriverLimits`' POP3 twin,
:class:`DriverLimits`): connections beyond ``max_connections`` get ``-ERR [SYS/TEMP]``;
a client silent for ``login_timeout`` before logging on, or ``idle_timeout`` after
([RFC 1939] 3: an autologout timer of at least 10 minutes), is closed (no UPDATE); a
TLS handshake has ``handshake_timeout``; the core stops running pipelined commands past
``max_pending_output`` queued bytes, and a send slower than ``send_timeout`` ends the
connection.
"""

from __future__ import annotations

import functools
import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from .backend import Backend
from .config import Pop3Limits
from .events import (
    Authenticated,
    AuthenticationRequested,
    CloseRequested,
    Event,
    StartTLSRequested,
)
from .session import Pop3Session, State

log = logging.getLogger("internet_mail.pop3")

_READ = 65536


class DriverBackend(Backend, Protocol):
    """The backend the driver needs: the core's, plus the password check and the end
    of the connection."""

    def authenticate(self, user: str, password: str) -> str | None:
        """The login name owning the maildrop when the credentials are good (and the
        throttle lets the attempt through); None otherwise."""
        ...

    def close(self) -> None:
        """The connection is over (the lock is already released): end the store
        session. Idempotent."""
        ...


#: Makes one connection's backend; the argument is the client's IP address.
NewBackend = Callable[[str], DriverBackend]


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverLimits:
    """Bounds on connections and time (seconds) of the POP3 listeners."""

    max_connections: int = 256
    login_timeout: float = 60.0
    idle_timeout: float = 600.0
    handshake_timeout: float = 30.0
    send_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("login_timeout", "idle_timeout", "handshake_timeout", "send_timeout"):
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


class _Connection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        session: Pop3Session,
        backend: DriverBackend,
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

    async def core(self, call: Callable[[], list[Event]]) -> list[Event]:
        """One call into the core (it may call the blocking backend) in a thread."""
        return await trio.to_thread.run_sync(call, limiter=self.limiter)

    async def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            with trio.fail_after(self.limits.send_timeout):
                await self.stream.send_all(out)

    async def run(self) -> None:
        session = self.session
        await self.flush()  # the greeting
        while not session.closed:
            if session.wants_read:
                data = await self.read()
                if data is None:
                    log.info("pop3 %s: %s idle for too long: closed", self.id, self.peer)
                    return
                events = await self.core(functools.partial(session.receive_data, data))
            else:
                events = await self.core(session.resume)
            await self.flush()
            while events:
                events += await self.act(events.pop(0))
                await self.flush()

    async def read(self) -> bytes | None:
        if self.session.state is State.TRANSACTION:
            timeout = self.limits.idle_timeout
        else:
            timeout = self.limits.login_timeout
        with trio.move_on_after(timeout):
            return bytes(await self.stream.receive_some(_READ))
        return None

    async def act(self, event: Event) -> list[Event]:
        if isinstance(event, StartTLSRequested):
            if self.ssl_context is None:  # the core offers STLS only when it can
                raise RuntimeError("STLS without a TLS context")
            tls = trio.SSLStream(self.stream, self.ssl_context, server_side=True)
            with trio.fail_after(self.limits.handshake_timeout):
                await tls.do_handshake()
            self.stream = tls
            self.session.tls_established()
        elif isinstance(event, AuthenticationRequested):
            return await self.authenticate(event)
        elif isinstance(event, Authenticated):
            log.info(
                "pop3 %s: %s logged on from %s, %d messages",
                self.id, event.user, self.peer, event.messages,
            )  # fmt: skip
        elif isinstance(event, CloseRequested):
            pass  # the loop ends: the session is closed
        return []

    async def authenticate(self, event: AuthenticationRequested) -> list[Event]:
        try:
            owner = await trio.to_thread.run_sync(
                self.backend.authenticate, event.user, event.password, limiter=self.limiter
            )
        except Exception:
            log.exception("pop3 %s: the password check failed", self.id)
            return await self.core(
                functools.partial(self.session.authentication_result, False, temporary=True)
            )
        if owner is None:
            log.info("pop3 %s: logon of %r from %s refused", self.id, event.user, self.peer)
        result = functools.partial(
            self.session.authentication_result, owner is not None, user=owner
        )
        return await self.core(result)

    async def end(self) -> None:
        """Release the maildrop (no deletion) and end the store session, whatever
        happened; then close the stream."""
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(self.session.connection_lost, limiter=self.limiter)
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


async def serve_pop3(
    new_backend: NewBackend,
    port: int,
    host: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    limits: Pop3Limits | None = None,
    driver_limits: DriverLimits | None = None,
    gate: ConnectionGate | None = None,
    limiter: trio.CapacityLimiter | None = None,
    greeting: str = "POP3 server ready",
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host``:``port`` (0: a free port) and serve POP3 until cancelled.

    Args:
        new_backend: makes one connection's backend (called in a worker thread).
        ssl_context: serve's certificate; needed for ``implicit_tls`` and STLS.
        implicit_tls: TLS from the first byte (995) instead of STLS (110).
        limits: the core's limits; ``driver_limits``: connections and time.
        gate: the connection count shared with other listeners (default: this one's
            own, of ``driver_limits.max_connections``).
        limiter: worker threads for every connection's core (default: 16).
        task_status: receives the listeners (their port) once listening.
    """
    if implicit_tls and ssl_context is None:
        raise ValueError("implicit TLS needs an ssl_context")
    dlimits = driver_limits or DriverLimits()
    gate = gate or ConnectionGate(dlimits.max_connections)
    limiter = limiter or trio.CapacityLimiter(16)
    kind = "pop3s" if implicit_tls else "pop3"

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
                    await stream.send_all(b"-ERR [SYS/TEMP] too many connections, try later\r\n")
                log.warning("%s: refused %s: %d connections", kind, peer, gate.active)
                return
            try:
                await serve_one(stream, peer)
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

    async def serve_one(stream: trio.abc.Stream, peer: str) -> None:
        backend = await trio.to_thread.run_sync(new_backend, peer, limiter=limiter)
        session = Pop3Session(
            backend, limits, tls=implicit_tls,
            starttls=ssl_context is not None and not implicit_tls, greeting=greeting,
        )  # fmt: skip
        conn = _Connection(
            stream, session, backend, peer=peer, ssl_context=ssl_context, limits=dlimits,
            limiter=limiter,
        )  # fmt: skip
        try:
            await conn.run()
        except trio.TooSlowError:
            log.info("pop3 %s: %s too slow (reading our answers or TLS): closed", conn.id, peer)
        finally:
            await conn.end()

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners)
    await trio.serve_listeners(handle, listeners)


__all__ = ["ConnectionGate", "DriverBackend", "DriverLimits", "NewBackend", "serve_pop3"]
