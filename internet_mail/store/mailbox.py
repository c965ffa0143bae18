"""One logged-on user's mailbox as Internet mail sees it: folders by path, UIDs, flags.

Theory of operation
-------------------
:class:`MailboxView` holds one :class:`~mapi.store.Session` and its
:class:`~mapi.store.MsgStore` (the user's own mailbox) and answers what the IMAP and
POP3 backends ask, through the store's objects for every change (so MAPI clients see
IMAP's changes as their own notifications) and through the mailbox's Internet-mail view
(:mod:`mapi.storage.mailview`) for what MAPI has no place for.

Folders: the folders below the IPM subtree whose container class is mail (none, or
``IPF.Note...``) are mailboxes, named by their path with ``/`` between levels; the
Inbox is ``INBOX``. A ``/`` inside a MAPI folder name shows as U+2215 (DIVISION SLASH).

Messages (:meth:`MailboxView.entries`): one listing statement per folder gives every
message with its uid; messages without one (new, or moved in: a move keeps the MAPI id
but the message is new to this folder) get the next uids in the order they arrived
(change number, then id), and rows of messages that left are dropped, raising the
folder's HIGHESTMODSEQ to the store's change counter so the change is seen and
recording their uids as vanished at that modseq (QRESYNC), all in one
write transaction, only when there is such work. The listing is kept until the mailbox
commits again (``generation``), so the commands of a session that change nothing read
nothing.

Sizes: ``len`` of the MIME original when there is one (the stream's length when it is
stored as a stream: nothing is read), else of the rendered message, rendered once and
cached in the view by change number.

Flags, both ways: ``\\Seen`` is MSGFLAG_READ, ``\\Draft`` MSGFLAG_UNSENT,
``\\Flagged`` PR_FLAG_STATUS followupFlagged, ``\\Answered`` and ``$Forwarded``
PR_LAST_VERB_EXECUTED (reply / reply all, forward), other keywords the PS_PUBLIC_STRINGS
"Keywords" named property (Outlook's categories); ``\\Deleted`` lives in the view only.
Modseq is the largest of the message's change number, its read-state change number
and that of its ``\\Deleted`` change.
"""

from __future__ import annotations

import datetime as _dt
import re
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Final

from internet_mail.mime import MimeLimitExceeded, mime_to_mapi
from internet_mail.pop3.responses import normalize
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.named import PS_PUBLIC_STRINGS, PropName
from mapi.model.properties import (
    PropData,
    Scalar,
    datetime_from_filetime,
    filetime_from_datetime,
)
from mapi.notify.subscriptions import OBJECT_EVENTS
from mapi.objects import mailstore, quota
from mapi.objects.folders import DEL_MESSAGES, DELETE_HARD_DELETE, Folder
from mapi.storage.api import FolderRow, FolderView, MailboxStorage, ViewRow
from mapi.store import MsgStore, Session

from .render import message_bytes

DELIMITER: Final = "/"
#: What a "/" of a MAPI folder name shows as (DIVISION SLASH).
SLASH_STANDIN: Final = "\u2215"
#: SPECIAL-USE attributes ([RFC 6154]) of the special folders' roles.
ROLE_USES: Final = {
    "sent": "\\Sent",
    "deleted": "\\Trash",
    "drafts": "\\Drafts",
    "junk": "\\Junk",
    "archive": "\\Archive",
}
#: PR_LAST_VERB_EXECUTED values ([MS-OXOMSG] 2.2.1.20).
VERB_REPLY: Final = 102
VERB_REPLY_ALL: Final = 103
VERB_FORWARD: Final = 104
FOLLOWUP_FLAGGED: Final = 2
SYSTEM_FLAGS: Final = frozenset(
    {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded"}
)
#: An IMAP keyword: an atom ([RFC 9051] 9, ``flag-keyword``), of a sane length.
_ATOM: Final = re.compile(r'[^\x00-\x20\x7f-\x9f(){%*"\\\]]{1,100}')
_FILETIME_1970: Final = 116444736000000000
#: Bytes read first for a message's header (then four times more until it ends).
HEAD_READ: Final = 8192


class MailboxError(Exception):
    """The store refuses; ``code`` is the IMAP response code (None: none)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(frozen=True, slots=True)
class Box:
    """One mailbox: a mail folder below the IPM subtree."""

    name: str
    folder_id: int
    parent_id: int
    role: str | None
    has_children: bool


@dataclass(frozen=True, slots=True)
class Entry:
    """One message of a mailbox as the Internet view sees it."""

    uid: int
    message_id: int
    flags: frozenset[str]
    size: int
    #: Octets with CRLF line ends (-1: not known yet; :meth:`MailboxView.crlf_sizes`).
    crlf_size: int
    internal_date: _dt.datetime
    modseq: int
    #: Length of the MIME original when it is kept as a stream (-1: inline or none).
    stream_length: int = -1


def _uid_of(entry: Entry) -> int:
    return entry.uid


def error_code(exc: errors.MapiError) -> str | None:
    """The IMAP response code for a store error."""
    if isinstance(exc, errors.NotEnoughDisk):
        return "OVERQUOTA"
    if isinstance(exc, errors.TooBig | MimeLimitExceeded):
        return "TOOBIG" if isinstance(exc, errors.TooBig) else "LIMIT"
    if isinstance(exc, errors.NoAccess):
        return "NOPERM"
    if isinstance(exc, errors.Collision):
        return "ALREADYEXISTS"
    if isinstance(exc, errors.NotFound | errors.ObjectDeleted):
        return "NONEXISTENT"
    return "UNAVAILABLE"


def _is_mail(row: FolderRow) -> bool:
    klass = row.props.get(pt.PR_CONTAINER_CLASS_W)
    return not isinstance(klass, str) or not klass or klass.upper().startswith("IPF.NOTE")


def uidvalidity_now(filetime: int) -> int:
    """A UIDVALIDITY from the time (seconds since 1970), kept in 1..2**32-1."""
    return max(1, min((filetime - _FILETIME_1970) // 10_000_000, 0xFFFFFFFF))


def _int(props: dict[int, PropData], tag: int) -> int:
    value = props.get(tag)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Listings:
    """Folder listings (:meth:`MailboxView.entries`) kept while their mailbox has not
    committed since. A view has its own unless given one to share: IMAP gives every
    connection the server's (``internet_mail.store.imap.SharedListings``, thread-safe),
    so a user's new connection finds the listing another one made (a SELECT of a big
    folder need not read it again).

    A listing is current when it was made on the same database object at its present
    ``generation`` (callers hold that database's lock). At most ``max_folders`` are
    kept (the oldest made goes first).
    """

    def __init__(self, max_folders: int = 64) -> None:
        self.max_folders = max_folders
        self._kept: dict[tuple[str, int], tuple[object, int, FolderView, list[Entry]]] = {}

    def current(
        self, db: MailboxStorage, user_id: str, folder_id: int
    ) -> tuple[FolderView, list[Entry]] | None:
        found = self._kept.get((user_id, folder_id))  # one lookup: atomic
        if found is None or found[0] is not db or found[1] != db.generation:
            return None
        return found[2], found[3]

    def keep(
        self, db: MailboxStorage, user_id: str, folder_id: int, view: FolderView,
        entries: list[Entry],
    ) -> None:  # fmt: skip
        key = (user_id, folder_id)
        self._kept.pop(key, None)
        self._kept[key] = (db, db.generation, view, entries)
        while len(self._kept) > self.max_folders:
            del self._kept[next(iter(self._kept))]


class MailboxView:
    """A logged-on user's mailbox for the Internet doors (see the module docstring).

    Not thread-safe by itself: one connection uses it, one call at a time; the store
    objects under it lock the mailbox.
    """

    def __init__(
        self,
        session: Session,
        on_local_change: Callable[[str, int], None] | None = None,
        listings: Listings | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.session = session
        #: Another user's mailbox (a login name), opened with this user's rights: the
        #: caller checks them (:meth:`rights`), as the view reads the storage directly.
        self.owner = owner
        self.store: MsgStore = session.open_store(owner)
        self.ctx = self.store.context
        self.db: MailboxStorage = self.ctx.db
        self.user_id = self.ctx.owner.user_id
        self._on_local_change = on_local_change
        self._tree: tuple[int, dict[str, Box]] | None = None
        #: Folder listings, shared with the user's other connections when given.
        self._listings = listings if listings is not None else Listings()
        name = PropName.by_name(PS_PUBLIC_STRINGS, "Keywords")
        # Known after the first time: read, so a logon commits nothing (a commit would
        # make every kept folder listing stale).
        with self.db.reading() as txn:
            pid = self.db.named.get_ids(txn, [name], create=False, limits=self.ctx.limits)[0]
        if not pid and owner is None:
            pid = self.store.get_ids_from_names([name], create=True)[0]
        # No id in another user's mailbox: tag 0 names no property, so no keywords.
        self.keywords_tag = (pid << 16) | int(pt.PropType.PT_MV_UNICODE) if pid else 0

    def close(self) -> None:
        """Log the session off (another user's mailbox: close it, the session stays)."""
        self.store.close()
        if self.owner is None:
            self.session.logoff()

    def rights(self, folder_id: int) -> int:
        """The logged-on user's rights on a folder (every right in their own mailbox)."""
        return self.ctx.rights(folder_id)

    # --- Folders ---------------------------------------------------------------------

    def tree(self) -> dict[str, Box]:
        """Every mailbox by name (kept until the mailbox commits again)."""
        db = self.db
        with db.lock:
            if self._tree is not None and self._tree[0] == db.generation:
                return self._tree[1]
            out: dict[str, Box] = {}
            with db.reading() as txn:
                top = db.folders.role_folder(txn, "ipm_subtree")
                self._walk(txn, top, "", out, 0)
            self._tree = (db.generation, out)
            return out

    def _walk(self, txn: object, parent: int, prefix: str, out: dict[str, Box], depth: int) -> bool:
        found = False
        for row in self.db.folders.children(txn, parent):
            if not _is_mail(row) or depth > self.ctx.limits.max_folder_depth:
                continue
            found = True
            leaf = row.name.replace(DELIMITER, SLASH_STANDIN)
            name = "INBOX" if row.role == "inbox" else prefix + leaf
            kids = self._walk(txn, row.id, name + DELIMITER, out, depth + 1)
            out[name] = Box(name, row.id, parent, row.role, kids)
        return found

    def box(self, name: str) -> Box:
        """The mailbox ``name``.

        Raises:
            MailboxError: NONEXISTENT.
        """
        found = self.tree().get(name)
        if found is None:
            raise MailboxError("no such mailbox", "NONEXISTENT")
        return found

    def folder(self, folder_id: int) -> Folder:
        return self.store.open_folder(self.ctx.folder_eid(folder_id))

    def _parent_of(self, name: str, *, create: bool) -> tuple[Folder, str]:
        """The folder that holds mailbox ``name`` (made when ``create``) and its leaf."""
        parts = name.split(DELIMITER)
        if not all(parts):
            raise MailboxError("empty level in the mailbox name", "CANNOT")
        leaf = parts[-1].replace(SLASH_STANDIN, DELIMITER)
        if len(parts) == 1:
            return self.folder(self._role_id("ipm_subtree")), leaf
        parent_name = DELIMITER.join(parts[:-1])
        found = self.tree().get(parent_name)
        if found is not None:
            return self.folder(found.folder_id), leaf
        if not create:
            raise MailboxError("no such parent mailbox", "NONEXISTENT")
        holder, parent_leaf = self._parent_of(parent_name, create=True)
        made = holder.create_folder(parent_leaf, container_class="IPF.Note", open_if_exists=True)
        return made, leaf

    def _role_id(self, role: str) -> int:
        with self.db.reading() as txn:
            return self.db.folders.role_folder(txn, role)

    def create(self, name: str) -> None:
        name = name.rstrip(DELIMITER)
        if name in self.tree() or name == "INBOX":
            raise MailboxError("mailbox exists", "ALREADYEXISTS")
        holder, leaf = self._parent_of(name, create=True)
        holder.create_folder(leaf, container_class="IPF.Note")

    def delete(self, name: str) -> None:
        box = self.box(name)
        if box.role is not None:
            raise MailboxError("special mailboxes cannot be deleted", "CANNOT")
        with self.db.reading() as txn:
            subfolders = self.db.folders.has_subfolders(txn, box.folder_id)
        if subfolders:
            raise MailboxError("the mailbox has inferior mailboxes", "INUSE")
        parent = self.folder(box.parent_id)
        parent.delete_folder(self.ctx.folder_eid(box.folder_id), DEL_MESSAGES | DELETE_HARD_DELETE)

    def rename(self, old: str, new: str) -> None:
        box = self.box(old)
        new = new.rstrip(DELIMITER)
        if box.role is not None:
            raise MailboxError("special mailboxes cannot be renamed", "CANNOT")
        if new in self.tree() or new == "INBOX":
            raise MailboxError("mailbox exists", "ALREADYEXISTS")
        if new.startswith(old + DELIMITER):
            raise MailboxError("cannot move a mailbox below itself", "CANNOT")
        holder, leaf = self._parent_of(new, create=True)
        if holder.folder_id == box.parent_id:
            self.folder(box.folder_id).rename(leaf)
        else:
            self.folder(box.parent_id).copy_folder(
                self.ctx.folder_eid(box.folder_id), holder, leaf, move=True
            )

    def subscriptions(self) -> dict[int, FolderView]:
        with self.db.reading() as txn:
            return self.db.mailview.folders(txn)

    def subscribe(self, name: str, subscribed: bool) -> None:
        box = self.box(name)
        with self.db.transaction() as txn:
            self._folder_view(txn, box.folder_id)
            self.db.mailview.set_subscribed(txn, box.folder_id, subscribed)

    def _folder_view(self, txn: object, folder_id: int) -> FolderView:
        return self.db.mailview.add_folder(
            txn, folder_id, uidvalidity_now(self.ctx.now()), subscribed=True
        )

    # --- Messages --------------------------------------------------------------------

    def entries(self, folder_id: int) -> tuple[FolderView, list[Entry]]:
        """The folder's view row and its messages by ascending uid (see the module
        docstring)."""
        db = self.db
        with db.lock:
            cached = self._listings.current(db, self.user_id, folder_id)
            if cached is not None:
                return cached
            with db.reading() as txn:
                view = db.mailview.folder(txn, folder_id)
                rows = db.mailview.listing(txn, folder_id)
                stale = view is not None and db.mailview.row_count(txn, folder_id) > sum(
                    r.uid is not None for r in rows
                )
            fresh = sorted(
                (r for r in rows if r.uid is None),
                key=lambda r: (r.record.change_num, r.record.id),
            )
            if view is None or stale or fresh:
                with db.transaction() as txn:
                    view = self._folder_view(txn, folder_id)
                    if stale:
                        db.mailview.prune(txn, folder_id, db.sync.counter(txn))
                    uids = db.mailview.assign(txn, folder_id, [r.record.id for r in fresh])
                    given = dict(zip((r.record.id for r in fresh), uids, strict=True))
                    rows = [r if r.uid is not None else r._replace(uid=given[r.record.id])
                            for r in rows]  # fmt: skip
                    view = db.mailview.folder(txn, folder_id)
                    assert view is not None
            rows = self._sized(folder_id, rows)
            entries = sorted((self._entry(r) for r in rows), key=lambda e: e.uid)
            top = max((e.modseq for e in entries), default=0)
            view = view._replace(highestmodseq=max(view.highestmodseq, top, 1))
            self._listings.keep(db, self.user_id, folder_id, view, entries)
            return view, entries

    def _sized(self, folder_id: int, rows: list[ViewRow]) -> list[ViewRow]:
        """``rows`` with their sizes current (rendering the messages that need it, and
        caching what was computed in one transaction)."""
        todo = [r for r in rows if r.size_cn != r.record.change_num]
        if not todo:
            return rows
        done: dict[int, ViewRow] = {}
        cache: list[tuple[int, int, int, int]] = []
        for r in todo:
            inline = r.record.props.get(pt.PR_MIME_ORIGINAL)
            crlf = -1
            if isinstance(inline, bytes):
                size = len(inline)
                crlf = len(normalize(inline))
            elif r.mime_length is not None:
                size = r.mime_length
            else:
                raw = message_bytes(self.db, r.record.id)
                size, crlf = len(raw), len(normalize(raw))
            assert r.uid is not None
            cache.append((r.uid, r.record.change_num, size, crlf))
            done[r.record.id] = r._replace(size_cn=r.record.change_num, size=size, crlf_size=crlf)
        with self.db.transaction() as txn:
            self.db.mailview.set_sizes(txn, folder_id, cache)
        return [done.get(r.record.id, r) for r in rows]

    def _entry(self, r: ViewRow) -> Entry:
        props = r.record.props
        flags: set[str] = set()
        mflags = _int(props, pt.PR_MESSAGE_FLAGS)
        if mflags & pt.MSGFLAG_READ:
            flags.add("\\Seen")
        if mflags & pt.MSGFLAG_UNSENT:
            flags.add("\\Draft")
        if _int(props, pt.PR_FLAG_STATUS) == FOLLOWUP_FLAGGED:
            flags.add("\\Flagged")
        verb = _int(props, pt.PR_LAST_VERB_EXECUTED)
        if verb in (VERB_REPLY, VERB_REPLY_ALL):
            flags.add("\\Answered")
        elif verb == VERB_FORWARD:
            flags.add("$Forwarded")
        if r.deleted:
            flags.add("\\Deleted")
        words = props.get(self.keywords_tag)
        if isinstance(words, list):
            flags.update(w for w in words if isinstance(w, str) and _ATOM.fullmatch(w))
        when = _int(props, pt.PR_MESSAGE_DELIVERY_TIME) or r.record.created
        assert r.uid is not None
        streamed = r.mime_length is not None and not isinstance(
            props.get(pt.PR_MIME_ORIGINAL), bytes
        )
        return Entry(
            uid=r.uid, message_id=r.record.id, flags=frozenset(flags), size=r.size,
            crlf_size=r.crlf_size, internal_date=datetime_from_filetime(when),
            modseq=max(r.record.change_num, r.read_cn, r.modseq, 1),
            stream_length=r.mime_length if streamed and r.mime_length is not None else -1,
        )  # fmt: skip

    def crlf_sizes(self, folder_id: int) -> list[Entry]:
        """:meth:`entries` with every ``crlf_size`` known (reads the messages whose
        original is a stream once; cached)."""
        entries = self.entries(folder_id)[1]
        todo = [e for e in entries if e.crlf_size < 0]
        if not todo:
            return entries
        cache = []
        fixed: dict[int, Entry] = {}
        with self.db.reading() as txn:
            cns = {
                e.uid: self.db.messages.placement(txn, e.message_id) for e in todo
            }  # fmt: skip
        for e in todo:
            where = cns[e.uid]
            if where is None:
                continue
            crlf = len(normalize(message_bytes(self.db, e.message_id)))
            cache.append((e.uid, where.change_num, e.size, crlf))
            fixed[e.uid] = Entry(
                e.uid, e.message_id, e.flags, e.size, crlf, e.internal_date, e.modseq,
                e.stream_length,
            )  # fmt: skip
        with self.db.transaction() as txn:
            self.db.mailview.set_sizes(txn, folder_id, cache)
        return [fixed.get(e.uid, e) for e in entries]

    def vanished(self, folder_id: int, since: int) -> list[int]:
        """The uids that left the folder above change number ``since`` (ascending)."""
        self.entries(folder_id)  # the listing records those that left since the last
        with self.db.reading() as txn:
            return self.db.mailview.vanished(txn, folder_id, since)

    def message_id(self, folder_id: int, uid: int) -> int | None:
        with self.db.reading() as txn:
            return self.db.mailview.message_of(txn, folder_id, uid)

    def body(self, folder_id: int, uid: int) -> bytes | None:
        """The message's bytes, None when it is gone."""
        raw = self._streamed_original(folder_id, uid)
        if raw is not None:
            return raw
        mid = self.message_id(folder_id, uid)
        if mid is None:
            return None
        try:
            return message_bytes(self.db, mid)
        except errors.NotFound:
            return None

    def head(self, folder_id: int, uid: int) -> bytes | None:
        """The first bytes of the message, its whole header at least (for ENVELOPE and
        header searches: a large message is not read whole); None when it is gone."""
        entry = self._streamed_entry(folder_id, uid)
        if entry is not None:
            size = HEAD_READ
            while True:
                raw = self._read_original(entry, min(size, entry.stream_length))
                if raw is None:
                    break
                if len(raw) == entry.stream_length or b"\r\n\r\n" in raw or b"\n\n" in raw:
                    return raw
                size *= 4
        return self.body(folder_id, uid)

    def _streamed_original(self, folder_id: int, uid: int) -> bytes | None:
        """The MIME original of message ``uid`` read straight from its stream, when the
        folder's listing is current and says it has one (a FETCH of every message then
        costs one read each, without looking the message up); else None."""
        entry = self._streamed_entry(folder_id, uid)
        return None if entry is None else self._read_original(entry, entry.stream_length)

    def _streamed_entry(self, folder_id: int, uid: int) -> Entry | None:
        """Message ``uid``'s entry in the folder's current listing when its original is a
        stream (None: no current listing, no such message, or no stream)."""
        db = self.db
        with db.lock:
            cached = self._listings.current(db, self.user_id, folder_id)
            if cached is None:
                return None
            entries = cached[1]
        at = bisect_left(entries, uid, key=_uid_of)
        if at == len(entries) or entries[at].uid != uid or entries[at].stream_length < 0:
            return None
        return entries[at]

    def _read_original(self, entry: Entry, size: int) -> bytes | None:
        """The first ``size`` bytes of ``entry``'s streamed original; None when they are
        not there (changed or gone since the listing, a race: the slow path decides)."""
        with self.db.reading() as txn:
            raw = self.db.messages.read_value(txn, entry.message_id, pt.PR_MIME_ORIGINAL, 0, size)
        return raw if len(raw) == size else None

    # --- Flags -----------------------------------------------------------------------

    def set_flags(self, folder_id: int, changes: Sequence[tuple[Entry, frozenset[str]]]) -> None:
        """Give each entry its new flag set, through the store's save paths."""
        folder = self.folder(folder_id)
        eid = self.ctx.message_eid
        read = [eid(e.message_id) for e, new in changes if "\\Seen" in new - e.flags]
        unread = [eid(e.message_id) for e, new in changes if "\\Seen" in e.flags - new]
        if read:
            folder.set_read_flags(read)
        if unread:
            folder.set_read_flags(unread, clear=True)
        marked = [e.uid for e, new in changes if "\\Deleted" in new - e.flags]
        unmarked = [e.uid for e, new in changes if "\\Deleted" in e.flags - new]
        if marked or unmarked:
            with self.db.transaction() as txn:
                cn = self.db.next_change_number(txn)
                self.db.mailview.set_deleted(txn, folder_id, marked, True, cn)
                self.db.mailview.set_deleted(txn, folder_id, unmarked, False, cn)
            if self._on_local_change is not None:
                self._on_local_change(self.user_id, folder_id)
        for e, new in changes:
            if (e.flags ^ new) - {"\\Seen", "\\Deleted"}:
                self._save_flags(e.message_id, new)

    def _save_flags(self, message_id: int, new: frozenset[str]) -> None:
        """The MAPI properties of ``new``, saved as a MAPI client would save them."""
        try:
            message = self.store.open_message(self.ctx.message_eid(message_id), writable=True)
        except errors.NotFound:
            return
        try:
            sets: list[tuple[int, object]] = []
            deletes: list[int] = []
            if "\\Flagged" in new:
                sets.append((pt.PR_FLAG_STATUS, FOLLOWUP_FLAGGED))
            else:
                deletes.append(pt.PR_FLAG_STATUS)
            if "$Forwarded" in new:
                sets.append((pt.PR_LAST_VERB_EXECUTED, VERB_FORWARD))
            elif "\\Answered" in new:
                sets.append((pt.PR_LAST_VERB_EXECUTED, VERB_REPLY))
            else:
                deletes.append(pt.PR_LAST_VERB_EXECUTED)
            words = sorted(new - SYSTEM_FLAGS)
            if words and self.keywords_tag:
                sets.append((self.keywords_tag, words))
            elif self.keywords_tag:
                deletes.append(self.keywords_tag)
            current = message.get_props([pt.PR_MESSAGE_FLAGS]).as_dict().get(pt.PR_MESSAGE_FLAGS)
            mflags = current if isinstance(current, int) else 0
            want = mflags | pt.MSGFLAG_UNSENT if "\\Draft" in new else mflags & ~pt.MSGFLAG_UNSENT
            if want != mflags:
                sets.append((pt.PR_MESSAGE_FLAGS, want))
            message.set_props(sets)
            message.delete_props(deletes)
            message.save_changes()
        finally:
            message.close()

    # --- Append, copy, expunge ----------------------------------------------------------

    def append(
        self, folder_id: int, raw: bytes, flags: frozenset[str], date: _dt.datetime | None
    ) -> int:
        """Convert and save ``raw`` (kept as its MIME original); returns its uid."""
        when = filetime_from_datetime(date) if date is not None else self.ctx.now()
        conv = mime_to_mapi(raw, limits=self.ctx.limits, received=when)
        mflags = (pt.MSGFLAG_READ if "\\Seen" in flags else 0) | (
            pt.MSGFLAG_UNSENT if "\\Draft" in flags else 0
        )
        extra: dict[int, PropData] = {
            pt.PR_MIME_ORIGINAL: raw,
            pt.PR_MESSAGE_FLAGS: mflags,
            pt.PR_MESSAGE_DELIVERY_TIME: when,
            pt.PR_MESSAGE_CLASS_W: conv.props.get(pt.PR_MESSAGE_CLASS_W) or "IPM.Note",
        }
        if "\\Flagged" in flags:
            extra[pt.PR_FLAG_STATUS] = FOLLOWUP_FLAGGED
        if "$Forwarded" in flags or "\\Answered" in flags:
            extra[pt.PR_LAST_VERB_EXECUTED] = VERB_FORWARD if "$Forwarded" in flags else VERB_REPLY
        words = sorted(flags - SYSTEM_FLAGS)
        if words and self.keywords_tag:
            extra[self.keywords_tag] = list[Scalar](words)
        new_id = mailstore.save_new_message(self.ctx, folder_id, conv, extra)
        uid = self.uids(folder_id, [new_id])[0]
        if "\\Deleted" in flags and uid is not None:
            with self.db.transaction() as txn:
                cn = self.db.next_change_number(txn)
                self.db.mailview.set_deleted(txn, folder_id, [uid], True, cn)
        assert uid is not None
        return uid

    def uids(self, folder_id: int, message_ids: Sequence[int]) -> list[int | None]:
        """The uids of messages of the folder (given now if they have none yet)."""
        _, entries = self.entries(folder_id)
        by_id = {e.message_id: e.uid for e in entries}
        return [by_id.get(mid) for mid in message_ids]

    def copy(
        self, src: int, entries: Sequence[Entry], dest: int, *, move: bool
    ) -> list[int | None]:
        """Copy or move messages; returns their uids in ``dest`` (None: gone)."""
        eid = self.ctx.message_eid
        mids = [e.message_id for e in entries]
        if move:
            self.folder(src).copy_messages([eid(m) for m in mids], self.folder(dest), move=True)
            new_ids: list[int | None] = list(mids)
        else:
            new_ids = mailstore.copy_messages(self.ctx, src, mids, dest)
        uids = self.uids(dest, [m for m in new_ids if m is not None])
        it = iter(uids)
        out = [None if m is None else next(it) for m in new_ids]
        marked = [u for e, u in zip(entries, out, strict=True) if u and "\\Deleted" in e.flags]
        if marked:
            with self.db.transaction() as txn:
                cn = self.db.next_change_number(txn)
                self.db.mailview.set_deleted(txn, dest, marked, True, cn)
        return out

    def expunge(self, folder_id: int, entries: Sequence[Entry]) -> None:
        """Delete messages as MAPI does (into Deleted Items; for good from there)."""
        if entries:
            eids = [self.ctx.message_eid(e.message_id) for e in entries]
            self.folder(folder_id).delete_messages(eids)

    def quota(self) -> tuple[int, int] | None:
        """(bytes used, limit) of the mailbox; None when it has no limit."""
        limit = quota.mailbox_quota(self.db)
        if not limit:
            return None
        return quota.mailbox_size(self.db), limit

    # --- Watching ----------------------------------------------------------------------

    def advise(self, key: Hashable, folder_id: int, notify: Callable[[], None]) -> None:
        """Have ``notify()`` called on any change the store reports in the folder."""
        hub = self.ctx.hub
        if hub is None:
            return
        hub.set_listener(key, notify)
        try:
            self.store.advise(key, OBJECT_EVENTS, self.ctx.folder_eid(folder_id))
        except BaseException:
            hub.forget(key)
            raise


__all__ = [
    "DELIMITER",
    "ROLE_USES",
    "SYSTEM_FLAGS",
    "Box",
    "Entry",
    "MailboxError",
    "MailboxView",
    "error_code",
    "uidvalidity_now",
]
