"""Chunked transfers between local files and MAPI streams, with a progress bar.

Attachments and long bodies never pass through memory whole: a file is read and
written to a :class:`~clients.api.Stream` one :data:`CHUNK` at a time (one round trip
per chunk), and downloads go the other way. :class:`Progress` draws a one-line bar
(percentage, bytes, rate) on stderr.
"""

from __future__ import annotations

import contextlib
import functools
import mimetypes
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import trio

from clients.api import Attachment, Message, Stream
from clients.cli_format import human_size
from clients.cli_safety import printable
from mapi.model import proptags as pt

#: Bytes per read/write round trip (the server takes up to 1 MiB per read).
CHUNK = 256 * 1024
#: Uploads at least this large get a progress bar when stderr is a terminal.
LARGE_FILE = 1024 * 1024


class Progress:
    """A tiny progress bar on one terminal line: ``name [#####.....]  45%  1.2/2.6 MiB``."""

    WIDTH = 24

    def __init__(
        self,
        label: str,
        total: int | None,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = printable(label)  # often an attachment's name: untrusted
        self.total = total
        self.out = out if out is not None else sys.stderr
        self.clock = clock
        self.start = clock()
        self.done = 0
        self._last_draw = -1.0
        self._last_len = 0

    def update(self, done: int) -> None:
        """Note ``done`` bytes transferred; redraws at most ten times a second."""
        self.done = done
        now = self.clock()
        if now - self._last_draw >= 0.1:
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        self._draw(self.clock())
        self.out.write("\n")
        self.out.flush()

    def _draw(self, now: float) -> None:
        self._last_draw = now
        elapsed = max(now - self.start, 1e-6)
        rate = f"{human_size(int(self.done / elapsed))}/s"
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * self.WIDTH)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            text = (
                f"{self.label} [{bar}] {int(fraction * 100):3d}%  "
                f"{human_size(self.done)}/{human_size(self.total)}  {rate}"
            )
        else:
            text = f"{self.label} {human_size(self.done)}  {rate}"
        pad = " " * max(self._last_len - len(text), 0)
        self._last_len = len(text)
        self.out.write("\r" + text + pad)
        self.out.flush()


def want_progress(forced: bool, size: int | None, threshold: int = 0) -> bool:
    """A bar when ``--progress`` was given, or on a terminal for transfers >= threshold."""
    if forced:
        return True
    return sys.stderr.isatty() and (size is None or size >= threshold)


async def upload_file(
    stream: Stream, path: Path, *, progress: bool, label: str | None = None
) -> int:
    """Write the file at ``path`` into ``stream`` chunk by chunk and commit; returns its size."""
    size = (await trio.Path(path).stat()).st_size
    bar = Progress(label or path.name, size) if want_progress(progress, size, LARGE_FILE) else None
    done = 0
    async with await trio.open_file(path, "rb") as file:
        while chunk := await file.read(CHUNK):
            await stream.write(chunk)
            done += len(chunk)
            if bar is not None:
                bar.update(done)
    await stream.commit()
    if bar is not None:
        bar.finish()
    return done


async def upload_text(stream: Stream, path: str) -> int:
    """Write a UTF-8 text file (``-``: stdin) into a PT_UNICODE stream as UTF-16LE."""
    written = 0
    if path == "-":
        source: Any = trio.wrap_file(sys.stdin)
        close = False
    else:
        source = await trio.open_file(path, encoding="utf-8", errors="replace")
        close = True
    try:
        while text := await source.read(CHUNK // 2):
            data = text.encode("utf-16-le")
            await stream.write(data)
            written += len(data)
    finally:
        if close:
            await source.aclose()
    await stream.commit()
    return written


async def attach_file(message: Message, path: Path, *, progress: bool) -> Attachment:
    """Add ``path`` to ``message`` as a by-value attachment (saved; the message is not)."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    session = message.session
    async with session.batch() as batch:
        attachment: Attachment = batch.add(message.create_attachment())
        batch.add(
            attachment.set_props(
                {
                    "PR_ATTACH_METHOD": pt.ATTACH_BY_VALUE,
                    "PR_ATTACH_LONG_FILENAME": path.name,
                    "PR_ATTACH_FILENAME": path.name,
                    "PR_ATTACH_MIME_TAG": mime,
                }
            )
        )
        stream: Stream = batch.add(
            attachment.open_stream("PR_ATTACH_DATA_BIN", write=True, create=True)
        )
    await upload_file(stream, path, progress=progress)
    await stream.release()
    await attachment.save()
    return attachment


class FileExists(Exception):
    """The file to save exists (or appeared meanwhile) and overwriting was not asked for."""


def _create_partial(target: str, mode: int) -> tuple[int, str]:
    """A new, private temporary file beside ``target``: (descriptor, path).

    ``mkstemp`` creates it with O_EXCL (never opening an existing file or following a
    symlink someone planted under a predictable name) and mode 0600; ``mode`` is
    applied to the descriptor, so the file never has wider rights under its final name.
    """
    directory = os.path.dirname(target) or "."
    try:
        fd, path = tempfile.mkstemp(
            dir=directory, prefix="." + os.path.basename(target)[:64] + ".", suffix=".part"
        )
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, target) from None
    os.fchmod(fd, mode)
    return fd, path


def _publish(partial: str, target: str, *, overwrite: bool) -> None:
    """Give the finished file its name: a rename when overwriting (which replaces a
    symlink at ``target`` rather than writing through it), otherwise a hard link, which
    fails if the name exists, so nothing is overwritten even by a file created while
    the download ran (filesystems without hard links: a check, then the rename).

    Raises:
        FileExists: ``target`` exists and ``overwrite`` is false.
    """
    if overwrite:
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)
    except FileExistsError:
        os.unlink(partial)
        raise FileExists(target) from None
    except OSError:  # no hard links here
        if os.path.lexists(target):
            os.unlink(partial)
            raise FileExists(target) from None
        os.replace(partial, target)
        return
    os.unlink(partial)


async def download(
    stream: Stream,
    target: str,
    *,
    progress: bool,
    label: str,
    mode: int = 0o600,
    overwrite: bool = False,
) -> int:
    """Copy ``stream`` to the file ``target`` (``-``: stdout) chunk by chunk.

    The data goes to a new temporary file beside ``target`` (mode ``mode``, 0600 by
    default: mail is private) that takes the final name once complete, so an
    interrupted download never leaves a truncated file under the final name, and an
    existing file (or symlink) is replaced only with ``overwrite``.

    Raises:
        FileExists: ``target`` exists and ``overwrite`` is false.
    """
    total = await stream.size()
    bar = Progress(label, total) if want_progress(progress, total) else None
    done = 0
    partial: str | None = None
    if target == "-":
        out: Any = trio.wrap_file(sys.stdout.buffer)
    else:
        fd, partial = await trio.to_thread.run_sync(_create_partial, target, mode)
        out = trio.wrap_file(os.fdopen(fd, "wb"))
    try:
        while chunk := await stream.read(CHUNK):
            await out.write(chunk)
            done += len(chunk)
            if bar is not None:
                bar.update(done)
        await out.flush()
        if partial is not None:
            await out.aclose()
            await trio.to_thread.run_sync(
                functools.partial(_publish, partial, target, overwrite=overwrite)
            )
            partial = None
    finally:
        if partial is not None:  # failed or interrupted: leave nothing behind
            with trio.CancelScope(shield=True):
                await out.aclose()
            with contextlib.suppress(OSError):
                os.unlink(partial)
    if bar is not None:
        bar.finish()
    return done
