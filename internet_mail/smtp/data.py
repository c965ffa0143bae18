"""Message framing: the ``DATA`` terminator, ``BDAT`` chunks, and the checks that keep
one connection from carrying a second message hidden in the first.

Theory of operation (RFC 5321 4.1.1.4, 4.5.2; RFC 3030). Only ``<CRLF>.<CRLF>`` ends
``DATA``: :class:`DataReader` searches for exactly those five bytes (the ``DATA``
command's own CRLF counts as the first two, so ``.<CRLF>`` right away is an empty
message). Every other form a smuggling attack relies on (``<LF>.<LF>``, ``<CR>.<CR>``,
``<LF>.<CR><LF>``, ``<CR><LF>.<LF>``, ``<CR><LF>.<CR>``) is not an end, and contains a
bare CR or bare LF, which :func:`check_message` refuses *after* the real end: the whole
of what the client sent, first and "hidden" message alike, is one refused transaction,
so it never becomes two messages here nor, once relayed, anywhere downstream. ``BDAT``
content is length-framed and goes through the same :func:`check_message`, so both
paths accept and refuse the same bytes.

Memory is bounded: past ``max_message_size`` the reader keeps only the last four bytes
(enough to find the terminator) and the message is refused with 552 5.3.4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TERMINATOR = b"\r\n.\r\n"
_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is refused: the reply to send after its end."""

    code: int
    enhanced: str
    text: str


TOO_BIG = Refusal(552, "5.3.4", "Message too big for system")


def check_message(
    data: bytes, *, max_line: int, max_header_count: int, max_header_bytes: int
) -> Refusal | None:
    """The framing and limit checks on a whole message (DATA after unstuffing is not
    needed: a dot does not change line endings or the header section).

    Returns:
        ``None`` when the message is acceptable, else the :class:`Refusal`.
    """
    if _BARE_LF.search(data) or _BARE_CR.search(data):
        return Refusal(550, "5.6.11", "Bare CR or LF in message: only CRLF line endings allowed")
    if data and not data.endswith(b"\r\n"):
        # Only reachable through BDAT: the last line must end with CRLF (RFC 3030 2).
        return Refusal(550, "5.6.11", "Message does not end with CRLF")
    lines = data.split(b"\r\n")
    if max(map(len, lines), default=0) > max_line:
        return Refusal(550, "5.6.0", f"Message line longer than {max_line} octets")
    count = size = 0
    for line in lines:
        if not line:
            break
        size += len(line) + 2
        if line[:1] not in (b" ", b"\t"):
            count += 1
        if count > max_header_count:
            return Refusal(552, "5.3.4", "Too many header fields")
        if size > max_header_bytes:
            return Refusal(552, "5.3.4", "Header section too big")
    return None


def unstuff(raw: bytes) -> bytes:
    """Remove the leading dot of each line (RFC 5321 4.5.2). ``raw`` holds CRLF lines."""
    if b"\r\n." not in raw and not raw.startswith(b"."):
        return raw
    lines = raw.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


class DataReader:
    """Collects one ``DATA`` message up to ``<CRLF>.<CRLF>``.

    Feed bytes with :meth:`feed`; it returns ``None`` while the end is not seen, else the
    bytes after the terminator (the next pipelined commands). Then :attr:`message` is
    the dot-unstuffed message, or ``None`` when it was too big.
    """

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._buffer = bytearray(b"\r\n")  # the DATA command's CRLF: a line starts here
        self._scan = 0
        self.too_big = False
        self.message: bytes | None = None

    def feed(self, data: bytes | bytearray) -> bytes | None:
        """Take bytes; returns what follows the terminator once it is found."""
        self._buffer += data
        end = self._buffer.find(_TERMINATOR, self._scan)
        if end < 0:
            # Allow for the message, its stuffing dots and the two-byte prefix.
            if len(self._buffer) > self._max_size + self._max_size // 8 + 16:
                self.too_big = True
                del self._buffer[:-4]
            self._scan = max(0, len(self._buffer) - 4)
            return None
        rest = bytes(self._buffer[end + len(_TERMINATOR) :])
        if not self.too_big:
            raw = bytes(self._buffer[2 : end + 2])
            message = unstuff(raw)
            if len(message) > self._max_size:
                self.too_big = True
            else:
                self.message = message
        self._buffer = bytearray()
        return rest


class ChunkReader:
    """Collects ``BDAT`` chunks (RFC 3030): exact octet counts, no terminator, no
    stuffing. Past ``max_size`` the bytes are counted but dropped."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._parts = bytearray()
        self.too_big = False
        self.remaining = 0

    def start_chunk(self, size: int) -> None:
        """A ``BDAT size`` command: the next ``size`` octets are message bytes."""
        self.remaining = size
        if len(self._parts) + size > self._max_size:
            self.too_big = True

    def feed(self, data: bytes | bytearray) -> bytes:
        """Take up to ``remaining`` octets from ``data``; returns the unused rest."""
        take = min(self.remaining, len(data))
        if not self.too_big:
            self._parts += data[:take]
        self.remaining -= take
        return bytes(data[take:])

    @property
    def size(self) -> int:
        """Octets kept so far."""
        return len(self._parts)

    def message(self) -> bytes:
        """The message so far."""
        return bytes(self._parts)
