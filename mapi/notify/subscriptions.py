"""Notifications: the event model, subscriptions and per-subscriber queues.

Theory of operation
-------------------
[MS-OXCNOTIF] in our own transport: a client *advises* (RopRegisterNotification,
IMsgStore::Advise) on a whole store, a folder or a message with an event mask
(:class:`EventType`, the NotificationType bits of [MS-OXCNOTIF] 2.2.1.4.1.1), or on an
open folder's contents or hierarchy table (fnevTableModified, [MS-OXCNOTIF]
2.2.1.4.1.2); the server later hands it :class:`Notification` values. Instead of
RopNotify riding on a RopPending / async call ([MS-OXCRPC] EcDoAsyncWaitEx) the
service answers a *wait-for-events* long-poll from the queue this module keeps.

:class:`NotificationHub` is pure and thread-safe (one lock, never held while calling
out): it knows subscriptions and queues, nothing of SQLite or trio. The store core
(:mod:`mapi.notify.changes`) decides, after each committed transaction, which subscriptions
an event concerns and whether each subscriber may see it, then calls
:meth:`NotificationHub.deliver`.

Delivery contract
~~~~~~~~~~~~~~~~~
* Each *subscriber* (any hashable key; the service uses the session id) has one
  bounded queue (:attr:`NotificationHub.max_queue`, 10,000 by default) and one
  sequence counter: every notification queued for it gets the next number (1, 2, ...),
  so numbers increase monotonically per subscriber, across all its subscriptions.
* :meth:`~NotificationHub.poll` ``(subscriber, after_seq, max_events)`` returns the
  queued events numbered above ``after_seq`` (oldest first) and *acknowledges* (drops)
  everything numbered ``after_seq`` or below. A client that lost a response simply
  polls again with the same ``after_seq``: nothing is lost until it acknowledges.
* ``resync_required`` is set when events the client has not acknowledged are gone:
  the queue overflowed and dropped events numbered above ``after_seq``, the hub has
  never heard of the subscriber (it was forgotten, e.g. after the reconnect grace
  period, or the server restarted), or ``after_seq`` is from the future (another
  incarnation). The client must then re-read its views (tables, folders, or an
  incremental sync, :mod:`mapi.objects.sync`), re-advise if the hub forgot it, and continue
  polling with the returned ``last_seq``.
* :meth:`~NotificationHub.set_waker` registers ``fn(subscriber)``, called (from
  whichever thread delivered, outside the hub's lock) once per subscriber per
  delivery batch, so a trio service can wake the long-poll with
  ``trio.from_thread.run_sync`` or a ``trio.lowlevel.TrioToken``.
* :meth:`~NotificationHub.set_listener` makes a subscriber a *listener*: its events
  are not queued; ``fn()`` is called instead (same thread and rules as the waker),
  for in-process views that only need "something changed" (IMAP IDLE).

Table notifications carry the row's PR_INSTANCE_KEY, the instance key of the row
before it in the subscription's sort order (None: it is now the first row), and the
row's values for the subscription's columns (``row``; None for deletions and
reloads). ``TABLE_RELOAD`` replaces row-by-row events when one transaction changed
too many rows of a table (:data:`mapi.notify.changes.BULK_ROWS`): the client re-reads the table.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

from mapi.model import errors
from mapi.model.properties import PropValue
from mapi.wire import EventType

fnevNewMail: Final = EventType.NEW_MAIL
fnevObjectCreated: Final = EventType.OBJECT_CREATED
fnevObjectDeleted: Final = EventType.OBJECT_DELETED
fnevObjectModified: Final = EventType.OBJECT_MODIFIED
fnevObjectMoved: Final = EventType.OBJECT_MOVED
fnevObjectCopied: Final = EventType.OBJECT_COPIED
fnevSearchComplete: Final = EventType.SEARCH_COMPLETE
fnevTableModified: Final = EventType.TABLE_MODIFIED
#: Every object event bit (what an advise on a store, folder or message may ask for).
OBJECT_EVENTS: Final = (
    EventType.NEW_MAIL | EventType.OBJECT_CREATED | EventType.OBJECT_DELETED
    | EventType.OBJECT_MODIFIED | EventType.OBJECT_MOVED | EventType.OBJECT_COPIED
    | EventType.SEARCH_COMPLETE
)  # fmt: skip


class TableEvent(enum.IntEnum):
    """TABLE_NOTIFICATION.ulTableEvent values (mapidefs.h).

    On the RopNotify wire ([MS-OXCNOTIF] 2.2.1.4.1.2 TableEventType) row added,
    deleted and modified keep these values (0x0003-0x0005); TABLE_RELOAD corresponds
    to TableChanged (0x0001): "re-read the whole table".
    """

    TABLE_CHANGED = 1
    TABLE_ERROR = 2
    TABLE_ROW_ADDED = 3
    TABLE_ROW_DELETED = 4
    TABLE_ROW_MODIFIED = 5
    TABLE_SORT_DONE = 6
    TABLE_RESTRICT_DONE = 7
    TABLE_SETCOL_DONE = 8
    TABLE_RELOAD = 9


TABLE_KINDS: Final = ("contents", "hierarchy")


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One event as a subscriber receives it.

    ``seq`` and ``subscription`` are set by the hub when the event is queued (0 in
    the templates the core builds); ``store`` is the user id of the mailbox owner.
    """

    kind: EventType
    seq: int = 0
    subscription: int = 0
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A msgpack-friendly map of the fields (None values left out)."""
        out: dict[str, Any] = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if value is None:
                continue
            if name == "row":
                value = [[p.tag, p.value] for p in value]
            elif isinstance(value, enum.Enum):
                value = int(value.value)
            out[name] = value
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectNotification(Notification):
    """fnevObjectCreated / Deleted / Modified / Moved / Copied / SearchComplete.

    The OBJECT_NOTIFICATION fields: ``entry_id`` and ``parent_id`` name the object
    and its folder after the event; moves and copies add where it came from
    (``old_entry_id`` is the source object of a copy; a move keeps the entry id).
    """

    entry_id: bytes
    parent_id: bytes | None = None
    object_type: int = 0
    old_entry_id: bytes | None = None
    old_parent_id: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMailNotification(Notification):
    """fnevNewMail: a message was delivered (NEWMAIL_NOTIFICATION)."""

    entry_id: bytes
    parent_id: bytes
    message_class: str = ""
    message_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TableNotification(Notification):
    """fnevTableModified on a folder's contents or hierarchy table.

    ``folder_id`` is the entry id of the folder whose table changed, ``table_kind``
    "contents" or "hierarchy". ``instance_key`` names the row (PR_INSTANCE_KEY),
    ``prior_instance_key`` the row now before it (None: first row); ``row`` holds
    the subscription's columns (None for TABLE_ROW_DELETED and TABLE_RELOAD).
    """

    table_event: TableEvent
    table_kind: str
    folder_id: bytes
    instance_key: bytes | None = None
    prior_instance_key: bytes | None = None
    row: tuple[PropValue, ...] | None = None


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in fields(cls))
        _FIELDS[cls] = names
    return names


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What a table subscription watches and how its rows are rendered."""

    kind: str
    columns: tuple[int, ...]
    sort: tuple[tuple[int, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class Subscription:
    """One advise: who, on which store (owner user id), what, for which events."""

    sub_id: int
    subscriber: Hashable
    store: str
    viewer: str
    target: bytes | None
    mask: EventType
    table: TableSpec | None = None


@dataclass(slots=True)
class _Queue:
    events: deque[Notification] = field(default_factory=deque)
    last_seq: int = 0
    #: Highest sequence number dropped without acknowledgement (overflow).
    lost_through: int = 0
    subs: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class PollResult:
    """The answer of :meth:`NotificationHub.poll`."""

    events: list[Notification]
    resync_required: bool
    #: The subscriber's newest sequence number (poll from here after a resync).
    last_seq: int


class NotificationHub:
    """Subscriptions and per-subscriber queues (see the module docstring)."""

    def __init__(self, *, max_queue: int = 10_000, max_subscriptions: int = 1024) -> None:
        if max_queue <= 0 or max_subscriptions <= 0:
            raise ValueError("limits must be positive")
        self.max_queue = max_queue
        self.max_subscriptions = max_subscriptions
        self._lock = threading.Lock()
        self._next_id = 1
        self._subs: dict[int, Subscription] = {}
        self._by_store: dict[str, set[int]] = {}
        self._queues: dict[Hashable, _Queue] = {}
        self._waker: Callable[[Hashable], None] | None = None
        self._listeners: dict[Hashable, Callable[[], None]] = {}

    def set_listener(self, subscriber: Hashable, fn: Callable[[], None] | None) -> None:
        """Call ``fn()`` instead of queueing events for ``subscriber`` (None: queue
        again). ``fn`` runs in the delivering thread, outside the lock: it must be cheap
        and must not block. :meth:`forget` drops it."""
        with self._lock:
            if fn is None:
                self._listeners.pop(subscriber, None)
            else:
                self._listeners[subscriber] = fn

    def set_waker(self, fn: Callable[[Hashable], None] | None) -> None:
        """Call ``fn(subscriber)`` whenever events were queued for ``subscriber``."""
        self._waker = fn

    # --- Subscriptions ----------------------------------------------------------------

    def _add(self, sub: Subscription) -> int:
        with self._lock:
            queue = self._queues.setdefault(sub.subscriber, _Queue())
            if len(queue.subs) >= self.max_subscriptions:
                raise errors.NotEnoughResources("too many subscriptions")
            sub = replace(sub, sub_id=self._next_id)
            self._next_id += 1
            self._subs[sub.sub_id] = sub
            self._by_store.setdefault(sub.store, set()).add(sub.sub_id)
            queue.subs.add(sub.sub_id)
            return sub.sub_id

    def advise(
        self, subscriber: Hashable, *, store: str, viewer: str, target: bytes | None,
        mask: int,
    ) -> int:  # fmt: skip
        """Subscribe to object events; return the subscription id.

        Args:
            subscriber: the queue key (the service's session id).
            store: user id of the mailbox owner. viewer: user id of the subscriber.
            target: entry id of a folder or message, or None for the whole store.
            mask: :class:`EventType` bits (TABLE_MODIFIED is for :meth:`advise_table`).

        Raises:
            InvalidParameter: an empty or unknown mask. NotEnoughResources: too many
            subscriptions for this subscriber.
        """
        if not isinstance(mask, int) or mask <= 0 or mask & ~OBJECT_EVENTS:
            raise errors.InvalidParameter(f"bad event mask {mask!r}")
        sub = Subscription(0, subscriber, store, viewer, target, EventType(mask))
        return self._add(sub)

    def advise_table(
        self, subscriber: Hashable, *, store: str, viewer: str, folder: bytes,
        table: TableSpec,
    ) -> int:  # fmt: skip
        """Subscribe to fnevTableModified on a folder's contents or hierarchy table."""
        if table.kind not in TABLE_KINDS:
            raise errors.InvalidParameter(f"bad table kind {table.kind!r}")
        sub = Subscription(0, subscriber, store, viewer, folder, EventType.TABLE_MODIFIED, table)
        return self._add(sub)

    def unadvise(self, subscriber: Hashable, sub_id: int) -> None:
        """Cancel a subscription (queued events stay until polled).

        Raises:
            NotFound: no such subscription of this subscriber.
        """
        with self._lock:
            sub = self._subs.get(sub_id)
            if sub is None or sub.subscriber != subscriber:
                raise errors.NotFound(f"no subscription {sub_id!r}")
            self._drop_sub(sub)

    def _drop_sub(self, sub: Subscription) -> None:
        del self._subs[sub.sub_id]
        ids = self._by_store.get(sub.store)
        if ids is not None:
            ids.discard(sub.sub_id)
            if not ids:
                del self._by_store[sub.store]
        queue = self._queues.get(sub.subscriber)
        if queue is not None:
            queue.subs.discard(sub.sub_id)

    def forget(self, subscriber: Hashable) -> None:
        """Drop every subscription and the queue of ``subscriber`` (session gone)."""
        with self._lock:
            self._listeners.pop(subscriber, None)
            queue = self._queues.pop(subscriber, None)
            if queue is None:
                return
            for sub_id in list(queue.subs):
                sub = self._subs.get(sub_id)
                if sub is not None:
                    self._drop_sub(sub)

    def has_subscriptions(self, store: str) -> bool:
        """True when someone watches the mailbox of ``store`` (cheap; no lock needed)."""
        return store in self._by_store

    def subscriptions(self, store: str) -> list[Subscription]:
        """A snapshot of the subscriptions on a store."""
        with self._lock:
            return [self._subs[i] for i in self._by_store.get(store, ())]

    def subscriptions_of(self, subscriber: Hashable) -> list[Subscription]:
        """A snapshot of one subscriber's subscriptions."""
        with self._lock:
            queue = self._queues.get(subscriber)
            return [] if queue is None else [self._subs[i] for i in sorted(queue.subs)]

    # --- Delivery --------------------------------------------------------------------

    def deliver(self, items: Iterable[tuple[Subscription, Notification]]) -> None:
        """Queue ``(subscription, notification template)`` pairs, then wake.

        Subscriptions cancelled in the meantime are skipped. Each queued copy gets
        the subscriber's next sequence number and the subscription id.
        """
        woken: list[Hashable] = []
        heard: dict[Hashable, Callable[[], None]] = {}
        with self._lock:
            for sub, note in items:
                if sub.sub_id not in self._subs:
                    continue
                listener = self._listeners.get(sub.subscriber)
                if listener is not None:
                    heard[sub.subscriber] = listener
                    continue
                queue = self._queues.get(sub.subscriber)
                if queue is None:
                    continue
                queue.last_seq += 1
                queue.events.append(
                    replace(note, seq=queue.last_seq, subscription=sub.sub_id, store=sub.store)
                )
                while len(queue.events) > self.max_queue:
                    queue.lost_through = queue.events.popleft().seq
                if sub.subscriber not in woken:
                    woken.append(sub.subscriber)
        for listener in heard.values():
            listener()
        waker = self._waker
        if waker is not None:
            for subscriber in woken:
                waker(subscriber)

    def invalidate(self, store: str) -> None:
        """Mark every subscriber of ``store`` as needing a resync (events were lost)."""
        woken: list[Hashable] = []
        heard: dict[Hashable, Callable[[], None]] = {}
        with self._lock:
            for sub_id in self._by_store.get(store, ()):
                listener = self._listeners.get(self._subs[sub_id].subscriber)
                if listener is not None:
                    heard[self._subs[sub_id].subscriber] = listener
                queue = self._queues.get(self._subs[sub_id].subscriber)
                if queue is not None:
                    queue.last_seq += 1
                    queue.lost_through = queue.last_seq
                    woken.append(self._subs[sub_id].subscriber)
        for listener in heard.values():
            listener()
        waker = self._waker
        if waker is not None:
            for subscriber in dict.fromkeys(woken):
                waker(subscriber)

    def pending(self, subscriber: Hashable, after_seq: int) -> bool:
        """True when a poll with ``after_seq`` would return something right now."""
        with self._lock:
            queue = self._queues.get(subscriber)
            if queue is None:
                return True  # the answer is "resync"
            return queue.last_seq > after_seq or after_seq > queue.last_seq

    def poll(self, subscriber: Hashable, after_seq: int, max_events: int = 256) -> PollResult:
        """Acknowledge events up to ``after_seq``; return up to ``max_events`` after it.

        Raises:
            InvalidParameter: negative ``after_seq`` or non-positive ``max_events``.
        """
        if not isinstance(after_seq, int) or after_seq < 0:
            raise errors.InvalidParameter("after_seq must be a non-negative int")
        if not isinstance(max_events, int) or max_events <= 0:
            raise errors.InvalidParameter("max_events must be positive")
        with self._lock:
            queue = self._queues.get(subscriber)
            if queue is None:
                return PollResult([], True, 0)
            events = queue.events
            while events and events[0].seq <= after_seq:
                events.popleft()
            resync = after_seq < queue.lost_through or after_seq > queue.last_seq
            out = [events[i] for i in range(min(max_events, len(events)))]
            return PollResult(out, resync, queue.last_seq)

    def statistics(self) -> dict[str, int]:
        """Counts for monitoring: subscribers, subscriptions, queued events."""
        with self._lock:
            return {
                "subscribers": len(self._queues),
                "subscriptions": len(self._subs),
                "queued": sum(len(q.events) for q in self._queues.values()),
            }


def matches(sub: Subscription, kind: EventType, targets: Sequence[bytes]) -> bool:
    """True when object subscription ``sub`` wants an event of ``kind`` on ``targets``."""
    if sub.table is not None or not sub.mask & kind:
        return False
    return sub.target is None or sub.target in targets


__all__ = [
    "OBJECT_EVENTS",
    "TABLE_KINDS",
    "EventType",
    "NewMailNotification",
    "Notification",
    "NotificationHub",
    "ObjectNotification",
    "PollResult",
    "Subscription",
    "TableEvent",
    "TableNotification",
    "TableSpec",
    "fnevNewMail",
    "fnevObjectCopied",
    "fnevObjectCreated",
    "fnevObjectDeleted",
    "fnevObjectModified",
    "fnevObjectMoved",
    "fnevSearchComplete",
    "fnevTableModified",
    "matches",
]
