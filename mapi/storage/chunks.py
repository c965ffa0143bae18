"""Large values as chunk rows.

Theory of operation
-------------------
A large property value (a body, an attachment's data) is one ``streams`` row
(owner, tag, length, chunk size) plus ``chunks`` rows of ``chunk_size`` bytes each
(the last one shorter). The chunk rows are the row's own, or (schema version 3) those
of the holder its ``data_id`` names: stream data staged while a client wrote it
(:mod:`mapi.storage.staging`) is saved by :func:`link`, without copying a byte, and
:func:`copy_all` shares linked data the same way (holders are immutable; a trigger
drops one when its last link goes). Reading at an offset touches only the chunks that
overlap the range; :func:`write` copies from a file-like source one chunk at a time;
copying a value that holds its own chunks is ``INSERT ... SELECT`` inside SQLite. No
function here holds a whole value in memory. A holder may keep its bytes in a file
instead (schema version 4, ``in_file``; :mod:`mapi.storage.blobs`): reading follows
the link either way. All functions run inside the caller's transaction or read
snapshot.
"""

from __future__ import annotations

import io
import sqlite3
from typing import Protocol

from mapi.model import errors
from mapi.storage.blobs import BlobDir
from mapi.storage.schema import OWNER_DATA, OWNER_STAGING


class Readable(Protocol):
    """A source of bytes (a file, a BytesIO, a TempData reader)."""

    def read(self, size: int = -1, /) -> bytes: ...


def lengths(conn: sqlite3.Connection, owner_kind: int, owner_id: int) -> dict[int, int]:
    """Tag -> length of every large value of one owner."""
    rows = conn.execute(
        "SELECT tag, length FROM streams WHERE owner_kind = ? AND owner_id = ?",
        (owner_kind, owner_id),
    )
    return {int(tag): int(length) for tag, length in rows}


def write(
    conn: sqlite3.Connection,
    owner_kind: int,
    owner_id: int,
    tag: int,
    source: Readable,
    chunk_size: int,
) -> int:
    """Replace the value ``tag`` of one owner with the bytes of ``source`` (read from
    its current position to EOF); return the length written."""
    delete(conn, owner_kind, owner_id, tag)
    stream_id = conn.execute(
        "INSERT INTO streams(owner_kind, owner_id, tag, length, chunk_size)"
        " VALUES (?, ?, ?, 0, ?) RETURNING id",
        (owner_kind, owner_id, tag, chunk_size),
    ).fetchone()[0]
    total = 0
    seq = 0
    while True:
        block = source.read(chunk_size)
        if not block:
            break
        conn.execute(
            "INSERT INTO chunks(stream_id, seq, data) VALUES (?, ?, ?)", (stream_id, seq, block)
        )
        total += len(block)
        seq += 1
    conn.execute("UPDATE streams SET length = ? WHERE id = ?", (total, stream_id))
    return total


def link(
    conn: sqlite3.Connection,
    owner_kind: int,
    owner_id: int,
    tag: int,
    *,
    data_id: int,
    length: int,
    chunk_size: int,
) -> None:
    """Replace the value ``tag`` of one owner with a link to the chunk rows of staging
    row ``data_id`` (``length`` bytes in ``chunk_size`` chunks).

    Raises:
        CallFailed: the staged data is gone (dropped by another process's recovery).
    """
    row = conn.execute(
        "SELECT owner_kind, chunk_size FROM streams WHERE id = ?", (data_id,)
    ).fetchone()
    if row is None or row[0] != OWNER_STAGING or row[1] != chunk_size:
        raise errors.CallFailed("the pending stream data is gone")
    delete(conn, owner_kind, owner_id, tag)
    conn.execute(
        "INSERT INTO streams(owner_kind, owner_id, tag, length, chunk_size, data_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (owner_kind, owner_id, tag, length, chunk_size, data_id),
    )


def delete(conn: sqlite3.Connection, owner_kind: int, owner_id: int, tag: int) -> None:
    """Drop the value ``tag`` of one owner (its own chunks cascade; a link releases its
    holder)."""
    conn.execute(
        "DELETE FROM streams WHERE owner_kind = ? AND owner_id = ? AND tag = ?",
        (owner_kind, owner_id, tag),
    )


def read(
    conn: sqlite3.Connection, owner_kind: int, owner_id: int, tag: int, offset: int, size: int
) -> bytes:
    """Up to ``size`` bytes of a value from ``offset`` (empty past the end)."""
    row = conn.execute(
        "SELECT coalesce(s.data_id, s.id), s.length, s.chunk_size, coalesce(h.in_file, 0)"
        " FROM streams AS s LEFT JOIN streams AS h ON h.id = s.data_id"
        " WHERE s.owner_kind = ? AND s.owner_id = ? AND s.tag = ?",
        (owner_kind, owner_id, tag),
    ).fetchone()
    if row is None or size <= 0 or offset >= row[1]:
        return b""
    stream_id, length, chunk_size, in_file = row
    end = min(offset + size, length)
    if in_file:
        blobs: BlobDir = conn.blobs  # type: ignore[attr-defined]
        return blobs.pread(stream_id, offset, end - offset)
    return read_rows(conn, stream_id, chunk_size, offset, end)


def read_rows(
    conn: sqlite3.Connection, stream_id: int, chunk_size: int, offset: int, end: int
) -> bytes:
    """Bytes ``[offset, end)`` of the chunk rows of ``stream_id`` (``offset < end``).

    A range within one row is that row (or a slice of it). A longer one is copied row
    by row into one buffer of its final size, so only one row is alive at a time: a
    1 MiB read of 16 rows takes about 1 MiB at once instead of 2 (all the rows, then
    their join), which also spares the allocator fresh pages (and their faults) for
    each read; ``getvalue`` hands the buffer over without a copy."""
    first, last = offset // chunk_size, (end - 1) // chunk_size
    rows = conn.execute(
        "SELECT seq, data FROM chunks WHERE stream_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
        (stream_id, first, last),
    )
    if first == last:
        row = rows.fetchone()
        if row is None:
            return b""
        data: bytes = row[1]
        lo, hi = offset - row[0] * chunk_size, end - row[0] * chunk_size
        return data if lo == 0 and hi >= len(data) else data[lo:hi]
    out = io.BytesIO()
    out.seek(end - offset - 1)
    out.write(b"\x00")  # the whole size at once: no regrowth while filling
    out.seek(0)
    filled = 0
    for seq, data in rows:
        base = seq * chunk_size
        lo, hi = max(offset - base, 0), min(end - base, len(data))
        filled += out.write(memoryview(data)[lo:hi])
    return out.getvalue() if filled == end - offset else out.getvalue()[:filled]


def copy_all(conn: sqlite3.Connection, owner_kind: int, from_id: int, to_id: int) -> None:
    """Copy every large value of one owner to another owner of the same kind: a linked
    value is shared (one row), a value holding its own chunks is copied."""
    streams = conn.execute(
        "SELECT id, tag, length, chunk_size, data_id FROM streams"
        " WHERE owner_kind = ? AND owner_id = ?",
        (owner_kind, from_id),
    ).fetchall()
    for old_id, tag, length, chunk_size, data_id in streams:
        delete(conn, owner_kind, to_id, tag)
        new_id = conn.execute(
            "INSERT INTO streams(owner_kind, owner_id, tag, length, chunk_size, data_id)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (owner_kind, to_id, tag, length, chunk_size, data_id),
        ).fetchone()[0]
        if data_id is not None:
            continue
        conn.execute(
            "INSERT INTO chunks(stream_id, seq, data) SELECT ?, seq, data FROM chunks"
            " WHERE stream_id = ?",
            (new_id, old_id),
        )


def release_staging(conn: sqlite3.Connection) -> None:
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
