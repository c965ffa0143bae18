"""What a message submission agent adds to a submitted message (RFC 6409 8), sans-IO.

A mail user agent may submit a message without ``Date:`` or ``Message-ID:`` (scripts
and some phones do); RFC 6409 8.2 and 8.3 let the submission server add them, and a
message without them is refused or scored as spam by many receivers. The caller gives
the clock and the randomness, so this module stays a pure function of its inputs.
"""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["complete_headers", "header_names"]

#: A header field name at the start of a line (RFC 5322 2.2: printable ASCII but ``:``).
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.M)


def _header_section(message: bytes) -> bytes:
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = message.find(separator)
        if end >= 0:
            return message[:end]
    return message


def header_names(message: bytes) -> set[str]:
    """The lower-cased names of the header fields of ``message``."""
    return {m.group(1).decode("ascii").lower() for m in _FIELD.finditer(_header_section(message))}


def complete_headers(message: bytes, *, now: datetime, domain: str, unique: str) -> bytes:
    """``message`` with ``Date:`` (``now``, which must be aware) and ``Message-ID:``
    (``<unique@domain>``) prepended when it has none; otherwise ``message`` unchanged,
    byte for byte."""
    names = header_names(message)
    added = b""
    if "date" not in names:
        added += b"Date: " + now.strftime("%a, %d %b %Y %H:%M:%S %z").encode("ascii") + b"\r\n"
    if "message-id" not in names:
        added += f"Message-ID: <{unique}@{domain}>\r\n".encode("ascii", "replace")
    return added + message
