"""``mapi-cli import`` and ``mapi-cli export``: mbox, Maildir and .eml files.

``import FOLDER FILE...`` reads each FILE (an mbox file, a Maildir, an .eml file or a
directory of .eml files; :func:`clients.mailfiles.sniff` tells which) one message at a
time and creates the messages in FOLDER (:func:`clients.mail_transfer.import_message`).
``export FOLDER DEST`` writes FOLDER's messages, oldest first, to a directory of .eml
files or to one mbox file. Both draw a progress bar on a terminal (or with
``--progress``) and end with a summary: how many messages, and each one skipped with
its reason. Problems with the inputs (a missing file, a file that is not mail) are
found before anything is imported, one line each. docs/import-export.md has the rules.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from clients.cli_folders import Context, resolve
from clients.cli_format import UsageError
from clients.cli_safety import printable
from clients.cli_transfer import Progress, want_progress
from clients.mail_transfer import (
    CHUNK,
    export_message,
    folder_entries,
    import_message,
    max_message_bytes,
)
from clients.mailfiles import (
    Kind,
    MailFileError,
    MboxSplitter,
    datetime_from_filetime,
    eml_files,
    eml_name,
    filetime_from_datetime,
    maildir_files,
    mbox_entry,
    ns_from_filetime,
    parse_from_line,
    sniff,
    status_read,
    to_crlf,
)
from mapi.model import errors

#: Skipped messages listed in the text summary (``--json`` lists every one).
SHOWN_SKIPS: Final = 20
#: Errors after which every further message would fail the same way: the command stops.
_FATAL = (errors.NoAccess, errors.NotEnoughDisk, errors.LogonFailed)


@dataclass(slots=True)
class Item:
    """One message read from a source, or the reason it could not be."""

    source: str
    raw: bytes | None
    size: int
    delivered: int | None = None
    read: bool = False
    #: Input bytes consumed up to the end of this message (for the progress bar).
    consumed: int = 0


@dataclass(slots=True)
class Summary:
    """What a command did: a count and the messages skipped, with reasons."""

    done: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    stopped: str | None = None

    def skip(self, source: str, reason: str) -> None:
        self.skipped.append({"source": source, "reason": reason})

    def lines(self, head: str) -> str:
        out = [head if not self.skipped else f"{head}; skipped {len(self.skipped)}:"]
        for skip in self.skipped[:SHOWN_SKIPS]:
            out.append(f"  {printable(skip['source'])}: {printable(skip['reason'])}")
        if len(self.skipped) > SHOWN_SKIPS:
            out.append(f"  ... and {len(self.skipped) - SHOWN_SKIPS} more (--json lists all)")
        if self.stopped:
            out.append(f"stopped: {printable(self.stopped)}")
        return "\n".join(out)


def _check_sources(names: list[str]) -> list[tuple[Path, Kind]]:
    """Every source and its kind; problems are printed one line each and stop the
    command before anything is imported."""
    found, problems = [], []
    for name in names:
        path = Path(name)
        try:
            found.append((path, sniff(path)))
        except MailFileError as exc:
            problems.append(str(exc))
    for problem in problems[:-1]:
        print(f"mapi-cli: {printable(problem)}", file=sys.stderr)
    if problems:
        raise UsageError(problems[-1] + ("" if len(problems) == 1 else " (nothing imported)"))
    return found


def _source_size(path: Path, kind: Kind) -> int:
    if kind is Kind.MAILDIR:
        return sum(f.size for f in maildir_files(path))
    if kind is Kind.EML_DIR:
        return sum(f.size for f in eml_files([path]))
    return path.stat().st_size


async def _items(path: Path, kind: Kind, limit: int) -> AsyncIterator[Item]:
    """The messages of one source, one at a time (an mbox file is read in chunks)."""
    if kind is Kind.MBOX:
        async for item in _mbox_items(path, limit):
            yield item
        return
    files = maildir_files(path) if kind is Kind.MAILDIR else eml_files([path])
    consumed = 0
    for mail in files:
        consumed += mail.size
        raw = None
        if mail.size <= limit:
            raw = await trio.Path(mail.path).read_bytes()
            raw = to_crlf(raw) if kind is Kind.MAILDIR else raw
        read = mail.read if mail.read is not None else bool(raw and status_read(raw))
        yield Item(str(mail.path), raw, mail.size, mail.delivered, read, consumed)


async def _mbox_items(path: Path, limit: int) -> AsyncIterator[Item]:
    splitter = MboxSplitter(limit)
    consumed = 0
    async with await trio.open_file(path, "rb") as file:
        while True:
            chunk = await file.read(CHUNK)
            messages = splitter.feed(chunk) if chunk else splitter.end()
            consumed += len(chunk)
            for message in messages:
                _, when = parse_from_line(message.from_line)
                raw = None if message.raw is None else to_crlf(message.raw)
                yield Item(
                    f"{path} #{message.index}",
                    raw,
                    message.size,
                    None if when is None else filetime_from_datetime(when),
                    bool(raw and status_read(raw)),
                    consumed,
                )
            if not chunk:
                return


async def cmd_import(ctx: Context, args: argparse.Namespace) -> int:
    """``import FOLDER FILE...``."""
    sources = _check_sources(args.files)
    target = await resolve(ctx, args.folder)
    limit = await max_message_bytes(ctx.store)
    total = sum(_source_size(path, kind) for path, kind in sources)
    bar = Progress("import", total) if want_progress(ctx.progress, total) else None
    summary = Summary()
    done_before = 0
    try:
        for path, kind in sources:
            async for item in _items(path, kind, limit):
                await _import_one(ctx, target.folder, item, limit, summary)
                if bar is not None:
                    bar.update(done_before + item.consumed)
                if summary.stopped:
                    break
            if summary.stopped:
                break
            done_before += _source_size(path, kind)
    except MailFileError as exc:  # a source that changed since it was checked
        summary.stopped = str(exc)
    finally:
        if bar is not None:
            bar.finish()
    head = f"imported {summary.done} message(s) into {target.path}"
    ctx.emit(
        {"folder": target.path, "imported": summary.done, "skipped": summary.skipped,
         "stopped": summary.stopped},
        summary.lines(head),
    )  # fmt: skip
    return 1 if summary.skipped or summary.stopped else 0


async def _import_one(ctx: Context, folder: Any, item: Item, limit: int, summary: Summary) -> None:
    if item.raw is None:
        summary.skip(item.source, f"too large ({item.size} bytes; the server takes {limit})")
        return
    if not item.raw.strip():
        summary.skip(item.source, "empty message")
        return
    try:
        await import_message(folder, item.raw, delivered=item.delivered, read=item.read)
    except _FATAL as exc:
        summary.skip(item.source, str(exc))
        summary.stopped = str(exc)
        return
    except errors.MapiError as exc:  # MimeLimitExceeded (too complex), TooBig...
        summary.skip(item.source, str(exc))
        return
    summary.done += 1


# --- export -----------------------------------------------------------------------------


def _export_format(dest: str, wanted: str | None) -> str:
    """``eml`` or ``mbox``: as asked, else from DEST (an existing directory or a name
    without ``.mbox``: eml; ``*.mbox``: mbox). Checks DEST before anything is read.

    Raises:
        UsageError: DEST cannot take the export.
    """
    path = Path(dest)
    fmt = wanted or ("mbox" if dest.endswith(".mbox") and not path.is_dir() else "eml")
    if fmt == "mbox":
        if path.is_dir():
            raise UsageError(f"{dest} is a directory; give a file name for the mbox")
        if os.path.lexists(path):
            raise UsageError(f"{dest} exists; export to a new file")
    elif path.exists() and not path.is_dir():
        raise UsageError(f"{dest} exists and is not a directory")
    elif path.is_dir() and any(path.glob("*.eml")):
        raise UsageError(f"{dest} already holds .eml files; export into an empty or new directory")
    return fmt


def _write_eml(path: Path, raw: bytes, delivered: int | None) -> None:
    """A new file (never overwriting), mode 600, its time the delivery time."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(raw)
    if delivered is not None:
        ns = ns_from_filetime(delivered)
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(path, ns=(ns, ns))


def _partial_mbox(dest: Path) -> tuple[int, str]:
    """A new private temporary file beside ``dest`` that takes its name at the end."""
    try:
        return tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:64]}.", suffix=".part")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(dest)) from None


def _publish(partial: str, dest: Path) -> None:
    """Give the finished mbox its name, never replacing a file that appeared meanwhile."""
    try:
        os.link(partial, dest)
    except FileExistsError:
        raise UsageError(f"{dest} appeared meanwhile; nothing was written to it") from None
    finally:
        os.unlink(partial)


async def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    """``export FOLDER DEST [--format eml|mbox]``."""
    fmt = _export_format(args.dest, args.format)
    dest = Path(args.dest)
    source = await resolve(ctx, args.folder)
    entries = await folder_entries(source.folder)
    total = sum(e.size for e in entries)
    bar = Progress("export", total) if want_progress(ctx.progress, total) else None
    summary = Summary()
    partial: str | None = None
    out: Any = None
    if fmt == "eml":
        await trio.to_thread.run_sync(lambda: dest.mkdir(mode=0o700, exist_ok=True))
    else:
        fd, partial = await trio.to_thread.run_sync(_partial_mbox, dest)
        out = trio.wrap_file(os.fdopen(fd, "wb"))
    try:
        done = 0
        for number, entry in enumerate(entries, 1):
            try:
                exported = await export_message(ctx.store, entry.entry_id)
            except errors.MapiError as exc:
                summary.skip(f"message {number} ({entry.entry_id.hex()})", str(exc))
                continue
            summary.done += 1
            if out is not None:
                when = datetime_from_filetime(exported.delivered or 0)
                await out.write(mbox_entry(exported.raw, exported.sender, when))
            else:
                path = dest / eml_name(summary.done)
                await trio.to_thread.run_sync(_write_eml, path, exported.raw, exported.delivered)
            done += entry.size
            if bar is not None:
                bar.update(done)
        if out is not None and partial is not None:
            await out.aclose()
            await trio.to_thread.run_sync(_publish, partial, dest)
            partial = None
    finally:
        if out is not None and partial is not None:  # failed or interrupted
            with trio.CancelScope(shield=True):
                await out.aclose()
            with contextlib.suppress(OSError):
                os.unlink(partial)
        if bar is not None:
            bar.finish()
    head = f"exported {summary.done} message(s) from {source.path} to {args.dest} ({fmt})"
    ctx.emit(
        {"folder": source.path, "dest": args.dest, "format": fmt, "exported": summary.done,
         "skipped": summary.skipped},
        summary.lines(head),
    )  # fmt: skip
    return 1 if summary.skipped else 0


def add_mailfile_commands(command: Any) -> None:
    """The ``import`` and ``export`` subcommands (``command`` makes one, as in
    :func:`clients.cli.build_parser`)."""
    cmd = command(
        "import", "import messages from mbox files, Maildirs and .eml files into a folder"
    )
    cmd.add_argument("folder")
    cmd.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="an mbox file, a Maildir, an .eml file or a directory of .eml files",
    )
    cmd = command("export", "export a folder's messages to .eml files or an mbox file")
    cmd.add_argument("folder")
    cmd.add_argument(
        "dest",
        metavar="DEST",
        help="a directory (created if missing) for .eml files, or a new *.mbox file",
    )
    cmd.add_argument(
        "--format",
        choices=["eml", "mbox"],
        help="default: mbox when DEST ends in .mbox, else eml",
    )
