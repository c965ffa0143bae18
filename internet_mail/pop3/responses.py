"""POP3 response serialization ([RFC 1939] 3): status lines, multi-line responses.

A multi-line response is a status line, then lines each ending in CRLF where a line
starting with ``.`` gets a second ``.`` (byte-stuffing), then ``.`` CRLF. Messages are
sent with CRLF line endings whatever the store holds: ``normalize`` turns every bare LF
into CRLF, so the client never sees a line the terminator scan would misread.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["err", "multiline", "normalize", "ok", "stuff", "top"]

CRLF = b"\r\n"


def _clean(text: str) -> bytes:
    """Status text on one line (no CR, LF or NUL from a store's error message)."""
    out = text.encode("utf-8", "replace")
    for bad in (b"\r", b"\n", b"\x00"):
        out = out.replace(bad, b" ")
    return out


def ok(text: str = "") -> bytes:
    """``+OK text`` CRLF."""
    return b"+OK " + _clean(text) + CRLF if text else b"+OK" + CRLF


def err(text: str, code: str | None = None) -> bytes:
    """``-ERR [code] text`` CRLF ([RFC 2449] 8: response codes in brackets)."""
    prefix = b"-ERR [" + code.encode("ascii") + b"] " if code else b"-ERR "
    return prefix + _clean(text) + CRLF


def normalize(message: bytes) -> bytes:
    """The message with CRLF line endings, ending in CRLF (empty stays empty)."""
    if not message:
        return b""
    out = message.replace(CRLF, b"\n").replace(b"\n", CRLF)
    if not out.endswith(CRLF):
        out += CRLF
    return out


def stuff(body: bytes) -> bytes:
    """Byte-stuff CRLF-normalised ``body`` and append the terminating ``.`` CRLF."""
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(b"\r\n.", b"\r\n..") + b"." + CRLF


def multiline(status: str, lines: Iterable[bytes]) -> bytes:
    """``+OK status``, the lines (no CRLF in them), then the terminator."""
    return ok(status) + stuff(b"".join(line + CRLF for line in lines))


def top(message: bytes, count: int) -> bytes:
    """The header section, the blank line, and the first ``count`` lines of the body of
    CRLF-normalised ``message`` ([RFC 1939] 7, TOP). No blank line: all of it is header."""
    if message.startswith(CRLF):
        head_end = 0
    else:
        at = message.find(b"\r\n\r\n")
        if at < 0:
            return message
        head_end = at + 2
    body_start = head_end + 2
    end = body_start
    for _ in range(count):
        nl = message.find(CRLF, end)
        if nl < 0:
            end = len(message)
            break
        end = nl + 2
    return message[:end]
