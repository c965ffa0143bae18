"""What the SMTP core tells its driver (STYLE.md 2.3).

Four of the events are questions: the core stops reading commands until the driver
answers with the matching method of :class:`~internet_mail.smtp.server.SmtpServerConnection`
(``tls_started``, ``authentication_result``, ``recipient_checked``, ``message_stored``).
Policy that needs the directory, a clock or the disk (password hashes, throttling, the
list of users, durable storage) stays in the driver; the core decides the SMTP replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from internet_mail.smtp.addresses import Address


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of the SMTP core's events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTlsRequested(Event):
    """The client sent ``STARTTLS`` and got 220: flush ``data_to_send()``, run the TLS
    handshake, then call ``tls_started()``. Bytes the client sent after ``STARTTLS`` in
    the clear were discarded (RFC 3207 6, the command-injection attack)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationRequested(Event):
    """The client completed ``AUTH``: check the credentials (hash, throttle) and call
    ``authentication_result(user)`` with the canonical user name, or ``None``."""

    mechanism: str
    username: str
    password: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientCheckRequested(Event):
    """A syntactically valid ``RCPT TO``: say whether ``address`` is a local user, an
    unknown user of a local domain, or elsewhere, with ``recipient_checked(verdict)``.
    The core applies the relay policy to the answer."""

    address: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived(Event):
    """A whole message arrived (``DATA`` or ``BDAT ... LAST``) and passed the framing
    checks. Store it durably, then call ``message_stored()``: only then is 250 sent.

    Attributes:
        envelope_from: the reverse path, ``""`` for the null path ``<>``.
        recipients: the accepted forward paths, in order.
        data: the message as received, CRLF lines, dot-unstuffed.
        authenticated_user: the ``AUTH`` identity, or ``None``.
        tls: the session was under TLS.
        helo: the ``HELO``/``EHLO`` argument.
        esmtp: the client said ``EHLO``.
        body: ``7BIT`` or ``8BITMIME`` (RFC 6152).
        smtputf8: the client asked for SMTPUTF8 (RFC 6531).
        declared_size: the ``SIZE=`` parameter, if given.
        chunked: the message came by ``BDAT`` (RFC 3030).
    """

    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    authenticated_user: str | None
    tls: bool
    helo: str
    esmtp: bool
    body: str
    smtputf8: bool
    declared_size: int | None
    chunked: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionTerminated(Event):
    """The session is over (``QUIT``, 421, or the client's EOF): flush
    ``data_to_send()`` and close. A transaction not yet acknowledged is void."""

    reason: str
