"""Message submission and local delivery ([MS-OXOMSG] 3.2.4.1 / 3.2.5.1, our simple form).

Theory of operation
-------------------
:func:`submit` (``Message.submit()``, RopSubmitMessage) sends a saved message of the
submitting user's own mailbox to its recipients, all of them users of this server:

1. *Prepare* (sender's mailbox lock): pending changes are saved (only if there are
   any), the message is exported as a detached copy (:mod:`mapi.storage.transfer`),
   and each recipient row is resolved against the directory by PR_EMAIL_ADDRESS
   (or PR_SMTP_ADDRESS, else PR_DISPLAY_NAME) as an e-mail address or a login name.
2. *Deliver*, one recipient mailbox at a time, **each in its own transaction**: a
   copy goes into the recipient's Inbox with PR_MESSAGE_DELIVERY_TIME,
   PR_CLIENT_SUBMIT_TIME, PR_SENDER_* / PR_SENT_REPRESENTING_* (the submitting user),
   PR_RECEIVED_BY_*, PR_MESSAGE_TO_ME / PR_MESSAGE_CC_ME, MSGFLAG_UNSENT and
   MSGFLAG_READ cleared (unread) and the Bcc rows removed; the commit raises
   fnevNewMail, fnevObjectCreated and a contents-table row in that mailbox.
3. *File* (sender's mailbox, one transaction): the original gets the sender and
   time properties, loses MSGFLAG_UNSENT, gains MSGFLAG_READ and moves into Sent
   Items (or is deleted when PR_DELETE_AFTER_SUBMIT is true); when some recipients
   could not be resolved a non-delivery report (``REPORT.IPM.Note.NDR``, subject
   "Undeliverable: <subject>", a body naming the failed addresses, the failed
   recipients as its recipient rows and the original attached as an embedded
   message) is put into the sender's Inbox, raising new mail there.

No two mailbox locks are ever held at once (so submissions in opposite directions
cannot deadlock).

Atomicity and retries: delivery to several mailboxes is **not** one atomic
transaction; each mailbox's delivery is. Every submission has an id (by default the
store's provider UID + the message id + its change number, so re-submitting the
same unchanged message gives the same id), and each recipient mailbox records the
ids it has received in the same transaction as the delivered copy. A crash in the
middle leaves at most some recipients undelivered and the original unsent in its
folder; submitting it again delivers to the remaining recipients only, then files
it. A message changed in between is a new submission.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from mapi import errors
from mapi import proptags as pt
from mapi.context import Identity, StoreContext
from mapi.events import Change, Op, record
from mapi.folder_rows import role_folder
from mapi.propbag import PropBag
from mapi.properties import PropData
from mapi.storage import tombstones as tomb
from mapi.storage.messages import AttachState, MessageState, load_message, save_message
from mapi.storage.transfer import export_message

if TYPE_CHECKING:
    from mapi.messages import Message

NDR_CLASS: Final = "REPORT.IPM.Note.NDR"
SYSTEM_NAME: Final = "Mail Delivery System"
_FLAG_CLEAR: Final = pt.MSGFLAG_UNSENT | pt.MSGFLAG_READ | pt.MSGFLAG_SUBMIT


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What a submission did."""

    submission_id: bytes
    #: User ids of the mailboxes that received a copy (this time or an earlier try).
    delivered: list[str] = field(default_factory=list)
    #: Recipient addresses that could not be resolved (named in the NDR).
    undeliverable: list[str] = field(default_factory=list)
    #: Entry id of the original in Sent Items (None when deleted after submit).
    sent_entry_id: bytes | None = None
    #: Entry id of the non-delivery report in the sender's Inbox, if any.
    ndr_entry_id: bytes | None = None


def _address(row: dict[int, PropData]) -> str:
    for tag in (pt.PR_EMAIL_ADDRESS_W, pt.PR_SMTP_ADDRESS_W, pt.PR_DISPLAY_NAME_W):
        value = row.get(tag)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _sender_props(user: Identity, now: int) -> list[tuple[int, PropData]]:
    address = user.email or user.username
    return [
        (pt.PR_SENDER_NAME_W, user.display_name),
        (pt.PR_SENDER_EMAIL_ADDRESS_W, address),
        (pt.PR_SENDER_ADDRTYPE_W, "SMTP"),
        (pt.PR_SENT_REPRESENTING_NAME_W, user.display_name),
        (pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W, address),
        (pt.PR_SENT_REPRESENTING_ADDRTYPE_W, "SMTP"),
        (pt.PR_CLIENT_SUBMIT_TIME, now),
        (pt.PR_MESSAGE_DELIVERY_TIME, now),
    ]


def _flags(bag: PropBag) -> int:
    found = bag.lookup(pt.PR_MESSAGE_FLAGS)
    return found[1] if found is not None and isinstance(found[1], int) else 0


def _text(bag: PropBag, tag: int) -> str:
    found = bag.lookup(tag)
    return found[1] if found is not None and isinstance(found[1], str) else ""


def submit(message: Message, submission_id: bytes | None = None) -> SubmitResult:
    """Submit ``message`` (see the module docstring).

    Raises:
        NoAccess: read-only, embedded, or not in the submitting user's own mailbox.
        InvalidParameter: no recipients. NoSupport: the store has no mail router.
        ObjectChanged: the message changed while it was being delivered.
    """
    ctx: StoreContext = message._ctx
    router = ctx.router
    if router is None:
        raise errors.NoSupport("this store cannot submit messages")
    # 1. Prepare, under the sender's lock only.
    with ctx.db.lock:
        message._check_open()
        message._check_writable()
        if message._parent is not None or not ctx.is_owner:
            raise errors.NoAccess("only a message of one's own mailbox can be submitted")
        if message._state.db_id is None or message._state.dirty:
            message.save_changes()
        db_id = message._state.db_id
        assert db_id is not None
        with ctx.db.reading() as conn:
            exported = export_message(conn, db_id, ctx.limits)
            change_num = int(
                conn.execute("SELECT change_num FROM messages WHERE id = ?", (db_id,)).fetchone()[0]
            )
    sid = submission_id or (ctx.uid + db_id.to_bytes(8, "big") + change_num.to_bytes(6, "big"))
    recipients = exported.recipients or []
    if not recipients:
        raise errors.InvalidParameter("the message has no recipients")
    now = ctx.now()
    targets: dict[str, tuple[Identity, set[int]]] = {}
    failed: list[str] = []
    for row in recipients:
        address = _address(row)
        user = router.resolve(address) if address else None
        if user is None:
            failed.append(address or "(no address)")
            continue
        kind = row.get(pt.PR_RECIPIENT_TYPE)
        targets.setdefault(user.user_id, (user, set()))[1].add(kind if isinstance(kind, int) else 1)
    # 2. Deliver, one mailbox (one transaction) at a time.
    delivered = []
    for user, kinds in targets.values():
        _deliver(ctx, exported, user, kinds, sid, now)
        delivered.append(user.user_id)
    # 3. File the original and report failures, in the sender's mailbox.
    sent, ndr = _file(message, db_id, change_num, exported, failed, now)
    return SubmitResult(sid, delivered, failed, sent, ndr)


def _deliver(
    ctx: StoreContext, exported: MessageState, user: Identity, kinds: set[int], sid: bytes,
    now: int,
) -> None:  # fmt: skip
    assert ctx.router is not None
    db = ctx.router.mailbox(user)
    target = StoreContext(db, user=ctx.user, owner=user, hub=ctx.hub, router=ctx.router)
    state = exported.snapshot()
    state.recipients = [
        r for r in state.recipients or [] if r.get(pt.PR_RECIPIENT_TYPE) != pt.MAPI_BCC
    ]
    flags = _flags(state.bag) & ~_FLAG_CLEAR
    for tag, value in [
        *_sender_props(ctx.user, now),
        (pt.PR_MESSAGE_FLAGS, flags),
        (pt.PR_RECEIVED_BY_NAME_W, user.display_name),
        (pt.PR_RECEIVED_BY_EMAIL_ADDRESS_W, user.email or user.username),
        (pt.PR_MESSAGE_TO_ME, pt.MAPI_TO in kinds),
        (pt.PR_MESSAGE_CC_ME, pt.MAPI_CC in kinds),
        (pt.PR_MESSAGE_RECIP_ME, True),
    ]:
        state.bag.set(tag, value)
    with db.transaction() as conn:
        if conn.execute("SELECT 1 FROM submissions WHERE submission_id = ?", (sid,)).fetchone():
            return  # delivered by an earlier attempt
        inbox = role_folder(conn, "inbox")
        new_id = save_message(
            conn, state, limits=db.limits, change_num=db.next_change_number(conn), now=now,
            folder_id=inbox,
        )  # fmt: skip
        conn.execute(
            "INSERT INTO submissions(submission_id, message_id, time) VALUES (?, ?, ?)",
            (sid, new_id, now),
        )
        record(target, _new_mail(new_id, inbox, state.bag, flags))


def _new_mail(db_id: int, folder_id: int, bag: PropBag, flags: int) -> Change:
    return Change(
        op=Op.CREATED, folder=False, object_id=db_id, parent_id=folder_id, new_mail=True,
        message_class=_text(bag, pt.PR_MESSAGE_CLASS_W) or "IPM.Note", message_flags=flags,
    )  # fmt: skip


def _file(
    message: Message, db_id: int, change_num: int, exported: MessageState, failed: list[str],
    now: int,
) -> tuple[bytes | None, bytes | None]:  # fmt: skip
    ctx: StoreContext = message._ctx
    db = ctx.db
    with db.lock, db.transaction() as conn:
        row = conn.execute(
            "SELECT change_num, folder_id FROM messages WHERE id = ?", (db_id,)
        ).fetchone()
        if row is None:
            raise errors.ObjectDeleted("the message was deleted during submission")
        if int(row[0]) != change_num:
            raise errors.ObjectChanged("the message changed during submission")
        old_folder = int(row[1])
        ndr_eid = None
        if failed:
            ndr_eid = ctx.message_eid(_save_ndr(ctx, conn, exported, failed, now))
        delete_after = message._state.bag.lookup(pt.PR_DELETE_AFTER_SUBMIT)
        cn = db.next_change_number(conn)
        if delete_after is not None and delete_after[1] is True:
            tomb.tombstone(conn, tomb.MESSAGE, [db_id], old_folder, cn, now)
            conn.execute("DELETE FROM messages WHERE id = ?", (db_id,))
            record(ctx, Change(op=Op.DELETED, folder=False, object_id=db_id, parent_id=old_folder))
            message._closed = True
            return None, ndr_eid
        state = message._state
        flags = (_flags(state.bag) & ~(pt.MSGFLAG_UNSENT | pt.MSGFLAG_SUBMIT)) | pt.MSGFLAG_READ
        for tag, value in [*_sender_props(ctx.user, now), (pt.PR_MESSAGE_FLAGS, flags)]:
            state.bag.set(tag, value)
        save_message(conn, state, limits=ctx.limits, change_num=cn, now=now, folder_id=old_folder)
        sent = role_folder(conn, "sent")
        change = Change(op=Op.MODIFIED, folder=False, object_id=db_id, parent_id=old_folder)
        if sent != old_folder:
            conn.execute("UPDATE messages SET folder_id = ? WHERE id = ?", (sent, db_id))
            tomb.tombstone(conn, tomb.MESSAGE, [db_id], old_folder, cn, now)
            change = Change(
                op=Op.MOVED, folder=False, object_id=db_id, parent_id=sent,
                old_parent_id=old_folder,
            )  # fmt: skip
        record(ctx, change)
    # Reload the working copy: it is now the filed message.
    with db.reading() as conn:
        message._state, folder_id = load_message(conn, db_id)
    message.folder_id = folder_id
    return ctx.message_eid(db_id), ndr_eid


def _save_ndr(
    ctx: StoreContext, conn: sqlite3.Connection, original: MessageState, failed: list[str],
    now: int,
) -> int:  # fmt: skip
    subject = _text(original.bag, pt.PR_SUBJECT_W)
    body = (
        "Your message could not be delivered to these recipients:\r\n\r\n"
        + "".join(f"    {address}\r\n" for address in failed)
        + "\r\nNo user of this server has these addresses.\r\n"
    )
    bag = PropBag()
    props: list[tuple[int, PropData]] = [
        (pt.PR_MESSAGE_CLASS_W, NDR_CLASS),
        (pt.PR_SUBJECT_W, f"Undeliverable: {subject}"),
        (pt.PR_BODY_W, body),
        (pt.PR_MESSAGE_FLAGS, 0),
        (pt.PR_MESSAGE_DELIVERY_TIME, now),
        (pt.PR_CLIENT_SUBMIT_TIME, now),
        (pt.PR_SENDER_NAME_W, SYSTEM_NAME),
        (pt.PR_SENT_REPRESENTING_NAME_W, SYSTEM_NAME),
        (pt.PR_RECEIVED_BY_NAME_W, ctx.user.display_name),
        (pt.PR_RECEIVED_BY_EMAIL_ADDRESS_W, ctx.user.email or ctx.user.username),
    ]
    for tag, value in props:
        bag.set(tag, value)
    embedded = original.snapshot()
    attach_bag = PropBag()
    attach_bag.set(pt.PR_ATTACH_METHOD, pt.ATTACH_EMBEDDED_MSG)
    attach_bag.set(pt.PR_DISPLAY_NAME_W, subject or "Original message")
    recipients: list[dict[int, PropData]] = [
        {
            pt.PR_ROWID: i,
            pt.PR_DISPLAY_NAME_W: address,
            pt.PR_EMAIL_ADDRESS_W: address,
            pt.PR_ADDRTYPE_W: "SMTP",
            pt.PR_RECIPIENT_TYPE: pt.MAPI_TO,
        }
        for i, address in enumerate(failed)
    ]
    state = MessageState(
        None, 0, now, now, bag, recipients=recipients,
        attachments={0: AttachState(0, None, attach_bag, embedded)}, next_attach_num=1,
    )  # fmt: skip
    inbox = role_folder(conn, "inbox")
    db = ctx.db
    ndr_id = save_message(
        conn, state, limits=ctx.limits, change_num=db.next_change_number(conn), now=now,
        folder_id=inbox,
    )  # fmt: skip
    record(ctx, _new_mail(ndr_id, inbox, bag, 0))
    return ndr_id


__all__ = ["NDR_CLASS", "SubmitResult", "submit"]
