"""The IMAP ``Backend`` over the MAPI store (``internet_mail.imap.backend.Backend``).

Theory of operation
-------------------
:class:`ImapStoreBackends` is made once per server over the
:class:`~mapi.store.ObjectStore`; :meth:`ImapStoreBackends.new` makes one
:class:`ImapStoreBackend` per connection. ``authenticate`` logs on through
:class:`~internet_mail.store.logons.Logons` (throttled) and opens the user's mailbox as
a :class:`~internet_mail.store.mailbox.MailboxView`, which does the work (mapping in
its docstring and ``docs/imap.md``); this module turns its answers into the core's
data and its refusals into ``BackendError``.

Methods block (SQLite) and are called from the driver's worker threads, one call at a
time per connection; the factory's shared state (the watchers of IMAP-only changes) is
under a lock. :meth:`ImapStoreBackend.close` logs the session off: the driver calls it
when the connection ends.

Other users' folders: ``Other Users/<login>/<path>`` names folder ``<path>`` of
``login``'s mailbox, opened through the same session
(:meth:`mapi.store.Session.open_store` with ``owner``: it opens only when something
there is granted to this user). LIST shows the folders the user may see
(``FOLDER_VISIBLE``), ``\\Noselect`` where the user may not read them
(``READ_ANY``) and for the levels between; a user who granted nothing is not listed
(the directory is walked, each mailbox asked; none is named unless it grants). Every
command checks the right it needs on the folder first (the mail view reads the storage
directly): reading ``READ_ANY``, flags ``EDIT_ANY`` (SELECT is read-only without it),
EXPUNGE ``DELETE_ANY``, APPEND and COPY into ``CREATE``; a refusal is ``NO [NOPERM]``.
UIDs and UIDVALIDITY are the owner's (the folder's own mail view).

``watch`` subscribes to the store's notifications on the folder (a listener of the
:class:`~mapi.notify.subscriptions.NotificationHub`, so nothing queues), which covers
changes through MAPI, SMTP delivery and IMAP alike; the only changes the store does not
announce, those of the IMAP-only ``\\Deleted`` flag, are announced by the factory to the
watchers of that folder.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

from internet_mail.imap.backend import BackendError, MailboxInfo, MailboxState, MessageInfo
from internet_mail.mime import MimeLimitExceeded
from mapi.access.permissions import CREATE, DELETE_ANY, EDIT_ANY, FOLDER_VISIBLE, READ_ANY
from mapi.access.throttle import LogonThrottle
from mapi.model import errors
from mapi.storage.api import FolderView, MailboxStorage
from mapi.store import ObjectStore

from .logons import Logons
from .mailbox import (
    DELIMITER,
    ROLE_USES,
    Box,
    Entry,
    Listings,
    MailboxError,
    MailboxView,
    error_code,
)

#: Where other users' mailboxes show: ``Other Users/<login>/<their mailbox>`` (the
#: "other users" namespace of [RFC 2342] and [RFC 9051] 7.3.1).
OTHER_USERS = "Other Users"
#: Most directory entries looked at for other users' grants on one LIST.
MAX_OTHER_USERS = 1000


@contextmanager
def _refusals() -> Iterator[None]:
    """Store errors as the tagged NO the session answers."""
    try:
        yield
    except MailboxError as exc:
        raise BackendError(exc.text, exc.code) from None
    except MimeLimitExceeded as exc:
        raise BackendError(f"message too complex: {exc}", "LIMIT") from None
    except errors.MapiError as exc:
        raise BackendError(f"the store refused: {exc}", error_code(exc)) from None


#: Bound of the shared cache of parsed headers and ENVELOPE answers (estimated bytes).
DERIVED_CACHE_BYTES = 64 << 20


class DerivedCache:
    """A bounded map of values derived from messages, shared by every connection
    (thread-safe; the oldest stored goes first). Keys name what they were derived from,
    change number included (the session's ``modseq``), so a changed message misses."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()

    def get(self, key: Hashable) -> object | None:
        found = self._items.get(key)  # one dict lookup: atomic, no lock needed
        return None if found is None else found[0]

    def put(self, key: Hashable, value: object, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.used -= old[1]
                _drop(old[0])
            self._items[key] = (value, size)
            self.used += size
            self._evict()

    def shared_map(self, key: Hashable) -> SharedMap:
        """The map kept under ``key`` (made empty when missing): one entry of this
        cache, whose size is the sum of what was put in it."""
        with self._lock:
            found = self._items.get(key)
            if found is not None and isinstance(found[0], SharedMap):
                return found[0]
            made = SharedMap(self, key)
            self._items[key] = (made, MAP_SIZE)
            self.used += MAP_SIZE
            self._evict()
            return made

    def _grow(self, target: SharedMap, key: Hashable, value: object, size: int) -> None:
        with self._lock:
            found = self._items.get(target.key)
            if found is None or found[0] is not target or size > self.max_bytes:
                return  # dropped meanwhile (or too big): not kept
            target[key] = value
            self._items[target.key] = (target, found[1] + size)
            self.used += size
            self._evict()

    def _reset(self, target: SharedMap) -> None:
        with self._lock:
            found = self._items.get(target.key)
            target.clear()
            if found is not None and found[0] is target:
                self._items[target.key] = (target, MAP_SIZE)
                self.used -= found[1] - MAP_SIZE

    def _evict(self) -> None:
        while self.used > self.max_bytes and self._items:
            _, (value, gone) = self._items.popitem(last=False)
            self.used -= gone
            _drop(value)


#: What an empty :class:`SharedMap` counts for.
MAP_SIZE = 64


class SharedMap(dict[Hashable, object]):
    """Values kept together as one entry of a :class:`DerivedCache` (one mailbox's
    parsed headers): reading is a plain dict lookup; :meth:`put` counts the value in
    the cache, which may drop the whole map (it is then emptied and keeps nothing)."""

    def __init__(self, cache: DerivedCache, key: Hashable) -> None:
        super().__init__()
        self.cache = cache
        self.key = key

    def put(self, key: Hashable, value: object, size: int) -> None:
        self.cache._grow(self, key, value, size)

    def reset(self) -> None:
        """Empty the map (the values of messages that changed since pile up)."""
        self.cache._reset(self)


def _drop(value: object) -> None:
    if isinstance(value, SharedMap):
        value.clear()


class UserCache:
    """One user's keys in a :class:`DerivedCache` (no user reads another's)."""

    def __init__(self, shared: DerivedCache, user_id: str) -> None:
        self.shared = shared
        self.user_id = user_id

    def get(self, key: tuple[object, ...]) -> object | None:
        return self.shared.get((self.user_id, *key))

    def put(self, key: tuple[object, ...], value: object, size: int) -> None:
        self.shared.put((self.user_id, *key), value, size)

    def headers(self, mailbox: str, uidvalidity: int) -> SharedMap:
        """The parsed headers of one of the user's mailboxes, by (UID, MODSEQ)."""
        return self.shared.shared_map((self.user_id, mailbox, uidvalidity, "headers"))


class SharedListings(Listings):
    """:class:`Listings` shared by the connections' threads (changes under a lock)."""

    def __init__(self, max_folders: int = 64) -> None:
        super().__init__(max_folders)
        self._lock = threading.Lock()

    def keep(
        self, db: MailboxStorage, user_id: str, folder_id: int, view: FolderView,
        entries: list[Entry],
    ) -> None:  # fmt: skip
        with self._lock:
            super().keep(db, user_id, folder_id, view, entries)


class ImapStoreBackends:
    """The shared factory: ``ImapStoreBackends(store, throttle=...)``, then ``.new()``
    for each connection (thread-safe)."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        throttle: LogonThrottle | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.logons = (
            Logons(store, throttle) if clock is None else Logons(store, throttle, clock=clock)
        )
        self._lock = threading.Lock()
        self._watchers: dict[tuple[str, int], dict[object, Callable[[], None]]] = {}
        #: Folder listings shared by the connections (a new one's SELECT finds them).
        self.listings = SharedListings()
        #: What sessions derive from messages, shared by the connections.
        self.derived = DerivedCache(DERIVED_CACHE_BYTES)
        #: The last listing turned into MessageInfo, by (user, folder): (entries, infos).
        self._infos: dict[tuple[str, int], tuple[list[Entry], list[MessageInfo]]] = {}
        #: The last listing's (unseen, deleted, size), by (user, folder).
        self._counts: dict[tuple[str, int], tuple[list[Entry], tuple[int, int, int]]] = {}

    def counts(self, user_id: str, folder_id: int, entries: list[Entry]) -> tuple[int, int, int]:
        """``entries``' unseen and ``\\Deleted`` messages and their total size (kept
        while the listing is the same)."""
        key = (user_id, folder_id)
        with self._lock:
            cached = self._counts.get(key)
        if cached is not None and cached[0] is entries:
            return cached[1]
        unseen = deleted = size = 0
        for e in entries:
            flags = e.flags
            unseen += "\\Seen" not in flags
            deleted += "\\Deleted" in flags
            size += e.size
        with self._lock:
            self._counts[key] = (entries, (unseen, deleted, size))
            while len(self._counts) > self.listings.max_folders:
                del self._counts[next(iter(self._counts))]
        return unseen, deleted, size

    def infos(self, user_id: str, folder_id: int, entries: list[Entry]) -> list[MessageInfo]:
        """``entries`` as the core's MessageInfo: the same list object again while the
        listing is the same (the session then skips its comparison); never changed
        after it is returned."""
        key = (user_id, folder_id)
        with self._lock:
            cached = self._infos.get(key)
        if cached is not None and cached[0] is entries:
            return cached[1]
        infos = [
            MessageInfo(
                uid=e.uid, flags=e.flags, size=e.size, internal_date=e.internal_date,
                modseq=e.modseq,
            )
            for e in entries
        ]  # fmt: skip
        with self._lock:
            self._infos[key] = (entries, infos)
            while len(self._infos) > self.listings.max_folders:
                del self._infos[next(iter(self._infos))]
        return infos

    def new(self, address: str | None = None) -> ImapStoreBackend:
        """A backend for one connection from ``address`` (the client's, for the
        throttle; None: unknown or local)."""
        return ImapStoreBackend(self, address)

    def _watch_local(
        self, user_id: str, folder_id: int, key: object, fn: Callable[[], None]
    ) -> None:
        with self._lock:
            self._watchers.setdefault((user_id, folder_id), {})[key] = fn

    def _unwatch_local(self, user_id: str, folder_id: int, key: object) -> None:
        with self._lock:
            found = self._watchers.get((user_id, folder_id))
            if found is not None:
                found.pop(key, None)
                if not found:
                    del self._watchers[(user_id, folder_id)]

    def local_change(self, user_id: str, folder_id: int) -> None:
        """Tell the watchers of a folder about a change only the Internet view saw."""
        with self._lock:
            fns = list(self._watchers.get((user_id, folder_id), {}).values())
        for fn in fns:
            fn()


class ImapStoreBackend:
    """One connection's ``Backend`` (see the module docstring)."""

    def __init__(self, factory: ImapStoreBackends, address: str | None = None) -> None:
        self.factory = factory
        self.address = address
        self._view: MailboxView | None = None
        #: Other users' mailboxes opened by this connection, by login name.
        self._others: dict[str, MailboxView] = {}

    #: Other users' mailboxes are named below this (the session's NAMESPACE).
    other_users_prefix = OTHER_USERS + DELIMITER

    @property
    def view(self) -> MailboxView:
        if self._view is None:
            raise BackendError("not authenticated", "AUTHORIZATIONFAILED")
        return self._view

    def authenticate(self, user: str, password: str) -> bool:
        if self._view is not None:
            return False
        session = self.factory.logons.logon(user, password, self.address)
        if session is None:
            return False
        try:
            self._view = MailboxView(session, self.factory.local_change, self.factory.listings)
        except errors.MapiError:
            session.logoff()
            return False
        return True

    def close(self) -> None:
        """End the store session (the connection is over). Idempotent."""
        view, self._view = self._view, None
        others, self._others = list(self._others.values()), {}
        for other in others:
            other.close()
        if view is not None:
            view.close()

    # --- Other users' mailboxes ------------------------------------------------------

    def _other(self, login: str) -> MailboxView | None:
        """``login``'s mailbox as this user sees it; None when it grants nothing (or
        there is no such user: the same answer)."""
        found = self._others.get(login)
        if found is not None:
            return found
        view = self.view
        if login == view.session.user.username:
            return None
        try:
            made = MailboxView(
                view.session, self.factory.local_change, self.factory.listings, owner=login
            )
        except errors.MapiError:
            return None
        self._others[login] = made
        return made

    def _at(self, name: str, right: int = READ_ANY) -> tuple[MailboxView, Box]:
        """The view and mailbox ``name`` names (``Other Users/...``: another user's),
        after checking the user holds ``right`` on it there.

        Raises:
            MailboxError: NONEXISTENT (also when the user may not see it), NOPERM.
        """
        view = self.view
        if not name.startswith(self.other_users_prefix):
            return view, view.box(name)
        login, _, rest = name[len(self.other_users_prefix) :].partition(DELIMITER)
        other = self._other(login) if login and rest else None
        box = None if other is None else other.tree().get(rest)
        if other is None or box is None:
            raise MailboxError("no such mailbox", "NONEXISTENT")
        rights = other.rights(box.folder_id)
        if not rights & FOLDER_VISIBLE:
            raise MailboxError("no such mailbox", "NONEXISTENT")
        if rights & right != right:
            raise MailboxError("permission denied", "NOPERM")
        return other, box

    def _shared_mailboxes(self) -> list[MailboxInfo]:
        """What LIST shows of other users' mailboxes (see the module docstring)."""
        view = self.view
        me = view.session.user.user_id
        prefix = self.other_users_prefix
        out: list[MailboxInfo] = []
        for rec in self.factory.store.list_users()[:MAX_OTHER_USERS]:
            if rec.user_id == me or rec.disabled:
                continue
            other = self._other(rec.username)
            if other is None:
                continue
            try:
                seen = {
                    name: rights
                    for name, box in other.tree().items()
                    if (rights := other.rights(box.folder_id)) & FOLDER_VISIBLE
                }
            except errors.MapiError:
                continue
            if not seen:
                continue
            levels: set[str] = set()
            for name in seen:
                parts = name.split(DELIMITER)
                levels.update(DELIMITER.join(parts[:i]) for i in range(1, len(parts)))
            base = prefix + rec.username
            out.append(MailboxInfo(name=base, attributes=("\\Noselect", "\\HasChildren")))
            for name in sorted(levels | set(seen), key=lambda n: (n != "INBOX", n)):
                kids = any(n.startswith(name + DELIMITER) for n in seen)
                attrs: tuple[str, ...] = ("\\HasChildren",) if kids else ("\\HasNoChildren",)
                if not seen.get(name, 0) & READ_ANY:
                    attrs = ("\\Noselect", *attrs)
                out.append(
                    MailboxInfo(name=base + DELIMITER + name, attributes=attrs, subscribed=True)
                )
        if out:
            top = MailboxInfo(name=OTHER_USERS, attributes=("\\Noselect", "\\HasChildren"))
            out.insert(0, top)
        return out

    def _mine(self, name: str) -> None:
        """Refuse a change of the hierarchy in another user's mailbox."""
        if name == OTHER_USERS or name.startswith(self.other_users_prefix):
            raise BackendError("other users' mailboxes are theirs to change", "NOPERM")

    # --- Mailboxes -------------------------------------------------------------------

    def list_mailboxes(self) -> list[MailboxInfo]:
        with _refusals():
            view = self.view
            tree = view.tree()
            subs = view.subscriptions()
        out = []
        for name in sorted(tree, key=lambda n: (n != "INBOX", n)):
            box = tree[name]
            row = subs.get(box.folder_id)
            use = ROLE_USES.get(box.role or "")
            out.append(
                MailboxInfo(
                    name=name,
                    attributes=("\\HasChildren",) if box.has_children else ("\\HasNoChildren",),
                    special_use=(use,) if use else (),
                    subscribed=True if row is None else row.subscribed,
                )
            )
        with _refusals():
            out += self._shared_mailboxes()
        return out

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        if special_use:
            raise BackendError("special-use mailboxes are the store's own", "USEATTR")
        self._mine(name)
        with _refusals():
            self.view.create(name)

    def delete(self, name: str) -> None:
        self._mine(name)
        with _refusals():
            self.view.delete(name)

    def rename(self, old: str, new: str) -> None:
        self._mine(old)
        self._mine(new)
        with _refusals():
            self.view.rename(old, new)

    def subscribe(self, name: str, subscribed: bool) -> None:
        with _refusals():
            view, _ = self._at(name, FOLDER_VISIBLE)
            if view is self.view:  # another user's are listed as subscribed: kept so
                view.subscribe(name, subscribed)

    def state(self, name: str) -> MailboxState:
        with _refusals():
            view, box = self._at(name)
            folder_id = box.folder_id
            folder, entries = view.entries(folder_id)
            read_only = not view.rights(folder_id) & EDIT_ANY
        unseen, deleted, size = self.factory.counts(view.user_id, folder_id, entries)
        return MailboxState(
            read_only=read_only,
            uidvalidity=folder.uidvalidity,
            uidnext=folder.uidnext,
            highestmodseq=folder.highestmodseq,
            messages=len(entries),
            unseen=unseen,
            deleted=deleted,
            size=size,
        )

    def _entries(self, name: str, right: int = READ_ANY) -> tuple[MailboxView, int, list[Entry]]:
        view, box = self._at(name, right)
        return view, box.folder_id, view.entries(box.folder_id)[1]

    def messages(self, name: str) -> list[MessageInfo]:
        """The folder's messages; the same list object again while the view's listing
        is unchanged (the session then skips its comparison). Never changed after it is
        returned."""
        with _refusals():
            view, folder_id, entries = self._entries(name)
        return self.factory.infos(view.user_id, folder_id, entries)

    def body(self, name: str, uid: int) -> bytes:
        with _refusals():
            view, box = self._at(name)
            raw = view.body(box.folder_id, uid)
        if raw is None:
            raise BackendError("message was expunged", "EXPUNGEISSUED")
        return raw

    def header(self, name: str, uid: int) -> bytes:
        """The message's first bytes, its whole header at least (the session's optional
        header read: ENVELOPE and header searches need no more)."""
        with _refusals():
            view, box = self._at(name)
            raw = view.head(box.folder_id, uid)
        if raw is None:
            raise BackendError("message was expunged", "EXPUNGEISSUED")
        return raw

    @property
    def fetch_cache(self) -> UserCache | None:
        """The session's optional cache of what it derives from messages (parsed
        headers, ENVELOPE answers): this user's part of the server's, None before
        login."""
        view = self._view
        return None if view is None else UserCache(self.factory.derived, view.user_id)

    def store(
        self,
        name: str,
        uids: list[int],
        mode: str,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> list[int]:
        with _refusals():
            view, folder_id, entries = self._entries(name, READ_ANY | EDIT_ANY)
            by_uid = {e.uid: e for e in entries}
            failed: list[int] = []
            changes: list[tuple[Entry, frozenset[str]]] = []
            for uid in uids:
                entry = by_uid.get(uid)
                if entry is None:
                    continue
                if unchanged_since is not None and entry.modseq > unchanged_since:
                    failed.append(uid)
                    continue
                if mode == "+":
                    new = entry.flags | flags
                elif mode == "-":
                    new = entry.flags - flags
                else:
                    new = flags
                if new != entry.flags:
                    changes.append((entry, new))
            if changes:
                view.set_flags(folder_id, changes)
        return failed

    def append(
        self, name: str, message: bytes, flags: frozenset[str], date: _dt.datetime | None
    ) -> tuple[int, int]:
        with _refusals():
            view, box = self._at(name, CREATE)
            folder_id = box.folder_id
            uid = view.append(folder_id, message, flags, date)
            return view.entries(folder_id)[0].uidvalidity, uid

    def copy(self, name: str, uids: list[int], target: str, *, move: bool) -> tuple[int, list[int]]:
        with _refusals():
            view, src, entries = self._entries(name, READ_ANY | DELETE_ANY if move else READ_ANY)
            into, box = self._at(target, CREATE)
            dest = box.folder_id
            by_uid = {e.uid: e for e in entries}
            chosen = [by_uid[u] for u in uids if u in by_uid]
            if into is view:
                new = view.copy(src, chosen, dest, move=move)
            elif move:
                raise BackendError("MOVE between two users' mailboxes: COPY instead", "CANNOT")
            else:
                new = self._copy_across(view, src, chosen, into, dest)
            validity = into.entries(dest)[0].uidvalidity
        return validity, [u for u in new if u is not None]

    @staticmethod
    def _copy_across(
        view: MailboxView, src: int, chosen: list[Entry], into: MailboxView, dest: int
    ) -> list[int | None]:
        """COPY into another mailbox: each message's bytes appended there."""
        out: list[int | None] = []
        for e in chosen:
            raw = view.body(src, e.uid)
            out.append(None if raw is None else into.append(dest, raw, e.flags, e.internal_date))
        return out

    def expunge(self, name: str, uids: list[int] | None) -> list[int]:
        with _refusals():
            view, folder_id, entries = self._entries(name, READ_ANY | DELETE_ANY)
            wanted = None if uids is None else set(uids)
            gone = [
                e for e in entries if "\\Deleted" in e.flags and (wanted is None or e.uid in wanted)
            ]
            view.expunge(folder_id, gone)
        return [e.uid for e in gone]

    def vanished(self, name: str, since_modseq: int) -> list[int]:
        with _refusals():
            view, box = self._at(name)
            return view.vanished(box.folder_id, since_modseq)

    def quota(self, root: str) -> list[tuple[str, int, int]] | None:
        if root != "":
            return None
        with _refusals():
            found = self.view.quota()
        if found is None:
            return None
        used, limit = found
        return [("STORAGE", (used + 1023) // 1024, limit // 1024)]

    def watch(self, mailbox: str, notify: Callable[[], None]) -> Callable[[], None]:
        with _refusals():
            view, box = self._at(mailbox)
            folder_id = box.folder_id
            key = object()
            view.advise(key, folder_id, notify)
        factory = self.factory
        factory._watch_local(view.user_id, folder_id, key, notify)
        hub = view.ctx.hub

        def stop() -> None:
            factory._unwatch_local(view.user_id, folder_id, key)
            if hub is not None:
                hub.forget(key)

        return stop


__all__ = ["ImapStoreBackend", "ImapStoreBackends"]
