"""Message submission and local delivery ([MS-OXOMSG] 3.2.4.1 / 3.2.5.1, our simple form).

Theory of operation
-------------------
:func:`submit` (``submit(message)``, RopSubmitMessage) sends a saved message of the
submitting user's own mailbox to its recipients: users of this server, and (2b)
addresses of other mail domains, handed to the outbound queue:

1. *Prepare* (sender's mailbox lock): pending changes are saved (only if there are
   any), the message is exported as a detached copy (``MailboxDB.messages.export``),
   and each recipient row is resolved against the directory by PR_EMAIL_ADDRESS
   (or PR_SMTP_ADDRESS, else PR_DISPLAY_NAME) as an e-mail address or a login name.
2. *Deliver*, one recipient mailbox at a time, **each in its own transaction**: a
   copy goes into the recipient's Inbox with PR_MESSAGE_DELIVERY_TIME,
   PR_CLIENT_SUBMIT_TIME, PR_SENDER_* / PR_SENT_REPRESENTING_* (the submitting user),
   PR_RECEIVED_BY_*, PR_MESSAGE_TO_ME / PR_MESSAGE_CC_ME, MSGFLAG_UNSENT and
   MSGFLAG_READ cleared (unread) and the Bcc rows removed; the commit raises
   fnevNewMail, fnevObjectCreated and a contents-table row in that mailbox.
   The envelope is the server's, not the sender's: the sender-identity properties
   the recipient might trust are set from the submitting user or removed (entry ids,
   search keys, SMTP addresses, transport headers, creator/last modifier, received-by
   leftovers; see :data:`_ENVELOPE_IDS`). Embedded messages are content (a forwarded
   message legitimately names someone else as its sender) and are left as they are.
   Named properties (ids 0x8000..0xFFFE) mean something only in their own mailbox:
   every one on the copy (message, recipient rows, attachments, embedded messages)
   is translated by name into the recipient's mailbox, its names read from the
   sender's mailbox during *prepare*; ids the sender's mailbox does not map, and
   names the recipient's mailbox has no id left for, are dropped.
2b. *Hand off* the recipients of other mail domains: an address the store's
   :class:`~mapi.objects.context.RemoteMail` hook (``ctx.remote``, set by ``serve``
   when ``[outbound]`` is on) calls remote is not resolved against the directory; one
   :class:`~mapi.objects.context.OutgoingMessage` (plain values: the detached copy's
   properties, recipient rows and attachments) goes to ``remote.send(sender,
   addresses, message)`` for all of them, after the local deliveries and before the
   original is filed. Its envelope is the server's, as for a local copy (the
   sender-identity properties are the submitting user's, a Message-ID is made from
   the submission id when there is none); the hook renders it to MIME and queues it
   durably (fsynced, ``internet_mail.outbound``) before it returns, so a submission
   that returned is never lost; delivery, retries, DKIM and any report for a failure
   happen later, outside this call (``SubmitResult.queued`` lists the addresses).
   With no hook, such an address is resolved like any other and, unknown, gets the
   immediate non-delivery report. A crash between the hand-off and the filing leaves
   the original unsent; submitting it again hands it off again with the same key
   (the submission id and the addresses), and the queue, which remembers the keys it
   took, queues nothing more: the remote copy goes out once.
3. *File* (sender's mailbox, one transaction): the original gets the sender and
   time properties, loses MSGFLAG_UNSENT, gains MSGFLAG_READ and moves into Sent
   Items (or is deleted when PR_DELETE_AFTER_SUBMIT is true; the filed copy is the
   sender's own: only the sender and time properties are set, nothing is removed or
   translated); when some recipients
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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mapi.model import errors, named
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.model.properties import PropData, from_stream_bytes
from mapi.notify.changes import Change, Op, record
from mapi.objects import quota
from mapi.objects.context import (
    Identity,
    OutgoingAttachment,
    OutgoingMessage,
    RemoteMail,
    StoreContext,
)
from mapi.objects.messages import Message, recipient_address
from mapi.storage.api import AttachState, MailboxStorage, MessageState, Txn
from mapi.storage.propbag import PropBag, Source, TempData

NDR_CLASS: Final = "REPORT.IPM.Note.NDR"
SYSTEM_NAME: Final = "Mail Delivery System"
_FLAG_CLEAR: Final = pt.MSGFLAG_UNSENT | pt.MSGFLAG_READ | pt.MSGFLAG_SUBMIT

#: Property ids of the delivered copy's envelope that the sender must not choose.
#: Every value with one of these ids (of any type, both string flavours included) is
#: removed from the copy; :func:`_envelope_props` then sets those the server knows.
_ENVELOPE_IDS: Final = frozenset(
    pt.prop_id(tag)
    for tag in (
        # The sender, as the recipient's client shows and resolves it.
        pt.PR_SENDER_NAME_W, pt.PR_SENDER_EMAIL_ADDRESS_W, pt.PR_SENDER_ADDRTYPE_W,
        pt.PR_SENDER_ENTRYID, pt.PR_SENDER_SEARCH_KEY, pt.PR_SENDER_SMTP_ADDRESS_W,
        pt.PR_SENT_REPRESENTING_NAME_W, pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W,
        pt.PR_SENT_REPRESENTING_ADDRTYPE_W, pt.PR_SENT_REPRESENTING_ENTRYID,
        pt.PR_SENT_REPRESENTING_SEARCH_KEY, pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W,
        # What the transport would have written.
        pt.PR_TRANSPORT_MESSAGE_HEADERS_W, pt.PR_CREATOR_NAME_W, pt.PR_CREATOR_ENTRYID,
        pt.PR_LAST_MODIFIER_NAME_W, pt.PR_LAST_MODIFIER_ENTRYID,
        # Who received it (the recipient's side of the envelope).
        pt.PR_RECEIVED_BY_NAME_W, pt.PR_RECEIVED_BY_EMAIL_ADDRESS_W,
        pt.PR_RECEIVED_BY_ADDRTYPE_W, pt.PR_RECEIVED_BY_ENTRYID,
        pt.PR_RECEIVED_BY_SEARCH_KEY, pt.PR_RECEIVED_BY_SMTP_ADDRESS_W,
        pt.PR_RCVD_REPRESENTING_NAME_W, pt.PR_RCVD_REPRESENTING_EMAIL_ADDRESS_W,
        pt.PR_RCVD_REPRESENTING_ADDRTYPE_W, pt.PR_RCVD_REPRESENTING_ENTRYID,
        pt.PR_RCVD_REPRESENTING_SEARCH_KEY, pt.PR_RCVD_REPRESENTING_SMTP_ADDRESS_W,
    )
)  # fmt: skip


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
    #: Addresses of other mail domains, handed to the outbound queue.
    queued: list[str] = field(default_factory=list)


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


def _envelope_props(sender: Identity, recipient: Identity) -> list[tuple[int, PropData]]:
    """The envelope of a delivered copy, beyond :func:`_sender_props`: the SMTP
    addresses where the users have one (none otherwise: a login name is no SMTP
    address) and who received it. There is no address book to make honest entry ids
    or search keys from, so those stay removed."""
    props: list[tuple[int, PropData]] = [
        (pt.PR_RECEIVED_BY_NAME_W, recipient.display_name),
        (pt.PR_RECEIVED_BY_EMAIL_ADDRESS_W, recipient.email or recipient.username),
        (pt.PR_RECEIVED_BY_ADDRTYPE_W, "SMTP"),
    ]
    if sender.email:
        props += [
            (pt.PR_SENDER_SMTP_ADDRESS_W, sender.email),
            (pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W, sender.email),
        ]
    if recipient.email:
        props.append((pt.PR_RECEIVED_BY_SMTP_ADDRESS_W, recipient.email))
    return props


# --- Named properties across mailboxes ---------------------------------------------------


def _named_ids(state: MessageState, out: set[int]) -> set[int]:
    """Add the named-range property ids used anywhere in ``state`` to ``out``."""
    for tag in state.bag.tags():
        if pt.is_named_id(pt.prop_id(tag)):
            out.add(pt.prop_id(tag))
    for row in state.recipients or []:
        out.update(pt.prop_id(t) for t in row if pt.is_named_id(pt.prop_id(t)))
    for attach in state.attachments.values():
        if attach is None:
            continue
        out.update(pt.prop_id(t) for t in attach.bag.tags() if pt.is_named_id(pt.prop_id(t)))
        if attach.embedded is not None:
            _named_ids(attach.embedded, out)
    return out


def _sender_names(db: MailboxStorage, txn: Txn, state: MessageState) -> dict[int, named.PropName]:
    """Sender-mailbox named id -> its name, for the ids of ``state`` that are mapped."""
    ids = sorted(_named_ids(state, set()))
    found = zip(ids, db.named.get_names(txn, ids), strict=True)
    return {pid: name for pid, name in found if name is not None}


def _recipient_ids(
    db: MailboxStorage, txn: Txn, names: dict[int, named.PropName], limits: Limits
) -> dict[int, int]:
    """Sender id -> recipient id of the same name, allocating ids in the recipient's
    mailbox (inside its delivery transaction); one mapping serves the whole delivery."""
    out: dict[int, int] = {}
    for pid, name in names.items():
        try:
            [new] = db.named.get_ids(txn, [name], create=True, limits=limits)
        except (errors.NotEnoughResources, errors.InvalidParameter):
            # The recipient's named-id range is exhausted (or its limits refuse the
            # name): drop the properties of this name rather than fail the delivery
            # or, worse, store them under an id that means something else there.
            continue
        if pt.is_named_id(new):  # never let a name turn into a tagged property
            out[pid] = new
    return out


def _translate_tag(tag: int, ids: dict[int, int]) -> int | None:
    """``tag`` in the recipient's mailbox (None: drop it)."""
    pid = pt.prop_id(tag)
    if not pt.is_named_id(pid):
        return tag
    new = ids.get(pid)
    return None if new is None else pt.make_tag(new, pt.prop_type(tag))


def _translate_bag(bag: PropBag, ids: dict[int, int]) -> None:
    moved: list[tuple[int, PropData | TempData]] = []
    for tag in bag.tags():
        if not pt.is_named_id(pt.prop_id(tag)):
            continue
        found = bag.lookup(tag)
        assert found is not None
        source, payload = found
        if source is Source.LARGE:
            # Exported states are detached (export_message spools every large value
            # into a TempData); a committed chunk reference cannot move mailboxes.
            raise errors.CallFailed("a delivered copy must be detached")
        new = _translate_tag(tag, ids)
        if new is not None:
            moved.append((new, payload))
    # Delete every named value first, then set the translated ones: an old id may be
    # the new id of another name.
    for tag in [t for t in bag.tags() if pt.is_named_id(pt.prop_id(t))]:
        bag.delete(tag)
    for tag, payload in moved:
        if isinstance(payload, TempData):
            bag.set_temp(tag, payload)  # frozen, shared with the other snapshots
        else:
            bag.set(tag, payload)


def _translate_named(state: MessageState, ids: dict[int, int]) -> None:
    """Rewrite every named property of ``state`` (recursively) into the recipient's ids."""
    _translate_bag(state.bag, ids)
    if state.recipients is not None:
        rows = []
        for row in state.recipients:
            out: dict[int, PropData] = {}
            for tag, value in row.items():
                new = _translate_tag(tag, ids)
                if new is not None:
                    out[new] = value
            rows.append(out)
        state.recipients = rows
    for attach in state.attachments.values():
        if attach is None:
            continue
        _translate_bag(attach.bag, ids)
        if attach.embedded is not None:
            _translate_named(attach.embedded, ids)


def _flags(bag: PropBag) -> int:
    found = bag.lookup(pt.PR_MESSAGE_FLAGS)
    return found[1] if found is not None and isinstance(found[1], int) else 0


def _text(bag: PropBag, tag: int) -> str:
    found = bag.lookup(tag)
    return found[1] if found is not None and isinstance(found[1], str) else ""


def submit(message: Message, submission_id: bytes | None = None) -> SubmitResult:
    """Submit ``message`` (see the module docstring; [MS-OXOMSG] RopSubmitMessage).

    Before anything is delivered, the sender's and every recipient's mailbox must have
    room for it (:func:`mapi.objects.quota.check_submission`).

    Raises:
        NotEnoughDisk: a mailbox is full (nothing was sent; the message stays where it
        is, unsent). TooBig: the message is too large.
        NoAccess: read-only, embedded, or not in the submitting user's own mailbox.
        InvalidParameter: no recipients. NoSupport: the store has no mail router.
        ObjectChanged: the message changed while it was being delivered.
    """
    quota.check_submission(message)
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
        with ctx.db.reading() as txn:
            exported = ctx.db.messages.export(txn, db_id, ctx.limits)
            where = ctx.db.messages.placement(txn, db_id)
            assert where is not None  # (exported: it is there)
            change_num = where.change_num
            names = _sender_names(ctx.db, txn, exported)
    sid = submission_id or (ctx.uid + db_id.to_bytes(8, "big") + change_num.to_bytes(6, "big"))
    recipients = exported.recipients or []
    if not recipients:
        raise errors.InvalidParameter("the message has no recipients")
    now = ctx.now()
    targets: dict[str, tuple[Identity, set[int]]] = {}
    failed: list[str] = []
    external: list[str] = []
    remote = ctx.remote
    for row in recipients:
        address = recipient_address(row)
        if address and remote is not None and remote.is_remote(address):
            if address.lower() not in {a.lower() for a in external}:
                external.append(address)
            continue
        user = router.resolve(address) if address else None
        if user is None:
            failed.append(address or "(no address)")
            continue
        kind = row.get(pt.PR_RECIPIENT_TYPE)
        targets.setdefault(user.user_id, (user, set()))[1].add(kind if isinstance(kind, int) else 1)
    # 2. Deliver, one mailbox (one transaction) at a time.
    delivered = []
    for user, kinds in targets.values():
        _deliver(ctx, exported, names, user, kinds, sid, now)
        delivered.append(user.user_id)
    # 2b. Queue the copy for other mail domains (durable before the original is filed).
    if external and remote is not None:
        _send_remote(remote, ctx.user, exported, external, sid, now)
    # 3. File the original and report failures, in the sender's mailbox.

    sent, ndr = _file(message, db_id, change_num, exported, failed, now)
    return SubmitResult(sid, delivered, failed, sent, ndr, external)


def _deliver(
    ctx: StoreContext, exported: MessageState, names: dict[int, named.PropName],
    user: Identity, kinds: set[int], sid: bytes, now: int,
) -> None:  # fmt: skip
    assert ctx.router is not None
    db = ctx.router.mailbox(user)
    target = StoreContext(db, user=ctx.user, owner=user, hub=ctx.hub, router=ctx.router)
    state = exported.snapshot()
    state.recipients = [
        r for r in state.recipients or [] if r.get(pt.PR_RECIPIENT_TYPE) != pt.MAPI_BCC
    ]
    flags = _flags(state.bag) & ~_FLAG_CLEAR
    for tag in state.bag.tags():
        if pt.prop_id(tag) in _ENVELOPE_IDS:
            state.bag.delete(tag)
    for tag, value in [
        *_sender_props(ctx.user, now),
        *_envelope_props(ctx.user, user),
        (pt.PR_MESSAGE_FLAGS, flags),
        (pt.PR_MESSAGE_TO_ME, pt.MAPI_TO in kinds),
        (pt.PR_MESSAGE_CC_ME, pt.MAPI_CC in kinds),
        (pt.PR_MESSAGE_RECIP_ME, True),
    ]:
        state.bag.set(tag, value)
    deliver_to_inbox(
        target, state, sid, now,
        prepare=lambda txn: _translate_named(state, _recipient_ids(db, txn, names, db.limits)),
    )  # fmt: skip


def deliver_to_inbox(
    target: StoreContext, state: MessageState, sid: bytes, now: int,
    prepare: Callable[[Txn], None] | None = None,
) -> int | None:  # fmt: skip
    """Save ``state`` into the Inbox of ``target``'s mailbox, in one transaction that
    also records delivery ``sid`` and raises fnevNewMail, fnevObjectCreated and the
    contents-table row on commit; ``prepare(txn)`` runs first inside it. The local
    delivery of a submission and of Internet mail (:mod:`mapi.objects.delivery`).

    Returns the new message's id, or None when ``sid`` was delivered there before.
    """
    db = target.db
    with db.transaction() as txn:
        if db.messages.was_delivered(txn, sid):
            return None  # delivered by an earlier attempt
        if prepare is not None:
            prepare(txn)
        inbox = db.folders.role_folder(txn, "inbox")
        new_id = db.messages.save(
            txn, state, limits=db.limits, change_num=db.next_change_number(txn), now=now,
            folder_id=inbox,
        )  # fmt: skip
        db.messages.note_delivery(txn, sid, new_id, now)
        record(target, _new_mail(new_id, inbox, state.bag, _flags(state.bag)))
    return new_id


def _new_mail(db_id: int, folder_id: int, bag: PropBag, flags: int) -> Change:
    return Change(
        op=Op.CREATED, folder=False, object_id=db_id, parent_id=folder_id, new_mail=True,
        message_class=_text(bag, pt.PR_MESSAGE_CLASS_W) or "IPM.Note", message_flags=flags,
    )  # fmt: skip


def _plain(bag: PropBag) -> dict[int, PropData]:
    out: dict[int, PropData] = {}
    for tag in bag.tags():
        found = bag.lookup(tag)
        if found is None:
            continue
        _, payload = found
        if isinstance(payload, TempData):
            payload = from_stream_bytes(tag, payload.read_all())
        out[tag] = payload
    return out


def _outgoing(state: MessageState) -> OutgoingMessage:
    attachments = [
        OutgoingAttachment(_plain(a.bag), _outgoing(a.embedded) if a.embedded is not None else None)
        for _, a in sorted(state.attachments.items())
        if a is not None
    ]
    return OutgoingMessage(_plain(state.bag), list(state.recipients or []), attachments)


def _send_remote(
    remote: RemoteMail, user: Identity, exported: MessageState, external: list[str],
    sid: bytes, now: int,
) -> None:  # fmt: skip
    """Hand the message to the outbound queue, with the server's envelope: the sender
    properties are the submitting user's, as for a local copy."""
    message = _outgoing(exported)
    for tag in list(message.props):
        if pt.prop_id(tag) in _ENVELOPE_IDS:
            del message.props[tag]
    message.props.update(_sender_props(user, now))
    if user.email:
        message.props[pt.PR_SENDER_SMTP_ADDRESS_W] = user.email
        message.props[pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W] = user.email
    if not message.props.get(pt.PR_INTERNET_MESSAGE_ID_W):
        domain = (user.email or "").rpartition("@")[2] or "localhost"
        message.props[pt.PR_INTERNET_MESSAGE_ID_W] = f"<{sid.hex()}@{domain}>"
    # The key is the submission: made again after a crash, it queues nothing more.
    key = b"mapi:" + sid + b"\0" + "\0".join(sorted(external)).encode()
    remote.send(user.email or user.username, external, message, key=key)


def _file(
    message: Message, db_id: int, change_num: int, exported: MessageState, failed: list[str],
    now: int,
) -> tuple[bytes | None, bytes | None]:  # fmt: skip
    ctx: StoreContext = message._ctx
    db = ctx.db
    with db.lock, db.transaction() as txn:
        where = db.messages.placement(txn, db_id)
        if where is None:
            raise errors.ObjectDeleted("the message was deleted during submission")
        if where.change_num != change_num:
            raise errors.ObjectChanged("the message changed during submission")
        assert where.folder_id is not None
        old_folder = where.folder_id
        ndr_eid = None
        if failed:
            ndr_eid = ctx.message_eid(_save_ndr(ctx, txn, exported, failed, now))
        delete_after = message._state.bag.lookup(pt.PR_DELETE_AFTER_SUBMIT)
        cn = db.next_change_number(txn)
        if delete_after is not None and delete_after[1] is True:
            db.messages.delete(txn, db_id, folder_id=old_folder, change_num=cn, now=now)
            record(ctx, Change(op=Op.DELETED, folder=False, object_id=db_id, parent_id=old_folder))
            message._closed = True
            return None, ndr_eid
        state = message._state
        flags = (_flags(state.bag) & ~(pt.MSGFLAG_UNSENT | pt.MSGFLAG_SUBMIT)) | pt.MSGFLAG_READ
        for tag, value in [*_sender_props(ctx.user, now), (pt.PR_MESSAGE_FLAGS, flags)]:
            state.bag.set(tag, value)
        db.messages.save(
            txn, state, limits=ctx.limits, change_num=cn, now=now, folder_id=old_folder
        )
        sent = db.folders.role_folder(txn, "sent")
        change = Change(op=Op.MODIFIED, folder=False, object_id=db_id, parent_id=old_folder)
        if sent != old_folder:
            db.messages.move(
                txn, db_id, from_folder=old_folder, to_folder=sent, change_num=cn, now=now
            )
            change = Change(
                op=Op.MOVED, folder=False, object_id=db_id, parent_id=sent,
                old_parent_id=old_folder,
            )  # fmt: skip
        record(ctx, change)
    # Reload the working copy: it is now the filed message.
    with db.reading() as txn:
        message._state, folder_id = db.messages.load(txn, db_id)
    message.folder_id = folder_id
    return ctx.message_eid(db_id), ndr_eid


def _save_ndr(
    ctx: StoreContext, txn: Txn, original: MessageState, failed: list[str], now: int
) -> int:
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
    db = ctx.db
    inbox = db.folders.role_folder(txn, "inbox")
    ndr_id = db.messages.save(
        txn, state, limits=ctx.limits, change_num=db.next_change_number(txn), now=now,
        folder_id=inbox,
    )  # fmt: skip
    record(ctx, _new_mail(ndr_id, inbox, bag, 0))
    return ndr_id


__all__ = ["NDR_CLASS", "SubmitResult", "deliver_to_inbox", "submit"]
