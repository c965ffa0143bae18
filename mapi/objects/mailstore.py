"""Store operations the Internet-mail doors need that the folder objects do not offer.

Theory of operation
-------------------
IMAP's APPEND saves a whole converted message at once, and its COPY must say which
messages it made (UIDPLUS's COPYUID). :meth:`mapi.objects.folders.Folder.copy_messages`
returns only a status, and the MAPI way to build a message (create, set properties,
add recipients and attachments one call at a time) costs a round of checks per call.
So these two functions do the same work as the folder operations, with the same
permission checks, in one transaction each, and record the same changes
(:func:`mapi.notify.changes.record`), so MAPI sessions get the notifications and
table rows they get for a MAPI save or copy.
"""

from __future__ import annotations

from collections.abc import Sequence

from mapi.access import permissions
from mapi.model import proptags as pt
from mapi.model.properties import PropData
from mapi.notify.changes import Change, Op, record
from mapi.objects.context import StoreContext
from mapi.objects.delivery import ConvertedMessage
from mapi.storage.api import AttachState, MessageState
from mapi.storage.propbag import PropBag


def message_state(conv: ConvertedMessage, now: int) -> MessageState:
    """A new, unsaved message holding ``conv`` (recursively for embedded messages)."""
    bag = PropBag()
    for tag, value in conv.props.items():
        bag.set(tag, value)
    recipients = [{**row, pt.PR_ROWID: i} for i, row in enumerate(conv.recipients)]
    attachments: dict[int, AttachState | None] = {}
    for num, attach in enumerate(conv.attachments):
        abag = PropBag()
        for tag, value in attach.props.items():
            abag.set(tag, value)
        embedded = message_state(attach.embedded, now) if attach.embedded is not None else None
        attachments[num] = AttachState(num, None, abag, embedded)
    return MessageState(
        None, 0, now, now, bag, recipients=recipients, attachments=attachments,
        next_attach_num=len(attachments),
    )  # fmt: skip


def save_new_message(
    ctx: StoreContext, folder_id: int, conv: ConvertedMessage, extra: dict[int, PropData]
) -> int:
    """Save ``conv`` with the properties ``extra`` over its own as a new message of the
    folder (one transaction, within the mailbox's quota); returns its id.

    Raises:
        NoAccess: no CREATE right on the folder. NotEnoughDisk: over the quota.
        TooBig: over the message size limit. NotFound: no such folder.
    """
    db = ctx.db
    with db.lock:
        permissions.check_create_message(ctx, folder_id)
        now = ctx.now()
        state = message_state(conv, now)
        for tag, value in extra.items():
            state.bag.set(tag, value)
        with db.transaction() as txn:
            db.folders.row(txn, folder_id)
            new_id = db.messages.save(
                txn, state, limits=ctx.limits, change_num=db.next_change_number(txn), now=now,
                folder_id=folder_id, check_quota=True,
            )  # fmt: skip
            record(ctx, Change(op=Op.CREATED, folder=False, object_id=new_id, parent_id=folder_id))
        return new_id


def copy_messages(
    ctx: StoreContext, src: int, message_ids: Sequence[int], dest: int
) -> list[int | None]:
    """Copy messages of folder ``src`` into ``dest`` as
    :meth:`~mapi.objects.folders.Folder.copy_messages` does; returns the new ids in the
    order of ``message_ids`` (None for one that is not in ``src``).

    Raises:
        NoAccess, NotFound (no such folder), NotEnoughDisk (over the quota).
    """
    db = ctx.db
    with db.lock:
        permissions.check_copy_messages(ctx, src, dest, move=False)
        with db.transaction() as txn:
            db.folders.row(txn, dest)
            found = db.folders.messages_in(txn, src, list(message_ids))
            cn = db.next_change_number(txn)
            new_ids = db.folders.copy_messages(txn, found, dest, change_num=cn, limits=ctx.limits)
            changes = [
                Change(
                    op=Op.COPIED,
                    folder=False,
                    object_id=new,
                    parent_id=dest,
                    old_parent_id=src,
                    old_id=mid,
                )
                for mid, new in zip(found, new_ids, strict=True)
            ]
            record(ctx, *changes)
        made = dict(zip(found, new_ids, strict=True))
        return [made.get(mid) for mid in message_ids]


__all__ = ["copy_messages", "message_state", "save_new_message"]
