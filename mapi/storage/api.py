"""What the store core asks of a storage backend.

The core (objects, tables, notifications, access, the store facade) holds no SQL and
imports no database module: it opens a mailbox as a :class:`MailboxStorage` and works
inside the transactions it hands out, through one object per job (folders, messages,
contents tables, sync, changes for notifications, permissions, named properties). The
SQLite backend (:mod:`mapi.storage.db` and the modules it wires) is the one
implementation today; a second one (PostgreSQL) is a module beside it that provides the
same objects with the same methods. See ``docs/architecture.md``, "Storage backends".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from mapi.model import restrictions as rs
from mapi.model.limits import Limits
from mapi.model.named import PropName
from mapi.model.properties import PropData
from mapi.storage.contents import ContentsPlan, MessageRecord, Prefilter
from mapi.storage.directory import StoredVerifier, UserRecord
from mapi.storage.folders import FolderCounts, FolderRow, StandardFolder
from mapi.storage.guard import MailboxLock
from mapi.storage.mailview import FolderView, ViewRow
from mapi.storage.messages import AttachState, MessageState, Placement
from mapi.storage.propbag import TempData
from mapi.storage.sync import SyncPage

#: A backend's transaction handle, as :meth:`MailboxStorage.transaction` and
#: :meth:`MailboxStorage.reading` yield it: opaque to the core, which only passes it
#: back to the storage methods it calls inside that transaction.
Txn: TypeAlias = Any


class FolderStorage(Protocol):
    """Folder rows: the hierarchy, folder properties and counts, the delete, copy and move cascades,
    and the messages' moves, copies, deletions and read flags in bulk."""

    def get(self, txn: Txn, folder_id: int) -> FolderRow | None:
        """The folder ``folder_id``, or None."""
        ...

    def row(self, txn: Txn, folder_id: int) -> FolderRow:
        """The folder ``folder_id``."""
        ...

    def child(self, txn: Txn, parent_id: int, folder_id: int) -> FolderRow | None:
        """The folder ``folder_id`` if it is a direct child of ``parent_id``, else None."""
        ...

    def children(self, txn: Txn, parent_id: int) -> list[FolderRow]:
        """The subfolders of ``parent_id``, by name then id (the hierarchy tables order)."""
        ...

    def user_children(self, txn: Txn, parent_id: int) -> list[int]:
        """The ids of the subfolders of ``parent_id`` that are not special folders."""
        ...

    def role_folder(self, txn: Txn, role: str) -> int:
        """The id of the special folder with ``role``."""
        ...

    def counts(self, txn: Txn, folder_id: int) -> FolderCounts:
        """Messages, unread messages, their total size, and subfolders of a folder."""
        ...

    def has_messages(self, txn: Txn, folder_id: int) -> bool:
        """True when the folder holds a message."""
        ...

    def has_subfolders(self, txn: Txn, folder_id: int) -> bool:
        """True when the folder has a subfolder."""
        ...

    def child_named(
        self, txn: Txn, parent_id: int | None, name: str, *, excluding: int | None = None
    ) -> int | None:
        """The id of the subfolder of ``parent_id`` named ``name`` (case-insensitively), other than
        ``excluding``; None if there is none (always for ``parent_id`` None: the root has no
        siblings)."""
        ...

    def unique_name(self, txn: Txn, parent_id: int, name: str) -> str:
        """``name``, or ``name (2)``, ``name (3)``...: the first that no subfolder of
        ``parent_id`` has."""
        ...

    def ancestors(self, txn: Txn, folder_id: int) -> list[int]:
        """``folder_id`` and the folders above it, up to the root."""
        ...

    def subtree(self, txn: Txn, folder_id: int) -> list[int]:
        """``folder_id`` and every folder below it."""
        ...

    def subtree_height(self, txn: Txn, folder_id: int) -> int:
        """How many levels of folders are below ``folder_id`` (0: none)."""
        ...

    def message_ids(self, txn: Txn, folder_id: int) -> list[int]:
        """The ids of the messages of a folder."""
        ...

    def messages_in(self, txn: Txn, folder_id: int, message_ids: Sequence[int]) -> list[int]:
        """Those of ``message_ids`` that are messages of ``folder_id`` (in their order, repeats
        kept)."""
        ...

    def read_flag_differs(
        self, txn: Txn, folder_id: int, message_ids: Sequence[int] | None, *, read: bool
    ) -> list[int]:
        """The messages whose read flag is not ``read``: of ``message_ids`` (messages of the
        folder), or of every message of the folder when None."""
        ...

    def create_standard(self, txn: Txn, folders: Sequence[StandardFolder], now: int) -> bool:
        """Create ``folders`` (parents first, change number 0) unless the mailbox has a root folder;
        True when they were created."""
        ...

    def create(
        self,
        txn: Txn,
        parent_id: int,
        name: str,
        *,
        folder_type: int,
        now: int,
        change_num: int,
        props: dict[int, PropData],
    ) -> int:
        """Add a user folder (no role) below ``parent_id``; return its id."""
        ...

    def write_props(
        self,
        txn: Txn,
        folder_id: int,
        props: dict[int, PropData],
        *,
        modified: int,
        change_num: int,
    ) -> None:
        """Replace the stored properties of a folder and stamp the change."""
        ...

    def rename(self, txn: Txn, folder_id: int, name: str) -> None:
        """Set a folders display name (the caller checked for a clash)."""
        ...

    def move_tree(
        self,
        txn: Txn,
        folder_id: int,
        parent_id: int,
        name: str,
        *,
        change_num: int,
        now: int,
        left: int | None,
    ) -> None:
        """Move a folder (with its subtree) below ``parent_id`` under ``name``; every folder of the
        subtree gets ``change_num``. ``left``: the folder it leaves, which gets a tombstone for
        it (None: no tombstone, e.g. a rename in place)."""
        ...

    def delete_tree(
        self, txn: Txn, folder_id: int, *, parent_id: int, change_num: int, now: int
    ) -> None:
        """Delete a folder for good with everything below it (subfolders, messages, recipients,
        attachments, embedded messages, stream data), leaving a tombstone in ``parent_id``."""
        ...

    def copy_tree(
        self,
        txn: Txn,
        src: int,
        parent_id: int,
        name: str,
        *,
        recursive: bool,
        limits: Limits,
        now: Callable[[], int],
        change_number: Callable[[], int],
    ) -> int:
        """Copy folder ``src`` with its messages (and, ``recursive``, its subfolders) below
        ``parent_id`` as ``name``; return the new folders id. Each new folder takes a fresh
        ``change_number()`` and ``now()``; its messages take the folders."""
        ...

    def empty(
        self, txn: Txn, folder_id: int, *, change_num: int, now: int
    ) -> tuple[list[int], list[int]]:
        """Delete every message and every user subfolder (with its subtree) of a folder for good,
        with tombstones; return (message ids, subfolder ids) deleted."""
        ...

    def delete_messages(
        self, txn: Txn, folder_id: int, message_ids: Sequence[int], *, change_num: int, now: int
    ) -> None:
        """Delete messages of ``folder_id`` for good, with tombstones."""
        ...

    def move_messages(
        self,
        txn: Txn,
        message_ids: Sequence[int],
        src: int,
        dest: int,
        *,
        change_num: int,
        now: int,
    ) -> None:
        """Move messages of ``src`` into ``dest`` (keeping their ids) with change number
        ``change_num``, leaving tombstones in ``src`` when it is another folder."""
        ...

    def copy_messages(
        self, txn: Txn, message_ids: Sequence[int], dest: int, *, change_num: int, limits: Limits
    ) -> list[int]:
        """Copy messages (with recipients, attachments, embedded messages) into ``dest``; return the
        new ids, in order."""
        ...

    def set_read(
        self, txn: Txn, message_ids: Sequence[int], *, read: bool, change_num: int
    ) -> None:
        """Set (``read``) or clear MSGFLAG_READ on messages, recording the read-state change at
        ``change_num`` for sync."""
        ...


class MessageStorage(Protocol):
    """Message rows for the core (``MailboxDB.messages``): the SQLite implementation."""

    def load(self, txn: Txn, message_id: int) -> tuple[MessageState, int | None]:
        """The committed state of a message and its folder id (None: embedded)."""
        ...

    def recipients(self, txn: Txn, message_id: int | None) -> list[dict[int, PropData]]:
        """The committed recipient rows of a message (none for an unsaved one)."""
        ...

    def attachment_sizes(self, txn: Txn, message_id: int | None) -> dict[int, int]:
        """Attachment number -> size of a messages committed attachments."""
        ...

    def load_attachment(self, txn: Txn, message_id: int, num: int) -> AttachState:
        """The committed state of attachment ``num`` of a message."""
        ...

    def embedded_id(self, txn: Txn, attach_id: int | None) -> int | None:
        """The committed embedded message of an attachment row, if any."""
        ...

    def read_value(self, txn: Txn, message_id: int, tag: int, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` of a messages committed large value."""
        ...

    def read_attachment_value(
        self, txn: Txn, attach_id: int, tag: int, offset: int, size: int
    ) -> bytes:
        """Up to ``size`` bytes from ``offset`` of an attachments committed large value."""
        ...

    def placement(self, txn: Txn, message_id: int) -> Placement | None:
        """Where a message is and its change number (None: no such message)."""
        ...

    def export(self, txn: Txn, message_id: int, limits: Limits) -> MessageState:
        """A detached copy of a committed message, for saving into another mailbox
        (:func:`export_message`)."""
        ...

    def save(
        self,
        txn: Txn,
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
        """Write ``state`` with everything below it; return the message id (:func:`save_message`,
        whose errors it raises)."""
        ...

    def copy(
        self,
        txn: Txn,
        src_id: int,
        *,
        change_num: int,
        folder_id: int | None = None,
        attach_id: int | None = None,
    ) -> int:
        """Copy a message with everything below it; return the new id."""
        ...

    def set_flags(self, txn: Txn, message_id: int, flags: int) -> int | None:
        """Set a committed messages flags at once; its folder id (None: no message)."""
        ...

    def note_read(self, txn: Txn, message_ids: Iterable[int], change_num: int) -> None:
        """Record a read-flag change of messages for incremental sync."""
        ...

    def delete(
        self, txn: Txn, message_id: int, *, folder_id: int, change_num: int, now: int
    ) -> None:
        """Delete a message of ``folder_id`` (cascading), leaving a tombstone."""
        ...

    def move(
        self,
        txn: Txn,
        message_id: int,
        *,
        from_folder: int,
        to_folder: int,
        change_num: int,
        now: int,
    ) -> None:
        """Move a message between folders, leaving a tombstone in the one it left."""
        ...

    def was_delivered(self, txn: Txn, submission_id: bytes) -> bool:
        """Has this mailbox already received the submission?"""
        ...

    def note_delivery(self, txn: Txn, submission_id: bytes, message_id: int, now: int) -> None:
        """Record the submissions arrival as ``message_id`` (in its transaction)."""
        ...

    def mailbox_size(self, txn: Txn) -> int:
        """The size of the mailbox in bytes (:func:`mailbox_size`)."""
        ...

    def mailbox_quota(self, txn: Txn, limits: Limits) -> int:
        """The mailboxs size limit: its own, else the default (0: none)."""
        ...

    def has_own_quota(self, txn: Txn) -> bool:
        """Does the mailbox have a size limit of its own?"""
        ...

    def set_mailbox_quota(self, txn: Txn, limit: int | None) -> None:
        """Give the mailbox its own size limit (0: none), or None: the default again."""
        ...

    def mailbox_room(self, txn: Txn, limits: Limits) -> int | None:
        """Bytes the mailbox may still grow by (None: no limit)."""
        ...

    def check_mailbox_room(self, txn: Txn, limits: Limits, added: int | None) -> None:
        """Raise NotEnoughDisk if the mailbox is past its quota after adding ``added``."""
        ...


class ContentsStorage(Protocol):
    """Contents tables: which tables the backend runs itself (a plan), counts, pages of keys in
    table order, positions, and the rows the core renders."""

    def plan(
        self, restriction: rs.Restriction | None, sort: Sequence[tuple[int, bool]]
    ) -> ContentsPlan | None:
        """The plan of a table SQLite can run entirely, or None (the core evaluates it)."""
        ...

    def prefilter(
        self, restriction: rs.Restriction | None
    ) -> tuple[Prefilter, rs.Restriction | None]:
        """The part of ``restriction`` SQLite evaluates, and the remainder (None: nothing left) the
        core must evaluate on the candidates."""
        ...

    def count(self, txn: Txn, folder_id: int, plan: ContentsPlan) -> int:
        """The number of rows of the table."""
        ...

    def keys(
        self, txn: Txn, folder_id: int, plan: ContentsPlan, offset: int, limit: int
    ) -> list[int]:
        """The message ids of rows ``offset`` to ``offset + limit`` in table order."""
        ...

    def position(self, txn: Txn, folder_id: int, plan: ContentsPlan, key: int) -> int | None:
        """The index of message ``key`` in table order, or None if it is not a row."""
        ...

    def records(self, txn: Txn, ids: Sequence[int]) -> dict[int, MessageRecord]:
        """The messages of ``ids`` that exist, by id (one statement)."""
        ...

    def large_tags(self, txn: Txn, ids: Sequence[int]) -> dict[int, frozenset[int]]:
        """Message id -> tags of its values stored as streams (ids without any left out)."""
        ...

    def candidates(
        self, txn: Txn, folder_id: int, prefilter: Prefilter, limit: int
    ) -> list[MessageRecord]:
        """The messages of a folder the prefilter selects, in id order: at most ``limit + 1`` of
        them, so that the caller sees when there are more than ``limit``."""
        ...

    def record(
        self, txn: Txn, message_id: int, folder_id: int | None = None
    ) -> MessageRecord | None:
        """Message ``message_id`` (only if it is in ``folder_id``, when given), or None."""
        ...

    def recipients(self, txn: Txn, message_id: int) -> list[dict[int, PropData]]:
        """The committed recipient rows of a message (with PR_ROWID), in row order."""
        ...

    def attachments(self, txn: Txn, message_id: int) -> list[dict[int, PropData]]:
        """The committed attachments of a message (with PR_ATTACH_NUM and PR_ATTACH_SIZE), in number
        order."""
        ...

    def read_large(self, txn: Txn, message_id: int, tag: int, max_bytes: int) -> bytes | None:
        """All the bytes of a messages large value ``tag``; None when it has none or it is longer
        than ``max_bytes``."""
        ...


class SyncStorage(Protocol):
    """Change numbers and what changed in a folder or a hierarchy since a sync state."""

    def next_change_number(self, txn: Txn) -> int:
        """Allocate a change number (inside a write transaction)."""
        ...

    def counter(self, txn: Txn) -> int:
        """The highest change number allocated so far."""
        ...

    def horizon(self, txn: Txn) -> int:
        """The highest change number whose tombstones may have been pruned (0: none)."""
        ...

    def prune(self, txn: Txn, now: int) -> int:
        """Drop old tombstones (inside a write transaction); return how many."""
        ...

    def contents_page(self, txn: Txn, folder_id: int, since: int, max_items: int) -> SyncPage:
        """Messages of ``folder_id`` changed (created, modified, moved in), deleted (moved out) or
        read since CN ``since`` (-1: initial, changes only), one page."""
        ...

    def hierarchy_page(self, txn: Txn, folder_id: int, since: int, max_items: int) -> SyncPage:
        """Folders below ``folder_id`` (the whole subtree, not itself) changed (created, modified,
        moved in) or deleted (moved out) since CN ``since``, one page. A folder that left is
        reported alone; its descendants are implied."""
        ...


class ChangeStorage(Protocol):
    """What the notification engine reads after a commit."""

    def parent_of(self, txn: Txn, folder_id: int) -> tuple[bool, int | None]:
        """(whether folder ``folder_id`` exists, its parents id: None for the root)."""
        ...

    def subfolder_order(self, txn: Txn, parent_id: int) -> list[int]:
        """The ids of the subfolders of ``parent_id`` by display name then id (the order of a
        hierarchy table without a sort)."""
        ...


class AclStorage(Protocol):
    """Folder permissions: the per-folder ACL rows."""

    def rights(self, txn: Txn, folder_id: int, member: str) -> int:
        """Rights of ``member`` on a folder: its row, else the default row, else 0."""
        ...

    def set(self, txn: Txn, folder_id: int, member: str, rights: int) -> None:
        """Set (rights > 0) or remove (rights == 0) the ACL row of a member."""
        ...

    def members(self, txn: Txn, folder_id: int) -> list[tuple[str, int]]:
        """The ACL rows of a folder, as (member, rights), sorted by member."""
        ...

    def grants_anything(self, txn: Txn, member: str) -> bool:
        """True when some folder grants ``member`` (or everyone) any right."""
        ...


class NamedPropStorage(Protocol):
    """The mailbox's named-property map."""

    def get_ids(
        self, txn: Txn, names: list[PropName], *, create: bool, limits: Limits
    ) -> list[int]:
        """Ids of ``names`` (0 for unknown ones when not creating); call in a write transaction when
        ``create`` is set."""
        ...

    def get_names(self, txn: Txn, ids: list[int]) -> list[PropName | None]:
        """Names of property ids (None where the id is not mapped)."""
        ...

    def is_mapped(self, txn: Txn, pid: int) -> bool:
        """True when a named-range id is mapped in this store."""
        ...


class MailViewStorage(Protocol):
    """The Internet-mail view of a mailbox: IMAP UIDs per folder, UIDVALIDITY, the
    IMAP-only ``\\Deleted`` flag, subscriptions and cached rendered sizes
    (:mod:`mapi.storage.mailview`)."""

    def folders(self, txn: Txn) -> dict[int, FolderView]:
        """Every folder row of the view, by folder id."""
        ...

    def folder(self, txn: Txn, folder_id: int) -> FolderView | None:
        """The view's row of a folder, or None."""
        ...

    def add_folder(
        self, txn: Txn, folder_id: int, uidvalidity: int, *, subscribed: bool
    ) -> FolderView:
        """Give a folder its row (unless it has one), with a UIDVALIDITY of at least
        ``uidvalidity`` above every other folder's; returns the row."""
        ...

    def set_subscribed(self, txn: Txn, folder_id: int, subscribed: bool) -> None:
        """Record the folder's subscription."""
        ...

    def raise_highest(self, txn: Txn, folder_id: int, modseq: int) -> None:
        """Make the folder's lowest reportable HIGHESTMODSEQ at least ``modseq``."""
        ...

    def listing(self, txn: Txn, folder_id: int) -> list[ViewRow]:
        """Every message of the folder with its view row, in one statement."""
        ...

    def row_count(self, txn: Txn, folder_id: int) -> int:
        """How many view rows the folder has (those of messages that left included)."""
        ...

    def prune(self, txn: Txn, folder_id: int, modseq: int) -> int:
        """Drop the rows of messages no longer in the folder, recording their uids as
        vanished at ``modseq`` and raising the folder's lowest reportable HIGHESTMODSEQ
        to it; returns how many."""
        ...

    def vanished(self, txn: Txn, folder_id: int, since: int) -> list[int]:
        """The uids that left the folder at a change number above ``since``, ascending."""
        ...

    def assign(self, txn: Txn, folder_id: int, message_ids: Sequence[int]) -> list[int]:
        """Give messages of the folder the next uids, in order; returns them."""
        ...

    def message_of(self, txn: Txn, folder_id: int, uid: int) -> int | None:
        """The message with ``uid`` in the folder, if it is still there."""
        ...

    def set_deleted(
        self, txn: Txn, folder_id: int, uids: Sequence[int], deleted: bool, modseq: int
    ) -> None:
        """Set or clear the IMAP-only ``\\Deleted`` flag of ``uids`` at ``modseq``."""
        ...

    def set_sizes(
        self, txn: Txn, folder_id: int, sizes: Sequence[tuple[int, int, int, int]]
    ) -> None:
        """Cache ``(uid, change number, size, CRLF size)`` of messages of the folder."""
        ...


class DirectoryStorage(Protocol):
    """The user directory (its own database, not a mailbox): accounts, verifiers, the
    server secret."""

    def open(self, path: Path) -> Txn:
        """Open (creating) the directory database at ``path``: its tables and, on first use, a
        random server secret. Returns the handle the other methods take."""
        ...

    def server_secret(self, txn: Txn) -> bytes:
        """The server secret (made by :meth:`open`)."""
        ...

    def add_user(
        self, txn: Txn, user: UserRecord, verifier: StoredVerifier, nt_hash: bytes | None = None
    ) -> bool:
        """Add an account (its ``disabled`` flag is not stored: new accounts are enabled); False
        when its login name (or id, or mailbox file) is taken."""
        ...

    def set_verifier(
        self, txn: Txn, username: str, verifier: StoredVerifier, nt_hash: bytes | None = None
    ) -> bool:
        """Replace the credentials of login name ``username`` (the verifier and the NT hash, both of
        the same password); False: no such user."""
        ...

    def set_nt_hash(self, txn: Txn, username: str, nt_hash: bytes) -> bool:
        """Store the NT hash of ``username``s current password (the migration of an account made
        before NTLM); False: no such user."""
        ...

    def data_version(self, txn: Txn) -> int:
        """A number that changes when another connection (another process) committed."""
        ...

    def nt_hashes(self, txn: Txn) -> dict[str, bytes | None]:
        """The NT hash of every enabled login name (None: not kept yet)."""
        ...

    def set_disabled(self, txn: Txn, username: str, disabled: bool) -> bool:
        """Disable or enable login name ``username``; False: no such user."""
        ...

    def delete_user(self, txn: Txn, user_id: str) -> None:
        """Remove the account ``user_id`` (nothing when there is none)."""
        ...

    def user_by_name(self, txn: Txn, username: str) -> UserRecord | None:
        """The account of a (normalised) login name."""
        ...

    def user_by_id(self, txn: Txn, user_id: str) -> UserRecord | None:
        """The account of a user id."""
        ...

    def user_by_email(self, txn: Txn, address: str) -> UserRecord | None:
        """The account whose e-mail address is ``address``, compared case-insensitively (the first
        by login name, should two share one)."""
        ...

    def users(self, txn: Txn) -> list[UserRecord]:
        """Every account, sorted by login name."""
        ...

    def enabled_verifier(self, txn: Txn, username: str) -> StoredVerifier | None:
        """The credential of an enabled login name (None: unknown or disabled)."""
        ...

    def close(self, txn: Txn) -> None:
        """Close the directory database."""
        ...


class MailboxStorage(Protocol):
    """One mailbox, opened: its transactions and its storage objects by job.

    The contract behind each method (what a commit promises, locking, change numbers,
    the after-commit hooks, interruption by the work budget) is ``docs/architecture.md``,
    "What a storage backend must provide".
    """

    path: Path
    limits: Limits
    clock: Callable[[], int]
    #: Held for every call that touches the mailbox (re-entrant; never waits inline).
    lock: MailboxLock
    #: The mailbox's 16-byte provider UID, fixed for its life.
    provider_uid: bytes
    #: Counts this object's visible commits (caches recompute when it moves).
    generation: int
    #: Scratch space of the current outermost transaction.
    txn_local: dict[str, Any]
    #: Pending stream data that died, released by the next staging transaction.
    staged_garbage: list[int]

    folders: FolderStorage
    messages: MessageStorage
    contents: ContentsStorage
    sync: SyncStorage
    changes: ChangeStorage
    acl: AclStorage
    named: NamedPropStorage
    mailview: MailViewStorage

    def transaction(self, *, staging: bool = False) -> AbstractContextManager[Txn]:
        """Hold the lock; one write transaction (nested calls join), durable on return."""
        ...

    def reading(self) -> AbstractContextManager[Txn]:
        """Hold the lock; one consistent snapshot for several reads."""
        ...

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once the outermost transaction has committed (dropped on rollback)."""
        ...

    def next_change_number(self, txn: Txn) -> int:
        """Allocate the next change number, inside a write transaction."""
        ...

    def pending_data(self, tag: int) -> TempData:
        """New pending data for a stream the client writes to value ``tag``: bytes the
        backend stages as they arrive, outside durable transactions, so that the save
        that adopts them only links them."""
        ...

    def release_dead_data(self) -> None:
        """Release the pending data of streams that died (queued by finalisers) now, where
        objects are released in a worker thread; never raises."""
        ...

    def close(self) -> None:
        """Close the mailbox (later use raises a MAPI error)."""
        ...


__all__ = [
    "AclStorage",
    "AttachState",
    "ChangeStorage",
    "ContentsPlan",
    "ContentsStorage",
    "DirectoryStorage",
    "FolderCounts",
    "FolderRow",
    "FolderStorage",
    "FolderView",
    "MailViewStorage",
    "MailboxStorage",
    "MessageRecord",
    "MessageState",
    "MessageStorage",
    "NamedPropStorage",
    "Placement",
    "Prefilter",
    "StandardFolder",
    "StoredVerifier",
    "SyncPage",
    "SyncStorage",
    "TempData",
    "Txn",
    "UserRecord",
    "ViewRow",
]
