"""Modified UTF-7 mailbox names ([RFC 3501] section 5.1.3).

IMAP4rev1 clients name mailboxes in a variant of UTF-7: printable US-ASCII (0x20-0x7e)
stands for itself except ``&``, written ``&-``; any other run of characters is encoded
as UTF-16BE, then base64 with ``,`` in place of ``/`` and no padding, between ``&`` and
``-``. IMAP4rev2 and ``UTF8=ACCEPT`` clients use UTF-8 instead; the session picks.

``decode`` is strict (the RFC forbids ``&`` runs that encode printable ASCII, adjacent
encoded runs, padding and non-zero trailing bits) and raises ``ValueError`` on a
malformed name, so every name has one spelling and ``encode(decode(x)) == x``.
"""

from __future__ import annotations

import binascii

__all__ = ["decode", "encode"]


def _b64(chunk: str) -> str:
    raw = chunk.encode("utf-16-be", "surrogatepass")
    return binascii.b2a_base64(raw, newline=False).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    """Encode a Unicode mailbox name to modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            if pending:
                out.append("&" + _b64("".join(pending)) + "-")
                pending = []
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append("&" + _b64("".join(pending)) + "-")
    return "".join(out)


def decode(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; ``ValueError`` when it is malformed."""
    out: list[str] = []
    i = 0
    n = len(name)
    last_encoded_end = -1
    while i < n:
        ch = name[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError("mailbox name has a character outside printable US-ASCII")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated &-sequence in mailbox name")
        body = name[i + 1 : end]
        if not body:
            out.append("&")
            i = end + 1
            continue
        if i == last_encoded_end:
            raise ValueError("adjacent encoded runs in mailbox name")
        if any(c not in _ALPHABET for c in body) or len(body) % 4 == 1:
            raise ValueError("bad base64 in mailbox name")
        padded = body.replace(",", "/") + "=" * (-len(body) % 4)
        raw = binascii.a2b_base64(padded)
        if len(raw) % 2:
            raise ValueError("odd UTF-16 length in mailbox name")
        text = raw.decode("utf-16-be", "strict")
        if _b64(text) != body:
            raise ValueError("non-canonical base64 in mailbox name")
        if any(0x20 <= ord(c) <= 0x7E for c in text):
            raise ValueError("encoded run holds printable US-ASCII")
        out.append(text)
        i = end + 1
        last_encoded_end = i
    return "".join(out)


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
