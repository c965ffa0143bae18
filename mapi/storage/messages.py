"""Loading, saving, copying and deleting messages and their children.

Theory of operation
-------------------
A :class:`MessageState` is everything an open message knows: its committed row (if
any), a :class:`~mapi.storage.propbag.PropBag`, its recipients when changed, and pending
attachment states (each with a bag and, for embedded messages, a nested
MessageState). :func:`save_message` writes all of it inside the caller's single
transaction ([MS-OXCMSG] 3.1.4.3: the save is atomic): the message row (hot columns
+ blob), its large values as chunk rows, its recipient rows, its attachment rows
(recursively for embedded messages), then the derived values (size, has-attach,
``PR_DISPLAY_TO``...). Large values written through streams were staged in the
database as they arrived and are linked, not copied
(:class:`~mapi.storage.staging.StagedData`); other large values copy one chunk at a
time.

Stale writes are refused: a state remembers the change number it was loaded at and
the save fails with MAPI_E_OBJECT_CHANGED (or MAPI_E_OBJECT_DELETED) if the row moved
on in between, unless the caller forces it.

Sizes: the save of a top-level message checks the message size limit and the
mailbox's quota in its own transaction, after writing (so the measure is exact and a
refusal keeps nothing): :func:`mailbox_size` (a sum over an index, never a stored
counter: see :mod:`mapi.objects.quota` for why), :func:`mailbox_quota` (the mailbox's own
limit in ``meta``, else the server's default), :func:`check_mailbox_room`.

Detached copies: :func:`copy_message` copies inside one database with SQL
(``INSERT ... SELECT``; large values that hold their own chunks are copied inside
SQLite, linked ones shared). Delivery ([MS-OXOMSG] 3.2.5.1 in our simple form,
:mod:`mapi.objects.submit`) copies a message into *another* mailbox file, so
:func:`export_message` reads it into a :class:`MessageState` that belongs to no
database (``db_id`` None): small values as values, large ones (bodies, attachment
data) spooled chunk by chunk into :class:`~mapi.storage.propbag.TempData` (nothing is
held whole in memory), its recipients, its attachments and their embedded messages,
recursively. Saving that state with :func:`save_message` in the target database
writes a new message there. Snapshots of one export share the frozen spooled data, so
one export serves every recipient. (This was ``mapi.storage.transfer``.)

The core reaches all of this through :class:`SqliteMessages` (``MailboxDB.messages``,
see :mod:`mapi.storage.api`): loading, saving, copying, exporting, moving, deleting
and flagging one message, the submissions a mailbox received, and the mailbox's size
and quota. The other functions of this module are the SQLite backend's own.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import Limits, check_message_size, full_mailbox
from mapi.model.properties import (
    PropData,
    from_stream_bytes,
    pack_props,
    to_stream_bytes,
    unpack_props,
    value_size,
)
from mapi.storage import chunks, tombstones
from mapi.storage.propbag import PropBag, Source, TempData
from mapi.storage.schema import MESSAGE_SELECT, OWNER_ATTACHMENT, OWNER_MESSAGE
from mapi.storage.staging import StagedData

#: Hot columns a client may set (the others are computed by the store).
WRITABLE_COLUMNS = {
    pt.PR_MESSAGE_DELIVERY_TIME: "delivery_time",
    pt.PR_SUBJECT_W: "subject",
    pt.PR_MESSAGE_FLAGS: "flags",
    pt.PR_MESSAGE_CLASS_W: "message_class",
}
DEFAULT_FLAGS = pt.MSGFLAG_READ | pt.MSGFLAG_UNSENT


@dataclass
class AttachState:
    """An attachment as its open object or its parent's pending changes see it."""

    num: int
    db_id: int | None
    bag: PropBag
    embedded: MessageState | None = None

    def snapshot(self) -> AttachState:
        emb = self.embedded.snapshot() if self.embedded is not None else None
        return AttachState(self.num, self.db_id, self.bag.snapshot(), emb)


@dataclass
class MessageState:
    """An open message: committed identity plus pending changes."""

    db_id: int | None
    change_num: int
    created: int
    modified: int
    bag: PropBag
    recipients: list[dict[int, PropData]] | None = None
    attachments: dict[int, AttachState | None] = field(default_factory=dict)
    next_attach_num: int = 0

    def snapshot(self) -> MessageState:
        recips = [dict(r) for r in self.recipients] if self.recipients is not None else None
        attach = {n: (a.snapshot() if a else None) for n, a in self.attachments.items()}
        return MessageState(
            self.db_id,
            self.change_num,
            self.created,
            self.modified,
            self.bag.snapshot(),
            recips,
            attach,
            self.next_attach_num,
        )

    @property
    def dirty(self) -> bool:
        return self.bag.dirty or self.recipients is not None or bool(self.attachments)


# --- Reading ------------------------------------------------------------------------


def row_props(row: Sequence[Any]) -> dict[int, PropData]:
    """Properties of a message row selected with MESSAGE_SELECT (hot columns + blob)."""
    props = unpack_props(row[12])
    hot = (
        (pt.PR_MESSAGE_DELIVERY_TIME, row[3]),
        (pt.PR_SUBJECT_W, row[4]),
        (pt.PR_MESSAGE_FLAGS, row[6]),
        (pt.PR_MESSAGE_CLASS_W, row[7]),
    )
    for tag, value in hot:
        if value is not None:
            props[tag] = value
    return props


def load_message(conn: sqlite3.Connection, db_id: int) -> tuple[MessageState, int | None]:
    """The committed state of message ``db_id`` and its folder id.

    Raises:
        NotFound: no such message.
    """
    row = conn.execute(f"SELECT {MESSAGE_SELECT} FROM messages WHERE id = ?", (db_id,)).fetchone()
    if row is None:
        raise errors.NotFound(f"no message {db_id}")
    bag = PropBag(row_props(row), chunks.lengths(conn, OWNER_MESSAGE, db_id))
    top = conn.execute(
        "SELECT coalesce(max(num) + 1, 0) FROM attachments WHERE message_id = ?", (db_id,)
    ).fetchone()[0]
    state = MessageState(db_id, row[10], row[8], row[9], bag, next_attach_num=top)
    return state, row[1]


def load_recipients(conn: sqlite3.Connection, db_id: int | None) -> list[dict[int, PropData]]:
    """Committed recipient rows of a message, in PR_ROWID order."""
    if db_id is None:
        return []
    rows = conn.execute(
        "SELECT row_id, props FROM recipients WHERE message_id = ? ORDER BY row_id", (db_id,)
    )
    out = []
    for row_id, blob in rows:
        props = unpack_props(blob)
        props[pt.PR_ROWID] = row_id
        out.append(props)
    return out


def load_attachment(conn: sqlite3.Connection, message_id: int, num: int) -> AttachState:
    """The committed state of attachment ``num`` of a message.

    Raises:
        NotFound: no such attachment.
    """
    row = conn.execute(
        "SELECT id, props FROM attachments WHERE message_id = ? AND num = ?", (message_id, num)
    ).fetchone()
    if row is None:
        raise errors.NotFound(f"no attachment {num}")
    bag = PropBag(unpack_props(row[1]), chunks.lengths(conn, OWNER_ATTACHMENT, row[0]))
    return AttachState(num, row[0], bag)


def committed_attachments(conn: sqlite3.Connection, message_id: int | None) -> dict[int, int]:
    """Attachment number -> size of the committed attachments of a message."""
    if message_id is None:
        return {}
    rows = conn.execute("SELECT num, size FROM attachments WHERE message_id = ?", (message_id,))
    return {int(num): int(size) for num, size in rows}


def embedded_id(conn: sqlite3.Connection, attach_db_id: int | None) -> int | None:
    """The committed embedded message of an attachment row, if any."""
    if attach_db_id is None:
        return None
    row = conn.execute("SELECT id FROM messages WHERE attach_id = ?", (attach_db_id,)).fetchone()
    return None if row is None else int(row[0])


# --- Writing ------------------------------------------------------------------------


@dataclass
class _Split:
    hot: dict[str, PropData] = field(default_factory=dict)
    blob: dict[int, PropData] = field(default_factory=dict)
    writes: dict[int, chunks.Readable] = field(default_factory=dict)
    #: Pending stream data: linked when staged in this database, else copied.
    temps: dict[int, TempData] = field(default_factory=dict)
    drops: set[int] = field(default_factory=set)
    size: int = 0


def _split(bag: PropBag, limits: Limits, hot_columns: dict[int, str]) -> _Split:
    """Sort the bag's current values into hot columns, blob and chunk writes."""
    out = _Split()
    for tag in bag.tags():
        found = bag.lookup(tag)
        assert found is not None
        source, payload = found
        if source is Source.LARGE:
            assert isinstance(payload, int)
            out.size += payload
            continue
        if source is Source.TEMP:
            assert isinstance(payload, TempData)
            out.size += payload.length
            if tag in hot_columns or payload.length <= limits.inline_value_bytes:
                if payload.length > limits.max_value_bytes:
                    raise errors.TooBig(f"{pt.tag_name(tag)} too large for a column")
                out_value = from_stream_bytes(tag, payload.read_all())
                _place(out, tag, out_value, limits, hot_columns)
            else:
                out.temps[tag] = payload
            continue
        assert not isinstance(payload, TempData)
        value: PropData = payload
        out.size += value_size(tag, value)
        _place(out, tag, value, limits, hot_columns)
    for tag in bag.large:
        found = bag.lookup(tag)
        if found is None or found[0] is not Source.LARGE:
            out.drops.add(tag)
    return out


def _place(
    out: _Split, tag: int, value: PropData, limits: Limits, hot_columns: dict[int, str]
) -> None:
    column = hot_columns.get(tag)
    if column is not None:
        out.hot[column] = value
    elif value_size(tag, value) <= limits.inline_value_bytes or isinstance(value, list):
        out.blob[tag] = value
    else:
        out.writes[tag] = io.BytesIO(to_stream_bytes(tag, value))


def _write_large(
    conn: sqlite3.Connection, kind: int, owner: int, split: _Split, limits: Limits
) -> None:
    for tag in split.drops:
        chunks.delete(conn, kind, owner, tag)
    for tag, source in split.writes.items():
        chunks.write(conn, kind, owner, tag, source, limits.chunk_bytes)
    for tag, temp in split.temps.items():
        if not (isinstance(temp, StagedData) and temp.link_into(conn, kind, owner, tag)):
            chunks.write(conn, kind, owner, tag, temp.reader(), limits.chunk_bytes)


def _display_names(recipients: list[dict[int, PropData]], kind: int) -> str:
    names = [
        str(r.get(pt.PR_DISPLAY_NAME_W, ""))
        for r in recipients
        if r.get(pt.PR_RECIPIENT_TYPE) == kind
    ]
    return "; ".join(names)


def save_message(
    conn: sqlite3.Connection,
    state: MessageState,
    *,
    limits: Limits,
    change_num: int,
    now: int,
    folder_id: int | None = None,
    attach_id: int | None = None,
    force: bool = False,
    check_quota: bool | None = None,
) -> int:
    """Write ``state`` (inside the caller's transaction); return the message id.

    With ``check_quota=True`` (a client's save) a top-level message that grows is
    refused past :attr:`~mapi.model.limits.Limits.max_message_bytes` or when it takes the
    mailbox past its quota (:func:`check_mailbox_room`). The default, None, checks
    only the quota, and only for new messages (deliveries, reports): the server's own
    updates (filing a sent message adds its envelope) never fail, and a delivered
    copy, a little larger than what its sender saved, is judged by the sender's
    checks (:func:`mapi.objects.quota.check_submission`). Refused means raised inside the
    caller's transaction: nothing is kept.

    Raises:
        ObjectDeleted, ObjectChanged: the committed row is gone or newer (not forced).
        TooBig: the message is too large. NotEnoughDisk: the mailbox is full.
    """
    is_new = state.db_id is None
    old_size = 0
    if state.db_id is not None:
        row = conn.execute(
            "SELECT change_num, size FROM messages WHERE id = ?", (state.db_id,)
        ).fetchone()
        if row is None and not force:
            raise errors.ObjectDeleted("the message was deleted")
        if row is not None and row[0] != state.change_num and not force:
            raise errors.ObjectChanged("the message was changed by someone else")
        old_size = 0 if row is None else int(row[1])
    split = _split(state.bag, limits, WRITABLE_COLUMNS)
    blob = split.blob
    if state.recipients is not None:
        for kind, tag in (
            (pt.MAPI_TO, pt.PR_DISPLAY_TO_W),
            (pt.MAPI_CC, pt.PR_DISPLAY_CC_W),
            (pt.MAPI_BCC, pt.PR_DISPLAY_BCC_W),
        ):
            blob[tag] = _display_names(state.recipients, kind)
    hot = split.hot
    raw_flags = hot.get("flags", DEFAULT_FLAGS)
    flags = raw_flags if isinstance(raw_flags, int) else DEFAULT_FLAGS
    values = (
        hot.get("delivery_time"),
        hot.get("subject"),
        flags,
        hot.get("message_class"),
        now,
        change_num,
    )
    if state.db_id is None:
        db_id = conn.execute(
            "INSERT INTO messages(folder_id, attach_id, delivery_time, subject, flags,"
            " message_class, modified, change_num, created, size, has_attach, props)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, x'') RETURNING id",
            (folder_id, attach_id, *values, state.created),
        ).fetchone()[0]
    else:
        db_id = state.db_id
        conn.execute(
            "UPDATE messages SET delivery_time = ?, subject = ?, flags = ?, message_class = ?,"
            " modified = ?, change_num = ? WHERE id = ?",
            (*values, db_id),
        )
    _write_large(conn, OWNER_MESSAGE, db_id, split, limits)
    size = split.size
    if state.recipients is not None:
        conn.execute("DELETE FROM recipients WHERE message_id = ?", (db_id,))
        for recip in state.recipients:
            props = {t: v for t, v in recip.items() if t != pt.PR_ROWID}
            conn.execute(
                "INSERT INTO recipients(message_id, row_id, props) VALUES (?, ?, ?)",
                (db_id, recip[pt.PR_ROWID], pack_props(props)),
            )
    size += sum(value_size(t, v) for r in load_recipients(conn, db_id) for t, v in r.items())
    for num, attach in sorted(state.attachments.items()):
        if attach is None:
            conn.execute("DELETE FROM attachments WHERE message_id = ? AND num = ?", (db_id, num))
        else:
            _save_attachment(conn, db_id, attach, limits=limits, change_num=change_num, now=now)
    row = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM attachments WHERE message_id = ?", (db_id,)
    ).fetchone()
    has_attach = row[0] > 0
    size += row[1]
    flags = (flags | pt.MSGFLAG_HASATTACH) if has_attach else (flags & ~pt.MSGFLAG_HASATTACH)
    conn.execute(
        "UPDATE messages SET size = ?, has_attach = ?, flags = ?, props = ? WHERE id = ?",
        (min(size, 0x7FFFFFFF), int(has_attach), flags, pack_props(blob), db_id),
    )
    if attach_id is None and size > old_size:  # embedded messages count in their parent
        if check_quota:
            check_message_size(size, limits)
        if check_quota or (check_quota is None and is_new):
            check_mailbox_room(conn, limits, size - old_size)
    return int(db_id)


# --- Mailbox size and quota ------------------------------------------------------------

#: The ``meta`` key of a mailbox's own quota (bytes; 0 = none), which replaces the
#: server's default (:attr:`~mapi.model.limits.Limits.max_mailbox_bytes`).
QUOTA_KEY = "quota_bytes"


def mailbox_size(conn: sqlite3.Connection) -> int:
    """The size of a mailbox: the sum of its messages' PR_MESSAGE_SIZE (attachments and
    embedded messages included, in every folder, Deleted Items too).

    Computed, never stored, like folder counts: it cannot drift, whichever path
    (a cascade, another process) removed a message. It reads only the covering index
    ``messages_by_size`` (linear in the messages but cheap: docs/benchmarks.md), and
    runs only where a limit applies. A message's size is its properties' logical size
    (what the client wrote), so a copy counts twice even where its large values share
    storage, and SQLite's free pages or the blob directory's block rounding never do.
    """
    row = conn.execute(
        "SELECT coalesce(sum(size), 0) FROM messages WHERE folder_id IS NOT NULL"
    ).fetchone()
    return int(row[0])


def mailbox_quota(conn: sqlite3.Connection, limits: Limits) -> int:
    """The size limit of this mailbox in bytes: its own, else the default; 0: none."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (QUOTA_KEY,)).fetchone()
    if row is not None and isinstance(row[0], int) and row[0] >= 0:
        return int(row[0])
    return limits.max_mailbox_bytes


def has_own_quota(conn: sqlite3.Connection) -> bool:
    """Does this mailbox have a size limit of its own (not the server's default)?"""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (QUOTA_KEY,)).fetchone()
    return row is not None


def set_mailbox_quota(conn: sqlite3.Connection, limit: int | None) -> None:
    """Give this mailbox its own size limit (0: none), or None: the default again."""
    if limit is None:
        conn.execute("DELETE FROM meta WHERE key = ?", (QUOTA_KEY,))
    else:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (QUOTA_KEY, limit),
        )


def mailbox_room(conn: sqlite3.Connection, limits: Limits) -> int | None:
    """Bytes the mailbox may still grow by (None: no limit)."""
    limit = mailbox_quota(conn, limits)
    return None if not limit else max(limit - mailbox_size(conn), 0)


def check_mailbox_room(conn: sqlite3.Connection, limits: Limits, added: int | None) -> None:
    """After a change that added ``added`` bytes (None: an unknown amount) to the
    mailbox, inside its transaction: raise NotEnoughDisk if the mailbox is now past its
    quota (the caller's transaction then rolls the change back)."""
    limit = mailbox_quota(conn, limits)
    if not limit:
        return
    used = mailbox_size(conn)
    if used > limit:
        before = used if added is None else used - added
        raise full_mailbox(before, limit, added)


def _save_attachment(
    conn: sqlite3.Connection,
    message_id: int,
    attach: AttachState,
    *,
    limits: Limits,
    change_num: int,
    now: int,
) -> None:
    split = _split(attach.bag, limits, {})
    blob = split.blob
    blob.pop(pt.PR_ATTACH_NUM, None)
    if attach.db_id is None:
        conn.execute(
            "DELETE FROM attachments WHERE message_id = ? AND num = ?", (message_id, attach.num)
        )
        attach.db_id = conn.execute(
            "INSERT INTO attachments(message_id, num, size, props) VALUES (?, ?, 0, x'')"
            " RETURNING id",
            (message_id, attach.num),
        ).fetchone()[0]
    assert attach.db_id is not None
    _write_large(conn, OWNER_ATTACHMENT, attach.db_id, split, limits)
    size = split.size
    if attach.embedded is not None:
        emb = attach.embedded
        if emb.db_id is None:
            conn.execute("DELETE FROM messages WHERE attach_id = ?", (attach.db_id,))
        emb_id = save_message(
            conn,
            emb,
            limits=limits,
            change_num=change_num,
            now=now,
            attach_id=attach.db_id,
            force=True,
        )
        size += conn.execute("SELECT size FROM messages WHERE id = ?", (emb_id,)).fetchone()[0]
    else:
        emb_size = conn.execute(
            "SELECT coalesce(sum(size), 0) FROM messages WHERE attach_id = ?", (attach.db_id,)
        ).fetchone()[0]
        size += emb_size
    conn.execute(
        "UPDATE attachments SET size = ?, props = ? WHERE id = ?",
        (min(size, 0x7FFFFFFF), pack_props(blob), attach.db_id),
    )


def copy_message(
    conn: sqlite3.Connection,
    src_id: int,
    *,
    change_num: int,
    folder_id: int | None = None,
    attach_id: int | None = None,
) -> int:
    """Copy message ``src_id`` with everything below it; return the new id."""
    new_id = conn.execute(
        "INSERT INTO messages(folder_id, attach_id, delivery_time, subject, size, flags,"
        " message_class, created, modified, change_num, has_attach, props)"
        " SELECT ?, ?, delivery_time, subject, size, flags, message_class, created, modified,"
        " ?, has_attach, props FROM messages WHERE id = ? RETURNING id",
        (folder_id, attach_id, change_num, src_id),
    ).fetchone()[0]
    chunks.copy_all(conn, OWNER_MESSAGE, src_id, new_id)
    conn.execute(
        "INSERT INTO recipients(message_id, row_id, props)"
        " SELECT ?, row_id, props FROM recipients WHERE message_id = ?",
        (new_id, src_id),
    )
    attachments = conn.execute(
        "SELECT id, num FROM attachments WHERE message_id = ?", (src_id,)
    ).fetchall()
    for old_attach, num in attachments:
        new_attach = conn.execute(
            "INSERT INTO attachments(message_id, num, size, props)"
            " SELECT ?, num, size, props FROM attachments WHERE id = ? RETURNING id",
            (new_id, old_attach),
        ).fetchone()[0]
        chunks.copy_all(conn, OWNER_ATTACHMENT, old_attach, new_attach)
        emb = embedded_id(conn, old_attach)
        if emb is not None:
            copy_message(conn, emb, change_num=change_num, attach_id=new_attach)
        del num
    return int(new_id)


# --- Detached copies (delivery into another mailbox) ------------------------------------


def _detach(
    conn: sqlite3.Connection, owner_kind: int, owner_id: int, bag: PropBag, limits: Limits
) -> PropBag:
    out = PropBag()
    for tag, value in bag.base.items():
        out.set(tag, value)
    for tag, length in bag.large.items():
        temp = TempData(limits.chunk_bytes)
        offset = 0
        while offset < length:
            block = chunks.read(conn, owner_kind, owner_id, tag, offset, limits.chunk_bytes)
            if not block:
                break
            temp.write_at(offset, block)
            offset += len(block)
        out.set_temp(tag, temp)
    return out


def export_message(conn: sqlite3.Connection, db_id: int, limits: Limits) -> MessageState:
    """A detached, unsaved copy of committed message ``db_id`` (see the module docstring,
    "Detached copies").

    Raises:
        NotFound: no such message.
    """
    state, _ = load_message(conn, db_id)
    bag = _detach(conn, OWNER_MESSAGE, db_id, state.bag, limits)
    attachments: dict[int, AttachState | None] = {}
    rows = conn.execute(
        "SELECT id, num FROM attachments WHERE message_id = ? ORDER BY num", (db_id,)
    ).fetchall()
    for attach_id, num in rows:
        committed = load_attachment(conn, db_id, int(num))
        abag = _detach(conn, OWNER_ATTACHMENT, int(attach_id), committed.bag, limits)
        emb_id = embedded_id(conn, int(attach_id))
        emb = None if emb_id is None else export_message(conn, emb_id, limits)
        attachments[int(num)] = AttachState(int(num), None, abag, emb)
    return MessageState(
        None,
        0,
        state.created,
        state.modified,
        bag,
        recipients=load_recipients(conn, db_id),
        attachments=attachments,
        next_attach_num=state.next_attach_num,
    )


# --- Where a message is, and the operations on one message row ----------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a committed message is: its folder (None: embedded) and change number."""

    folder_id: int | None
    change_num: int


def placement(conn: sqlite3.Connection, message_id: int) -> Placement | None:
    """The folder and change number of message ``message_id`` (None: no such message)."""
    row = conn.execute(
        "SELECT folder_id, change_num FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    return Placement(None if row[0] is None else int(row[0]), int(row[1]))


def set_flags(conn: sqlite3.Connection, message_id: int, flags: int) -> int | None:
    """Set PR_MESSAGE_FLAGS of a committed message at once (the read flag); return its
    folder id (None: no such message, nothing changed)."""
    row = conn.execute(
        "UPDATE messages SET flags = ? WHERE id = ? RETURNING folder_id", (flags, message_id)
    ).fetchone()
    return None if row is None else int(row[0])


def delete_message(
    conn: sqlite3.Connection, message_id: int, *, folder_id: int, change_num: int, now: int
) -> None:
    """Delete a message of ``folder_id`` with everything below it (the schema's cascades),
    leaving a tombstone at ``change_num`` for incremental sync."""
    tombstones.tombstone(conn, tombstones.MESSAGE, [message_id], folder_id, change_num, now)
    conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))


def move_message(
    conn: sqlite3.Connection,
    message_id: int,
    *,
    from_folder: int,
    to_folder: int,
    change_num: int,
    now: int,
) -> None:
    """Move a message between folders, leaving a tombstone in the one it left."""
    conn.execute("UPDATE messages SET folder_id = ? WHERE id = ?", (to_folder, message_id))
    tombstones.tombstone(conn, tombstones.MESSAGE, [message_id], from_folder, change_num, now)


def was_delivered(conn: sqlite3.Connection, submission_id: bytes) -> bool:
    """Has this mailbox received submission ``submission_id`` (an earlier attempt)?"""
    row = conn.execute(
        "SELECT 1 FROM submissions WHERE submission_id = ?", (submission_id,)
    ).fetchone()
    return row is not None


def note_delivery(
    conn: sqlite3.Connection, submission_id: bytes, message_id: int, now: int
) -> None:
    """Record that submission ``submission_id`` arrived as ``message_id`` (in the
    delivery's transaction, so a retry skips this mailbox exactly when the copy is here)."""
    conn.execute(
        "INSERT INTO submissions(submission_id, message_id, time) VALUES (?, ?, ?)",
        (submission_id, message_id, now),
    )


class SqliteMessages:
    """Message rows for the core (``MailboxDB.messages``): the SQLite implementation.

    Stateless (one per mailbox object). Every method takes the transaction handle that
    :meth:`~mapi.storage.db.MailboxDB.transaction` (writes) or
    :meth:`~mapi.storage.db.MailboxDB.reading` yielded, and delegates to the functions
    of this module, :mod:`mapi.storage.chunks` and :mod:`mapi.storage.tombstones`.
    """

    __slots__ = ()

    # --- Reading ---------------------------------------------------------------------------

    def load(self, conn: sqlite3.Connection, message_id: int) -> tuple[MessageState, int | None]:
        """The committed state of a message and its folder id (None: embedded).

        Raises:
            NotFound: no such message.
        """
        return load_message(conn, message_id)

    def recipients(
        self, conn: sqlite3.Connection, message_id: int | None
    ) -> list[dict[int, PropData]]:
        """The committed recipient rows of a message (none for an unsaved one)."""
        return load_recipients(conn, message_id)

    def attachment_sizes(self, conn: sqlite3.Connection, message_id: int | None) -> dict[int, int]:
        """Attachment number -> size of a message's committed attachments."""
        return committed_attachments(conn, message_id)

    def load_attachment(self, conn: sqlite3.Connection, message_id: int, num: int) -> AttachState:
        """The committed state of attachment ``num`` of a message.

        Raises:
            NotFound: no such attachment.
        """
        return load_attachment(conn, message_id, num)

    def embedded_id(self, conn: sqlite3.Connection, attach_id: int | None) -> int | None:
        """The committed embedded message of an attachment row, if any."""
        return embedded_id(conn, attach_id)

    def read_value(
        self, conn: sqlite3.Connection, message_id: int, tag: int, offset: int, size: int
    ) -> bytes:
        """Up to ``size`` bytes from ``offset`` of a message's committed large value."""
        return chunks.read(conn, OWNER_MESSAGE, message_id, tag, offset, size)

    def read_attachment_value(
        self, conn: sqlite3.Connection, attach_id: int, tag: int, offset: int, size: int
    ) -> bytes:
        """Up to ``size`` bytes from ``offset`` of an attachment's committed large value."""
        return chunks.read(conn, OWNER_ATTACHMENT, attach_id, tag, offset, size)

    def placement(self, conn: sqlite3.Connection, message_id: int) -> Placement | None:
        """Where a message is and its change number (None: no such message)."""
        return placement(conn, message_id)

    def export(self, conn: sqlite3.Connection, message_id: int, limits: Limits) -> MessageState:
        """A detached copy of a committed message, for saving into another mailbox
        (:func:`export_message`).

        Raises:
            NotFound: no such message.
        """
        return export_message(conn, message_id, limits)

    # --- Writing ---------------------------------------------------------------------------

    def save(
        self,
        conn: sqlite3.Connection,
        state: MessageState,
        *,
        limits: Limits,
        change_num: int,
        now: int,
        folder_id: int | None = None,
        attach_id: int | None = None,
        force: bool = False,
        check_quota: bool | None = None,
    ) -> int:
        """Write ``state`` with everything below it; return the message id
        (:func:`save_message`, whose errors it raises)."""
        return save_message(
            conn,
            state,
            limits=limits,
            change_num=change_num,
            now=now,
            folder_id=folder_id,
            attach_id=attach_id,
            force=force,
            check_quota=check_quota,
        )

    def copy(
        self,
        conn: sqlite3.Connection,
        src_id: int,
        *,
        change_num: int,
        folder_id: int | None = None,
        attach_id: int | None = None,
    ) -> int:
        """Copy a message with everything below it; return the new id."""
        return copy_message(
            conn, src_id, change_num=change_num, folder_id=folder_id, attach_id=attach_id
        )

    def set_flags(self, conn: sqlite3.Connection, message_id: int, flags: int) -> int | None:
        """Set a committed message's flags at once; its folder id (None: no message)."""
        return set_flags(conn, message_id, flags)

    def note_read(
        self, conn: sqlite3.Connection, message_ids: Iterable[int], change_num: int
    ) -> None:
        """Record a read-flag change of messages for incremental sync."""
        tombstones.note_read(conn, message_ids, change_num)

    def delete(
        self, conn: sqlite3.Connection, message_id: int, *, folder_id: int, change_num: int,
        now: int,
    ) -> None:  # fmt: skip
        """Delete a message of ``folder_id`` (cascading), leaving a tombstone."""
        delete_message(conn, message_id, folder_id=folder_id, change_num=change_num, now=now)

    def move(
        self, conn: sqlite3.Connection, message_id: int, *, from_folder: int, to_folder: int,
        change_num: int, now: int,
    ) -> None:  # fmt: skip
        """Move a message between folders, leaving a tombstone in the one it left."""
        move_message(
            conn, message_id, from_folder=from_folder, to_folder=to_folder,
            change_num=change_num, now=now,
        )  # fmt: skip

    # --- Submissions ------------------------------------------------------------------------

    def was_delivered(self, conn: sqlite3.Connection, submission_id: bytes) -> bool:
        """Has this mailbox already received the submission?"""
        return was_delivered(conn, submission_id)

    def note_delivery(
        self, conn: sqlite3.Connection, submission_id: bytes, message_id: int, now: int
    ) -> None:
        """Record the submission's arrival as ``message_id`` (in its transaction)."""
        note_delivery(conn, submission_id, message_id, now)

    # --- Mailbox size and quota -----------------------------------------------------------

    def mailbox_size(self, conn: sqlite3.Connection) -> int:
        """The size of the mailbox in bytes (:func:`mailbox_size`)."""
        return mailbox_size(conn)

    def mailbox_quota(self, conn: sqlite3.Connection, limits: Limits) -> int:
        """The mailbox's size limit: its own, else the default (0: none)."""
        return mailbox_quota(conn, limits)

    def has_own_quota(self, conn: sqlite3.Connection) -> bool:
        """Does the mailbox have a size limit of its own?"""
        return has_own_quota(conn)

    def set_mailbox_quota(self, conn: sqlite3.Connection, limit: int | None) -> None:
        """Give the mailbox its own size limit (0: none), or None: the default again."""
        set_mailbox_quota(conn, limit)

    def mailbox_room(self, conn: sqlite3.Connection, limits: Limits) -> int | None:
        """Bytes the mailbox may still grow by (None: no limit)."""
        return mailbox_room(conn, limits)

    def check_mailbox_room(
        self, conn: sqlite3.Connection, limits: Limits, added: int | None
    ) -> None:
        """Raise NotEnoughDisk if the mailbox is past its quota after adding ``added``."""
        check_mailbox_room(conn, limits, added)
