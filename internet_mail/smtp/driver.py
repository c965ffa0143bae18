"""The trio driver of the SMTP server core: sockets, TLS, timeouts, callbacks.

Theory of operation. :func:`serve_smtp` listens on TCP and runs one
:class:`~internet_mail.smtp.server.SmtpServerConnection` per connection: it feeds the
core what it reads, sends what the core queues, and answers the core's questions
(STYLE.md 2.3) with the callbacks it was given, so this package never imports the
store (``serve`` is the composition root that wires them):

* ``check_recipient(address)`` -> :class:`~internet_mail.smtp.server.RecipientVerdict`
  for ``RCPT TO`` (an exception answers ``TEMPORARY``: 451);
* ``deliver(envelope, data)`` stores a message durably and returns; it raises
  :class:`DeliveryFailed` with the reply to give, and any other exception gives 451.
  250 goes out only after it returned.

* ``authenticate(username, password, peer)`` -> the canonical user name, or None
  for bad credentials, for ``AUTH`` (an exception answers 454 4.7.0; without the
  callback every ``AUTH`` gets 454).

``STARTTLS`` wraps the socket in a :class:`trio.SSLStream` with the listener's
``ssl_context`` (the core offers it only when there is one); a submissions listener
(``config.implicit_tls``, port 465) runs the handshake before its greeting. Every
wait is bounded: an idle client gets 421 4.4.2 after
:attr:`DriverLimits.idle_timeout`, a whole session ends after
:attr:`DriverLimits.session_timeout`, a TLS handshake has
:attr:`DriverLimits.handshake_timeout`, a peer that does not read our replies is
dropped after :attr:`DriverLimits.send_timeout`; connections beyond
:attr:`DriverLimits.max_connections` get 421 4.3.2 and are closed.
"""

from __future__ import annotations

import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import trio

from internet_mail.smtp.addresses import Address
from internet_mail.smtp.config import SmtpConfig
from internet_mail.smtp.events import (
    AuthenticationRequested,
    ConnectionTerminated,
    Event,
    MessageReceived,
    RecipientCheckRequested,
    StartTlsRequested,
)
from internet_mail.smtp.server import RecipientVerdict, SmtpServerConnection, StoreFailure

log = logging.getLogger("internet_mail.smtp")

_READ = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverLimits:
    """Bounds on connections and time (seconds); RFC 5321 4.5.3.2 asks for at least
    5 minutes of patience per command, which ``idle_timeout`` gives."""

    max_connections: int = 256
    idle_timeout: float = 300.0
    session_timeout: float = 3600.0
    handshake_timeout: float = 30.0
    send_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("idle_timeout", "session_timeout", "handshake_timeout", "send_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One accepted SMTP transaction, as :func:`serve_smtp` hands it to ``deliver``.

    Attributes:
        sender: the reverse path (``""`` for ``<>``).
        recipients: the accepted forward paths.
        helo: the client's ``HELO``/``EHLO`` name.
        peer: the client's IP address.
        tls: the transaction came under TLS.
        session_id: our id of the connection (in the log and the Received header).
        received: the ``Received:`` trace field to prepend (RFC 5321 4.4), with CRLF.
        authenticated_user: the ``AUTH`` identity (submission), or None.
    """

    sender: str
    recipients: tuple[str, ...]
    helo: str
    peer: str
    tls: bool
    session_id: str
    received: bytes
    authenticated_user: str | None = None


class DeliveryFailed(Exception):
    """Raised by ``deliver``: the message was not stored; ``failure`` picks the reply."""

    def __init__(self, failure: StoreFailure, detail: str = "") -> None:
        super().__init__(detail or failure.name)
        self.failure = failure


CheckRecipient = Callable[[Address], Awaitable[RecipientVerdict]]
Deliver = Callable[[Envelope, bytes], Awaitable[None]]
#: ``authenticate(username, password, peer)``: the canonical user name, or None.
Authenticate = Callable[[str, str, str], Awaitable[str | None]]


def _clean(text: str, limit: int = 255) -> str:
    """``text`` fit for a comment-free trace field: printable ASCII, no delimiters."""
    out = "".join(c if 0x21 <= ord(c) <= 0x7E and c not in '()[];\\"' else "?" for c in text)
    return out[:limit] or "unknown"


def _helo_name(helo: str) -> str:
    """The HELO argument for the trace field: a name, or an address literal kept with
    its brackets (RFC 5321 4.1.3: ``[192.0.2.1]``, ``[IPv6:...]``)."""
    if helo.startswith("[") and helo.endswith("]") and len(helo) > 2:
        return "[" + _clean(helo[1:-1], 64) + "]"
    return _clean(helo)


def received_header(
    *, helo: str, peer: str, hostname: str, protocol: str, session_id: str,
    recipients: Sequence[str], when: datetime | None = None,
) -> bytes:  # fmt: skip
    """The ``Received:`` field of RFC 5321 4.4 (``from``, ``by``, ``with``, ``id``,
    ``for`` when there is one recipient: more would show Bcc recipients to each other),
    folded at 78 characters' worth of clauses, ending in CRLF."""
    stamp = format_datetime((when or datetime.now(UTC)).astimezone(UTC))
    clauses = [
        f"from {_helo_name(helo)} ([{_clean(peer, 64)}])",
        f"by {_clean(hostname)}",
        f"with {protocol}",
        f"id {session_id}",
    ]
    if len(recipients) == 1:
        clauses.append(f"for <{_clean(recipients[0], 256)}>")
    return ("Received: " + "\r\n\t".join(clauses) + f";\r\n\t{stamp}\r\n").encode("ascii")


def _protocol(event: MessageReceived) -> str:
    """RFC 3848 ``with`` keywords."""
    if not event.esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if event.tls else "") + ("A" if event.authenticated_user else "")


class _Session:
    def __init__(
        self, stream: trio.abc.Stream, peer: str, config: SmtpConfig,
        ssl_context: ssl.SSLContext | None, check_recipient: CheckRecipient,
        deliver: Deliver, limits: DriverLimits, authenticate: Authenticate | None = None,
    ) -> None:  # fmt: skip
        self.stream = stream
        self.authenticate = authenticate
        self.peer = peer
        self.config = config
        self.ssl_context = ssl_context
        self.check_recipient = check_recipient
        self.deliver = deliver
        self.limits = limits
        self.core = SmtpServerConnection(config, tls=config.implicit_tls)
        self.id = secrets.token_hex(8)

    async def flush(self) -> None:
        out = self.core.data_to_send()
        if out:
            with trio.fail_after(self.limits.send_timeout):
                await self.stream.send_all(out)

    async def run(self) -> None:
        await self.flush()
        while not self.core.closed:
            data = b""
            with trio.move_on_after(self.limits.idle_timeout) as idle:
                data = bytes(await self.stream.receive_some(_READ))
            if idle.cancelled_caught:
                # The core has no clock: the driver says it and closes (RFC 5321 4.5.3.2).
                bye = f"421 4.4.2 {self.config.hostname} Idle timeout, closing\r\n"
                with trio.move_on_after(self.limits.send_timeout):
                    await self.stream.send_all(bye.encode("ascii"))
                return
            pending = self.core.receive_data(data)
            await self.flush()
            while pending and not self.core.closed:
                event = pending.pop(0)
                pending += await self.answer(event)
                await self.flush()
            if not data:
                return

    async def answer(self, event: Event) -> list[Event]:
        core = self.core
        if isinstance(event, RecipientCheckRequested):
            try:
                verdict = await self.check_recipient(event.address)
            except Exception:
                log.exception("smtp %s: recipient check failed", self.id)
                verdict = RecipientVerdict.TEMPORARY
            return core.recipient_checked(verdict)
        if isinstance(event, MessageReceived):
            return await self.store(event)
        if isinstance(event, StartTlsRequested):
            return await self.start_tls()
        if isinstance(event, AuthenticationRequested):
            return await self.check_credentials(event)
        if isinstance(event, ConnectionTerminated):
            log.debug("smtp %s: closed (%s)", self.id, event.reason)
        return []

    async def check_credentials(self, event: AuthenticationRequested) -> list[Event]:
        if self.authenticate is None:
            return self.core.authentication_result(None, temporary=True)
        try:
            user = await self.authenticate(event.username, event.password, self.peer)
        except Exception:
            log.exception("smtp %s: credential check failed", self.id)
            return self.core.authentication_result(None, temporary=True)
        if user is None:
            log.info("smtp %s: AUTH %s failed for %r", self.id, event.mechanism, event.username)
        return self.core.authentication_result(user)

    async def start_tls(self) -> list[Event]:
        if self.ssl_context is None:  # the core offers STARTTLS only with a context
            raise RuntimeError("STARTTLS without a TLS context")
        await self.flush()  # the 220 goes out in the clear
        tls = trio.SSLStream(self.stream, self.ssl_context, server_side=True)
        with trio.fail_after(self.limits.handshake_timeout):
            await tls.do_handshake()
        self.stream = tls
        return self.core.tls_started()

    async def store(self, event: MessageReceived) -> list[Event]:
        envelope = Envelope(
            sender=event.envelope_from,
            recipients=event.recipients,
            helo=event.helo,
            peer=self.peer,
            tls=event.tls,
            session_id=self.id,
            authenticated_user=event.authenticated_user,
            received=received_header(
                helo=event.helo,
                peer=self.peer,
                hostname=self.config.hostname,
                protocol=_protocol(event),
                session_id=self.id,
                recipients=event.recipients,
            ),
        )
        try:
            await self.deliver(envelope, event.data)
        except DeliveryFailed as exc:
            log.warning("smtp %s: message refused: %s", self.id, exc)
            return self.core.message_stored(False, failure=exc.failure)
        except Exception:
            log.exception("smtp %s: delivery failed", self.id)
            return self.core.message_stored(False, failure=StoreFailure.TEMPORARY)
        log.info(
            "smtp %s: message from <%s> (%s [%s]) delivered to %d recipient(s), %d bytes",
            self.id, envelope.sender, _clean(event.helo), self.peer, len(event.recipients),
            len(event.data),
        )  # fmt: skip
        return self.core.message_stored(True)


def _peer_of(stream: trio.abc.Stream) -> str:
    if isinstance(stream, trio.SocketStream):
        try:
            return str(stream.socket.getpeername()[0])
        except OSError:
            return "unknown"
    return "unknown"


async def serve_smtp(
    config: SmtpConfig,
    port: int,
    host: str,
    *,
    check_recipient: CheckRecipient,
    deliver: Deliver,
    ssl_context: ssl.SSLContext | None = None,
    limits: DriverLimits | None = None,
    authenticate: Authenticate | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host``:``port`` (0: a free port) and serve SMTP until cancelled.

    ``config.tls_available`` should be true exactly when ``ssl_context`` is given; a
    listener with ``config.implicit_tls`` needs one.
    ``task_status`` receives the listeners (their port) once listening.
    """
    limits = limits or DriverLimits()
    if config.implicit_tls and ssl_context is None:
        raise ValueError("an implicit-TLS (submissions) listener needs an ssl_context")
    active = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal active
        peer = _peer_of(stream)
        try:
            if active >= limits.max_connections:
                with trio.move_on_after(limits.send_timeout):
                    await stream.send_all(
                        f"421 4.3.2 {config.hostname} Too many connections, try later\r\n".encode()
                    )
                return
            active += 1
            try:
                session = _Session(
                    stream, peer, config, ssl_context, check_recipient, deliver, limits,
                    authenticate,
                )  # fmt: skip
                with trio.move_on_after(limits.session_timeout):
                    if config.implicit_tls:
                        assert ssl_context is not None  # checked above
                        tls = trio.SSLStream(stream, ssl_context, server_side=True)
                        session.stream = tls
                        with trio.fail_after(limits.handshake_timeout):
                            await tls.do_handshake()
                    await session.run()
                await trio.aclose_forcefully(session.stream)
            finally:
                active -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            log.debug("smtp: connection from %s ended: %r", peer, exc)
        except ssl.SSLError as exc:
            log.info("smtp: TLS with %s failed: %s", peer, exc)
        except Exception:  # one connection's bug never takes the listener down
            log.exception("smtp: connection from %s failed", peer)
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners)
    await trio.serve_listeners(handle, listeners)


__all__ = [
    "Authenticate",
    "CheckRecipient",
    "Deliver",
    "DeliveryFailed",
    "DriverLimits",
    "Envelope",
    "received_header",
    "serve_smtp",
]
