"""The facade of the store core: accounts, logon, sessions and message stores.

Theory of operation
-------------------
An :class:`ObjectStore` owns one data directory (mode 0700)::

    <data_dir>/directory.sqlite3          users and verifiers (mode 0600)
    <data_dir>/mailboxes/<user_id>.sqlite3  one mailbox per user (mode 0600)
    <data_dir>/mailboxes/<user_id>.sqlite3.blobs/<id>  its stream data files
                                          (mode 0700/0600; :mod:`mapi.storage.blobs`)

It keeps one :class:`~mapi.storage.db.MailboxDB` per open mailbox (so every session on
a mailbox shares its lock; see the threading contract in :mod:`mapi.storage.db`) and
creates a mailbox with its standard folders on first use.

Logon ([MS-OXCRPC]-like, but our own scheme, see :mod:`mapi.access.logon`):
:meth:`ObjectStore.begin_logon` makes a :class:`~mapi.access.logon.Challenge`, which the caller
keeps in a :class:`~mapi.access.logon.PendingChallenges` (single use, expires after
:data:`CHALLENGE_LIFETIME`; :meth:`ObjectStore.pending_challenges`);
:meth:`ObjectStore.complete_logon` checks the answer to a challenge taken from there and
returns a :class:`Session`, or raises MAPI_E_LOGON_FAILED without saying why. A session
opens its user's mailbox, or another user's when some folder ACL there
grants the user something (MAPI_E_NO_ACCESS otherwise), as a :class:`MsgStore`:
the store object of [MS-OXCSTOR], with its special-folder entry ids, ``open_entry``
and the named-property mapping.

All methods are synchronous; the RPC service calls them from worker threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Final

from mapi import budget
from mapi.access import permissions
from mapi.access.directory import Directory, UserRecord
from mapi.access.logon import (
    Challenge,
    KdfParams,
    PendingChallenges,
    challenge_name,
    client_response,
    make_challenge,
    server_proof,
    verify_response,
)
from mapi.model import errors, named
from mapi.model import proptags as pt
from mapi.model.entryid import EntryKind
from mapi.model.limits import DEFAULT_LIMITS, Limits
from mapi.model.properties import PropData, now_filetime
from mapi.notify.subscriptions import TABLE_KINDS, NotificationHub, TableSpec
from mapi.objects import quota
from mapi.objects.base import MapiObject
from mapi.objects.context import Identity, RemoteMail, StoreContext
from mapi.objects.folders import Folder
from mapi.objects.hierarchy import HIERARCHY_COLUMNS, STANDARD_HIERARCHY
from mapi.objects.messages import Message, open_message_checked
from mapi.storage.blobs import BlobDir
from mapi.storage.db import MailboxDB, blob_dir_of
from mapi.storage.propbag import PropBag
from mapi.tables.contents import DEFAULT_COLUMNS as CONTENTS_COLUMNS
from mapi.tables.table import check_sort

#: A mailbox no session holds is closed after this long unused (FILETIME ticks: 1 min).
MAILBOX_IDLE: Final = 60 * 10_000_000
#: How long a logon challenge stays valid, in FILETIME ticks (2 minutes).
CHALLENGE_LIFETIME: Final = 2 * 60 * 10_000_000
#: PR_STORE_SUPPORT_MASK: ENTRYID_UNIQUE | MODIFY_OK | CREATE_OK | ATTACH_OK |
#: MV_PROPS_OK | RESTRICTION_OK | SORT_OK | UNICODE_OK.
STORE_SUPPORT_MASK: Final = 0x00043239

_STORE_ROLE_TAGS: Final = {
    pt.PR_IPM_SUBTREE_ENTRYID: "ipm_subtree",
    pt.PR_IPM_OUTBOX_ENTRYID: "outbox",
    pt.PR_IPM_WASTEBASKET_ENTRYID: "deleted",
    pt.PR_IPM_SENTMAIL_ENTRYID: "sent",
}


def _identity(user: UserRecord) -> Identity:
    return Identity(user.user_id, user.username, user.display_name, user.email)


class ObjectStore:
    """Accounts, logon and mailboxes under one data directory."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        limits: Limits = DEFAULT_LIMITS,
        kdf: KdfParams = KdfParams(),  # noqa: B008 - frozen dataclass
        clock: Callable[[], int] = now_filetime,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.limits = limits
        self.clock = clock
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.data_dir / "mailboxes").mkdir(mode=0o700, exist_ok=True)
        self.directory = Directory(self.data_dir / "directory.sqlite3", kdf=kdf, clock=clock)
        self._lock = threading.Lock()
        self._mailboxes: dict[str, MailboxDB] = {}
        #: Sessions holding each open mailbox, and when each was last used (FILETIME).
        self._mailbox_sessions: dict[str, int] = {}
        self._mailbox_touched: dict[str, int] = {}
        self._sessions: dict[str, int] = {}
        #: Subscriptions and event queues of every session (:mod:`mapi.notify.subscriptions`).
        self.notifications = NotificationHub()
        #: Submissions to other mail domains go here (``serve`` sets it; None: nowhere).
        self.remote_mail: RemoteMail | None = None

    # --- Accounts (the CLI's adduser / passwd / deluser / list users) -----------------

    def add_user(
        self, username: str, password: str, *, display_name: str | None = None,
        email: str | None = None,
    ) -> UserRecord:  # fmt: skip
        """Create an account (its mailbox is created on first use)."""
        return self.directory.add_user(username, password, display_name=display_name, email=email)

    def set_password(self, username: str, password: str) -> None:
        self.directory.set_password(username, password)

    def list_users(self) -> list[UserRecord]:
        return self.directory.list_users()

    def delete_user(self, username: str) -> UserRecord:
        """Remove an account and its mailbox files."""
        record = self.directory.delete_user(username)
        with self._lock:
            db = self._mailboxes.pop(record.user_id, None)
        if db is not None:
            db.close()
        base = self.data_dir / "mailboxes" / record.mailbox
        for suffix in ("", "-wal", "-shm"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
        BlobDir(blob_dir_of(base)).remove()
        return record

    def mailbox_quota(
        self, username: str, limit: int | None = None, *, change: bool = False
    ) -> tuple[int, int, bool]:
        """A user's mailbox size and limit: ``(used, limit, own)`` in bytes (limit 0: none;
        ``own``: the mailbox has a limit of its own rather than the server's default).
        With ``change``, first give it ``limit`` as its own (0: no limit), or with None
        take its own away (the default applies again).

        Raises:
            NotFound: no such user. InvalidParameter: a bad limit.
        """
        db = self.mailbox_db(self.directory.get_user(username))
        if change:
            quota.set_mailbox_quota(db, limit)
        return quota.mailbox_size(db), quota.mailbox_quota(db), quota.has_own_quota(db)

    # --- Logon -----------------------------------------------------------------------------

    def pending_challenges(self, limit: int) -> PendingChallenges:
        """An empty set of issued challenges (one per connection), on this store's clock."""
        return PendingChallenges(limit, CHALLENGE_LIFETIME, self.clock)

    def begin_logon(self, username: str) -> Challenge:
        """A fresh challenge (a decoy one for unknown users); the caller keeps it, in a
        :meth:`pending_challenges`, until the answer comes."""
        verifier = self.directory.verifier(username)
        name = challenge_name(username)
        if verifier is None:
            return make_challenge(
                name, None, self.directory.kdf, server_secret=self.directory.server_secret
            )
        return make_challenge(
            name, verifier.salt, verifier.params, server_secret=self.directory.server_secret
        )

    def complete_logon(self, challenge: Challenge, client_nonce: bytes, response: bytes) -> Session:
        """Check the answer to ``challenge`` (taken from its pending set: single use);
        return the session of the user it was issued to.

        Raises:
            LogonFailed: unknown or disabled user, or a wrong answer (indistinguishable
            on purpose).
            SessionLimit: the user has too many sessions.
        """
        return self.answer_logon(challenge, client_nonce, response)[0]

    def check_answer(
        self, challenge: Challenge, client_nonce: bytes, response: bytes
    ) -> tuple[UserRecord, bytes]:
        """Check the answer to ``challenge`` without opening a session (a resume on an
        unauthenticated connection proves the user this way); returns the user and
        the server's proof (:func:`~mapi.access.logon.server_proof`).

        Raises:
            LogonFailed: unknown or disabled user, or a wrong answer.
        """
        verifier = self.directory.verifier(challenge.username)
        key = verifier.key if verifier is not None else bytes(32)
        ok = verify_response(key, challenge, client_nonce, response)
        if verifier is None or not ok:
            raise errors.LogonFailed()
        return self.directory.get_user(challenge.username), server_proof(
            key, challenge, client_nonce
        )

    def answer_logon(
        self, challenge: Challenge, client_nonce: bytes, response: bytes
    ) -> tuple[Session, bytes]:
        """:meth:`complete_logon`, and the server's proof for the client to check."""
        user, proof = self.check_answer(challenge, client_nonce, response)
        with self._lock:
            count = self._sessions.get(user.user_id, 0)
            if count >= self.limits.max_sessions_per_user:
                raise errors.SessionLimit(
                    f"{user.username} has {count} sessions, the most allowed; log off "
                    "some clients (an administrator can list and end sessions with "
                    "'mapi-anywhere sessions'); sessions of clients that vanished end by "
                    "themselves a minute after their connection closed"
                )
            self._sessions[user.user_id] = count + 1
        return Session(self, user), proof

    def logon_with_password(self, username: str, password: str) -> Session:
        """Both sides of the challenge-response in-process (local tools, the tunnel's
        Basic authentication, tests)."""
        challenge = self.begin_logon(username)
        try:
            client_nonce, response = client_response(password, challenge)
        except errors.MapiError:
            raise errors.LogonFailed() from None
        return self.complete_logon(challenge, client_nonce, response)

    def _session_ended(self, user_id: str) -> None:
        with self._lock:
            count = self._sessions.get(user_id, 0) - 1
            if count > 0:
                self._sessions[user_id] = count
            else:
                self._sessions.pop(user_id, None)

    # --- Mailboxes -------------------------------------------------------------------------

    def mailbox_db(self, user: UserRecord) -> MailboxDB:
        """The (shared) database of a user's mailbox, opened (created) on demand."""
        with self._lock:
            db = self._mailboxes.get(user.user_id)
            if db is None:
                path = self.data_dir / "mailboxes" / user.mailbox
                # Opening runs to its end (schema upgrades, recovery): no budget cuts it.
                with budget.suspended():
                    db = MailboxDB(path, limits=self.limits, clock=self.clock)
                    with db.transaction() as txn:
                        db.folders.create_standard(txn, STANDARD_HIERARCHY, self.clock())
                self._mailboxes[user.user_id] = db
            self._mailbox_touched[user.user_id] = self.clock()
            return db

    def _mailbox_used(self, user_id: str, delta: int) -> None:
        with self._lock:
            count = self._mailbox_sessions.get(user_id, 0) + delta
            if count > 0:
                self._mailbox_sessions[user_id] = count
            else:
                self._mailbox_sessions.pop(user_id, None)
            self._mailbox_touched[user_id] = self.clock()

    def close_idle_mailboxes(self, idle_ticks: int = MAILBOX_IDLE) -> int:
        """Close the databases of mailboxes no session holds, unused for ``idle_ticks``
        (FILETIME ticks; a minute by default, so a delivery in progress finishes first).
        Each open mailbox costs file descriptors and SQLite's cache. Returns how many."""
        now = self.clock()
        with self._lock:
            idle = [
                user_id
                for user_id in self._mailboxes
                if user_id not in self._mailbox_sessions
                and now - self._mailbox_touched.get(user_id, 0) >= idle_ticks
            ]
            dbs = [self._mailboxes.pop(user_id) for user_id in idle]
            for user_id in idle:
                self._mailbox_touched.pop(user_id, None)
        for db in dbs:
            db.close()
        return len(dbs)

    def resolve(self, address: str) -> Identity | None:
        """The user with e-mail address or login name ``address`` (a MailRouter)."""
        record = self.directory.find_by_address(address)
        return None if record is None else _identity(record)

    def mailbox(self, user: Identity) -> MailboxDB:
        """The database of ``user``'s mailbox (a MailRouter)."""
        return self.mailbox_db(self.directory.get_user_by_id(user.user_id))

    def close(self) -> None:
        """Close every mailbox and the directory."""
        with self._lock:
            dbs = list(self._mailboxes.values())
            self._mailboxes.clear()
        for db in dbs:
            db.close()
        self.directory.close()


class Session:
    """One logon of one user."""

    def __init__(self, store: ObjectStore, user: UserRecord) -> None:
        self._store = store
        self.user = user
        self.session_id = os.urandom(16)
        self._closed = False
        #: Mailboxes (user ids) this session has opened: kept open while it lives.
        self._mailboxes: set[str] = set()

    def open_store(self, owner: str | None = None) -> MsgStore:
        """Open the user's mailbox, or ``owner``'s (a login name).

        Another user's mailbox opens only when some folder there grants this user
        something. The permission table lives in that mailbox, so it is read there,
        but a mailbox file that does not exist is never created for someone else (no
        mailbox, no grant), and a refused attempt keeps nothing open for this session.
        An unknown user, an invalid name, a mailbox never made and one that grants
        nothing all get the same answer: the call tells nobody who has an account.

        Raises:
            NoAccess: another user's mailbox that is not shared with this user, or no
            such user (indistinguishable on purpose).
        """
        if self._closed:
            raise errors.InvalidObject("the session is closed")
        store = self._store
        owner_rec = self.user
        if owner is not None:
            try:
                owner_rec = store.directory.get_user(owner)
            except (errors.NotFound, errors.InvalidParameter):
                raise errors.NoAccess("no permission on this mailbox") from None
        if owner_rec.user_id == self.user.user_id:
            db = store.mailbox_db(owner_rec)
        else:
            if not (store.data_dir / "mailboxes" / owner_rec.mailbox).is_file():
                raise errors.NoAccess("no permission on this mailbox")
            db = store.mailbox_db(owner_rec)  # exists: opened, never created
            with db.reading() as txn:
                if not db.acl.grants_anything(txn, self.user.user_id):
                    raise errors.NoAccess("no permission on this mailbox")
        if owner_rec.user_id not in self._mailboxes:
            self._mailboxes.add(owner_rec.user_id)
            store._mailbox_used(owner_rec.user_id, +1)
        ctx = StoreContext(
            db, user=_identity(self.user), owner=_identity(owner_rec),
            hub=store.notifications, router=store, remote=store.remote_mail,
        )  # fmt: skip
        return MsgStore(ctx)

    def logoff(self) -> None:
        """End the session."""
        if not self._closed:
            self._closed = True
            self._store._session_ended(self.user.user_id)
            for user_id in self._mailboxes:
                self._store._mailbox_used(user_id, -1)
            self._mailboxes.clear()


class MsgStore(MapiObject):
    """A message store as one session sees it (properties are read-only)."""

    computed_ids = frozenset(range(0x10000))

    def __init__(self, ctx: StoreContext) -> None:
        super().__init__(ctx)

    @property
    def context(self) -> StoreContext:
        return self._ctx

    @property
    def entry_id(self) -> bytes:
        return self._ctx.store_eid()

    # --- MapiObject hooks ------------------------------------------------------------------

    def _bag(self) -> PropBag:
        return PropBag()

    def _props(self) -> dict[int, PropData]:
        ctx = self._ctx
        props: dict[int, PropData] = {
            pt.PR_ENTRYID: ctx.store_eid(),
            pt.PR_STORE_ENTRYID: ctx.store_eid(),
            pt.PR_RECORD_KEY: ctx.uid,
            pt.PR_STORE_RECORD_KEY: ctx.uid,
            pt.PR_MAPPING_SIGNATURE: ctx.uid,
            pt.PR_OBJECT_TYPE: pt.MAPI_STORE,
            pt.PR_DISPLAY_NAME_W: f"Mailbox - {ctx.owner.display_name}",
            pt.PR_MAILBOX_OWNER_NAME_W: ctx.owner.display_name,
            pt.PR_STORE_SUPPORT_MASK: STORE_SUPPORT_MASK,
            pt.PR_DEFAULT_STORE: ctx.is_owner,
        }
        with ctx.db.reading() as txn:
            for tag, role in _STORE_ROLE_TAGS.items():
                props[tag] = ctx.folder_eid(ctx.db.folders.role_folder(txn, role))
        # Size and quota ([MS-OXCSTOR] 2.2.2.1.1); no limit, no quota property.
        props.update(quota.store_props(ctx.db))
        return props

    def _computed(self, tag: int) -> PropData | None:
        return self._props().get(tag)

    def _computed_tags(self) -> list[int]:
        return list(self._props())

    def _read_large(self, tag: int, length: int) -> bytes:  # pragma: no cover
        raise errors.NotFound()

    def _check_writable(self) -> None:
        raise errors.NoAccess("store properties are read-only")

    def _apply(
        self, sets: list[tuple[int, PropData]], deletes: list[int]
    ) -> None:  # pragma: no cover
        raise errors.NoAccess("store properties are read-only")

    # --- Folders and messages ----------------------------------------------------------------

    def special_folder_id(self, role: str) -> bytes:
        """Entry id of a special folder by role ("inbox", "deleted", "root"...)."""
        with self._ctx.db.reading() as txn:
            return self._ctx.folder_eid(self._ctx.db.folders.role_folder(txn, role))

    def get_receive_folder(self) -> bytes:
        """Entry id of the folder new mail goes to (the Inbox)."""
        return self.special_folder_id("inbox")

    def root_folder(self) -> Folder:
        return self.open_folder(self.special_folder_id("root"))

    def open_folder(self, entry_id: bytes) -> Folder:
        """Open a folder by entry id.

        Raises:
            InvalidEntryId, UnknownEntryId, NotFound, NoAccess.
        """
        with self._ctx.db.lock:
            fid = self._ctx.parse(entry_id, EntryKind.FOLDER).object_id
            with self._ctx.db.reading() as txn:
                if self._ctx.db.folders.get(txn, fid) is None:
                    raise errors.NotFound("no such folder")
            self._ctx.require(fid, permissions.FOLDER_VISIBLE)
            return Folder(self._ctx, fid)

    def open_message(self, entry_id: bytes, *, writable: bool = False) -> Message:
        """Open a saved message by entry id (read-only unless ``writable``).

        Raises:
            InvalidEntryId, UnknownEntryId, NotFound, NoAccess.
        """
        with self._ctx.db.lock:
            mid = self._ctx.parse(entry_id, EntryKind.MESSAGE).object_id
            return open_message_checked(self._ctx, mid, writable=writable)

    def open_entry(self, entry_id: bytes, *, writable: bool = False) -> Folder | Message | MsgStore:
        """Open whatever ``entry_id`` names."""
        kind = self._ctx.parse(entry_id).kind
        if kind == EntryKind.FOLDER:
            return self.open_folder(entry_id)
        if kind == EntryKind.MESSAGE:
            return self.open_message(entry_id, writable=writable)
        return self

    # --- Notifications ([MS-OXCNOTIF]) ---------------------------------------------------

    def advise(self, subscriber: Hashable, mask: int, entry_id: bytes | None = None) -> int:
        """Subscribe ``subscriber`` to object events on this store, a folder or a message.

        Args:
            subscriber: the hub queue key (the service's session id).
            mask: :class:`~mapi.notify.subscriptions.EventType` bits (fnevNewMail...).
            entry_id: a folder or message of this store; None for the whole store.

        Returns:
            The subscription id (for :meth:`unadvise`; carried by each notification).

        Raises:
            InvalidParameter: bad mask. InvalidEntryId, UnknownEntryId, NotFound,
            NoAccess: bad target. NotEnoughResources: too many subscriptions.
        """
        hub = self._ctx.hub
        if hub is None:
            raise errors.NoSupport("notifications are not available")
        target = None if entry_id is None else self._check_target(entry_id)
        return hub.advise(
            subscriber, store=self._ctx.owner.user_id, viewer=self._ctx.user.user_id,
            target=target, mask=mask,
        )  # fmt: skip

    def advise_table(
        self, subscriber: Hashable, folder_entry_id: bytes, kind: str = "contents",
        columns: Sequence[int] | None = None, sort: Sequence[tuple[int, bool]] = (),
    ) -> int:  # fmt: skip
        """Subscribe to fnevTableModified on a folder's contents or hierarchy table.

        ``columns`` (default: the table's default columns) are rendered into each
        added or modified row; ``sort`` is the order the prior-row keys follow (the
        client's view order; default: the table's natural order).

        Raises:
            InvalidParameter: bad kind, columns or sort. NotFound, NoAccess: bad folder.
        """
        hub = self._ctx.hub
        if hub is None:
            raise errors.NoSupport("notifications are not available")
        if kind not in TABLE_KINDS:
            raise errors.InvalidParameter(f"bad table kind {kind!r}")
        target = self._check_target(folder_entry_id, EntryKind.FOLDER)
        fid = self._ctx.parse(target).object_id
        self._ctx.require(
            fid, permissions.READ_ANY if kind == "contents" else permissions.FOLDER_VISIBLE
        )
        if columns is None:
            columns = CONTENTS_COLUMNS if kind == "contents" else HIERARCHY_COLUMNS
        limits = self._ctx.limits
        if not 0 < len(columns) <= limits.max_columns or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 0xFFFFFFFF for c in columns
        ):
            raise errors.InvalidParameter("bad columns")
        spec = TableSpec(kind, tuple(columns), check_sort(sort, limits.max_sort_keys))
        return hub.advise_table(
            subscriber, store=self._ctx.owner.user_id, viewer=self._ctx.user.user_id,
            folder=target, table=spec,
        )  # fmt: skip

    def unadvise(self, subscriber: Hashable, subscription: int) -> None:
        """Cancel a subscription of ``subscriber``.

        Raises:
            NotFound: no such subscription.
        """
        hub = self._ctx.hub
        if hub is None:
            raise errors.NoSupport("notifications are not available")
        hub.unadvise(subscriber, subscription)

    def _check_target(self, entry_id: bytes, kind: EntryKind | None = None) -> bytes:
        with self._ctx.db.lock:
            eid = self._ctx.parse(entry_id, kind)
            if eid.kind == EntryKind.FOLDER:
                self.open_folder(entry_id)
            elif eid.kind == EntryKind.MESSAGE:
                self.open_message(entry_id).close()
            return eid.to_bytes()

    # --- Named properties ------------------------------------------------------------------------

    def get_ids_from_names(
        self, names: Sequence[named.PropName], *, create: bool = False
    ) -> list[int]:
        """Property ids of named properties (0 where unknown and not ``create``)."""
        db = self._ctx.db
        wanted = list(names)
        # Mapped names (nearly always, after a mailbox's first days) are a read: a write
        # transaction would commit and count as a change of the mailbox for everyone
        # who caches what they read of it.
        with db.reading() as txn:
            found = db.named.get_ids(txn, wanted, create=False, limits=self._ctx.limits)
        if not create or all(found):
            return found
        with db.transaction() as txn:
            return db.named.get_ids(txn, wanted, create=True, limits=self._ctx.limits)

    def get_names_from_ids(self, ids: Sequence[int]) -> list[named.PropName | None]:
        """Names of property ids (None where unmapped)."""
        if len(ids) > self._ctx.limits.max_props_per_call:
            raise errors.InvalidParameter("too many ids")
        with self._ctx.db.reading() as txn:
            return self._ctx.db.named.get_names(txn, list(ids))

    def close(self) -> None:
        self._closed = True
