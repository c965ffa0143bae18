"""The SMTP server core (RFC 5321 + ESMTP), sans-IO: bytes in, replies and events out.

See :mod:`internet_mail.smtp.server` for the theory of operation and ``docs/smtp.md``.
"""

from internet_mail.smtp.addresses import Address, PathError, parse_path, split_path
from internet_mail.smtp.config import Role, SmtpConfig
from internet_mail.smtp.events import (
    AuthenticationRequested,
    ConnectionTerminated,
    Event,
    MessageReceived,
    RecipientCheckRequested,
    StartTlsRequested,
)
from internet_mail.smtp.server import (
    LocalProtocolError,
    RecipientVerdict,
    SmtpServerConnection,
    StoreFailure,
)

__all__ = [
    "Address",
    "AuthenticationRequested",
    "ConnectionTerminated",
    "Event",
    "LocalProtocolError",
    "MessageReceived",
    "PathError",
    "RecipientCheckRequested",
    "RecipientVerdict",
    "Role",
    "SmtpConfig",
    "SmtpServerConnection",
    "StartTlsRequested",
    "StoreFailure",
    "parse_path",
    "split_path",
]
