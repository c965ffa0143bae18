"""Pending stream data staged in the mailbox database as the client writes it.

Theory of operation
-------------------
Bytes written through a stream ([MS-OXCPRPT] RopWriteStream) become part of a message
only when the message is saved ([MS-OXCMSG] 3.1.4.3), in the save's one transaction.
Spooling them to a temporary file and copying that file into chunk rows at the save
put all the database work of a large attachment (about 4 ms per MiB here) between
the client's save and its answer. A :class:`StagedData` instead writes the chunk rows
while the client writes, and the save only *links* them
(:func:`mapi.storage.chunks.link`, one small row whatever the size):

- It owns one ``streams`` row of kind :data:`~mapi.storage.schema.OWNER_STAGING` and
  its chunk rows. Whole chunks go to the database as they fill, in one short
  transaction per write call; the last, partial chunk waits in memory (at most
  ``chunk_size`` bytes, as a spooled temporary file kept it in memory) until it fills,
  or until :meth:`StagedData.flush` (the stream's commit) writes it as a short row.
  Rewrites inside the rows are read-modify-write of the chunks they touch.
- It is a :class:`~mapi.propbag.TempData` to the rest of the store (same methods,
  same copy-on-write rule: once frozen by a bag it never changes, and a stream that
  keeps writing works on a :meth:`StagedData.copy`), so bags, snapshots and values
  treat it like any pending data.
- Lifetime: when the last reference to a StagedData goes, a finaliser (which may run
  on any thread, even inside another transaction) only queues its row id in
  :attr:`~mapi.storage.db.MailboxDB.staged_garbage`; :func:`collect` (called where
  objects are released) or the next staging transaction :func:`drop` s it, or turns it
  into an :data:`~mapi.storage.schema.OWNER_DATA` row when a saved value links to it
  (a trigger drops that one when its last link goes).
  After a crash, :func:`recover` does the same for every staging row when the mailbox
  is opened. A crash before the save thus leaves nothing visible: staging rows belong
  to no message.

**Durability.** Staging transactions commit without waiting for the disk
(``synchronous=NORMAL``, see :meth:`~mapi.storage.db.MailboxDB.transaction`): nothing
was promised about pending data, which a temporary file did not keep across a crash
either. The save that links the data commits with ``synchronous=FULL``: its fsync of
the write-ahead log covers every frame written before its own, among them the staged
chunks, and a chunk already checkpointed into the database file was synced there
before the log could be reused. So a save that returned has all its bytes on disk.

Every method runs in a worker thread under the mailbox lock (the stream's methods
take it), like all SQLite work.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mapi import errors
from mapi.propbag import TempData
from mapi.storage import chunks
from mapi.storage.schema import OWNER_DATA, OWNER_STAGING

if TYPE_CHECKING:
    from mapi.storage.db import MailboxDB

#: Most row ids one ``IN (...)`` statement names (SQLite allows 32766 parameters).
_DROP_BATCH = 500
#: Zeros written per step when a write leaves a gap past the end.
_ZERO_BLOCK = 1 << 20


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


def recover(conn: sqlite3.Connection) -> None:
    """Release every staging row (left by a process that ended) and any data holder
    that nothing links to. Runs inside a write transaction when a mailbox is opened."""
    conn.execute(
        f"UPDATE streams SET owner_kind = {OWNER_DATA}, owner_id = id"
        f" WHERE owner_kind = {OWNER_STAGING}"
        " AND EXISTS (SELECT 1 FROM streams AS l WHERE l.data_id = streams.id)"
    )
    conn.execute(f"DELETE FROM streams WHERE owner_kind = {OWNER_STAGING}")
    conn.execute(
        f"DELETE FROM streams WHERE owner_kind = {OWNER_DATA}"
        " AND NOT EXISTS (SELECT 1 FROM streams AS l WHERE l.data_id = streams.id)"
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
    """Pending bytes of one value, in chunk rows of the mailbox (see the module
    docstring). Positions and lengths are in bytes.

    It shares :class:`TempData`'s interface and rules (``length``, ``frozen``,
    ``read_at``, ``write_at``, ``truncate``, ``copy``, ``reader``, ``read_all``), not
    its storage: the spooled file of the base class is never created.
    """

    def __init__(self, db: MailboxDB, chunk_size: int, tag: int = 0) -> None:
        # No super().__init__(): that would create the spooled file this class replaces.
        self._db = db
        self._chunk = chunk_size
        self._tag = tag
        #: The staging row, created with the first chunk written (None before).
        self._row: int | None = None
        #: Bytes in whole chunk rows [0, _rows); always a multiple of the chunk size.
        self._rows = 0
        #: The last, partial chunk: bytes [_rows, length), shorter than a chunk.
        self._tail = b""
        #: True once the tail is also in the database (a short last row).
        self._flushed = True
        self.length = 0
        self.frozen = False

    # -- reading ---------------------------------------------------------------------------

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``."""
        if offset >= self.length or size <= 0:
            return b""
        end = min(offset + size, self.length)
        head = b""
        if offset < self._rows:
            assert self._row is not None
            with self._db.reading() as conn:
                head = chunks.read_rows(conn, self._row, self._chunk, offset, min(end, self._rows))
        if end <= self._rows:
            return head
        tail = self._tail[max(offset - self._rows, 0) : end - self._rows]
        return head + tail if head else tail

    # -- writing ---------------------------------------------------------------------------

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset``, zero-filling a gap past the end first (a block
        per transaction). The write itself is one transaction, or none while its bytes
        stay in the tail: if SQLite refuses it (a full disk), it changed nothing.

        Raises:
            CallFailed: the data is frozen. NotEnoughDisk, CallFailed: SQLite failed.
        """
        if self.frozen:
            raise errors.CallFailed("temporary data is frozen")
        while offset > self.length:  # a gap: zeros, appended a block at a time
            self.write_at(self.length, bytes(min(_ZERO_BLOCK, offset - self.length)))
        view = memoryview(data).cast("B")
        if not view:
            return
        rows: list[tuple[int, bytes | memoryview]] = []
        seq, pos = offset // self._chunk, 0
        while offset + pos < self._rows and pos < len(view):  # chunks already in rows
            lo = offset + pos - seq * self._chunk
            take = min(self._chunk - lo, len(view) - pos)
            if take == self._chunk:
                rows.append((seq, view[pos : pos + take]))
            else:  # part of a chunk: read, modify, write
                old = self._chunk_row(seq)
                rows.append((seq, old[:lo] + view[pos : pos + take].tobytes() + old[lo + take :]))
            seq, pos = seq + 1, pos + take
        if pos < len(view):
            new_rows, new_tail = self._plan_tail(offset + pos, view[pos:], rows)
        else:
            new_rows, new_tail = self._rows, self._tail
        self._store(rows)
        if new_tail is not self._tail or new_rows != self._rows:
            self._flushed = not new_tail
        self._rows, self._tail = new_rows, new_tail
        self.length = new_rows + len(new_tail)

    def _plan_tail(
        self, offset: int, view: memoryview, rows: list[tuple[int, bytes | memoryview]]
    ) -> tuple[int, bytes]:
        """Plan a write at ``offset`` in [rows end, length]: append the chunk rows it
        fills to ``rows``; return the new (bytes in rows, tail)."""
        keep = offset - self._rows
        first = self._chunk - keep
        if len(view) < first:  # it stays inside the tail: no database work
            return self._rows, self._tail[:keep] + view.tobytes() + self._tail[keep + len(view) :]
        seq, pos = self._rows // self._chunk, 0
        if keep:
            rows.append((seq, self._tail[:keep] + view[:first].tobytes()))
            seq, pos = seq + 1, first
        while len(view) - pos >= self._chunk:  # whole chunks go to SQLite without a copy
            rows.append((seq, view[pos : pos + self._chunk]))
            seq, pos = seq + 1, pos + self._chunk
        return seq * self._chunk, view[pos:].tobytes()

    def _chunk_row(self, seq: int) -> bytes:
        assert self._row is not None
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT data FROM chunks WHERE stream_id = ? AND seq = ?", (self._row, seq)
            ).fetchone()
        if row is None:
            raise errors.CorruptStore("a staged chunk is missing")
        return bytes(row[0])

    def _store(self, rows: list[tuple[int, bytes | memoryview]]) -> None:
        """Write chunk rows (insert or replace) in one staging transaction."""
        if not rows:
            return
        with self._transaction() as conn:
            row = self._row if self._row is not None else self._new_row(conn)
            conn.executemany(
                "INSERT OR REPLACE INTO chunks(stream_id, seq, data) VALUES (?, ?, ?)",
                [(row, seq, data) for seq, data in rows],
            )
        self._adopt(row)

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
            "INSERT INTO streams(owner_kind, owner_id, tag, length, chunk_size)"
            " VALUES (?, ?, ?, 0, ?) RETURNING id",
            (OWNER_STAGING, number, self._tag, self._chunk),
        ).fetchone()[0]
        return int(row)

    def _adopt(self, row: int) -> None:
        """Record the staging row once its transaction committed (and queue its release
        for when this object dies)."""
        if self._row is None:
            self._row = row
            weakref.finalize(self, self._db.staged_garbage.append, row)

    def truncate(self, size: int) -> None:
        """Set the length to ``size`` (zero-filling when growing)."""
        if self.frozen:
            raise errors.CallFailed("temporary data is frozen")
        if size >= self.length:
            if size > self.length:
                self.write_at(size, b"")
            return
        if size >= self._rows:
            self._tail = self._tail[: size - self._rows]
            self.length = size
            self._flushed = not self._tail
            return
        seq, keep = divmod(size, self._chunk)
        tail = self._chunk_row(seq)[:keep] if keep else b""
        assert self._row is not None
        with self._transaction() as conn:
            conn.execute("DELETE FROM chunks WHERE stream_id = ? AND seq >= ?", (self._row, seq))
        self._rows, self._tail, self.length = seq * self._chunk, tail, size
        self._flushed = not tail

    def flush(self) -> None:
        """Write the partial last chunk to the database too (before a save links it);
        call it before handing the data to a bag. Idempotent."""
        if self._flushed:
            return
        seq = self._rows // self._chunk
        with self._transaction() as conn:
            row = self._row if self._row is not None else self._new_row(conn)
            conn.execute(
                "INSERT OR REPLACE INTO chunks(stream_id, seq, data) VALUES (?, ?, ?)",
                (row, seq, self._tail),
            )
            conn.execute("UPDATE streams SET length = ? WHERE id = ?", (self.length, row))
        self._adopt(row)
        self._flushed = True

    # -- saving and copying ------------------------------------------------------------------

    def link_into(self, conn: sqlite3.Connection, owner_kind: int, owner_id: int, tag: int) -> bool:
        """Save this data as the value ``tag`` of an owner by linking its rows, inside the
        caller's (save) transaction; False when it cannot be linked (another database,
        or a tail not flushed), and the caller copies it instead."""
        if not self.frozen or not self._flushed or self._db.conn is not conn:
            return False
        if self._row is None:  # empty: nothing to link, an empty value of its own
            return False
        chunks.link(
            conn,
            owner_kind,
            owner_id,
            tag,
            data_id=self._row,
            length=self.length,
            chunk_size=self._chunk,
        )
        return True

    def copy(self) -> StagedData:
        """A mutable copy (copy on write): the whole chunks copied inside SQLite."""
        other = StagedData(self._db, self._chunk, self._tag)
        if self._rows:
            assert self._row is not None
            with self._transaction() as conn:
                row = other._new_row(conn)
                conn.execute(
                    "INSERT INTO chunks(stream_id, seq, data) SELECT ?, seq, data FROM chunks"
                    " WHERE stream_id = ? AND seq < ?",
                    (row, self._row, self._rows // self._chunk),
                )
            other._adopt(row)
        other._rows, other._tail, other.length = self._rows, self._tail, self.length
        other._flushed = not self._tail
        return other

    def fill(self, read: Callable[[int, int], bytes], length: int, block: int) -> None:
        """Append ``length`` bytes taken from ``read(offset, size)`` in ``block`` pieces
        (a committed value opened for writing)."""
        offset = 0
        while offset < length:
            piece = read(offset, min(block, length - offset))
            if not piece:
                break
            self.write_at(self.length, piece)
            offset += len(piece)

    def close(self) -> None:
        """Nothing to close: the rows are released when the object dies."""


def _take(garbage: list[int]) -> list[int]:
    """Empty ``garbage`` and return what it held (list.pop is atomic under the GIL, so
    a finaliser appending on another thread loses nothing)."""
    out = []
    while garbage:
        out.append(garbage.pop())
    return out


__all__ = ["StagedData", "collect", "drop", "recover"]
