"""The IMAP core's limits: a frozen, self-validating configuration (STYLE.md 2.2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ImapLimits:
    """Hard bounds on what one client can make the core hold or do.

    Attributes:
        max_line: bytes in one line (up to CRLF or a literal); longer: ``* BYE``, close.
        max_command: bytes of one command, its lines and its literals together, APPEND's
            message excepted; more: tagged ``BAD``.
        max_literal: one literal's size outside APPEND; more: tagged ``BAD``.
        max_append: APPEND's message size (advertised as ``APPENDLIMIT=``); more:
            ``NO [TOOBIG]``.
        max_depth: parentheses nested in one command (search keys, lists).
        max_args: list items, search keys, fetch items, flags in one command.
        max_ranges: ranges in one sequence set.
        max_pending_output: bytes the core queues for a client that does not read
            before it stops taking commands (the driver sees ``wants_read()`` false).
    """

    max_line: int = 64 * 1024
    max_command: int = 256 * 1024
    max_literal: int = 64 * 1024
    max_append: int = 32 * 1024 * 1024
    max_depth: int = 32
    max_args: int = 2000
    max_ranges: int = 1000
    max_pending_output: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ImapLimits.{name} must be a positive integer, got {value!r}")
        if self.max_line < 1024:
            raise ValueError("ImapLimits.max_line must be at least 1024 (RFC 9051 4)")
        if self.max_literal > self.max_command:
            raise ValueError("ImapLimits.max_literal must not exceed max_command")
