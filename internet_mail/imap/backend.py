"""What the session needs from a mail store: the ``Backend`` protocol and its data.

The session core calls these synchronously; the trio driver runs the core in a worker
thread (the store's calls block, DESIGN.md "Storage"), so no method needs to be async.
Every method returns plain data; a refusal raises ``BackendError``, answered with a
tagged ``NO`` (with its response code, such as ``NONEXISTENT``, ``ALREADYEXISTS``,
``TRYCREATE``, ``OVERQUOTA``).

Mailbox names are Unicode (``str``) with ``/`` as the hierarchy delimiter; the session
does the wire encoding. A backend that shows other users' mailboxes names them below
an optional attribute ``other_users_prefix`` (such as ``"Other Users/"``), which
NAMESPACE reports as the other users' namespace ([RFC 9051] 7.3.1); without it, none.
Messages are named by UID within their mailbox; the session
keeps the sequence numbers.

Optional, for speed on big mailboxes (the session looks them up with ``getattr`` and
works without them):

* ``header(name, uid) -> bytes``: the message's header section only, so ENVELOPE and
  header searches need not read whole messages;
* ``fetch_cache``: a :class:`~internet_mail.imap.session.FetchCache` shared by the
  user's connections, keyed by mailbox, UIDVALIDITY, UID and MODSEQ (a changed
  message misses).

And a contract that lets the session skip work: ``messages()`` may return the *same*
list object again while the mailbox is unchanged, and never changes a list it
returned (the session compares by identity before comparing contents).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Backend", "BackendError", "MailboxInfo", "MailboxState", "MessageInfo"]


class BackendError(Exception):
    """The store refuses: ``<tag> NO [code] text``."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxInfo:
    """One mailbox for LIST: ``attributes`` such as ``\\HasChildren``, ``\\Noselect``;
    ``special_use`` such as ``\\Sent``, ``\\Trash`` ([RFC 6154])."""

    name: str
    attributes: tuple[str, ...] = ()
    special_use: tuple[str, ...] = ()
    subscribed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxState:
    """The numbers SELECT and STATUS report."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int = 0
    unseen: int = 0
    deleted: int = 0
    size: int = 0
    flags: tuple[str, ...] = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
    read_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageInfo:
    """One message's metadata (what FETCH FLAGS/UID/RFC822.SIZE/INTERNALDATE/MODSEQ
    and most SEARCH keys need without reading the body)."""

    uid: int
    flags: frozenset[str] = field(default_factory=frozenset)
    size: int = 0
    internal_date: _dt.datetime = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    modseq: int = 1


class Backend(Protocol):
    """One authenticated user's view of the store (``authenticate`` picks the user)."""

    def authenticate(self, user: str, password: str) -> bool:
        """True when the credentials are good; the backend then acts as that user."""
        ...

    def list_mailboxes(self) -> list[MailboxInfo]: ...

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None: ...

    def delete(self, name: str) -> None: ...

    def rename(self, old: str, new: str) -> None: ...

    def subscribe(self, name: str, subscribed: bool) -> None: ...

    def state(self, name: str) -> MailboxState:
        """STATUS/SELECT numbers; ``BackendError("...", "NONEXISTENT")`` if missing."""
        ...

    def messages(self, name: str) -> list[MessageInfo]:
        """Every message of the mailbox, ascending UID."""
        ...

    def body(self, name: str, uid: int) -> bytes:
        """The message as stored (RFC 5322 bytes)."""
        ...

    def store(
        self,
        name: str,
        uids: list[int],
        mode: str,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> list[int]:
        """Add (``+``), remove (``-``) or replace (``""``) flags; returns the UIDs not
        changed because their modseq is above ``unchanged_since`` ([RFC 7162])."""
        ...

    def append(
        self, name: str, message: bytes, flags: frozenset[str], date: _dt.datetime | None
    ) -> tuple[int, int]:
        """Store a message; returns (uidvalidity, uid) for APPENDUID."""
        ...

    def copy(self, name: str, uids: list[int], target: str, *, move: bool) -> tuple[int, list[int]]:
        """Copy (or move) messages; returns the target's uidvalidity and the new UIDs,
        in the order of ``uids``."""
        ...

    def expunge(self, name: str, uids: list[int] | None) -> list[int]:
        """Remove ``\\Deleted`` messages (of ``uids`` when given); returns their UIDs."""
        ...

    def vanished(self, name: str, since_modseq: int) -> list[int]:
        """The UIDs, ascending, of the messages that left the mailbox (expunged, moved
        out, deleted by another protocol) when its modseq went above ``since_modseq``
        ([RFC 7162] 3.2.5, 3.2.6: ``VANISHED (EARLIER)``). A message leaving raises the
        mailbox's HIGHESTMODSEQ to the modseq it is recorded with, so a client that saw
        a HIGHESTMODSEQ after the removal is not told again."""
        ...

    def quota(self, root: str) -> list[tuple[str, int, int]] | None:
        """(resource, usage, limit) for a quota root ([RFC 9208]); None: no quota."""
        ...

    def watch(self, mailbox: str, notify: Callable[[], None]) -> Callable[[], None]:
        """Subscribe to changes of ``mailbox`` (IDLE): ``notify()`` is called, from any
        thread, whenever the mailbox may have changed (a message added, removed, its
        flags changed, through this connection, another one or another protocol). It
        must return at once (the driver only wakes its task with it), and may be called
        for changes the session then finds were none. Returns the function that ends
        the subscription (idempotent). A missing mailbox raises ``BackendError``."""
        ...

    def close(self) -> None:
        """The connection is over (the driver calls it once, whatever ended it): end
        the store session. Idempotent."""
        ...
