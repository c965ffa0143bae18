"""The per-mailbox SQLite schema.

Theory of operation
-------------------
One database file per mailbox. Folders and messages are rows with a few *hot
columns* (the properties tables sort and restrict on most: delivery time, subject,
size, flags, message class, times) next to a msgpack *property blob* holding every
other property up to :attr:`~mapi.model.limits.Limits.inline_value_bytes`. Larger values
(bodies, attachment data) live in ``streams`` (one row per value) and ``chunks``
(one row per :attr:`~mapi.model.limits.Limits.chunk_bytes` slice), so a table scan never
reads them and no value is ever held whole in memory.

Every hot column has an index ``(folder_id, column, id)``: a contents table sorted
by that column is an index walk, a page at an offset is ``LIMIT``/``OFFSET`` over the
covering index (no row is read for skipped rows), and ``id`` breaks ties so the
order is total and stable. String hot columns use ``COLLATE NOCASE``; the Python
evaluator in :mod:`mapi.model.properties` (``sort_key``) reproduces that order.

Ids come from ``AUTOINCREMENT`` so a deleted object's id (and its entry id) is never
reused. Deleting a folder cascades to its subfolders, messages, recipients,
attachments and embedded messages through foreign keys; triggers drop the streams
of deleted messages and attachments, and chunks cascade from streams.

Version 2 adds the incremental-sync bookkeeping (:data:`UPGRADE_1_TO_2`, see
:mod:`mapi.objects.sync`) and the submission log of :mod:`mapi.objects.submit`.

Version 3 (:data:`UPGRADE_2_TO_3`) lets a ``streams`` row *link* to chunk rows held by
another row (``data_id``) instead of holding its own, so stream data staged while a
client writes is saved without being copied, and a copied message shares its large
values (see :mod:`mapi.storage.staging`). A row that links has no chunks of its own;
holders of shared data are rows of kind :data:`OWNER_DATA` (dropped by a trigger
when their last link goes) or :data:`OWNER_STAGING` (pending stream data, owned by a
live stream until it is released).

Version 4 (:func:`upgrade_3_to_4`) keeps the bytes of a holder row with ``in_file = 1``
in a file of its own beside the database (:mod:`mapi.storage.blobs`) instead of chunk
rows: stream data staged while a client writes goes there. ``dead_files`` lists the
ids of such rows that were dropped, whose files are unlinked after the commit (a
trigger fills it, so every way of dropping a row is covered).

Version 5 (:data:`UPGRADE_4_TO_5`) adds the Internet-mail view (IMAP UIDs per folder,
:mod:`mapi.storage.mailview`): two tables of its own, nothing else changes.

Version 6 (:data:`UPGRADE_5_TO_6`) adds the view's record of the uids that left each
folder and the change number they left at (``mail_vanished``, IMAP's QRESYNC): one
table, nothing else changes.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from mapi.model import proptags as pt

SCHEMA_VERSION: Final = 6

#: Owner kinds of rows in ``streams``.
OWNER_MESSAGE: Final = 2
OWNER_ATTACHMENT: Final = 3
#: Chunk rows that saved values link to, kept while a link exists (owner_id = id).
OWNER_DATA: Final = 4
#: Pending stream data of a live stream (owner_id: a number unique among them).
OWNER_STAGING: Final = 5

#: Hot message columns by canonical tag. Values of these tags live in the column,
#: never in the blob (NULL means "property absent").
MESSAGE_COLUMNS: Final[dict[int, str]] = {
    pt.PR_MESSAGE_DELIVERY_TIME: "delivery_time",
    pt.PR_SUBJECT_W: "subject",
    pt.PR_MESSAGE_FLAGS: "flags",
    pt.PR_MESSAGE_CLASS_W: "message_class",
    pt.PR_MESSAGE_SIZE: "size",
    pt.PR_MESSAGE_SIZE_EXTENDED: "size",
    pt.PR_CREATION_TIME: "created",
    pt.PR_LAST_MODIFICATION_TIME: "modified",
    pt.PR_HASATTACH: "has_attach",
}

#: Columns selected whenever message rows are read, in this order.
MESSAGE_SELECT: Final = (
    "id, folder_id, attach_id, delivery_time, subject, size, flags, message_class,"
    " created, modified, change_num, has_attach, props"
)

_BASE_DDL: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT;

CREATE TABLE IF NOT EXISTS folders (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id   INTEGER REFERENCES folders(id) ON DELETE CASCADE,
    name        TEXT NOT NULL COLLATE NOCASE,
    folder_type INTEGER NOT NULL,
    role        TEXT,
    created     INTEGER NOT NULL,
    modified    INTEGER NOT NULL,
    change_num  INTEGER NOT NULL,
    props       BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS folders_by_name ON folders(parent_id, name);
CREATE UNIQUE INDEX IF NOT EXISTS folders_by_role ON folders(role) WHERE role IS NOT NULL;

CREATE TABLE IF NOT EXISTS messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    folder_id     INTEGER REFERENCES folders(id) ON DELETE CASCADE,
    attach_id     INTEGER REFERENCES attachments(id) ON DELETE CASCADE,
    delivery_time INTEGER,
    subject       TEXT COLLATE NOCASE,
    size          INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    message_class TEXT COLLATE NOCASE,
    created       INTEGER NOT NULL,
    modified      INTEGER NOT NULL,
    change_num    INTEGER NOT NULL,
    has_attach    INTEGER NOT NULL,
    props         BLOB NOT NULL,
    CHECK ((folder_id IS NULL) <> (attach_id IS NULL))
) STRICT;
CREATE INDEX IF NOT EXISTS messages_by_delivery ON messages(folder_id, delivery_time, id);
CREATE INDEX IF NOT EXISTS messages_by_subject ON messages(folder_id, subject, id);
CREATE INDEX IF NOT EXISTS messages_by_size ON messages(folder_id, size, id);
CREATE INDEX IF NOT EXISTS messages_by_flags ON messages(folder_id, flags, id);
CREATE INDEX IF NOT EXISTS messages_by_class ON messages(folder_id, message_class, id);
CREATE INDEX IF NOT EXISTS messages_by_modified ON messages(folder_id, modified, id);
CREATE INDEX IF NOT EXISTS messages_by_created ON messages(folder_id, created, id);
CREATE INDEX IF NOT EXISTS messages_by_attach ON messages(attach_id) WHERE attach_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS recipients (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    row_id     INTEGER NOT NULL,
    props      BLOB NOT NULL,
    PRIMARY KEY (message_id, row_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS attachments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    num        INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    props      BLOB NOT NULL,
    UNIQUE (message_id, num)
) STRICT;

CREATE TABLE IF NOT EXISTS streams (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_kind INTEGER NOT NULL,
    owner_id   INTEGER NOT NULL,
    tag        INTEGER NOT NULL,
    length     INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    data_id    INTEGER,
    in_file    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (owner_kind, owner_id, tag)
) STRICT;

CREATE TABLE IF NOT EXISTS chunks (
    stream_id INTEGER NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (stream_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS messages_drop_streams AFTER DELETE ON messages BEGIN
    DELETE FROM streams WHERE owner_kind = 2 AND owner_id = OLD.id;
END;
CREATE TRIGGER IF NOT EXISTS attachments_drop_streams AFTER DELETE ON attachments BEGIN
    DELETE FROM streams WHERE owner_kind = 3 AND owner_id = OLD.id;
END;

CREATE TABLE IF NOT EXISTS named_props (
    id   INTEGER PRIMARY KEY CHECK (id BETWEEN 32768 AND 65534),
    guid BLOB NOT NULL,
    kind INTEGER NOT NULL CHECK (kind IN (0, 1)),
    lid  INTEGER NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (guid, kind, lid, name)
) STRICT;

CREATE TABLE IF NOT EXISTS acl (
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    member    TEXT NOT NULL,
    rights    INTEGER NOT NULL,
    PRIMARY KEY (folder_id, member)
) STRICT, WITHOUT ROWID;
"""

#: Version 2 additions (incremental sync and submission), additive and idempotent:
#: ``tombstones`` records objects that left a folder (deleted or moved out) with the
#: change number of their leaving; ``read_state`` the change number of each message's
#: last read-flag change (reported apart from content changes, as [MS-OXCFXICS]
#: reports read-state changes); ``submissions`` the submission ids already delivered
#: to this mailbox (so a retried submit delivers once).
UPGRADE_1_TO_2: Final = """
CREATE TABLE IF NOT EXISTS tombstones (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       INTEGER NOT NULL,
    object_id  INTEGER NOT NULL,
    folder_id  INTEGER NOT NULL,
    change_num INTEGER NOT NULL,
    time       INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS tombstones_by_folder ON tombstones(folder_id, kind, change_num);
CREATE INDEX IF NOT EXISTS tombstones_by_cn ON tombstones(change_num);
CREATE INDEX IF NOT EXISTS messages_by_cn ON messages(folder_id, change_num, id);

CREATE TABLE IF NOT EXISTS read_state (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    change_num INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS submissions (
    submission_id BLOB PRIMARY KEY,
    message_id    INTEGER,
    time          INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"""

#: Version 3 additions, the shared chunk data (the ``streams.data_id`` column itself is
#: in the base schema, and added by :func:`upgrade_2_to_3` to older files): links are
#: found by ``data_id``; deleting a link drops an :data:`OWNER_DATA` holder nobody else
#: links to (its chunks cascade). Staging holders are dropped when their stream is
#: released or, after a crash, when the mailbox is opened
#: (:func:`mapi.storage.chunks.release_staging`). One statement each.
_V3_STATEMENTS: Final = (
    "CREATE INDEX IF NOT EXISTS streams_by_data ON streams(data_id) WHERE data_id IS NOT NULL",
    f"""CREATE TRIGGER IF NOT EXISTS streams_release_data AFTER DELETE ON streams
WHEN OLD.data_id IS NOT NULL BEGIN
    DELETE FROM streams WHERE id = OLD.data_id AND owner_kind = {OWNER_DATA}
        AND NOT EXISTS (SELECT 1 FROM streams WHERE data_id = OLD.data_id);
END""",
)

#: Version 4 additions, stream data in files (the ``streams.in_file`` column itself is
#: in the base schema, and added by :func:`upgrade_3_to_4` to older files): the ids of
#: dropped file holders, whose files :meth:`mapi.storage.blobs.BlobDir.sweep` unlinks
#: once the drop has committed. One statement each.
_V4_STATEMENTS: Final = (
    "CREATE TABLE IF NOT EXISTS dead_files (id INTEGER PRIMARY KEY) STRICT",
    """CREATE TRIGGER IF NOT EXISTS streams_drop_file AFTER DELETE ON streams
WHEN OLD.in_file = 1 BEGIN
    INSERT OR IGNORE INTO dead_files(id) VALUES (OLD.id);
END""",
)

#: Version 5 additions, the Internet-mail view of the mailbox (IMAP UIDs and their
#: folders' UIDVALIDITY, POP3 unique ids; :mod:`mapi.storage.mailview`), additive and
#: idempotent.
UPGRADE_4_TO_5: Final = """
CREATE TABLE IF NOT EXISTS mail_folders (
    folder_id     INTEGER PRIMARY KEY REFERENCES folders(id) ON DELETE CASCADE,
    uidvalidity   INTEGER NOT NULL,
    uidnext       INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    subscribed    INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS mail_uids (
    folder_id  INTEGER NOT NULL REFERENCES mail_folders(folder_id) ON DELETE CASCADE,
    uid        INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    modseq     INTEGER NOT NULL DEFAULT 0,
    size_cn    INTEGER NOT NULL DEFAULT -1,
    size       INTEGER NOT NULL DEFAULT 0,
    crlf_size  INTEGER NOT NULL DEFAULT -1,
    PRIMARY KEY (folder_id, uid)
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS mail_uids_by_message ON mail_uids(folder_id, message_id);
"""

#: Version 6 addition: the uids that left a folder of the Internet-mail view, with the
#: change number they left at (:meth:`mapi.storage.mailview.SqliteMailView.prune`),
#: additive and idempotent.
UPGRADE_5_TO_6: Final = """
CREATE TABLE IF NOT EXISTS mail_vanished (
    folder_id INTEGER NOT NULL REFERENCES mail_folders(folder_id) ON DELETE CASCADE,
    uid       INTEGER NOT NULL,
    modseq    INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) STRICT, WITHOUT ROWID;
"""

#: The whole schema of a new mailbox file.
DDL: Final = (
    _BASE_DDL
    + UPGRADE_1_TO_2
    + "".join(f"{s};\n" for s in _V3_STATEMENTS)
    + "".join(f"{s};\n" for s in _V4_STATEMENTS)
    + UPGRADE_4_TO_5
    + UPGRADE_5_TO_6
)


def _add_to_streams(
    conn: sqlite3.Connection,
    column: str,
    definition: str,
    statements: tuple[str, ...],
    version: int,
) -> None:
    """One upgrade step, in one transaction (idempotent): add ``column`` to ``streams``
    unless it is there, run ``statements``, set the schema ``version``.

    Args:
        conn: an autocommit connection outside any transaction.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(streams)")}
        if column not in columns:
            conn.execute(f"ALTER TABLE streams ADD COLUMN {column} {definition}")
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def upgrade_2_to_3(conn: sqlite3.Connection) -> None:
    """Bring a version 2 file to version 3 (shared chunk data), in one transaction."""
    _add_to_streams(conn, "data_id", "INTEGER", _V3_STATEMENTS, 3)


def upgrade_3_to_4(conn: sqlite3.Connection) -> None:
    """Bring a version 3 file to version 4, in one transaction: its holders keep their
    chunk rows (``in_file = 0``); new staged data goes to files."""
    _add_to_streams(conn, "in_file", "INTEGER NOT NULL DEFAULT 0", _V4_STATEMENTS, 4)
