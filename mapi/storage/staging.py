"""Pending stream data staged in a file beside the mailbox as the client writes it.

Theory of operation
-------------------
Bytes written through a stream ([MS-OXCPRPT] RopWriteStream) become part of a message
only when the message is saved ([MS-OXCMSG] 3.1.4.3), in the save's one transaction.
Copying a large attachment into the database at the save would put all that work
between the client's save and its answer. A :class:`StagedData` instead writes the
bytes where they will stay while the client writes, and the save only *links* them
(:func:`mapi.storage.chunks.link`, one small row whatever the size):

- While the bytes fit in one chunk they stay in memory (most bodies never leave it:
  values up to :attr:`~mapi.model.limits.Limits.inline_value_bytes` are saved inline).
  Past that, it owns one ``streams`` row of kind
  :data:`~mapi.storage.schema.OWNER_STAGING` with ``in_file = 1``, and the bytes go
  to that row's file in the mailbox's blob directory (:mod:`mapi.storage.blobs`) with
  plain positioned writes: no transaction per write. (Version 3 mailboxes staged in
  chunk rows, about ten times the cost per MiB; their saved values keep those rows.)
- It is a :class:`~mapi.storage.propbag.TempData` to the rest of the store (same methods,
  same copy-on-write rule: once frozen by a bag it never changes, and a stream that
  keeps writing works on a :meth:`StagedData.copy`), so bags, snapshots and values
  treat it like any pending data.
- Lifetime: when the last reference to a StagedData goes, a finaliser (which may run
  on any thread, even inside another transaction) only queues its row id in
  :attr:`~mapi.storage.db.MailboxDB.staged_garbage`; :func:`collect` (called where
  objects are released) or the next staging transaction :func:`drop` s it, or turns it
  into an :data:`~mapi.storage.schema.OWNER_DATA` row when a saved value links to it
  (a trigger drops that one when its last link goes). A dropped row's file is
  unlinked after the commit (:meth:`mapi.storage.blobs.BlobDir.sweep`).
  After a crash, :func:`recover` does the same for every staging row when the mailbox
  is opened. A crash before the save thus leaves nothing visible: staging rows belong
  to no message.

**Durability.** Staging writes and transactions do not wait for the disk (staging
transactions commit with ``synchronous=NORMAL``, see
:meth:`~mapi.storage.db.MailboxDB.transaction`): nothing was promised about pending
data, which a temporary file did not keep across a crash either. The save that links
the data fsyncs its file and the blob directory first, then commits with
``synchronous=FULL``. So a save that returned has all its bytes on disk.

Every method runs in a worker thread under the mailbox lock (the stream's methods
take it), like all SQLite work.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mapi.model import errors
from mapi.storage import blobs, chunks
from mapi.storage.propbag import TempData
from mapi.storage.schema import OWNER_DATA, OWNER_STAGING

if TYPE_CHECKING:  # a type only: the database object wires the modules that use this one
    from mapi.storage.db import MailboxDB

#: Most row ids one ``IN (...)`` statement names (SQLite allows 32766 parameters).
_DROP_BATCH = 500


def drop(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    """Release the staging rows ``ids``: those a saved value links to become data
    holders, the others go with their chunks. Runs inside a write transaction."""
    pending = list(ids)
    for start in range(0, len(pending), _DROP_BATCH):
        batch = pending[start : start + _DROP_BATCH]
        marks = ", ".join("?" * len(batch))
        conn.execute(
            f"UPDATE streams SET owner_kind = {OWNER_DATA}, owner_id = id"
            f" WHERE owner_kind = {OWNER_STAGING} AND id IN ({marks})"
            " AND EXISTS (SELECT 1 FROM streams AS l WHERE l.data_id = streams.id)",
            batch,
        )
        conn.execute(
            f"DELETE FROM streams WHERE owner_kind = {OWNER_STAGING} AND id IN ({marks})",
            batch,
        )


def collect(db: MailboxDB) -> None:
    """Release the staging rows of stream data that died (queued by finalisers) now, in
    a staging transaction of their own; call it where objects are released, in a worker
    thread, so the cost of dropping abandoned data lands on the release that abandoned
    it, not on someone's next write. Never raises: on failure the rows stay queued."""
    if not db.staged_garbage:
        return
    garbage = _take(db.staged_garbage)
    try:
        with db.transaction(staging=True) as conn:
            drop(conn, garbage)
    except errors.MapiError:  # a closed mailbox, a full disk: try again later
        db.staged_garbage.extend(garbage)


class StagedData(TempData):
    """Pending bytes of one value, in a file of the mailbox's blob directory once they
    outgrow one chunk (see the module docstring). Positions and lengths are in bytes.

    It shares :class:`TempData`'s interface and rules (``length``, ``frozen``,
    ``read_at``, ``write_at``, ``truncate``, ``copy``, ``reader``, ``read_all``), not
    its storage: the spooled file of the base class is never created.
    """

    def __init__(self, db: MailboxDB, chunk_size: int, tag: int = 0) -> None:
        # No super().__init__(): that would create the spooled file this class replaces.
        self._db = db
        self._chunk = chunk_size
        self._tag = tag
        #: The bytes while they fit in one chunk and no file exists (None after).
        self._memory: bytearray | None = bytearray()
        #: The staging row (named after it: its file), made when the bytes outgrow memory.
        self._row: int | None = None
        self.length = 0
        self.frozen = False

    # -- reading ---------------------------------------------------------------------------

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``."""
        if offset >= self.length or size <= 0:
            return b""
        size = min(size, self.length - offset)
        if self._memory is not None:
            return bytes(self._memory[offset : offset + size])
        assert self._row is not None
        data = self._db.conn.blobs.pread(self._row, offset, size)
        if len(data) != size:
            raise errors.CorruptStore("staged stream data is shorter than written")
        return data

    # -- writing ---------------------------------------------------------------------------

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset``, zero-filling a gap past the end. If the disk
        refuses it, the length is unchanged (bytes inside it may be partly new).

        Raises:
            CallFailed: the data is frozen. NotEnoughDisk, CallFailed: the write failed.
        """
        if self.frozen:
            raise errors.CallFailed("temporary data is frozen")
        end = offset + len(data)
        if self._memory is not None and end <= self._chunk:
            if offset > self.length:
                self._memory.extend(bytes(offset - self.length))
            self._memory[offset:end] = data
            self.length = len(self._memory)
            return
        fd = self._writable()
        if not data and end > self.length:  # growth only: the gap reads as zeros
            self._resize(fd, end)
            return
        try:
            blobs.write_all(fd, offset, data)
        except OSError as exc:
            if end > self.length:  # bytes past the length may have landed: cut them off
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self.length)
            raise blobs.os_error(exc, "cannot write stream data") from exc
        self.length = max(self.length, end)

    def _writable(self) -> int:
        """A writable descriptor of the file (the blob cache's: never close it), creating
        the staging row and the file, with the bytes held in memory, on first use. If
        that fails, the bytes stay in memory and nothing else changed."""
        blob_dir = self._db.conn.blobs  # raises NeedsWorker on the event loop
        if self._row is not None:
            return blob_dir.descriptor(self._row, writable=True)
        with self._transaction() as conn:
            row = self._new_row(conn)
        try:
            fd = blob_dir.descriptor(row, create=True)
            if self._memory:
                blobs.write_all(fd, 0, self._memory)
        except BaseException as exc:
            self._db.staged_garbage.append(row)  # its drop unlinks the file, if made
            if isinstance(exc, OSError):
                raise blobs.os_error(exc, "cannot write stream data") from exc
            raise
        self._row, self._memory = row, None
        weakref.finalize(self, self._db.staged_garbage.append, row)
        return fd

    def _resize(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise blobs.os_error(exc, "cannot resize stream data") from exc
        self.length = size

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A staging transaction that first releases the staging rows of dead objects."""
        with self._db.transaction(staging=True) as conn:
            garbage = _take(self._db.staged_garbage)
            try:
                drop(conn, garbage)
                yield conn
            except BaseException:
                self._db.staged_garbage.extend(garbage)  # rolled back: not dropped yet
                raise

    def _new_row(self, conn: sqlite3.Connection) -> int:
        number = conn.execute(
            f"SELECT coalesce(max(owner_id), 0) + 1 FROM streams WHERE owner_kind = {OWNER_STAGING}"
        ).fetchone()[0]
        row = conn.execute(
            "INSERT INTO streams(owner_kind, owner_id, tag, length, chunk_size, in_file)"
            " VALUES (?, ?, ?, 0, ?, 1) RETURNING id",
            (OWNER_STAGING, number, self._tag, self._chunk),
        ).fetchone()[0]
        return int(row)

    def truncate(self, size: int) -> None:
        """Set the length to ``size`` (zero-filling when growing)."""
        if self.frozen:
            raise errors.CallFailed("temporary data is frozen")
        if size == self.length:
            return
        if self._memory is not None and size <= self._chunk:
            if size < self.length:
                del self._memory[size:]
            else:
                self._memory.extend(bytes(size - self.length))
            self.length = size
            return
        self._resize(self._writable(), size)

    def flush(self) -> None:
        """Put the bytes in the file (before a save links it): call it before handing
        the data to a bag. Idempotent."""
        self._writable()

    # -- saving and copying ------------------------------------------------------------------

    def link_into(self, conn: sqlite3.Connection, owner_kind: int, owner_id: int, tag: int) -> bool:
        """Save this data as the value ``tag`` of an owner by linking its file, inside the
        caller's (save) transaction, once the file is on disk; False when it cannot be
        linked (another database, or not flushed), and the caller copies it instead."""
        if not self.frozen or self._row is None or self._db.conn is not conn:
            return False
        self._db.conn.blobs.sync(self._row)  # on disk before the commit that names it
        chunks.link(
            conn,
            owner_kind,
            owner_id,
            tag,
            data_id=self._row,
            length=self.length,
            chunk_size=self._chunk,
        )
        conn.execute("UPDATE streams SET length = ? WHERE id = ?", (self.length, self._row))
        return True

    def copy(self) -> StagedData:
        """A mutable copy (copy on write): the file copied in the kernel."""
        other = StagedData(self._db, self._chunk, self._tag)
        if self._memory is not None:
            other._memory = bytearray(self._memory)
        elif self.length:
            assert self._row is not None
            fd = other._writable()
            source = self._db.conn.blobs.descriptor(self._row)
            try:
                blobs.copy_range(source, fd, self.length)
            except OSError as exc:
                raise blobs.os_error(exc, "cannot copy stream data") from exc
        other.length = self.length
        return other

    def close(self) -> None:
        """Nothing to close: the row (and so its file) is released when the object dies."""


def _take(garbage: list[int]) -> list[int]:
    """Empty ``garbage`` and return what it held (list.pop is atomic under the GIL, so
    a finaliser appending on another thread loses nothing)."""
    out = []
    while garbage:
        out.append(garbage.pop())
    return out


__all__ = ["StagedData", "collect", "drop"]
