"""The SMTP core's configuration: the listener's role and its limits (STYLE.md 2.2).

A frozen, self-validating dataclass. The three roles follow RFC 6409 and RFC 8314:

* ``INCOMING`` (port 25, RFC 5321): anyone may deliver to local recipients; mail for
  other domains is relayed only for an authenticated client (no open relay).
* ``SUBMISSION`` (port 587, RFC 6409): ``AUTH`` is required before ``MAIL``; the client
  reaches ``AUTH`` through ``STARTTLS``.
* ``SUBMISSIONS`` (port 465, RFC 8314): as submission, but TLS is implicit: the driver
  runs the TLS handshake before the core's greeting, so the core starts with ``tls``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.Enum):
    """What a listener is for; it decides whether ``AUTH`` is required before ``MAIL``."""

    INCOMING = "incoming"
    SUBMISSION = "submission"
    SUBMISSIONS = "submissions"


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpConfig:
    """One listener's policy and the hard bounds on what one client can make the core do.

    Attributes:
        hostname: our name in the greeting and the ``EHLO`` reply.
        role: the listener's :class:`Role`.
        tls_available: the driver has a certificate, so ``STARTTLS`` is offered (ignored
            for ``SUBMISSIONS``, which is TLS from the first byte).
        auth_enabled: ``AUTH PLAIN LOGIN`` is offered (after TLS only, always).
        max_message_size: bytes of one message, advertised as ``SIZE``; more: 552 5.3.4.
        max_recipients: ``RCPT`` accepted per message; more: 452 4.5.3.
        max_command_line: bytes of a command line with its CRLF; more: 500 5.5.2. RFC
            5321 4.5.3.1.4 says 512, and lets extensions raise it: we allow 2048 so that
            an ``AUTH PLAIN`` initial response with long credentials fits.
        max_data_line: bytes of one message line without its CRLF (RFC 5322 2.1.1: 998);
            more: 550 5.6.0 after the data.
        max_header_count: header fields in one message; more: 552 5.3.4.
        max_header_bytes: bytes of the header section; more: 552 5.3.4.
        max_errors: error replies on one connection before 421 4.7.0 and close.
        max_pending_input: bytes the core holds while it waits for the driver's answer
            (a pipelining client sends ahead); more: 421 4.7.0 and close.
    """

    hostname: str = "localhost"
    role: Role = Role.INCOMING
    tls_available: bool = True
    auth_enabled: bool = True
    max_message_size: int = 32 * 1024 * 1024
    max_recipients: int = 100
    max_command_line: int = 2048
    max_data_line: int = 998
    max_header_count: int = 1000
    max_header_bytes: int = 1024 * 1024
    max_errors: int = 20
    max_pending_input: int = 64 * 1024

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise ValueError(f"SmtpConfig.role must be a Role, got {self.role!r}")
        if not self.hostname or any(c.isspace() for c in self.hostname):
            raise ValueError(f"SmtpConfig.hostname must be a name, got {self.hostname!r}")
        for name in self.__slots__:
            if not name.startswith("max_"):
                continue
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SmtpConfig.{name} must be a positive integer, got {value!r}")
        if self.max_command_line < 512:
            raise ValueError("SmtpConfig.max_command_line must be at least 512 (RFC 5321)")
        if self.max_data_line < 998:
            raise ValueError("SmtpConfig.max_data_line must be at least 998 (RFC 5322)")
        if self.max_pending_input < self.max_command_line:
            raise ValueError("SmtpConfig.max_pending_input must hold one command line")

    @property
    def implicit_tls(self) -> bool:
        """The connection is TLS before the greeting (port 465)."""
        return self.role is Role.SUBMISSIONS

    @property
    def auth_required(self) -> bool:
        """``MAIL`` needs ``AUTH`` first (ports 587 and 465)."""
        return self.role is not Role.INCOMING
