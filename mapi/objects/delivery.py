"""Local delivery of Internet mail: MIME bytes into each recipient's Inbox.

Theory of operation
-------------------
:func:`deliver_mime` is the store side of an incoming SMTP transaction (the trio
driver of :mod:`internet_mail.smtp.driver` calls it, through ``serve``, in a worker
thread). It

1. prepends the ``Received:`` trace header (RFC 5321 4.4) the driver wrote to the
   message as it arrived,
2. converts the result with ``convert`` (``serve`` passes
   :func:`internet_mail.mime.mime_to_mapi`: the store core sits below the mail front
   doors and never imports them, so the converter is handed in; the header is then part
   of ``PR_TRANSPORT_MESSAGE_HEADERS``),
3. resolves each envelope recipient against the directory (several addresses of one
   user give one copy), and
4. saves one copy into each user's Inbox through
   :func:`mapi.objects.submit.deliver_to_inbox`, the path of a MAPI submission's
   local delivery: one transaction per mailbox, committed (fsynced) before this
   returns, raising fnevNewMail, fnevObjectCreated and the contents-table row, so
   subscribed sessions, their UDP wake-ups and ICS sync all see it. The bytes as
   received (Received header included) are kept under ``PR_MIME_ORIGINAL`` (stream
   storage), so reading the message back as MIME gives exactly what arrived.

The copy is unread (``PR_MESSAGE_FLAGS`` 0), with ``PR_RECEIVED_BY_*`` naming its
recipient and ``PR_MESSAGE_TO_ME``/``PR_MESSAGE_CC_ME``/``PR_MESSAGE_RECIP_ME`` from the
header recipients. The sender properties are those of the message's ``From``/``Sender``
(Internet mail has no authenticated submitter to stand in for them).

Retries: the delivery id is a hash of the message bytes (without our Received header),
recorded in each mailbox with its copy; a client that resends the same bytes after a
lost ``250`` (or after a 4xx for a failure half-way through the recipients) gives no
second copy to the mailboxes that already have one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.model.properties import PropData
from mapi.notify.changes import Change, Op, record
from mapi.notify.subscriptions import NotificationHub
from mapi.objects.context import Identity, MailRouter, StoreContext
from mapi.objects.submit import deliver_to_inbox
from mapi.storage.api import AttachState, MessageState
from mapi.storage.propbag import PropBag

#: Prefix of the delivery ids of Internet mail (submissions use the store's UID).
_SID_PREFIX = b"mime:"
#: Prefix of the ids of submitters' copies filed in Sent Items (a user who sends to
#: themselves gets both copies).
_SENT_PREFIX = b"sent:"


class DeliveryStore(MailRouter, Protocol):
    """What :func:`deliver_mime` needs of the store (:class:`mapi.store.ObjectStore`)."""

    limits: Limits
    notifications: NotificationHub

    def clock(self) -> int:
        """Now, as a FILETIME."""


class ConvertedAttachment(Protocol):
    """An attachment as the converter gives it (``internet_mail.mime.ConvertedAttachment``)."""

    @property
    def props(self) -> dict[int, PropData]: ...
    @property
    def embedded(self) -> ConvertedMessage | None: ...


class ConvertedMessage(Protocol):
    """A message as the converter gives it (``internet_mail.mime.ConvertedMessage``)."""

    @property
    def props(self) -> dict[int, PropData]: ...
    @property
    def recipients(self) -> list[dict[int, PropData]]: ...
    @property
    def attachments(self) -> Sequence[ConvertedAttachment]: ...
    @property
    def defects(self) -> list[str]: ...


#: ``convert(raw, limits, received)``: MIME bytes to a message (``mime_to_mapi``).
Converter = Callable[[bytes, Limits, int], ConvertedMessage]


@dataclass(frozen=True, slots=True)
class MimeDelivery:
    """What :func:`deliver_mime` did."""

    #: User ids of the mailboxes that have the message (now or from an earlier try).
    delivered: list[str]
    #: Envelope recipients no user has (refused at RCPT normally; a user deleted since).
    unknown: list[str]
    #: Defects the MIME reader repaired (for the log).
    defects: list[str]


def local_domains(addresses: Iterable[str]) -> frozenset[str]:
    """The mail domains of ``addresses`` (the users' e-mail addresses), lower-cased:
    the local domains when none are configured."""
    out = set()
    for address in addresses:
        _, at, domain = address.rpartition("@")
        if at and domain:
            out.add(domain.lower())
    return frozenset(out)


def _is_recipient(rows: list[dict[int, PropData]], kind: int, user: Identity) -> bool:
    mine = {a.lower() for a in (user.email, user.username) if a}
    for row in rows:
        if row.get(pt.PR_RECIPIENT_TYPE) != kind:
            continue
        for tag in (pt.PR_SMTP_ADDRESS_W, pt.PR_EMAIL_ADDRESS_W):
            value = row.get(tag)
            if isinstance(value, str) and value.lower() in mine:
                return True
    return False


def _state(conv: ConvertedMessage, now: int) -> MessageState:
    """A new, unsaved message of ``conv`` (recursively for embedded messages)."""
    bag = PropBag()
    for tag, value in conv.props.items():
        bag.set(tag, value)
    recipients = [{**row, pt.PR_ROWID: i} for i, row in enumerate(conv.recipients)]
    attachments: dict[int, AttachState | None] = {}
    for num, attach in enumerate(conv.attachments):
        abag = PropBag()
        for tag, value in attach.props.items():
            abag.set(tag, value)
        embedded = _state(attach.embedded, now) if attach.embedded is not None else None
        attachments[num] = AttachState(num, None, abag, embedded)
    return MessageState(
        None, 0, now, now, bag, recipients=recipients, attachments=attachments,
        next_attach_num=len(attachments),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PreparedDelivery:
    """An Internet message converted and its recipients resolved, ready to be saved
    (:func:`prepare_delivery`); everything but the mailbox writes."""

    sid: bytes
    now: int
    full: bytes
    conv: ConvertedMessage
    targets: tuple[Identity, ...]
    unknown: tuple[str, ...]


def prepare_delivery(
    store: DeliveryStore, recipients: Sequence[str], raw: bytes, received_header: bytes = b"",
    *, convert: Converter, delivery_id: bytes | None = None,
) -> PreparedDelivery:  # fmt: skip
    """The first half of :func:`deliver_mime`: convert ``raw`` (with ``received_header``
    prepended) and resolve ``recipients``; no mailbox is touched, so many of these can
    run at once and their saves then share transactions (:func:`commit_deliveries`).

    Raises:
        Whatever ``convert`` raises (``MimeLimitExceeded``: beyond ``store.limits``).
    """
    sid = _SID_PREFIX + (delivery_id or hashlib.sha256(raw).digest())
    full = received_header + raw
    now = store.clock()
    conv = convert(full, store.limits, now)
    targets: dict[str, Identity] = {}
    unknown: list[str] = []
    for address in recipients:
        user = store.resolve(address)
        if user is None:
            unknown.append(address)
        else:
            targets.setdefault(user.user_id, user)
    return PreparedDelivery(sid, now, full, conv, tuple(targets.values()), tuple(unknown))


def _copy_for(prepared: PreparedDelivery, user: Identity) -> MessageState:
    conv, now = prepared.conv, prepared.now
    state = _state(conv, now)
    for tag, value in [
        (pt.PR_MESSAGE_CLASS_W, conv.props.get(pt.PR_MESSAGE_CLASS_W) or "IPM.Note"),
        (pt.PR_MESSAGE_FLAGS, 0),
        (pt.PR_MESSAGE_DELIVERY_TIME, now),
        (pt.PR_RECEIVED_BY_NAME_W, user.display_name),
        (pt.PR_RECEIVED_BY_EMAIL_ADDRESS_W, user.email or user.username),
        (pt.PR_RECEIVED_BY_ADDRTYPE_W, "SMTP"),
        (pt.PR_MESSAGE_TO_ME, _is_recipient(conv.recipients, pt.MAPI_TO, user)),
        (pt.PR_MESSAGE_CC_ME, _is_recipient(conv.recipients, pt.MAPI_CC, user)),
        (pt.PR_MESSAGE_RECIP_ME, True),
        (pt.PR_MIME_ORIGINAL, prepared.full),
    ]:
        state.bag.set(tag, value)
    if user.email:
        state.bag.set(pt.PR_RECEIVED_BY_SMTP_ADDRESS_W, user.email)
    return state


def _save_copies(store: DeliveryStore, user: Identity, items: Sequence[PreparedDelivery]) -> None:
    """Save each of ``items``' copies for ``user`` in ONE transaction (one fsync)."""
    db = store.mailbox(user)
    target = StoreContext(db, user=user, owner=user, hub=store.notifications, router=store)
    with db.transaction():
        for prepared in items:
            deliver_to_inbox(target, _copy_for(prepared, user), prepared.sid, prepared.now)


def commit_deliveries(
    store: DeliveryStore, batch: Sequence[PreparedDelivery]
) -> list[MimeDelivery | Exception]:
    """The second half of :func:`deliver_mime`, for many messages at once: per mailbox,
    every copy of the batch goes into one transaction, so a burst of deliveries to one
    mailbox pays one commit (one fsync) instead of one each. When a mailbox's
    transaction fails (one message over the quota, say), that mailbox's copies are
    saved one transaction each, so each message gets its own outcome.

    Returns one result per message, in order: the :class:`MimeDelivery`, or the
    exception that stopped a copy of it (copies committed to other mailboxes stay; a
    retry skips them).
    """
    failures: dict[int, Exception] = {}
    by_user: dict[str, tuple[Identity, list[int]]] = {}
    for index, prepared in enumerate(batch):
        for user in prepared.targets:
            by_user.setdefault(user.user_id, (user, []))[1].append(index)
    for user, indexes in by_user.values():
        try:
            _save_copies(store, user, [batch[i] for i in indexes])
        except Exception as exc:
            if len(indexes) == 1:
                failures.setdefault(indexes[0], exc)
                continue
            for i in indexes:  # alone, so only the guilty message fails
                try:
                    _save_copies(store, user, [batch[i]])
                except Exception as exc:
                    failures.setdefault(i, exc)
    out: list[MimeDelivery | Exception] = []
    for index, prepared in enumerate(batch):
        failure = failures.get(index)
        if failure is not None:
            out.append(failure)
        else:
            delivered = [user.user_id for user in prepared.targets]
            out.append(MimeDelivery(delivered, list(prepared.unknown), list(prepared.conv.defects)))
    return out


def deliver_mime(
    store: DeliveryStore, recipients: Sequence[str], raw: bytes, received_header: bytes = b"",
    *, convert: Converter, delivery_id: bytes | None = None,
) -> MimeDelivery:  # fmt: skip
    """Deliver the Internet message ``raw`` to the local users ``recipients`` (envelope
    addresses); ``received_header`` (a whole ``Received:`` field with its CRLF) is
    prepended. Returns once every copy is committed (see the module docstring).
    ``delivery_id`` names the delivery for retries (default: a hash of ``raw``).

    Raises:
        Whatever ``convert`` raises (``MimeLimitExceeded``: beyond ``store.limits``).
        NotEnoughDisk: a mailbox is over its quota (or the disk is full). TooBig: the
        message is over the store's message size limit. Other MapiErrors: the store
        failed; copies committed before the failure stay (a retry skips them).
    """
    prepared = prepare_delivery(
        store, recipients, raw, received_header, convert=convert, delivery_id=delivery_id
    )
    [result] = commit_deliveries(store, [prepared])
    if isinstance(result, Exception):
        raise result
    return result


def file_sent_copy(
    store: DeliveryStore, user: Identity, raw: bytes, received_header: bytes = b"",
    *, convert: Converter, delivery_id: bytes | None = None,
) -> int | None:  # fmt: skip
    """File the submitter's copy of an SMTP submission in ``user``'s Sent Items: read,
    with the original bytes under ``PR_MIME_ORIGINAL``, in one transaction that raises
    fnevObjectCreated and the contents-table row (no new-mail event: it is the user's
    own mail). Returns the new message's id, or None when an earlier attempt of the same
    bytes (or of the same ``delivery_id``) filed it already (the submitter's retry
    after a lost 250).
    """
    sid = _SENT_PREFIX + (delivery_id or hashlib.sha256(raw).digest())
    full = received_header + raw
    now = store.clock()
    conv = convert(full, store.limits, now)
    state = _state(conv, now)
    for tag, value in [
        (pt.PR_MESSAGE_CLASS_W, conv.props.get(pt.PR_MESSAGE_CLASS_W) or "IPM.Note"),
        (pt.PR_MESSAGE_FLAGS, pt.MSGFLAG_READ),
        (pt.PR_CLIENT_SUBMIT_TIME, now),
        (pt.PR_MESSAGE_DELIVERY_TIME, now),
        (pt.PR_MIME_ORIGINAL, full),
    ]:
        state.bag.set(tag, value)
    db = store.mailbox(user)
    target = StoreContext(db, user=user, owner=user, hub=store.notifications, router=store)
    with db.transaction() as txn:
        if db.messages.was_delivered(txn, sid):
            return None
        sent = db.folders.role_folder(txn, "sent")
        new_id = db.messages.save(
            txn, state, limits=db.limits, change_num=db.next_change_number(txn), now=now,
            folder_id=sent,
        )  # fmt: skip
        db.messages.note_delivery(txn, sid, new_id, now)
        record(target, Change(op=Op.CREATED, folder=False, object_id=new_id, parent_id=sent))
    return new_id


__all__ = [
    "ConvertedAttachment", "ConvertedMessage", "Converter", "DeliveryStore", "MimeDelivery",
    "PreparedDelivery", "commit_deliveries", "deliver_mime", "file_sent_copy", "local_domains",
    "prepare_delivery",
]  # fmt: skip
