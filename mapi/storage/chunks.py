"""Large values as chunk rows.

Theory of operation
-------------------
A large property value (a body, an attachment's data) is one ``streams`` row
(owner, tag, length, chunk size) plus ``chunks`` rows of ``chunk_size`` bytes each
(the last one shorter). Reading at an offset touches only the chunks that overlap the
range; writing copies from a file-like source one chunk at a time; copying a value to
another owner is ``INSERT ... SELECT`` inside SQLite. No function here holds a whole
value in memory. All functions run inside the caller's transaction or read snapshot.
"""

from __future__ import annotations

import sqlite3
from typing import Protocol


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


def delete(conn: sqlite3.Connection, owner_kind: int, owner_id: int, tag: int) -> None:
    """Drop the value ``tag`` of one owner (chunks cascade)."""
    conn.execute(
        "DELETE FROM streams WHERE owner_kind = ? AND owner_id = ? AND tag = ?",
        (owner_kind, owner_id, tag),
    )


def read(
    conn: sqlite3.Connection, owner_kind: int, owner_id: int, tag: int, offset: int, size: int
) -> bytes:
    """Up to ``size`` bytes of a value from ``offset`` (empty past the end)."""
    row = conn.execute(
        "SELECT id, length, chunk_size FROM streams"
        " WHERE owner_kind = ? AND owner_id = ? AND tag = ?",
        (owner_kind, owner_id, tag),
    ).fetchone()
    if row is None or size <= 0 or offset >= row[1]:
        return b""
    stream_id, length, chunk_size = row
    end = min(offset + size, length)
    first, last = offset // chunk_size, (end - 1) // chunk_size
    parts = []
    for seq, data in conn.execute(
        "SELECT seq, data FROM chunks WHERE stream_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
        (stream_id, first, last),
    ):
        base = seq * chunk_size
        parts.append(data[max(offset - base, 0) : end - base])
    return b"".join(parts)


def copy_all(conn: sqlite3.Connection, owner_kind: int, from_id: int, to_id: int) -> None:
    """Copy every large value of one owner to another owner of the same kind."""
    streams = conn.execute(
        "SELECT id, tag, length, chunk_size FROM streams WHERE owner_kind = ? AND owner_id = ?",
        (owner_kind, from_id),
    ).fetchall()
    for old_id, tag, length, chunk_size in streams:
        delete(conn, owner_kind, to_id, tag)
        new_id = conn.execute(
            "INSERT INTO streams(owner_kind, owner_id, tag, length, chunk_size)"
            " VALUES (?, ?, ?, ?, ?) RETURNING id",
            (owner_kind, to_id, tag, length, chunk_size),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO chunks(stream_id, seq, data) SELECT ?, seq, data FROM chunks"
            " WHERE stream_id = ?",
            (new_id, old_id),
        )
