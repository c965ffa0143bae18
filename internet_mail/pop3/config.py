"""The POP3 core's limits: a frozen, self-validating configuration (STYLE.md 2.2)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Pop3Limits"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pop3Limits:
    """Hard bounds on what one client can make the core hold or do.

    Attributes:
        max_line: octets of one command line, CRLF included. [RFC 2449] 4 caps client
            commands at 255; we accept up to 512 (long UTF-8 user names, an ``AUTH
            PLAIN`` initial response) and answer a longer line ``-ERR``.
        max_hard_line: octets of one line (a command or a SASL response). Input with no
            LF past this many octets is answered ``-ERR`` and the connection closed.
        max_errors: ``-ERR`` replies earned by the client (unknown commands, bad
            arguments, failed logons) before the core closes the connection.
        max_pending_output: queued response octets above which the core stops running
            pipelined commands and ``wants_read`` turns false, until the driver drains
            ``data_to_send()`` and calls ``resume()``.
        max_input_buffer: client octets held while paused (output backlog, a pending
            authentication); more and the core closes the connection.
    """

    max_line: int = 512
    max_hard_line: int = 8192
    max_errors: int = 20
    max_pending_output: int = 1024 * 1024
    max_input_buffer: int = 256 * 1024

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Pop3Limits.{name} must be a positive integer, got {value!r}")
        if self.max_line < 255:
            raise ValueError("Pop3Limits.max_line must be at least 255 ([RFC 2449] 4)")
        if self.max_hard_line < self.max_line:
            raise ValueError("Pop3Limits.max_hard_line must be at least max_line")
        if self.max_input_buffer < self.max_hard_line:
            raise ValueError("Pop3Limits.max_input_buffer must be at least max_hard_line")
