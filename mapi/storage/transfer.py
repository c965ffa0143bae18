"""Detached copies of committed messages, for saving into another mailbox.

Theory of operation
-------------------
:func:`~mapi.storage.messages.copy_message` copies inside one database with SQL.
Delivery ([MS-OXOMSG] 3.2.5.1 in our simple form, :mod:`mapi.objects.submit`) copies a
message into *another* mailbox file, so :func:`export_message` reads it into a
:class:`~mapi.storage.messages.MessageState` that belongs to no database (``db_id``
None): small values as values, large ones (bodies, attachment data) spooled chunk by
chunk into :class:`~mapi.storage.propbag.TempData` (nothing is held whole in memory), its
recipients, its attachments and their embedded messages, recursively. Saving that
state with :func:`~mapi.storage.messages.save_message` in the target database writes
a new message there. Snapshots of one export share the frozen spooled data, so one
export serves every recipient.
"""

from __future__ import annotations

import sqlite3

from mapi.model.limits import Limits
from mapi.storage import chunks
from mapi.storage.messages import (
    AttachState,
    MessageState,
    embedded_id,
    load_attachment,
    load_message,
    load_recipients,
)
from mapi.storage.propbag import PropBag, TempData
from mapi.storage.schema import OWNER_ATTACHMENT, OWNER_MESSAGE


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
    """A detached, unsaved copy of committed message ``db_id`` (see the module docstring).

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


__all__ = ["export_message"]
