"""What every object of one logged-on view of a mailbox shares.

Theory of operation
-------------------
A :class:`StoreContext` binds a :class:`~mapi.storage.db.MailboxDB` to the user who
opened it: it answers "may this user do X on folder F" (:mod:`mapi.access.permissions`),
builds and parses entry ids for this store ([MS-OXCDATA] 2.2.4, see
:mod:`mapi.model.entryid`), and hands out the clock. Folders, messages, attachments,
streams and tables keep a reference to it; they take ``ctx.db.lock`` for every call
(see the threading contract in :mod:`mapi.storage.db`). It also carries the
:class:`~mapi.notify.subscriptions.NotificationHub` committed changes are published to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mapi.access import permissions
from mapi.model import errors
from mapi.model.entryid import EntryId, EntryKind, make_entryid, parse_entryid
from mapi.model.limits import Limits
from mapi.model.properties import PropData
from mapi.storage.api import MailboxStorage

if TYPE_CHECKING:
    from mapi.notify.subscriptions import NotificationHub


@dataclass(frozen=True, slots=True)
class Identity:
    """A directory user as the store sees them."""

    user_id: str
    username: str
    display_name: str
    email: str


class MailRouter(Protocol):
    """How a store reaches other mailboxes of the server (for :mod:`mapi.objects.submit`)."""

    def resolve(self, address: str) -> Identity | None:
        """The user with e-mail address or login name ``address``, or None."""

    def mailbox(self, user: Identity) -> MailboxStorage:
        """The (shared) database of ``user``'s mailbox."""


@dataclass(slots=True)
class OutgoingAttachment:
    props: dict[int, PropData] = field(default_factory=dict)
    embedded: OutgoingMessage | None = None


@dataclass(slots=True)
class OutgoingMessage:
    """A submitted message as plain values, for rendering as Internet mail (its
    attributes match the MIME converter's ``ConvertedMessage``)."""

    props: dict[int, PropData] = field(default_factory=dict)
    recipients: list[dict[int, PropData]] = field(default_factory=list)
    attachments: list[OutgoingAttachment] = field(default_factory=list)


class RemoteMail(Protocol):
    """Where a submission sends the recipients of other mail domains (``serve`` hands
    one in: it renders the message as MIME and queues it for SMTP delivery; the store
    core knows neither)."""

    def is_remote(self, address: str) -> bool:
        """True for an address of a domain that is not this server's."""

    def send(
        self, sender: str, recipients: Sequence[str], message: OutgoingMessage, *, key: bytes
    ) -> None:
        """Queue ``message`` for ``recipients`` durably (blocking); raises on failure.
        A second call with the same ``key`` (the same submission, made again after a
        crash) queues nothing."""


class StoreContext:
    """One user's view of one mailbox."""

    def __init__(
        self, db: MailboxStorage, *, user: Identity, owner: Identity,
        hub: NotificationHub | None = None, router: MailRouter | None = None,
        remote: RemoteMail | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        self.user = user
        self.owner = owner
        #: Where committed changes are published (None: nobody listens, e.g. tools).
        self.hub = hub
        #: Other mailboxes, for message submission (None: no submission).
        self.router = router
        #: Other mail domains, for submission (None: their addresses are unresolvable).
        self.remote = remote
        # The store's entry id never changes; every message row carries it.
        self._store_eid = make_entryid(db.provider_uid, EntryKind.STORE, 0)

    @property
    def limits(self) -> Limits:
        return self.db.limits

    @property
    def uid(self) -> bytes:
        """The provider UID of the store."""
        return self.db.provider_uid

    @property
    def is_owner(self) -> bool:
        return self.user.user_id == self.owner.user_id

    def now(self) -> int:
        """The current time as FILETIME."""
        return self.db.clock()

    # --- Permissions ---------------------------------------------------------------

    def rights(self, folder_id: int) -> int:
        """The rights of the acting user on a folder."""
        if self.is_owner:
            return permissions.ALL_RIGHTS | permissions.FOLDER_CONTACT
        with self.db.reading() as txn:
            return self.db.acl.rights(txn, folder_id, self.user.user_id)

    def require(self, folder_id: int, right: int) -> None:
        """Raise MAPI_E_NO_ACCESS unless the user holds ``right`` on the folder (the named
        checks of :mod:`mapi.access.permissions` say which right each operation needs)."""
        permissions.require(self, folder_id, right)

    # --- Entry ids -----------------------------------------------------------------

    def folder_eid(self, folder_id: int) -> bytes:
        return make_entryid(self.uid, EntryKind.FOLDER, folder_id)

    def message_eid(self, message_id: int) -> bytes:
        return make_entryid(self.uid, EntryKind.MESSAGE, message_id)

    def store_eid(self) -> bytes:
        return self._store_eid

    def parse(self, entry_id: object, kind: EntryKind | None = None) -> EntryId:
        """Parse an entry id of this store.

        Raises:
            InvalidEntryId: malformed, or not of ``kind``.
            UnknownEntryId: it names another store.
        """
        eid = parse_entryid(entry_id)
        if eid.provider_uid != self.uid:
            raise errors.UnknownEntryId("entry id of another store")
        if kind is not None and eid.kind != kind:
            raise errors.InvalidEntryId(f"expected a {kind.name.lower()} entry id")
        return eid
