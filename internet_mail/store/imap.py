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

``watch`` subscribes to the store's notifications on the folder (a listener of the
:class:`~mapi.notify.subscriptions.NotificationHub`, so nothing queues), which covers
changes through MAPI, SMTP delivery and IMAP alike; the only changes the store does not
announce, those of the IMAP-only ``\\Deleted`` flag, are announced by the factory to the
watchers of that folder.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from internet_mail.imap.backend import BackendError, MailboxInfo, MailboxState, MessageInfo
from internet_mail.mime import MimeLimitExceeded
from mapi.access.throttle import LogonThrottle
from mapi.model import errors
from mapi.store import ObjectStore

from .logons import Logons
from .mailbox import ROLE_USES, Entry, MailboxError, MailboxView, error_code


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
            self._view = MailboxView(session, self.factory.local_change)
        except errors.MapiError:
            session.logoff()
            return False
        return True

    def close(self) -> None:
        """End the store session (the connection is over). Idempotent."""
        view, self._view = self._view, None
        if view is not None:
            view.close()

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
        return out

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        if special_use:
            raise BackendError("special-use mailboxes are the store's own", "USEATTR")
        with _refusals():
            self.view.create(name)

    def delete(self, name: str) -> None:
        with _refusals():
            self.view.delete(name)

    def rename(self, old: str, new: str) -> None:
        with _refusals():
            self.view.rename(old, new)

    def subscribe(self, name: str, subscribed: bool) -> None:
        with _refusals():
            self.view.subscribe(name, subscribed)

    def state(self, name: str) -> MailboxState:
        with _refusals():
            folder, entries = self.view.entries(self.view.box(name).folder_id)
        return MailboxState(
            uidvalidity=folder.uidvalidity,
            uidnext=folder.uidnext,
            highestmodseq=folder.highestmodseq,
            messages=len(entries),
            unseen=sum("\\Seen" not in e.flags for e in entries),
            deleted=sum("\\Deleted" in e.flags for e in entries),
            size=sum(e.size for e in entries),
        )

    def _entries(self, name: str) -> tuple[int, list[Entry]]:
        view = self.view
        folder_id = view.box(name).folder_id
        return folder_id, view.entries(folder_id)[1]

    def messages(self, name: str) -> list[MessageInfo]:
        with _refusals():
            _, entries = self._entries(name)
        return [
            MessageInfo(
                uid=e.uid,
                flags=e.flags,
                size=e.size,
                internal_date=e.internal_date,
                modseq=e.modseq,
            )
            for e in entries
        ]

    def body(self, name: str, uid: int) -> bytes:
        with _refusals():
            raw = self.view.body(self.view.box(name).folder_id, uid)
        if raw is None:
            raise BackendError("message was expunged", "EXPUNGEISSUED")
        return raw

    def store(
        self,
        name: str,
        uids: list[int],
        mode: str,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> list[int]:
        with _refusals():
            folder_id, entries = self._entries(name)
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
                self.view.set_flags(folder_id, changes)
        return failed

    def append(
        self, name: str, message: bytes, flags: frozenset[str], date: _dt.datetime | None
    ) -> tuple[int, int]:
        with _refusals():
            view = self.view
            folder_id = view.box(name).folder_id
            uid = view.append(folder_id, message, flags, date)
            return view.entries(folder_id)[0].uidvalidity, uid

    def copy(self, name: str, uids: list[int], target: str, *, move: bool) -> tuple[int, list[int]]:
        with _refusals():
            view = self.view
            src, entries = self._entries(name)
            dest = view.box(target).folder_id
            by_uid = {e.uid: e for e in entries}
            chosen = [by_uid[u] for u in uids if u in by_uid]
            new = view.copy(src, chosen, dest, move=move)
            validity = view.entries(dest)[0].uidvalidity
        return validity, [u for u in new if u is not None]

    def expunge(self, name: str, uids: list[int] | None) -> list[int]:
        with _refusals():
            folder_id, entries = self._entries(name)
            wanted = None if uids is None else set(uids)
            gone = [
                e for e in entries if "\\Deleted" in e.flags and (wanted is None or e.uid in wanted)
            ]
            self.view.expunge(folder_id, gone)
        return [e.uid for e in gone]

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
            view = self.view
            folder_id = view.box(mailbox).folder_id
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
