"""Text from the server made safe for the terminal, and file names made safe for disk.

Subjects, bodies, names and file names come from other people (anyone who can send
mail). Written raw to a terminal, an ESC or a C1 control starts an escape sequence
(move the cursor, rewrite the title, OSC 52 to fill the clipboard, hide text), a
carriage return overwrites what was printed, and a bidi override shows text in another
order than it is stored ("Trojan Source"). :func:`printable` is the one place that
turns such characters into visible escapes (``\\x1b``, ``\\u202e``): every command
passes server text through it before printing, and :meth:`Context.write` passes its
whole output through it again, so a path that forgot cannot reach the terminal raw.

:func:`safe_json` does the same for ``--json`` output while keeping it exact: the
characters become JSON ``\\uXXXX`` escapes, which a JSON reader decodes back.

:func:`safe_filename` turns an attachment's name into one file name in the current
directory: no directories, no leading dot, no control characters, no reserved names.

Everything here is pure: strings in, strings out.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

#: Bidirectional formatting characters: embeddings, overrides, isolates and marks.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
#: Unicode categories escaped everywhere: controls (C0, DEL, C1), line and paragraph
#: separators (some terminals break lines on them) and lone surrogates (unprintable).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
_MAX_FILENAME_BYTES = 200
#: Names Windows reserves for devices (a file saved on a shared disk must not be one).
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_unsafe(char: str) -> bool:
    """True for a character that must never reach a terminal as it is."""
    return char in BIDI_CONTROLS or unicodedata.category(char) in _UNSAFE_CATEGORIES


def escape_char(char: str) -> str:
    """``\\n``, ``\\x1b``, ``\\u202e`` or ``\\U000e0001``: the character's code, Python-style."""
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` with every unsafe character shown as an escape.

    Args:
        text: any value (``str()`` of it is used).
        multiline: keep line feeds and tabs (a body, a block of output); a CR LF pair
            becomes a line feed. Otherwise those are escaped too (one-line fields).

    The result has no control character left (except ``\\n`` and ``\\t`` when
    ``multiline``), so applying it again changes nothing.
    """
    value = text if isinstance(text, str) else str(text)
    if multiline:
        value = value.replace("\r\n", "\n")
    if all(c.isprintable() for c in value):  # the common case: nothing to do
        return value
    keep = "\n\t" if multiline else ""
    return "".join(escape_char(c) if c not in keep and is_unsafe(c) else c for c in value)


def safe_json(data: Any, *, indent: int | None = 2, compact: bool = False) -> str:
    """JSON text of ``data`` (non-ASCII kept readable) with no unsafe character in it.

    ``json.dumps`` already escapes C0 controls; C1 controls, DEL, bidi controls and line
    separators become ``\\uXXXX`` escapes here, so the text is safe on a terminal and
    decodes to exactly the same data.
    """

    def default(obj: object) -> Any:
        if isinstance(obj, bytes):
            return obj.hex()
        return str(obj)

    separators = (",", ":") if compact else None
    text = json.dumps(
        data, indent=None if compact else indent, ensure_ascii=False, default=default,
        separators=separators,
    )  # fmt: skip
    if all(c.isprintable() or c in "\n " for c in text):
        return text
    # Outside strings JSON holds only ASCII, so every such character is inside a string.
    return "".join(_json_escape(c) if c != "\n" and is_unsafe(c) else c for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def safe_filename(name: object, fallback: str) -> str:
    """A file name to save an attachment called ``name`` under, in the current directory.

    The last component after any ``/`` or ``\\`` is kept (a sender's ``C:\\x\\a.pdf`` is
    ``a.pdf``); control, bidi and separator characters become ``_``; leading dots and
    spaces go (no hidden ``.bashrc``), trailing dots and spaces too; reserved device
    names get a ``_`` in front; over-long names are cut, keeping the extension. When
    nothing is left, ``fallback``.
    """
    text = "" if name is None else str(name)
    text = re.split(r"[/\\]", text)[-1]
    text = "".join("_" if is_unsafe(c) or c == "\x00" else c for c in text)
    text = text.lstrip(". ").rstrip(". ")
    if not text or set(text) <= {"_"}:
        return fallback
    if _RESERVED.match(text):
        text = "_" + text
    if len(text.encode("utf-8")) > _MAX_FILENAME_BYTES:
        stem, dot, ext = text.rpartition(".")
        if not dot or len(ext) > 16:
            stem, ext = text, ""
        budget = _MAX_FILENAME_BYTES - len(ext.encode("utf-8")) - (1 if ext else 0)
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
        text = f"{stem}.{ext}" if ext else stem
    return text
