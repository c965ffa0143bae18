"""Mailbox quotas and the message size limit.

Theory of operation
-------------------
**What is limited.** Two sizes, both in bytes, both "0: no limit":

- the *mailbox size*: the sum of PR_MESSAGE_SIZE of every message of the mailbox
  (attachments and embedded messages included, Deleted Items too, as Exchange counts
  it). Its limit is the mailbox's own, when the administrator gave it one
  (:func:`set_mailbox_quota`, kept in the mailbox itself (SQLite: its ``meta`` table),
  so it goes with the mailbox and every process that opens it sees it), else the server's
  default (:attr:`~mapi.model.limits.Limits.max_mailbox_bytes`, ``[store]
  mailbox_quota_bytes`` in the configuration file);
- the *message size*: PR_MESSAGE_SIZE of one message
  (:attr:`~mapi.model.limits.Limits.max_message_bytes`, ``[store] max_message_bytes``).

**How the size is measured.** Computed when needed, never stored
(``MailboxDB.messages.mailbox_size``; in SQLite :func:`mapi.storage.messages.mailbox_size`,
one ``sum(size)`` over the covering index ``messages_by_size``), inside the transaction
of the change it judges. A tracked
counter would be O(1) where the sum is linear in the messages (cheap, though: see
docs/benchmarks.md), but messages leave a mailbox by many paths (deletes, cascades of
folder deletes, submissions deleted after sending, another process): a counter
updated by each of them drifts the day one is missed, and keeping it exact needs
triggers in the schema; the sum cannot drift, and runs only where a limit applies. It
counts what the client stored (the logical size), not the database's pages or the blob
files: a copy counts twice even where its large values share storage, which is what a
user can see and act on.

**What a client sees** (errors per [MS-OXCDATA] 2.4):

- a save (RopSaveChangesMessage), a delivery or a copy (messages or folders; moves do
  not grow a mailbox) that would take the mailbox past its limit fails with
  MAPI_E_NOT_ENOUGH_DISK, "the mailbox is full: U of its L bytes are used, and this
  needs N more; delete items and empty Deleted Items to make room", and keeps nothing
  (it is raised inside the change's transaction). A save that does not grow the
  message (an edit that shrinks it) is allowed over the limit, so a user can clean up;
- a stream write (RopWriteStream, RopSetStreamSize) that grows a value past the room
  the mailbox had answers the same, as the bytes arrive rather than at the save;
- a message past the message size limit: MAPI_E_TOO_BIG, at the client's save, at
  the stream write that passes it, and at submission (a delivered copy is not judged
  again: the server's envelope makes it a little larger than what was checked);
- submission (:func:`check_submission`, before anything is delivered): the sender's
  full mailbox (prohibit send), a recipient's mailbox without room for the copy
  (prohibit receive; the error names the recipient's address), or no room for the
  non-delivery report the submission will file, all answer MAPI_E_NOT_ENOUGH_DISK
  and send nothing: the message stays where it was, unsent, once. The delivery's own
  transaction checks again (a mailbox that filled in between fails the submission
  there, and a retry delivers only to the mailboxes that have no copy yet,
  :mod:`mapi.objects.submit`); filing the original in Sent Items is never refused;
- the store object ([MS-OXCSTOR] 2.2.2.1.1, :class:`~mapi.store.MsgStore`) shows
  PR_MESSAGE_SIZE_EXTENDED (bytes used) and PR_MESSAGE_SIZE, and, where limits apply,
  PR_PROHIBIT_SEND_QUOTA = PR_PROHIBIT_RECEIVE_QUOTA (the limit),
  PR_STORAGE_QUOTA_LIMIT (where warnings start: ``[store] quota_warning_percent``
  of the limit) and PR_MAX_SUBMIT_MESSAGE_SIZE, all in kilobytes (the spec's unit);
  an absent quota property means no limit. Clients show "almost full" from these.

A disk that is really full is another matter, answered by the storage layer:
MAPI_E_NOT_ENOUGH_DISK too (:mod:`mapi.storage.db`, :mod:`mapi.storage.blobs`).
"""

from __future__ import annotations

from typing import Final

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import check_message_size
from mapi.model.properties import PropData
from mapi.objects.messages import Message, recipient_address
from mapi.storage.api import MailboxStorage

#: Store quota properties ([MS-OXPROPS]; [MS-OXCSTOR] 2.2.2.1.1): PtypInteger32, kilobytes.
PR_PROHIBIT_RECEIVE_QUOTA: Final = 0x666A0003
PR_PROHIBIT_SEND_QUOTA: Final = 0x666E0003
PR_STORAGE_QUOTA_LIMIT: Final = 0x3FF50003
PR_MAX_SUBMIT_MESSAGE_SIZE: Final = 0x666D0003
#: Room a non-delivery report needs beyond the copy of the original it carries.
NDR_ALLOWANCE: Final = 4096
_MAX_LONG: Final = 0x7FFFFFFF


def set_mailbox_quota(db: MailboxStorage, limit: int | None) -> None:
    """Give a mailbox its own size limit in bytes (0: none), or with None take it away
    (the server's default applies again). For administrators; a lower limit than the
    mailbox's size refuses growth from then on and deletes nothing.

    Raises:
        InvalidParameter: a negative or non-integer limit.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise errors.InvalidParameter(f"bad mailbox quota {limit!r}")
    with db.transaction() as txn:
        db.messages.set_mailbox_quota(txn, limit)


def mailbox_quota(db: MailboxStorage) -> int:
    """The size limit that applies to a mailbox, in bytes (0: none)."""
    with db.reading() as txn:
        return db.messages.mailbox_quota(txn, db.limits)


def has_own_quota(db: MailboxStorage) -> bool:
    """Does the mailbox have a limit of its own (set by :func:`set_mailbox_quota`)?"""
    with db.reading() as txn:
        return db.messages.has_own_quota(txn)


def mailbox_size(db: MailboxStorage) -> int:
    """The size of a mailbox in bytes (see the module docstring)."""
    with db.reading() as txn:
        return db.messages.mailbox_size(txn)


def _kilobytes(size: int) -> int:
    return min(size // 1024, _MAX_LONG)


def store_props(db: MailboxStorage) -> dict[int, PropData]:
    """The quota properties of a mailbox's store object (absent: no limit)."""
    limits = db.limits
    with db.reading() as txn:
        used = db.messages.mailbox_size(txn)
        limit = db.messages.mailbox_quota(txn, limits)
    props: dict[int, PropData] = {
        pt.PR_MESSAGE_SIZE_EXTENDED: used,
        pt.PR_MESSAGE_SIZE: min(used, _MAX_LONG),
    }
    if limit:
        props[PR_PROHIBIT_SEND_QUOTA] = props[PR_PROHIBIT_RECEIVE_QUOTA] = _kilobytes(limit)
        props[PR_STORAGE_QUOTA_LIMIT] = _kilobytes(limit * limits.mailbox_warning_percent // 100)
    if limits.max_message_bytes:
        props[PR_MAX_SUBMIT_MESSAGE_SIZE] = _kilobytes(limits.max_message_bytes)
    return props


def check_submission(message: Message) -> None:
    """Before a submission delivers anything: room in the sender's mailbox and in every
    recipient's (see the module docstring). Recipients are resolved as
    :mod:`mapi.objects.submit` resolves them; what it refuses for other reasons (no router, a
    delegate's submission) is left to it.

    Raises:
        NotEnoughDisk: a mailbox has no room. TooBig: the message is too large.
    """
    ctx = message._ctx
    router = ctx.router
    if router is None or message._parent is not None or not ctx.is_owner:
        return
    limits = ctx.limits
    with ctx.db.lock:
        message._check_open()
        size = message._computed(pt.PR_MESSAGE_SIZE_EXTENDED)
        recipients = [dict(row) for row in message._recipients()]
        stored = ctx.db.messages
        with ctx.db.reading() as txn:
            limit = stored.mailbox_quota(txn, limits)
            used = stored.mailbox_size(txn) if limit else 0
    assert isinstance(size, int)
    check_message_size(size, limits)
    if limit and used >= limit:
        raise errors.NotEnoughDisk(
            f"your mailbox is full: {used} of its {limit} bytes are used; delete items and"
            " empty Deleted Items before sending (nothing was sent)"
        )
    targets: dict[str, str] = {}
    users = {}
    undeliverable = False
    for row in recipients:
        address = recipient_address(row)
        user = router.resolve(address) if address else None
        if user is None:
            undeliverable = True
        elif user.user_id not in targets:
            targets[user.user_id] = address
            users[user.user_id] = user
    if undeliverable and limit and used + size + NDR_ALLOWANCE > limit:
        raise errors.NotEnoughDisk(
            f"your mailbox has no room for the non-delivery report this message would"
            f" bring ({used} of its {limit} bytes are used); nothing was sent"
        )
    for user_id, address in targets.items():
        db = router.mailbox(users[user_id])
        with db.reading() as txn:
            room = db.messages.mailbox_room(txn, db.limits)
        if room is not None and size > room:
            raise errors.NotEnoughDisk(
                f"the mailbox of {address} is full: it has room for {room} more bytes, and"
                f" this message is {size}; nothing was sent"
            )


__all__ = [
    "PR_MAX_SUBMIT_MESSAGE_SIZE",
    "PR_PROHIBIT_RECEIVE_QUOTA",
    "PR_PROHIBIT_SEND_QUOTA",
    "PR_STORAGE_QUOTA_LIMIT",
    "check_submission",
    "mailbox_quota",
    "mailbox_size",
    "set_mailbox_quota",
    "store_props",
]
