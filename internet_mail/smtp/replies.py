"""Reading SMTP replies (RFC 5321 4.2), sans-IO: bytes in, :class:`Reply` values out.

A reply is one or more lines ``ddd-text`` ending with a line ``ddd text`` (or ``ddd``)
with the same code. :class:`ReplyReader` buffers what it is fed and hands out complete
replies; it bounds the line length and the number of lines of one reply, and raises
:class:`ReplyError` for anything that is not a reply (the client then drops the
connection: a peer that says nonsense is not one to send mail through). An enhanced
status code (RFC 3463, ``5.1.1``) at the start of the text is split out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: Longest reply line we read (RFC 5321 4.5.3.1.5 allows 512 with the CRLF; peers
#: write longer ones).
MAX_LINE: Final = 2048
#: Most lines of one reply (an EHLO reply lists the extensions, one a line).
MAX_LINES: Final = 100

_ENHANCED: Final = re.compile(rb"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class ReplyError(Exception):
    """The peer sent something that is not an SMTP reply, or one beyond the limits."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    #: The text of each line (without code and separator), decoded leniently.
    lines: tuple[str, ...]
    #: The enhanced status code of the first line (``"5.1.1"``), or "".
    enhanced: str = ""

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class ReplyReader:
    """Feed bytes with :meth:`feed`, take replies with :meth:`next_reply`."""

    def __init__(self, *, max_line: int = MAX_LINE, max_lines: int = MAX_LINES) -> None:
        self._buffer = bytearray()
        self._lines: list[tuple[int, bytes]] = []
        self._max_line = max_line
        self._max_lines = max_lines

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" not in self._buffer and len(self._buffer) > self._max_line:
            raise ReplyError("reply line too long")

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None when more bytes are needed.

        Raises:
            ReplyError: malformed, over-long, or too many lines.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line:
                    raise ReplyError("reply line too long")
                return None
            if end + 1 > self._max_line:
                raise ReplyError("reply line too long")
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            if len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345":
                raise ReplyError(f"not a reply line: {line[:40]!r}")
            code = int(line[:3])
            sep = line[3:4]
            if sep not in (b"", b" ", b"-"):
                raise ReplyError(f"not a reply line: {line[:40]!r}")
            if self._lines and self._lines[0][0] != code:
                raise ReplyError("reply lines with different codes")
            self._lines.append((code, line[4:]))
            if len(self._lines) > self._max_lines:
                raise ReplyError("reply with too many lines")
            if sep != b"-":
                lines, self._lines = self._lines, []
                texts = tuple(t.decode("utf-8", "replace") for _, t in lines)
                match = _ENHANCED.match(lines[0][1])
                enhanced = ""
                if match and match.group(1) == line[:1]:
                    enhanced = b".".join(match.groups()).decode()
                return Reply(code, texts, enhanced)

    @property
    def buffered(self) -> int:
        """Bytes read but not yet part of a reply (after a 220 to STARTTLS: must be 0)."""
        return len(self._buffer)


__all__ = ["MAX_LINE", "MAX_LINES", "Reply", "ReplyError", "ReplyReader"]
