"""POP3 ([RFC 1939] with CAPA [RFC 2449], STLS [RFC 2595], AUTH PLAIN [RFC 5034]), sans-IO.

``session.Pop3Session`` runs one connection over a ``backend.Backend`` (each user's
Inbox as a maildrop) and serializes its answers with ``responses``. The password check,
the throttle, TLS and the sockets belong to the driver; the MAPI store mapping and the
trio driver are separate steps (docs/pop3.md).
"""

from .backend import Backend, BackendError, MaildropInUse, MessageEntry
from .config import Pop3Limits
from .events import (
    Authenticated,
    AuthenticationRequested,
    CloseRequested,
    Event,
    StartTLSRequested,
)
from .session import Pop3Session, State

__all__ = [
    "Authenticated",
    "AuthenticationRequested",
    "Backend",
    "BackendError",
    "CloseRequested",
    "Event",
    "MaildropInUse",
    "MessageEntry",
    "Pop3Limits",
    "Pop3Session",
    "StartTLSRequested",
    "State",
]
