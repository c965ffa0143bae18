"""Text in Internet mail: charsets and code pages, header words, parameters, folding.

Theory of operation
-------------------
Reading ([RFC 2047], [RFC 2231], [RFC 6532]): :func:`decode_header_text` turns a raw
header value, as :class:`email.parser.BytesParser` leaves it (8-bit bytes kept as
``surrogateescape`` code points), into clean text. Raw 8-bit bytes are read as UTF-8
(RFC 6532 headers) or, failing that, as windows-1252; encoded words are decoded with
their charset, and an unknown charset or broken encoding falls back the same way
instead of failing. Every string given to the MAPI side passes :func:`clean`, which
removes what a ``PT_UNICODE`` value may not hold (NUL, lone surrogates), so the result
always passes :func:`mapi.model.properties.validate`.

Charsets map to Windows code pages for ``PR_INTERNET_CPID`` ([MS-OXCMAIL] 2.1.3.1.3)
through :data:`CHARSET_CPIDS`; :func:`text_codec` accepts only text encodings known
to Python, so a hostile charset name (``zlib``, ``undefined``) never reaches a codec.

Writing: :func:`encode_words` makes RFC 2047 encoded words (UTF-8, base 64) for
non-ASCII text, :func:`fold` folds a header field at 78 columns where it can, and
:func:`param` writes a parameter, in RFC 2231 form (``name*0*=utf-8''...``) when the
value is not plain short ASCII. Everything written is deterministic: the same input
gives the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from typing import Final
from urllib.parse import quote

#: MIME charset (by Python codec name) -> Windows code page ([MS-OXCMAIL] 2.1.3.1.3).
_CODEC_CPIDS: Final = {
    "ascii": 20127,
    "utf-8": 65001,
    "utf-16": 1200,
    "utf-7": 65000,
    "iso8859-1": 28591,
    "iso8859-2": 28592,
    "iso8859-3": 28593,
    "iso8859-4": 28594,
    "iso8859-5": 28595,
    "iso8859-6": 28596,
    "iso8859-7": 28597,
    "iso8859-8": 28598,
    "iso8859-9": 28599,
    "iso8859-13": 28603,
    "iso8859-15": 28605,
    "cp1250": 1250,
    "cp1251": 1251,
    "cp1252": 1252,
    "cp1253": 1253,
    "cp1254": 1254,
    "cp1255": 1255,
    "cp1256": 1256,
    "cp1257": 1257,
    "cp1258": 1258,
    "koi8-r": 20866,
    "koi8-u": 21866,
    "shift_jis": 932,
    "cp932": 932,
    "euc_jp": 51932,
    "iso2022_jp": 50220,
    "gb2312": 936,
    "gbk": 936,
    "gb18030": 54936,
    "big5": 950,
    "euc_kr": 51949,
    "cp949": 949,
    "tis-620": 874,
    "cp874": 874,
}
#: Windows code page -> the MIME charset name we write for it.
CPID_CHARSETS: Final = {
    20127: "us-ascii", 65001: "utf-8", 1200: "utf-16", 28591: "iso-8859-1",
    28592: "iso-8859-2", 28593: "iso-8859-3", 28594: "iso-8859-4", 28595: "iso-8859-5",
    28596: "iso-8859-6", 28597: "iso-8859-7", 28598: "iso-8859-8", 28599: "iso-8859-9",
    28603: "iso-8859-13", 28605: "iso-8859-15", 1250: "windows-1250", 1251: "windows-1251",
    1252: "windows-1252", 1253: "windows-1253", 1254: "windows-1254", 1255: "windows-1255",
    1256: "windows-1256", 1257: "windows-1257", 1258: "windows-1258", 20866: "koi8-r",
    21866: "koi8-u", 932: "shift_jis", 51932: "euc-jp", 50220: "iso-2022-jp",
    936: "gbk", 54936: "gb18030", 950: "big5", 51949: "euc-kr", 949: "ks_c_5601-1987",
    874: "windows-874",
}  # fmt: skip
#: Codecs that are text encodings to Python but no charset of mail (or dangerous ones).
_NOT_CHARSETS: Final = frozenset(
    {"undefined", "unicode_escape", "raw_unicode_escape", "idna", "punycode", "mbcs",
     "oem", "palmos", "charmap"}
)  # fmt: skip
_WORD = re.compile(r"=\?([^?\s]{1,75})\?([QqBb])\?([^?\s]*)\?=")
_SPACE_BETWEEN_WORDS = re.compile(r"(=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=)\s+(?==\?)")
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN_SAFE = re.compile(r"[A-Za-z0-9!#$&+\-.^_`|~ ]*")


def text_codec(charset: str | None) -> str | None:
    """The Python codec name of MIME ``charset``, or None when it is unknown or not a
    text encoding we accept."""
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    if name in ("x-unknown", "unknown-8bit", "x-user-defined"):
        return None
    if name.startswith("ks_c_5601"):
        name = "cp949"
    elif name in ("windows-874", "tis620"):
        name = "cp874"
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def cpid_of(charset: str | None) -> int | None:
    """The code page of MIME ``charset``, or None when we have none for it."""
    codec = text_codec(charset)
    return None if codec is None else _CODEC_CPIDS.get(codec)


def charset_of(cpid: int | None) -> str:
    """The MIME charset name to write for code page ``cpid`` (utf-8 when unknown)."""
    return CPID_CHARSETS.get(cpid or 0, "utf-8")


def clean(text: str) -> str:
    """``text`` as a PT_UNICODE value may hold it: no NUL, no lone surrogates."""
    if _SURROGATES.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.replace("\x00", "\ufffd")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` in ``charset``; on failure UTF-8, then windows-1252 (which maps
    every byte but five; those become U+FFFD). Never raises."""
    codec = text_codec(charset)
    tries = [codec] if codec else []
    tries += [c for c in ("utf-8",) if c != codec]
    for name in tries:
        try:
            return clean(data.decode(name))
        except (UnicodeError, LookupError, ValueError):
            continue
    if codec:
        try:
            return clean(data.decode(codec, "replace"))
        except (UnicodeError, LookupError, ValueError):
            pass
    return clean(data.decode("cp1252", "replace"))


def fix_8bit(raw: str) -> str:
    """A header value from the parser with its raw 8-bit bytes (surrogate escapes)
    decoded as UTF-8, else windows-1252."""
    if not _SURROGATES.search(raw):
        return raw
    return decode_bytes(raw.encode("utf-8", "surrogateescape"), None)


def _decode_word(charset: str, encoding: str, payload: str) -> str | None:
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    try:
        if encoding in "Bb":
            padded = payload + "=" * (-len(payload) % 4)
            data = base64.b64decode(padded.encode("ascii"), validate=False)
        else:
            data = binascii.a2b_qp(payload.replace("_", " ").encode("ascii"), header=False)
    except (binascii.Error, ValueError, UnicodeError):
        return None
    return decode_bytes(data, charset)


def decode_words(text: str) -> str:
    """``text`` with its RFC 2047 encoded words decoded (whitespace between two adjacent
    encoded words dropped); a word that cannot be decoded stays as written."""
    if "=?" not in text:
        return text
    text = _SPACE_BETWEEN_WORDS.sub(r"\1", text)

    def one(match: re.Match[str]) -> str:
        decoded = _decode_word(match.group(1), match.group(2), match.group(3))
        return match.group(0) if decoded is None else decoded

    return _WORD.sub(one, text)


def unfold(raw: str) -> str:
    """A header value unfolded ([RFC 5322] 2.2.3) and stripped."""
    return re.sub(r"\r?\n(?=[ \t])", "", raw).replace("\r", "").replace("\n", "").strip()


def decode_header_text(raw: str) -> str:
    """An unstructured header value (Subject, Comments) as clean text."""
    return clean(decode_words(unfold(fix_8bit(raw))))


# --- writing --------------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` made safe for one header field: line breaks and controls become spaces."""
    return _CONTROL.sub(" ", text.replace("\r\n", " ")).strip()


def encode_words(text: str) -> list[str]:
    """RFC 2047 encoded words (UTF-8, base 64) for ``text``, each at most 75 characters;
    characters are never split between words."""
    words: list[str] = []
    chunk = ""
    for char in text:
        if len((chunk + char).encode("utf-8")) > 45:  # 45 bytes -> 60 base64 chars
            words.append(_b_word(chunk))
            chunk = ""
        chunk += char
    if chunk or not words:
        words.append(_b_word(chunk))
    return words


def _b_word(chunk: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(chunk.encode("utf-8")).decode("ascii") + "?="


def needs_encoding(text: str) -> bool:
    """True when ``text`` cannot go into a header as it is (non-ASCII, or a run that
    looks like an encoded word and would be decoded by a reader)."""
    return not text.isascii() or "=?" in text


def unstructured_words(text: str) -> list[str]:
    """The words of an unstructured header value ready for :func:`fold`."""
    text = one_line(text)
    if not text:
        return []
    units: list[str] = []
    run: list[str] = []  # words to encode together (the spaces between them kept)
    for word in text.split(" "):
        if needs_encoding(word) or len(word) > 76 or (run and not word):
            run.append(word)
            continue
        if run:
            units.extend(encode_words(" ".join(run)))
            run = []
        units.append(word)
    if run:
        units.extend(encode_words(" ".join(run)))
    return units


def fold(name: str, words: list[str]) -> bytes:
    """``Name: words`` folded at 78 columns between words, CRLF-terminated."""
    line = name + ":"
    lines: list[str] = []
    for word in words:
        if len(line) + 1 + len(word) > 78 and line.strip() and line != name + ":":
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def param(name: str, value: str) -> list[str]:
    """A ``; name=value`` parameter as folding units: quoted when plain short ASCII, else
    RFC 2231 percent-encoded UTF-8 in continuations of at most 60 characters."""
    value = one_line(value)
    if value.isascii() and len(value) <= 60 and _TOKEN_SAFE.fullmatch(value) is not None:
        return [f'{name}="{value}";']
    encoded = "utf-8''" + quote(value.encode("utf-8"), safe="")
    pieces = [encoded[i : i + 60] for i in range(0, len(encoded), 60)]
    # Never split a %XX escape between two continuations.
    fixed: list[str] = []
    carry = ""
    for piece in pieces:
        piece = carry + piece
        cut = piece.rfind("%", max(0, len(piece) - 2))
        carry = piece[cut:] if cut != -1 else ""
        fixed.append(piece[:cut] if cut != -1 else piece)
    if carry:
        fixed.append(carry)
    return [f"{name}*{i}*={piece};" for i, piece in enumerate(p for p in fixed if p)]


def params_words(head: str, params: list[list[str]]) -> list[str]:
    """A structured value ``head; p1; p2`` as folding units (the last ``;`` dropped)."""
    units = [head + (";" if params else "")]
    for group in params:
        units.extend(group)
    if params:
        units[-1] = units[-1].removesuffix(";")
    return units
