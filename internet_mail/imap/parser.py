"""The incremental command parser: byte chunks in, complete commands out.

Theory of operation ([RFC 9051] 2.2, 4.3, 7.5; [RFC 7888] LITERAL+; [RFC 3516]):

A command is a line, or a line ending in a literal announcement (``{n}``, ``{n+}`` or
``~{n}``) followed by n bytes and more of the command. ``CommandParser`` keeps the bytes
it was fed until a piece is complete, then:

- a line that announces a *synchronizing* literal yields ``ContinuationNeeded``: the
  session sends ``+ ...`` and the client sends the n bytes (a non-synchronizing
  ``{n+}`` is sent at once);
- a line that ends the command yields ``CommandReceived`` (parsed by
  ``grammar.parse_command``) or ``CommandRejected`` (the tagged answer to give).

Limits (``ImapLimits``) are checked on the announced sizes, before anything is kept:
a line longer than ``max_line`` gives ``ProtocolViolation`` (answer ``* BYE``, close:
the stream cannot be resynchronised); a literal above its limit is refused with
``NO [TOOBIG]`` (APPEND) or ``BAD``, and its bytes, if the client sends them anyway
(``{n+}``), are counted and dropped, never stored. So memory is bounded by
``max_line + max_command + max_append`` whatever the input.

Two other modes serve the session: ``expect_line()`` (the next line is a SASL response,
``LineReceived``) and ``expect_done()`` (IDLE: the next line should be ``DONE``,
``IdleDone``). After a ``ProtocolViolation`` the parser ignores further input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto

from . import commands as c
from .config import ImapLimits
from .grammar import ParseError, parse_command, read_tag

__all__ = [
    "CommandParser",
    "CommandReceived",
    "CommandRejected",
    "ContinuationNeeded",
    "IdleDone",
    "LineReceived",
    "ParserEvent",
    "ProtocolViolation",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParserEvent:
    """Something the parser found in the client's bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReceived(ParserEvent):
    """A complete, well-formed command."""

    command: c.Command


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRejected(ParserEvent):
    """A complete command the core refuses: answer ``<tag> <status> [<code>] <text>``
    (``tag`` is ``*`` when the line had no valid one)."""

    tag: str
    status: str
    text: str
    code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContinuationNeeded(ParserEvent):
    """The client announced a synchronizing literal and waits for ``+``."""

    tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LineReceived(ParserEvent):
    """In ``expect_line`` mode: one line (a SASL response), CRLF stripped."""

    line: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleDone(ParserEvent):
    """In ``expect_done`` mode: the line that ends IDLE; ``ok`` false when it was not
    ``DONE`` (answered ``BAD``)."""

    ok: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolViolation(ParserEvent):
    """The stream cannot go on (a line over the limit): answer ``* BYE <text>``, close."""

    text: str


class _Mode(Enum):
    COMMAND = auto()
    LINE = auto()
    DONE = auto()
    DEAD = auto()


_LITERAL = re.compile(rb"(~?)\{(\d+)(\+?)\}\Z")
_MAX_DIGITS = 20


class CommandParser:
    """Frames and parses the client's byte stream.

    Use: ``events = parser.receive_data(chunk)``; each event is handled in order.
    """

    def __init__(self, limits: ImapLimits | None = None) -> None:
        self.limits = limits or ImapLimits()
        self._buf = bytearray()
        self._mode = _Mode.COMMAND
        self._command = bytearray()  # the command so far (lines and literals)
        self._literal_need = 0  # bytes of a literal still to come
        self._discard = False  # the current command is refused: drop its bytes
        self._refusal: CommandRejected | None = None
        self._tag = "*"
        self._is_append = False

    @property
    def buffered(self) -> int:
        """Bytes held: the unparsed input and the command being assembled."""
        return len(self._buf) + len(self._command)

    @property
    def dead(self) -> bool:
        return self._mode is _Mode.DEAD

    def expect_line(self) -> None:
        """The next line is a continuation (SASL) response, not a command."""
        self._mode = _Mode.LINE

    def expect_done(self) -> None:
        """The client is idling ([RFC 2177]): the next line should be ``DONE``."""
        self._mode = _Mode.DONE

    def receive_data(self, data: bytes) -> list[ParserEvent]:
        """Feed bytes from the client; returns the events they complete."""
        if self._mode is _Mode.DEAD:
            return []
        events: list[ParserEvent] = []
        self._buf += data
        while self._step(events):
            pass
        return events

    # -- framing ----------------------------------------------------------------------------

    def _step(self, events: list[ParserEvent]) -> bool:
        """Consume one piece of the buffer; False when more bytes are needed."""
        if self._literal_need:
            if self._discard:
                # Counted and dropped: an oversize literal the client sent anyway.
                dropped = min(self._literal_need, len(self._buf))
                del self._buf[:dropped]
                self._literal_need -= dropped
                return self._literal_need == 0
            if len(self._buf) < self._literal_need:
                return False
            self._command += self._buf[: self._literal_need]
            del self._buf[: self._literal_need]
            self._literal_need = 0
            return True
        end = self._buf.find(b"\n", 0, self.limits.max_line + 2)
        if end < 0:
            if len(self._buf) > self.limits.max_line:
                return self._violation(events, "line too long")
            return False
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.limits.max_line:
            return self._violation(events, "line too long")
        if self._mode is _Mode.LINE:
            self._mode = _Mode.COMMAND
            events.append(LineReceived(line=line))
            return True
        if self._mode is _Mode.DONE:
            self._mode = _Mode.COMMAND
            events.append(IdleDone(ok=line.upper() == b"DONE"))
            return True
        self._line(line, events)
        return True

    def _violation(self, events: list[ParserEvent], text: str) -> bool:
        self._mode = _Mode.DEAD
        self._buf.clear()
        self._command.clear()
        events.append(ProtocolViolation(text=text))
        return False

    def _line(self, line: bytes, events: list[ParserEvent]) -> None:
        first = not self._command and not self._discard
        if first:
            self._tag = read_tag(line) or "*"
            self._is_append = _command_word(line) == "APPEND"
        m = _LITERAL.search(line) if line.endswith(b"}") else None
        if not self._discard:
            self._command += line + b"\r\n"
            if len(self._command) > self.limits.max_command + (
                self.limits.max_append if self._is_append else 0
            ):
                self._refuse("BAD", "command too long")
        if m is None:
            self._finish(events)
            return
        digits = m[2]
        size = int(digits) if len(digits) <= _MAX_DIGITS else 1 << 64
        sync = not m[3]
        if not self._discard:
            limit = self.limits.max_append if self._is_append else self.limits.max_literal
            if size > limit:
                if self._is_append:
                    self._refuse("NO", f"message too big (limit {limit})", "TOOBIG")
                else:
                    self._refuse("BAD", f"literal too big (limit {limit})")
        if self._discard and sync:
            # The client sends nothing more of this command until it sees "+".
            self._finish(events)
            return
        self._literal_need = size
        if sync:
            events.append(ContinuationNeeded(tag=self._tag))

    def _refuse(self, status: str, text: str, code: str | None = None) -> None:
        self._discard = True
        self._command.clear()
        self._refusal = CommandRejected(tag=self._tag, status=status, text=text, code=code)

    def _finish(self, events: list[ParserEvent]) -> None:
        if self._discard:
            assert self._refusal is not None
            events.append(self._refusal)
        elif self._command.strip() == b"":
            events.append(CommandRejected(tag="*", status="BAD", text="empty command"))
        else:
            try:
                command = parse_command(bytes(self._command), self.limits)
            except ParseError as exc:
                events.append(
                    CommandRejected(tag=self._tag, status=exc.status, text=exc.text, code=exc.code)
                )
            else:
                events.append(CommandReceived(command=command))
        self._command.clear()
        self._discard = False
        self._refusal = None
        self._tag = "*"
        self._is_append = False


def _command_word(line: bytes) -> str:
    words = line.split(b" ", 3)
    if len(words) < 2:
        return ""
    word = words[1].upper()
    if word == b"UID" and len(words) > 2:
        word = words[2].upper()
    return word.decode("ascii", "replace")
