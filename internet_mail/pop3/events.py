"""Events the POP3 core returns: what the driver must act on (STYLE.md 2.3)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Authenticated",
    "AuthenticationRequested",
    "CloseRequested",
    "Event",
    "StartTLSRequested",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something the driver must act on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTLSRequested(Event):
    """The client sent ``STLS`` and got ``+OK``: flush ``data_to_send()``, run the TLS
    handshake, then call ``tls_established()``. The core has dropped every byte that
    followed the STLS line and drops what it is fed until then ([RFC 2595] 3)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationRequested(Event):
    """The client offered credentials (``PASS`` after ``USER``, or ``AUTH PLAIN``):
    check them (and throttle), then call ``authentication_result()``. The core runs no
    further command until then.

    Attributes:
        user: the user name as sent (UTF-8 decoded).
        password: the password as sent.
        mechanism: ``"USER"`` or ``"PLAIN"``.
    """

    user: str
    password: str
    mechanism: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticated(Event):
    """The maildrop of ``user`` is locked and open: the session is in TRANSACTION."""

    user: str
    messages: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseRequested(Event):
    """Flush ``data_to_send()`` and close the connection (QUIT, too many errors, an
    overlong line, end of input)."""
