"""The POP3 ``Backend`` over the MAPI store (``internet_mail.pop3.backend.Backend``).

Theory of operation
-------------------
:class:`Pop3StoreBackends` is made once per server; :meth:`Pop3StoreBackends.new` makes
one :class:`Pop3StoreBackend` per connection. The POP3 core asks its driver to check
credentials (``AuthenticationRequested``); the driver calls
:meth:`Pop3StoreBackend.authenticate` (throttled logon, in a worker thread) and answers
``authentication_result(ok, user=...)`` with the login name it returns. The core then
calls ``lock_maildrop`` with that name.

The maildrop is the user's Inbox. The lock is exclusive per user across the
connections of this process ([RFC 1939] 8: "exclusive-access lock"); a second session
gets ``MaildropInUse``. Unique ids are ``<uidvalidity>.<uid>`` from the mailbox's
Internet view (:mod:`mapi.storage.mailview`), the IMAP UID of the message in the Inbox:
the same in every session, never given to another message. Sizes count CRLF line ends
(cached in the view). ``delete`` (called at QUIT, in the UPDATE state) deletes as MAPI
does: into Deleted Items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from internet_mail.pop3.backend import BackendError, MaildropInUse, MessageEntry
from mapi.access.throttle import LogonThrottle
from mapi.model import errors
from mapi.store import ObjectStore

from .logons import Logons
from .mailbox import Entry, MailboxView


class Pop3StoreBackends:
    """The shared factory: ``Pop3StoreBackends(store, throttle=...)``, then ``.new()``
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
        self._locked: set[str] = set()

    def new(self, address: str | None = None) -> Pop3StoreBackend:
        """A backend for one connection from ``address`` (for the throttle)."""
        return Pop3StoreBackend(self, address)

    def _take(self, user_id: str) -> bool:
        with self._lock:
            if user_id in self._locked:
                return False
            self._locked.add(user_id)
            return True

    def _release(self, user_id: str) -> None:
        with self._lock:
            self._locked.discard(user_id)


class Pop3StoreBackend:
    """One connection's ``Backend`` (see the module docstring)."""

    def __init__(self, factory: Pop3StoreBackends, address: str | None = None) -> None:
        self.factory = factory
        self.address = address
        self._view: MailboxView | None = None
        self._locked: str | None = None
        self._inbox = 0
        self._validity = 0
        self._by_id: dict[str, Entry] = {}

    def authenticate(self, user: str, password: str) -> str | None:
        """Check the credentials (throttled); the login name to pass to
        ``authentication_result(ok=True, user=...)``, or None."""
        if self._view is not None:
            return None
        session = self.factory.logons.logon(user, password, self.address)
        if session is None:
            return None
        try:
            self._view = MailboxView(session)
        except errors.MapiError:
            session.logoff()
            return None
        return session.user.username

    def lock_maildrop(self, user: str) -> Sequence[MessageEntry]:
        view = self._view
        if view is None or self.factory.logons.login_name(user) != view.session.user.username:
            raise BackendError("not authenticated as this user")
        if self._locked is None:
            if not self.factory._take(view.user_id):
                raise MaildropInUse("maildrop already locked")
            self._locked = view.user_id
        try:
            with view.db.reading() as txn:
                self._inbox = view.db.folders.role_folder(txn, "inbox")
            self._validity = view.entries(self._inbox)[0].uidvalidity
            entries = view.crlf_sizes(self._inbox)
        except errors.MapiError as exc:
            self.unlock()
            raise BackendError(f"the store failed: {exc}") from None
        self._by_id = {f"{self._validity}.{e.uid}": e for e in entries}
        return [MessageEntry(uid=key, size=e.crlf_size) for key, e in self._by_id.items()]

    def message_bytes(self, uid: str) -> bytes:
        entry = self._by_id.get(uid)
        view = self._view
        if entry is None or view is None:
            raise BackendError("no such message")
        try:
            raw = view.body(self._inbox, entry.uid)
        except errors.MapiError as exc:
            raise BackendError(f"the store failed: {exc}") from None
        if raw is None:
            raise BackendError("the message was removed by another session")
        return raw

    def delete(self, uids: Sequence[str]) -> None:
        view = self._view
        if view is None:
            raise BackendError("no maildrop")
        gone = [self._by_id[u] for u in uids if u in self._by_id]
        present = {e.message_id for e in view.entries(self._inbox)[1]}
        try:
            view.expunge(self._inbox, [e for e in gone if e.message_id in present])
        except errors.MapiError as exc:
            raise BackendError(f"the store failed: {exc}") from None

    def unlock(self) -> None:
        if self._locked is not None:
            self.factory._release(self._locked)
            self._locked = None

    def close(self) -> None:
        """Release the lock and end the store session (the connection is over).
        Idempotent."""
        self.unlock()
        view, self._view = self._view, None
        if view is not None:
            view.close()


__all__ = ["Pop3StoreBackend", "Pop3StoreBackends"]
