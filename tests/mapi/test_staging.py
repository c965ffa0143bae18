"""Stream data staged in a file beside the mailbox while it is written, linked by the save.

The content model is a plain bytearray: every sequence of stream edits must read back
the same, before and after the save. Then the lifetime rules: nothing of an unsaved
stream survives a restart (a crash before the save), saved data survives one, released
data is dropped, copies share, and the schema of older files is upgraded.
"""

from __future__ import annotations

import errno
import gc
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mapi_helpers import FAST_KDF, Clock

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects.streams import STREAM_SEEK_SET, PropStream
from mapi.storage import staging
from mapi.storage.blobs import _OPEN_FILES, BlobDir
from mapi.storage.db import PAGE_SIZE, WAL_CHECKPOINT_BYTES, MailboxDB, blob_dir_of
from mapi.storage.schema import OWNER_DATA, OWNER_STAGING, SCHEMA_VERSION
from mapi.store import MsgStore, ObjectStore

CHUNK = 1024
LIMITS = Limits(chunk_bytes=CHUNK, inline_value_bytes=256, max_value_bytes=8192)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path, clock: Clock) -> Iterator[ObjectStore]:
    s = ObjectStore(data_dir, kdf=FAST_KDF, clock=clock, limits=LIMITS)
    s.add_user("eve", "pw")
    yield s
    s.close()


def _open(store: ObjectStore) -> MsgStore:
    return store.logon_with_password("eve", "pw").open_store()


def _db(ms: MsgStore) -> MailboxDB:
    return ms.context.db


def _count(db: MailboxDB, sql: str, *args: object) -> int:
    with db.reading() as conn:
        return int(conn.execute(sql, args).fetchone()[0])


def _files(db: MailboxDB) -> int:
    """Stream data files in the mailbox's blob directory."""
    blobs = blob_dir_of(db.path)
    return len(list(blobs.iterdir())) if blobs.exists() else 0


def _read_all(stream: PropStream) -> bytes:
    stream.seek(0, STREAM_SEEK_SET)
    out = b""
    for _ in range(10_000):
        block = stream.read(4096)
        if not block:
            return out
        out += block
    raise AssertionError("the stream never ended")


def _apply(stream: PropStream, model: bytearray, rng: random.Random) -> None:
    """One random edit, applied to the stream and to the model."""
    kind = rng.choice(["append", "append", "overwrite", "gap", "truncate", "grow", "at"])
    size = rng.choice([1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, 8192])
    data = rng.randbytes(size)
    if kind == "append":
        stream.seek(len(model))
        stream.write(data)
        model += data
    elif kind in ("overwrite", "at") and model:
        offset = rng.randrange(len(model))
        if kind == "at":
            stream.write_at(offset, data)
        else:
            stream.seek(offset)
            stream.write(data)
        end = offset + size
        model[offset:end] = data
    elif kind == "gap":
        offset = len(model) + rng.choice([1, CHUNK, 2 * CHUNK + 3])
        stream.write_at(offset, data)
        model += bytes(offset - len(model)) + data
    elif kind == "truncate" and model:
        size = rng.randrange(len(model))
        stream.set_size(size)
        del model[size:]
    elif kind == "grow":
        size = len(model) + rng.choice([1, CHUNK + 3])
        stream.set_size(size)
        model += bytes(size - len(model))


@pytest.mark.parametrize("seed", range(12))
def test_random_edits_read_back_before_and_after_the_save(store: ObjectStore, seed: int) -> None:
    rng = random.Random(seed)
    ms = _open(store)
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    att = msg.create_attach()
    stream = att.open_stream(pt.PR_ATTACH_DATA_BIN, create=True)
    model = bytearray()
    for _ in range(40):
        _apply(stream, model, rng)
        assert stream.size() == len(model)
    assert _read_all(stream) == model
    offset = rng.randrange(len(model) + 1)
    assert stream.read_at(offset, 3000) == model[offset : offset + 3000]
    stream.close()
    att.save_changes()
    msg.save_changes()
    assert msg.entry_id is not None
    saved = ms.open_message(msg.entry_id).open_attach(0).open_stream(pt.PR_ATTACH_DATA_BIN)
    assert _read_all(saved) == model
    # Edited again after the save: a copy, the saved value stays as it was.
    before = bytes(model)
    writer = ms.open_message(msg.entry_id, writable=True)
    watt = writer.open_attach(0, writable=True)
    edit = watt.open_stream(pt.PR_ATTACH_DATA_BIN, write=True)
    for _ in range(3):
        _apply(edit, model, rng)
    edit.close()
    assert _read_all(saved) == before  # unchanged until saved
    watt.save_changes()
    writer.save_changes()
    again = ms.open_message(msg.entry_id).open_attach(0).open_stream(pt.PR_ATTACH_DATA_BIN)
    assert _read_all(again) == model


def _save_attachment(ms: MsgStore, data: bytes) -> bytes:
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    att = msg.create_attach()
    stream = att.open_stream(pt.PR_ATTACH_DATA_BIN, create=True)
    for offset in range(0, len(data), 5000):
        stream.write(data[offset : offset + 5000])
    stream.close()
    att.save_changes()
    msg.save_changes()
    assert msg.entry_id is not None
    return msg.entry_id


def _attachment_data(ms: MsgStore, eid: bytes) -> bytes:
    return _read_all(ms.open_message(eid).open_attach(0).open_stream(pt.PR_ATTACH_DATA_BIN))


def test_the_save_links_the_staged_file_without_copying(store: ObjectStore) -> None:
    ms = _open(store)
    db = _db(ms)
    data = random.Random(1).randbytes(20 * CHUNK + 17)
    eid = _save_attachment(ms, data)
    assert _files(db) == 1  # one copy of the bytes, not two
    assert _count(db, "SELECT count(*) FROM chunks") == 0
    assert _count(db, "SELECT count(*) FROM streams WHERE data_id IS NOT NULL") == 1
    assert _attachment_data(ms, eid) == data
    # A copy of the message shares the data; each lives on without the other.
    inbox = ms.open_folder(ms.get_receive_folder())
    drafts = ms.open_folder(ms.special_folder_id("drafts"))
    inbox.copy_messages([eid], drafts)
    assert _files(db) == 1
    gc.collect()
    staging.collect(db)  # the writer's objects are gone: the holder is now data
    assert _count(db, f"SELECT count(*) FROM streams WHERE owner_kind = {OWNER_DATA}") == 1
    inbox.delete_messages([eid], hard=True)
    (copy,) = [r for r in drafts.contents_table().query_rows(10)]
    copy_eid = next(v.value for v in copy if v.tag == pt.PR_ENTRYID)
    assert isinstance(copy_eid, bytes)
    assert _attachment_data(ms, copy_eid) == data
    drafts.delete_messages([copy_eid], hard=True)
    assert _files(db) == 0  # unlinked once the delete committed
    assert _count(db, "SELECT count(*) FROM streams") == 0
    with db.transaction():  # the next write forgets the swept ids
        pass
    assert _count(db, "SELECT count(*) FROM dead_files") == 0


def test_a_crash_before_the_save_leaves_nothing(store: ObjectStore, data_dir: Path) -> None:
    ms = _open(store)
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    att = msg.create_attach()
    stream = att.open_stream(pt.PR_ATTACH_DATA_BIN, create=True)
    stream.write(bytes(5 * CHUNK))
    stream.write(bytes(5 * CHUNK))
    stream.commit()
    att.save_changes()
    path = _db(ms).path
    assert _files(_db(ms)) == 1
    # Another process opens the file as if this one had died (its objects still live).
    other = ObjectStore(data_dir, kdf=FAST_KDF, limits=LIMITS)
    try:
        view = other.logon_with_password("eve", "pw").open_store()
        assert _files(_db(view)) == 0
        assert _count(_db(view), "SELECT count(*) FROM streams") == 0
        assert view.open_folder(view.get_receive_folder()).contents_table().get_row_count() == 0
    finally:
        other.close()
    # The first process's save now fails cleanly: its pending data is gone.
    with pytest.raises(errors.CallFailed):
        msg.save_changes()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_saved_data_survives_a_restart_with_its_stream_still_open(
    store: ObjectStore, data_dir: Path
) -> None:
    ms = _open(store)
    data = random.Random(2).randbytes(6 * CHUNK + 100)
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    att = msg.create_attach()
    stream = att.open_stream(pt.PR_ATTACH_DATA_BIN, create=True)
    stream.write(data[:4000])
    stream.write(data[4000:])
    stream.commit()
    att.save_changes()
    msg.save_changes()  # the staging row is still the stream's: a crash now
    assert msg.entry_id is not None
    other = ObjectStore(data_dir, kdf=FAST_KDF, limits=LIMITS)
    try:
        view = other.logon_with_password("eve", "pw").open_store()
        db = _db(view)
        assert _count(db, f"SELECT count(*) FROM streams WHERE owner_kind = {OWNER_STAGING}") == 0
        assert _count(db, f"SELECT count(*) FROM streams WHERE owner_kind = {OWNER_DATA}") == 1
        assert _attachment_data(view, msg.entry_id) == data
        view.open_folder(view.get_receive_folder()).delete_messages([msg.entry_id], hard=True)
        assert _files(db) == 0
    finally:
        other.close()


def test_released_streams_release_their_rows(store: ObjectStore) -> None:
    ms = _open(store)
    db = _db(ms)
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    stream = msg.open_stream(pt.PR_BODY_W, create=True)
    stream.write(bytes(4 * CHUNK))
    assert _files(db) == 1
    stream.close()
    del stream, msg
    gc.collect()
    assert db.staged_garbage
    staging.collect(db)
    assert not db.staged_garbage
    assert _files(db) == 0
    assert _count(db, "SELECT count(*) FROM streams") == 0


def test_a_full_disk_refuses_a_write_and_changes_nothing(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ms = _open(store)
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    stream = msg.open_stream(pt.PR_BODY_W, create=True)
    first = bytes(range(256)) * 2  # in memory: under one chunk
    stream.write(first)
    real_open, real_pwrite = os.open, os.pwrite

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "open", full)  # the "disk" is full: no file can be made
    with pytest.raises(errors.NotEnoughDisk):
        stream.write(b"\x01" * (2 * CHUNK))
    assert stream.size() == len(first) and _read_all(stream) == first
    monkeypatch.setattr(os, "open", real_open)
    stream.write(b"\x01" * (2 * CHUNK))  # now in a file
    written = first + b"\x01" * (2 * CHUNK)
    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(errors.NotEnoughDisk):
        stream.write(b"\x03" * (8 * CHUNK))
    assert stream.size() == len(written)
    assert _read_all(stream) == written
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    stream.write(b"\x02" * (8 * CHUNK))
    stream.close()
    msg.save_changes()
    assert msg.entry_id is not None
    body = ms.open_message(msg.entry_id).open_stream(pt.PR_BODY_W)
    assert _read_all(body) == written + b"\x02" * (8 * CHUNK)


def test_the_save_syncs_the_file_before_its_commit(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durability: the linked file and its directory reach the disk before the commit
    that names them (a save that returned has its bytes on disk)."""
    ms = _open(store)
    path = _db(ms).path
    synced: list[int] = []
    real_sync = BlobDir.sync

    def sync(self: BlobDir, fd: int) -> None:
        committed = sqlite3.connect(path).execute("SELECT count(*) FROM messages").fetchone()
        synced.append(committed[0])
        real_sync(self, fd)

    monkeypatch.setattr(BlobDir, "sync", sync)
    _save_attachment(ms, bytes(5 * CHUNK))
    assert synced == [0]  # once, while the save was not committed yet


def test_files_nothing_refers_to_are_removed_when_the_mailbox_opens(
    store: ObjectStore, data_dir: Path
) -> None:
    ms = _open(store)
    data = bytes(range(256)) * 20
    eid = _save_attachment(ms, data)
    blobs = blob_dir_of(_db(ms).path)
    (kept,) = list(blobs.iterdir())
    (blobs / "999999").write_bytes(b"left by a crash")
    (blobs / "stray.tmp").write_bytes(b"not ours either")
    store.close()
    again = ObjectStore(data_dir, kdf=FAST_KDF, limits=LIMITS)
    try:
        view = again.logon_with_password("eve", "pw").open_store()
        assert list(blobs.iterdir()) == [kept]
        assert _attachment_data(view, eid) == data
    finally:
        again.close()


def test_deleting_the_user_deletes_the_files(store: ObjectStore) -> None:
    ms = _open(store)
    _save_attachment(ms, bytes(4 * CHUNK))
    blobs = blob_dir_of(_db(ms).path)
    assert blobs.exists()
    store.delete_user("eve")
    assert not blobs.exists()


def test_pending_values_hold_no_descriptor_each(store: ObjectStore) -> None:
    """Hundreds of unsaved attachments must not hold a descriptor each (the process's
    limit would fail every user): files are opened through a bounded cache."""
    ms = _open(store)
    before = len(os.listdir("/proc/self/fd"))
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    pending = []
    for i in range(3 * _OPEN_FILES):
        att = msg.create_attach()
        stream = att.open_stream(pt.PR_ATTACH_DATA_BIN, create=True)
        stream.write(bytes([i]) * (2 * CHUNK))
        pending.append((att, stream))
    assert len(os.listdir("/proc/self/fd")) - before <= _OPEN_FILES
    for i, (att, stream) in enumerate(pending):  # every one still reads back and saves
        assert _read_all(stream) == bytes([i]) * (2 * CHUNK)
        stream.close()
        att.save_changes()
    msg.save_changes()
    assert msg.entry_id is not None
    saved = ms.open_message(msg.entry_id)
    assert _read_all(saved.open_attach(7).open_stream(pt.PR_ATTACH_DATA_BIN)) == bytes([7]) * (
        2 * CHUNK
    )


def test_staging_commits_skip_the_fsync_and_saves_keep_it(store: ObjectStore) -> None:
    db = _db(_open(store))
    with db.transaction(staging=True) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        with pytest.raises(errors.CallFailed), db.transaction():  # nothing durable joins
            pass
    generation = db.generation
    with pytest.raises(RuntimeError), db.transaction(staging=True):
        raise RuntimeError("a staging transaction that fails")
    with db.transaction() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.generation == generation + 1  # staging commits change nothing visible


def _save_in_rows(ms: MsgStore, data: bytes) -> bytes:
    """A saved attachment whose data is chunk rows of its own (a value set whole, as
    every version writes it)."""
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    att = msg.create_attach()
    att.set_props([(pt.PR_ATTACH_DATA_BIN, data)])
    att.save_changes()
    msg.save_changes()
    assert msg.entry_id is not None
    return msg.entry_id


#: Back to version 3: no files (no column, no table, no trigger).
_TO_V3 = (
    "DROP TRIGGER streams_drop_file; DROP TABLE dead_files;"
    " ALTER TABLE streams DROP COLUMN in_file; PRAGMA user_version = 3;"
)
#: Then back to version 2: no data_id (values hold their own chunks), no index, no trigger.
_TO_V2 = (
    "DROP TRIGGER streams_release_data; DROP INDEX streams_by_data;"
    " ALTER TABLE streams DROP COLUMN data_id; PRAGMA user_version = 2;"
)


def _downgrade(store: ObjectStore, path: Path, script: str) -> None:
    """Close the store, then take its mailbox file back with ``script``."""
    store.close()
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.close()


def test_version_2_files_are_upgraded(store: ObjectStore, data_dir: Path) -> None:
    ms = _open(store)
    eid = _save_in_rows(ms, bytes(3 * CHUNK))
    _downgrade(store, _db(ms).path, _TO_V3 + _TO_V2)
    again = ObjectStore(data_dir, kdf=FAST_KDF, limits=LIMITS)
    try:
        view = again.logon_with_password("eve", "pw").open_store()
        db = _db(view)
        assert _count(db, "PRAGMA user_version") == SCHEMA_VERSION
        assert _attachment_data(view, eid) == bytes(3 * CHUNK)
        newer = _save_attachment(view, b"x" * (2 * CHUNK))
        assert _attachment_data(view, newer) == b"x" * (2 * CHUNK)
        assert _files(db) == 1
    finally:
        again.close()


def test_version_3_files_keep_their_staged_rows(store: ObjectStore, data_dir: Path) -> None:
    """A version 3 mailbox has saved staged data in chunk rows of a holder that values
    link to: it reads back, and goes with its last link, after the upgrade."""
    ms = _open(store)
    data = random.Random(3).randbytes(4 * CHUNK + 9)
    eid = _save_in_rows(ms, data)
    path = _db(ms).path
    _downgrade(store, path, _TO_V3)
    conn = sqlite3.connect(path)
    # Make the value a link to a holder of kind OWNER_DATA, as version 3 saved staged data.
    (own,) = conn.execute("SELECT id FROM streams WHERE owner_kind = 3").fetchone()
    holder = conn.execute(
        f"INSERT INTO streams(owner_kind, owner_id, tag, length, chunk_size)"
        f" SELECT {OWNER_DATA}, 0, tag, length, chunk_size FROM streams WHERE id = ?"
        " RETURNING id",
        (own,),
    ).fetchone()[0]
    conn.execute("UPDATE streams SET owner_id = id WHERE id = ?", (holder,))
    conn.execute("UPDATE chunks SET stream_id = ? WHERE stream_id = ?", (holder, own))
    conn.execute("UPDATE streams SET data_id = ? WHERE id = ?", (holder, own))
    conn.commit()
    conn.close()
    again = ObjectStore(data_dir, kdf=FAST_KDF, limits=LIMITS)
    try:
        view = again.logon_with_password("eve", "pw").open_store()
        db = _db(view)
        assert _count(db, "PRAGMA user_version") == SCHEMA_VERSION
        assert _count(db, "SELECT count(*) FROM chunks") == 5
        assert _attachment_data(view, eid) == data
        view.open_folder(view.get_receive_folder()).delete_messages([eid], hard=True)
        assert _count(db, "SELECT count(*) FROM chunks") == 0
        assert _count(db, "SELECT count(*) FROM streams") == 0
    finally:
        again.close()


def test_new_mailboxes_use_16_kib_pages_and_old_files_keep_theirs(
    store: ObjectStore, data_dir: Path
) -> None:
    """Chunk rows are 64 KiB: 16 KiB pages make staging faster (see db.PAGE_SIZE); a
    file made with another page size must open and work unchanged."""
    ms = _open(store)
    path = _db(ms).path
    assert _count(_db(ms), "PRAGMA page_size") == PAGE_SIZE
    assert _count(_db(ms), "PRAGMA wal_autocheckpoint") == WAL_CHECKPOINT_BYTES // PAGE_SIZE
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # page size changes need a rollback journal
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("VACUUM")
    conn.close()
    again = ObjectStore(data_dir, kdf=FAST_KDF, limits=LIMITS)
    try:
        view = again.logon_with_password("eve", "pw").open_store()
        assert _count(_db(view), "PRAGMA page_size") == 4096
        assert _count(_db(view), "PRAGMA wal_autocheckpoint") == WAL_CHECKPOINT_BYTES // 4096
        eid = _save_attachment(view, b"y" * (3 * CHUNK))
        assert _attachment_data(view, eid) == b"y" * (3 * CHUNK)
    finally:
        again.close()


# -- failures of the file system ---------------------------------------------------------


def _disk_full(*args: object) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def _new_attachment_stream(ms: MsgStore) -> tuple[Any, Any, PropStream]:
    msg = ms.open_folder(ms.get_receive_folder()).create_message()
    att = msg.create_attach()
    return msg, att, att.open_stream(pt.PR_ATTACH_DATA_BIN, create=True)


def _saved(ms: MsgStore, msg: Any, att: Any) -> bytes:
    att.save_changes()
    msg.save_changes()
    return _attachment_data(ms, msg.entry_id)


@pytest.mark.parametrize("how", ["write", "set_size"])
def test_bytes_in_memory_survive_a_file_that_cannot_be_written(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Moving the first bytes from memory to the new file fails: they stay in memory,
    and the retry (once the disk has room) moves them, so nothing is lost."""
    ms = _open(store)
    msg, att, stream = _new_attachment_stream(ms)
    first = bytes(range(256)) * 2  # in memory: under one chunk
    stream.write(first)
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", _disk_full)
    with pytest.raises(errors.NotEnoughDisk):
        if how == "write":
            stream.write(b"\x01" * (2 * CHUNK))
        else:
            stream.set_size(3 * CHUNK)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert stream.size() == len(first) and _read_all(stream) == first
    more = b"\x02" * (2 * CHUNK)
    stream.write(more)
    assert _read_all(stream) == first + more
    stream.close()
    assert _saved(ms, msg, att) == first + more


@pytest.mark.parametrize("grow", ["set_size", "gap_write"])
def test_a_write_that_fails_half_way_leaves_no_bytes_past_the_end(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, grow: str
) -> None:
    """A filling disk takes half a write, then says ENOSPC: growing the stream later
    must read zeros there, not the half that landed."""
    ms = _open(store)
    msg, att, stream = _new_attachment_stream(ms)
    head = b"h" * (2 * CHUNK)  # in a file
    stream.write(head)
    real_pwrite = os.pwrite
    calls: list[int] = []

    def half_then_full(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        if len(calls) == 1:
            return real_pwrite(fd, bytes(memoryview(data)[: len(data) // 2]), offset)
        return _disk_full()

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(errors.NotEnoughDisk):
        stream.write(b"\xee" * (4 * CHUNK))
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert stream.size() == len(head)
    if grow == "set_size":
        stream.set_size(len(head) + 3 * CHUNK)
        expected = head + bytes(3 * CHUNK)
    else:
        stream.write_at(len(head) + 3 * CHUNK, b"t")
        expected = head + bytes(3 * CHUNK) + b"t"
    assert _read_all(stream) == expected
    stream.close()
    assert _saved(ms, msg, att) == expected


def test_the_first_save_makes_the_blob_directory_entry_durable(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ms = _open(store)
    blobs_path = blob_dir_of(_db(ms).path)
    synced: set[tuple[int, int]] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.add((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    msg, att, stream = _new_attachment_stream(ms)
    stream.write(b"d" * (3 * CHUNK))
    stream.close()
    _saved(ms, msg, att)
    for directory in (blobs_path, blobs_path.parent):  # the new entry, and its own entry
        st = os.stat(directory)
        assert (st.st_dev, st.st_ino) in synced


def test_strange_names_in_the_blob_directory_do_not_stop_the_mailbox_opening(
    store: ObjectStore, data_dir: Path
) -> None:
    ms = _open(store)
    eid = _save_attachment(ms, b"a" * (2 * CHUNK))
    blobs_path = blob_dir_of(_db(ms).path)
    (blobs_path / "\u00b2").write_bytes(b"a digit to str.isdigit, not to int()")
    store.close()
    again = ObjectStore(data_dir, kdf=FAST_KDF, limits=LIMITS)
    try:
        view = again.logon_with_password("eve", "pw").open_store()
        assert _attachment_data(view, eid) == b"a" * (2 * CHUNK)
        assert not (blobs_path / "\u00b2").exists()
    finally:
        again.close()


def test_a_stream_outliving_its_mailbox_opens_no_file(store: ObjectStore) -> None:
    ms = _open(store)
    _msg, _att, stream = _new_attachment_stream(ms)
    stream.write(b"s" * (3 * CHUNK))  # in a file
    before = len(os.listdir("/proc/self/fd"))
    store.close()
    with pytest.raises(errors.MapiError):
        stream.write(b"t" * CHUNK)
    with pytest.raises(errors.MapiError):
        stream.read_at(0, 10)
    assert len(os.listdir("/proc/self/fd")) <= before
