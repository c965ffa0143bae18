"""Mail files on disk: mbox, Maildir and ``.eml``, read and written without a server.

Theory of operation
-------------------
Nothing here talks to the store; :mod:`clients.mail_transfer` moves what this module
reads into a folder and back. The readers never hold more than one message in memory:

- **mbox** (the ``mboxrd`` variant, the one that round-trips): :class:`MboxSplitter` is
  an incremental splitter, bytes in, :class:`MboxMessage` out, in the style of a
  sans-IO protocol core. A message starts at a ``From `` line at the start of the file
  or after an empty line (the separator line, "From_", names the envelope sender and
  the delivery time in ``asctime`` form). Inside a message, a line ``>From `` with one
  or more ``>`` loses one (``>From `` quoting, both ways: :func:`mbox_entry` adds one to
  every ``>*From `` line); the empty line a writer puts after each message is dropped.
  A message larger than the limit is counted, not kept (``raw`` is None, ``size`` says
  how large it was), and so is an over-long line, so hostile input costs bounded memory.
- mbox files use Unix line ends: a reader turns bare LF into CRLF, the Internet form
  the server keeps for mail that arrived by SMTP (:func:`to_crlf`), and a writer turns
  CRLF back into LF (:func:`to_lf`); a message that arrived with CRLF line ends
  therefore comes back byte for byte through an mbox.
- **Maildir**: ``cur/`` and ``new/`` (``tmp/`` holds unfinished deliveries and is
  skipped), one message per file; a message in ``new/`` is unread, one in ``cur/`` is
  read when its info (``:2,FLAGS``) has ``S``. The file's modification time is its
  delivery time. Line ends are turned into CRLF as for mbox.
- **.eml**: one message per file, kept byte for byte; a directory that is not a Maildir
  is read as a directory of ``*.eml`` files (what an export to ``eml`` writes).

Errors the user can fix (a missing file, a file that is not mail) raise
:class:`MailFileError`, whose text is one line naming the file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

#: A ``From `` line longer than this is not a separator (real ones are short).
MAX_FROM_LINE: Final = 4096
#: mboxrd quoting: ``From `` after zero or more ``>`` at the start of a line.
_QUOTED: Final = re.compile(rb">*From ")
_BARE_LF: Final = re.compile(rb"(?<!\r)\n")
#: A header field name and its colon ([RFC 5322] 2.2), or a folded continuation line.
_HEADER_START: Final = re.compile(rb"[!-9;-~]{1,998}:")
_ASCTIME: Final = "%a %b %d %H:%M:%S %Y"
_MAILDIR_SEEN: Final = re.compile(r"[:!]2,([A-Za-z]*)$")
#: Sniffed at the start of a file to tell mbox from .eml.
SNIFF_BYTES: Final = 4096
#: FILETIME of 1970-01-01 (100-ns intervals since 1601).
_UNIX_EPOCH_FILETIME: Final = 116444736000000000


class MailFileError(Exception):
    """A file or directory that cannot be read as mail (one line, naming it)."""


class Kind(Enum):
    """What an import source is."""

    EML = "eml"
    MBOX = "mbox"
    MAILDIR = "maildir"
    EML_DIR = "eml directory"


@dataclass(frozen=True, slots=True, kw_only=True)
class MboxMessage:
    """One message of an mbox file.

    ``raw`` is the message with its quoting undone and its line ends as in the file
    (:func:`to_crlf` makes them CRLF), or None when it was larger than the limit.
    """

    #: 1 for the first message of the file.
    index: int
    #: The separator line without its line end (``From sender date``).
    from_line: bytes
    raw: bytes | None
    #: The message's size in the file (also when it was too large to keep).
    size: int


class MboxSplitter:
    """An incremental mboxrd splitter: :meth:`feed` bytes, then :meth:`end`.

    Args:
        max_message_bytes: messages larger than this are counted, not kept.

    Raises (from :meth:`feed` and :meth:`end`):
        MailFileError: the data does not start with a ``From `` line (blank lines
            aside): not an mbox file.
    """

    def __init__(self, max_message_bytes: int) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self._partial = bytearray()  # the line being received
        self._long_line = False  # the partial line was too long: passed on as content
        self._from_line: bytes | None = None  # None: before the first separator
        self._body = bytearray()
        self._size = 0
        self._oversize = False
        self._pending_blank: bytes | None = None  # an empty line that may end the message
        self._count = 0
        self._out: list[MboxMessage] = []

    def feed(self, data: bytes) -> list[MboxMessage]:
        """Take the next bytes of the file; returns the messages they completed."""
        view = memoryview(data)
        start = 0
        while start < len(view):
            end = data.find(b"\n", start)
            if end < 0:
                self._more(view[start:])
                break
            self._more(view[start : end + 1])
            self._line_done()
            start = end + 1
        out, self._out = self._out, []
        return out

    def end(self) -> list[MboxMessage]:
        """The end of the file: returns the last message(s)."""
        if self._partial or self._long_line:
            self._line_done()
        self._finish()
        out, self._out = self._out, []
        return out

    # -- lines -----------------------------------------------------------------------------

    def _more(self, piece: memoryview) -> None:
        """Bytes of the current line (its line end included when it came)."""
        if self._long_line:
            self._content(bytes(piece))
            return
        self._partial += piece
        if len(self._partial) > MAX_FROM_LINE:  # no separator: message content
            line = bytes(self._partial)
            self._partial.clear()
            self._long_line = True
            self._content(line[1:] if line.startswith(b">") and _QUOTED.match(line) else line)

    def _line_done(self) -> None:
        if self._long_line:
            self._long_line = False
            return
        line = bytes(self._partial)
        self._partial.clear()
        if line.startswith(b"From ") and (self._from_line is None or self._at_blank()):
            self._finish()
            self._from_line = line.rstrip(b"\r\n")
            return
        if line in (b"\n", b"\r\n"):
            if self._pending_blank is not None:
                self._content(b"")  # the held-back one is content after all
            if self._from_line is not None:
                self._pending_blank = line
            return
        if line.startswith(b">") and _QUOTED.match(line):
            line = line[1:]
        self._content(line)

    def _at_blank(self) -> bool:
        """Does the current message end with an empty line (or is it empty)?"""
        return self._pending_blank is not None or self._size == 0

    def _content(self, data: bytes) -> None:
        """Message bytes after the separator (an empty line held back goes first)."""
        if self._from_line is None:
            if data.strip():
                raise MailFileError("not an mbox file (it does not start with a 'From ' line)")
            return
        if self._pending_blank is not None:
            blank, self._pending_blank = self._pending_blank, None
            self._append(blank)
        self._append(data)

    def _append(self, data: bytes) -> None:
        self._size += len(data)
        if self._oversize:
            return
        if self._size > self.max_message_bytes:
            self._oversize = True
            self._body = bytearray()  # let the memory go at once
            return
        self._body += data

    def _finish(self) -> None:
        """The current message is complete (its trailing empty line is the writer's)."""
        self._pending_blank = None
        if self._from_line is None:
            return
        self._count += 1
        raw = None if self._oversize else bytes(self._body)
        self._out.append(
            MboxMessage(index=self._count, from_line=self._from_line, raw=raw, size=self._size)
        )
        self._from_line = None
        self._body = bytearray()
        self._size = 0
        self._oversize = False


# --- line ends, From_ lines, quoting ----------------------------------------------------


def to_crlf(raw: bytes) -> bytes:
    """Bare LF line ends as CRLF (CRLF and lone CR stay)."""
    return _BARE_LF.sub(b"\r\n", raw)


def to_lf(raw: bytes) -> bytes:
    """CRLF line ends as LF (the Unix form of mbox and Maildir)."""
    return raw.replace(b"\r\n", b"\n")


def mbox_entry(raw: bytes, sender: str, delivered: dt.datetime) -> bytes:
    """One message as an mboxrd entry: its From_ line, the message with LF line ends
    and ``>From `` quoting, and the empty line that ends it."""
    body = to_lf(raw)
    if not body.endswith(b"\n"):
        body += b"\n"
    lines = body.splitlines(keepends=True)
    quoted = b"".join(b">" + line if _QUOTED.match(line) else line for line in lines)
    return from_line(sender, delivered) + quoted + b"\n"


def from_line(sender: str, delivered: dt.datetime) -> bytes:
    """``From sender asctime`` with its LF; the sender is ``MAILER-DAEMON`` when it is
    not a plain address (no spaces or control characters, one ``@``)."""
    address = sender if _plain_address(sender) else "MAILER-DAEMON"
    utc = delivered.astimezone(dt.UTC)
    when = utc.strftime("%a %b ") + f"{utc.day:2d} " + utc.strftime("%H:%M:%S %Y")  # asctime
    return f"From {address} {when}\n".encode("ascii")


def _plain_address(text: str) -> bool:
    return (
        text.isascii()
        and text.count("@") == 1
        and len(text) <= 254
        and all(33 <= ord(c) < 127 for c in text)
    )


def parse_from_line(line: bytes) -> tuple[str, dt.datetime | None]:
    """(sender, delivery time in UTC or None) of an mbox From_ line."""
    text = line.decode("latin-1").rstrip("\r\n")
    rest = text[5:] if text.startswith("From ") else text
    sender, _, date = rest.strip().partition(" ")
    words = date.split()
    # asctime, possibly with a time zone or "remote from" after it; some writers put
    # the zone before the year: try the first five words, then without the fifth.
    for candidate in (words[:5], words[:4] + words[5:6]):
        try:
            when = dt.datetime.strptime(" ".join(candidate), _ASCTIME)
        except ValueError:
            continue
        return sender, when.replace(tzinfo=dt.UTC)
    return sender, None


# --- times ------------------------------------------------------------------------------


def filetime_from_ns(ns: int) -> int:
    """FILETIME of a time in nanoseconds since 1970 (``st_mtime_ns``)."""
    return _UNIX_EPOCH_FILETIME + ns // 100


def ns_from_filetime(filetime: int) -> int:
    """Nanoseconds since 1970 of a FILETIME (for ``os.utime(ns=...)``)."""
    return (filetime - _UNIX_EPOCH_FILETIME) * 100


def filetime_from_datetime(when: dt.datetime) -> int:
    """FILETIME of an aware datetime (whole microseconds)."""
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _UNIX_EPOCH_FILETIME + micros * 10


def datetime_from_filetime(filetime: int) -> dt.datetime:
    """UTC datetime of a FILETIME (whole microseconds)."""
    micros = (filetime - _UNIX_EPOCH_FILETIME) // 10
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)


# --- sources ----------------------------------------------------------------------------


def sniff(path: Path) -> Kind:
    """What ``path`` is: a Maildir, a directory of .eml files, an mbox or an .eml file.

    Raises:
        MailFileError: missing, unreadable, empty, or not mail (one line naming it).
    """
    try:
        if path.is_dir():
            if (path / "cur").is_dir() or (path / "new").is_dir():
                return Kind.MAILDIR
            if any(p.is_file() for p in path.glob("*.eml")):
                return Kind.EML_DIR
            raise MailFileError(f"{path}: not a mailbox (no cur/ or new/, no .eml files)")
        with path.open("rb") as file:
            head = file.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise MailFileError(f"{path}: no such file or directory") from None
    except PermissionError:
        raise MailFileError(f"{path}: permission denied") from None
    except OSError as exc:
        raise MailFileError(f"{path}: {exc.strerror or exc}") from None
    return sniff_bytes(head, str(path))


def sniff_bytes(head: bytes, name: str) -> Kind:
    """Tell an mbox (a ``From `` line first) from a message (a header field first)."""
    text = head.lstrip(b"\r\n")
    if not text:
        raise MailFileError(f"{name}: empty file")
    if text.startswith(b"From "):
        return Kind.MBOX
    if _HEADER_START.match(text):
        return Kind.EML
    raise MailFileError(
        f"{name}: not a mailbox file "
        "(neither an mbox 'From ' line nor a message header at its start)"
    )


@dataclass(frozen=True, slots=True)
class MailFile:
    """One message file of a Maildir or an .eml directory."""

    path: Path
    #: True or False from Maildir flags; None when the file says nothing (.eml).
    read: bool | None
    size: int
    #: The file's modification time, as a FILETIME: its delivery time.
    delivered: int


def maildir_files(root: Path) -> Iterator[MailFile]:
    """The messages of a Maildir, ``new/`` and ``cur/``, oldest first (by modification
    time, then name); ``tmp/`` and dot files are skipped."""
    found: list[tuple[int, str, MailFile]] = []
    for sub in ("new", "cur"):
        directory = root / sub
        if not directory.is_dir():
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                info = entry.stat()
                flags = _MAILDIR_SEEN.search(entry.name)
                read = sub == "cur" and flags is not None and "S" in flags[1]
                mtime = info.st_mtime_ns
                item = MailFile(Path(entry.path), read, info.st_size, filetime_from_ns(mtime))
                found.append((mtime, entry.name, item))
    found.sort(key=lambda t: (t[0], t[1]))
    return (item for _, _, item in found)


def eml_files(paths: list[Path]) -> Iterator[MailFile]:
    """The .eml files named or in the directories named, directories sorted by name."""
    for path in paths:
        members = sorted(p for p in path.glob("*.eml") if p.is_file()) if path.is_dir() else [path]
        for member in members:
            info = member.stat()
            yield MailFile(member, None, info.st_size, filetime_from_ns(info.st_mtime_ns))


def eml_name(number: int) -> str:
    """The file name of the ``number``-th message of an export (1-based)."""
    return f"{number:06d}.eml"


def status_read(raw: bytes) -> bool:
    """Does the header of ``raw`` mark it read: ``Status:`` with ``R`` (``RO``: read,
    old), as mbox readers write it? (Only the first 1 MiB of the header is looked at.)"""
    for line in raw[: 1 << 20].splitlines():
        if not line.strip():
            return False
        if line[:7].lower() == b"status:":
            return b"R" in line[7:].upper()
    return False
