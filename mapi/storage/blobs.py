"""Stream data held in files beside the mailbox database.

Theory of operation
-------------------
Data staged through a stream (:mod:`mapi.storage.staging`) is one file per holder
row of ``streams`` (``in_file = 1``), named by the row's id, in the mailbox's blob
directory (``<mailbox file>.blobs``). Writing a MiB to a file costs far less than
writing it into chunk rows, which SQLite writes twice (log, then database file) and
checkpoints (the figures: docs/benchmarks.md).

Ids come from ``AUTOINCREMENT``, so a file name is never reused. The row is committed
first, the file created after it: a file whose row does not exist is garbage, and
:meth:`BlobDir.remove_orphans` deletes those when the mailbox opens.

**Lifetime.** A row is dropped by SQL (a deleted message's trigger, a released
staging row); the trigger ``streams_drop_file`` then records its id in
``dead_files``, in the same transaction. After each commit :meth:`BlobDir.sweep`
unlinks the files of those ids (a rollback leaves the files alone); their
``dead_files`` rows go in the next write transaction (:meth:`BlobDir.forget_swept`).
A crash between the two only repeats an unlink.

**Durability.** Staged files are written without fsync. The save that links one
(:meth:`mapi.storage.staging.StagedData.link_into`) fsyncs the file and the
directory before its own commit, which fsyncs the log: a save that returned has its
attachment's bytes on disk.

**Descriptors.** Files are opened through one cache per mailbox
(:meth:`BlobDir.descriptor`, at most :data:`_OPEN_FILES` open, least recently used
closed first), for writing as for reading: a client cannot hold a descriptor per
pending value (hundreds of unsaved attachments would exhaust the process's limit).

**Threading.** Like everything of a mailbox, the methods run in worker threads under
its lock; the cache of open files is only touched there.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
from collections import OrderedDict
from pathlib import Path

from mapi.model import errors

log = logging.getLogger(__name__)

#: Files kept open (for reading and writing) per mailbox; the least recently used goes.
_OPEN_FILES = 32
#: Ids swept per commit (the rest wait for the next one).
_SWEEP_BATCH = 256


def os_error(exc: OSError, doing: str) -> errors.MapiError:
    """The MAPI error for a failed file operation: a full disk is NotEnoughDisk."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.NotEnoughDisk("the data directory's disk is full")
    return errors.CallFailed(f"{doing}: {exc.strerror or exc}")


class BlobDir:
    """The blob directory of one mailbox (created on first use, mode 0700)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Open files: id -> (descriptor, writable), least recently used first.
        self._open: OrderedDict[int, tuple[int, bool]] = OrderedDict()
        #: Ids unlinked since the last write transaction, whose dead_files rows go next.
        self.swept: list[int] = []
        self._entry_synced = False
        self._closed = False

    def file(self, blob_id: int) -> Path:
        return self.path / str(blob_id)

    def descriptor(self, blob_id: int, *, writable: bool = False, create: bool = False) -> int:
        """An open descriptor of a file (kept in the cache: never close it). ``create``
        makes the file, empty (and the directory on first use).

        Raises:
            InvalidObject: the mailbox is closed. CorruptStore: the file is missing.
                NotEnoughDisk, CallFailed: it cannot be opened or made.
        """
        if self._closed:  # an object outliving its mailbox: no descriptor left behind
            raise errors.InvalidObject("mailbox is closed")
        cached = self._open.get(blob_id)
        if cached is not None and not create and (cached[1] or not writable):
            self._open.move_to_end(blob_id)
            return cached[0]
        flags = os.O_RDWR if writable or create else os.O_RDONLY
        try:
            if create:
                self.path.mkdir(mode=0o700, exist_ok=True)
                flags |= os.O_CREAT | os.O_TRUNC
            fd = os.open(self.file(blob_id), flags, 0o600)
        except FileNotFoundError as exc:
            raise errors.CorruptStore(f"stream data {blob_id} is missing") from exc
        except OSError as exc:
            raise os_error(exc, "cannot open stream data") from exc
        self._close(blob_id)
        self._open[blob_id] = (fd, writable or create)
        while len(self._open) > _OPEN_FILES:
            os.close(self._open.popitem(last=False)[1][0])
        return fd

    def sync(self, blob_id: int) -> None:
        """Make a file and its directory entry durable (before a save links it); the
        first time, the directory's own entry in the mailboxes directory too."""
        try:
            os.fsync(self.descriptor(blob_id, writable=True))
            dirs = [self.path] if self._entry_synced else [self.path, self.path.parent]
            for directory in dirs:
                dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise os_error(exc, "cannot sync stream data") from exc
        self._entry_synced = True

    def pread(self, blob_id: int, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of a file from ``offset``."""
        fd = self.descriptor(blob_id)
        try:
            return read_exactly(fd, offset, size)
        except OSError as exc:
            raise os_error(exc, "cannot read stream data") from exc

    # -- removing ------------------------------------------------------------------------

    def sweep(self, conn: sqlite3.Connection) -> None:
        """Unlink the files of dropped rows (call after a commit, outside a transaction).
        Never raises for a file already gone."""
        ids = [
            int(row[0])
            for row in conn.execute(f"SELECT id FROM dead_files LIMIT {_SWEEP_BATCH}")
            if int(row[0]) not in self.swept
        ]
        for blob_id in ids:
            self._unlink(blob_id)
        self.swept.extend(ids)

    def forget_swept(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: drop the dead_files rows of unlinked files."""
        if self.swept:
            marks = ", ".join("?" * len(self.swept))
            conn.execute(f"DELETE FROM dead_files WHERE id IN ({marks})", self.swept)
            self.swept = []

    def remove_orphans(self, conn: sqlite3.Connection) -> None:
        """Unlink every file whose row does not exist (a crash between a row's drop and
        the sweep, or between a staging row's rollback and its file's removal)."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:  # unreadable: a disk space leak, never a reason to refuse
            log.warning("cannot list %s for stray stream data: %s", self.path, exc)
            return
        live = {int(r[0]) for r in conn.execute("SELECT id FROM streams WHERE in_file = 1")}
        for name in names:
            if not (name.isascii() and name.isdigit()) or int(name) not in live:
                with contextlib.suppress(OSError):
                    os.unlink(self.path / name)

    def _close(self, blob_id: int) -> None:
        cached = self._open.pop(blob_id, None)
        if cached is not None:
            os.close(cached[0])

    def _unlink(self, blob_id: int) -> None:
        self._close(blob_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file(blob_id))

    def close(self) -> None:
        """Close every file kept open; no file can be opened after this."""
        self._closed = True
        while self._open:
            os.close(self._open.popitem()[1][0])

    def remove(self) -> None:
        """Delete the directory and every file in it (the mailbox is being deleted)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def read_exactly(fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes from ``offset``, or fewer at the end of the file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]  # a short read before the end (rare: signals, some file systems)
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def write_all(fd: int, offset: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` at ``offset``."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def copy_range(src: int, dst: int, length: int) -> None:
    """Copy the first ``length`` bytes of one file into another (in the kernel where it
    can: no bytes pass through Python)."""
    done = 0
    try:
        while done < length and hasattr(os, "copy_file_range"):  # Linux only
            moved = os.copy_file_range(src, dst, length - done, done, done)
            if moved == 0:
                break
            done += moved
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while done < length:
        block = os.pread(src, min(1 << 20, length - done), done)
        if not block:
            break
        write_all(dst, done, block)
        done += len(block)
