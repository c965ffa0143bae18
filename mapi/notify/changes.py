"""From committed changes to notifications ([MS-OXCNOTIF] 3.2.5 / 3.2.4.2).

Theory of operation
-------------------
Store operations describe what they did as :class:`Change` records while their
transaction is open (:func:`record`); nothing is published then. The first record
of a transaction registers a :meth:`~mapi.storage.db.MailboxDB.after_commit` hook,
so the batch is turned into notifications only once the transaction has committed,
and is thrown away on rollback: a subscriber never hears of a change that did not
happen.

After the commit (still under the mailbox lock, in one read snapshot) the batch is
rendered for the subscriptions on this mailbox:

* object events: created, modified, deleted, moved, copied, new mail, for the
  object itself; a subscription on a folder also sees events on the folder's
  messages and subfolders (the folder is the event's parent or old parent), one on
  the store sees everything. A folder whose contents or subfolders changed gets an
  fnevObjectModified too (its counts, PR_CONTENT_UNREAD... changed), and a
  TABLE_ROW_MODIFIED in its parent's hierarchy table.
* table events, for subscriptions on a folder's contents or hierarchy table
  (direct subfolders; the hierarchy order is display name then id unless the
  subscription has a sort): one net event per row per transaction (added then
  modified is "added", added then deleted is nothing). The row's values are rendered
  for the subscription's columns and the prior row is found in the subscription's
  sort order. When one transaction touched more than :data:`BULK_ROWS` rows of one
  table (an emptied folder, a bulk read-flag change), a single TABLE_RELOAD replaces
  them.

Visibility: the mailbox owner sees everything; anyone else only events on objects
they could read: messages of folders where they hold READ_ANY, folders where they
hold FOLDER_VISIBLE (deleted folders: on the parent). Deleting a folder reports that
folder only, not each descendant; copying a folder reports the new top folder only.

Publishing never fails a save: if rendering raises, every subscriber of the mailbox
is told to resynchronise instead (:meth:`NotificationHub.invalidate`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mapi.access import permissions
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.entryid import instance_key
from mapi.notify.subscriptions import (
    EventType,
    NewMailNotification,
    Notification,
    ObjectNotification,
    Subscription,
    TableEvent,
    TableNotification,
    matches,
)
from mapi.objects.hierarchy import folder_props
from mapi.storage.api import FolderRow, Txn
from mapi.tables.contents import ContentsTable, message_row
from mapi.tables.table import build_row, sort_rows

if TYPE_CHECKING:
    from mapi.objects.context import StoreContext

#: More row changes than this to one table in one transaction become TABLE_RELOAD.
BULK_ROWS: Final = 64

_ADDED, _DELETED, _MODIFIED = (
    TableEvent.TABLE_ROW_ADDED,
    TableEvent.TABLE_ROW_DELETED,
    TableEvent.TABLE_ROW_MODIFIED,
)


class Op(enum.Enum):
    """What happened to an object."""

    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"
    MOVED = "moved"
    COPIED = "copied"


_KIND: Final = {
    Op.CREATED: EventType.OBJECT_CREATED,
    Op.MODIFIED: EventType.OBJECT_MODIFIED,
    Op.DELETED: EventType.OBJECT_DELETED,
    Op.MOVED: EventType.OBJECT_MOVED,
    Op.COPIED: EventType.OBJECT_COPIED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One committed change of a folder or message (database ids).

    ``parent_id`` is the folder the object is in after the change (for a deletion:
    the folder it was in); moves and copies add ``old_parent_id``, copies the source
    object as ``old_id``. ``new_mail`` marks a delivery (adds fnevNewMail).
    """

    op: Op
    folder: bool
    object_id: int
    parent_id: int | None
    old_id: int | None = None
    old_parent_id: int | None = None
    new_mail: bool = False
    message_class: str = ""
    message_flags: int = 0


def record(ctx: StoreContext, *changes: Change) -> None:
    """Queue changes for publication when the current transaction commits."""
    hub = ctx.hub
    if hub is None or not hub.has_subscriptions(ctx.owner.user_id):
        return
    db = ctx.db
    batch: list[Change] | None = db.txn_local.get("events")
    if batch is None:
        batch = []
        db.txn_local["events"] = batch
        pending = batch
        db.after_commit(lambda: publish(ctx, pending))
    batch.extend(changes)


def publish(ctx: StoreContext, changes: Sequence[Change]) -> None:
    """Render committed ``changes`` for the mailbox's subscriptions and deliver them."""
    hub = ctx.hub
    if hub is None or not changes:
        return
    owner = ctx.owner.user_id
    subs = hub.subscriptions(owner)
    if not subs:
        return
    try:
        with ctx.db.reading() as txn:
            items = _Renderer(ctx, txn, subs).render(changes)
    except Exception:  # never fail a committed save: tell the subscribers to resync
        hub.invalidate(owner)
        return
    hub.deliver(items)


def _merge(old: TableEvent | None, new: TableEvent) -> TableEvent | None:
    """Net effect of two row events on one row in one transaction."""
    if old is None:
        return new
    if old == _ADDED:
        return None if new == _DELETED else _ADDED
    if old == _DELETED:
        return _MODIFIED if new == _ADDED else _DELETED
    return _DELETED if new == _DELETED else _MODIFIED


class _Renderer:
    def __init__(self, ctx: StoreContext, txn: Txn, subs: list[Subscription]) -> None:
        self.ctx = ctx
        self.txn = txn
        self.owner = ctx.owner.user_id
        self.object_subs = [s for s in subs if s.table is None]
        self.table_subs: dict[tuple[str, bytes], list[Subscription]] = {}
        for sub in subs:
            if sub.table is not None and sub.target is not None:
                self.table_subs.setdefault((sub.table.kind, sub.target), []).append(sub)
        self.out: list[tuple[Subscription, Notification]] = []
        self._rights: dict[tuple[str, int], int] = {}
        self._orders: dict[tuple[int, object], list[int]] = {}
        self._tables: dict[tuple[int, object], ContentsTable] = {}

    # --- Helpers -----------------------------------------------------------------------

    def visible(self, viewer: str, folder_id: int | None, right: int) -> bool:
        if viewer == self.owner:
            return True
        if folder_id is None:
            return False
        key = (viewer, folder_id)
        rights = self._rights.get(key)
        if rights is None:
            rights = self.ctx.db.acl.rights(self.txn, folder_id, viewer)
            self._rights[key] = rights
        return rights & right == right

    def feid(self, folder_id: int | None) -> bytes | None:
        return None if folder_id is None else self.ctx.folder_eid(folder_id)

    def parent_of(self, folder_id: int) -> tuple[bool, int | None]:
        return self.ctx.db.changes.parent_of(self.txn, folder_id)

    def emit(
        self, kind: EventType, note: Notification, targets: Sequence[bytes | None],
        checks: Sequence[tuple[int | None, int]],
    ) -> None:  # fmt: skip
        wanted = [t for t in targets if t is not None]
        for sub in self.object_subs:
            if matches(sub, kind, wanted) and any(
                self.visible(sub.viewer, f, r) for f, r in checks
            ):
                self.out.append((sub, note))

    # --- Object events -------------------------------------------------------------------

    def object_event(self, change: Change) -> None:
        ctx = self.ctx
        kind = _KIND[change.op]
        if change.folder:
            eid = ctx.folder_eid(change.object_id)
            otype = pt.MAPI_FOLDER
            own = change.parent_id if change.op == Op.DELETED else change.object_id
            checks: list[tuple[int | None, int]] = [(own, permissions.FOLDER_VISIBLE)]
        else:
            eid = ctx.message_eid(change.object_id)
            otype = pt.MAPI_MESSAGE
            checks = [(change.parent_id, permissions.READ_ANY)]
            if change.old_parent_id is not None:
                checks.append((change.old_parent_id, permissions.READ_ANY))
        old_eid = None
        if change.op == Op.COPIED and change.old_id is not None:
            old_eid = (
                ctx.folder_eid(change.old_id) if change.folder else ctx.message_eid(change.old_id)
            )
        elif change.op == Op.MOVED:
            old_eid = eid
        parent = self.feid(change.parent_id)
        old_parent = self.feid(change.old_parent_id)
        targets = (eid, parent, old_parent, old_eid)
        if change.new_mail and parent is not None:
            mail = NewMailNotification(
                kind=EventType.NEW_MAIL, entry_id=eid, parent_id=parent,
                message_class=change.message_class, message_flags=change.message_flags,
            )  # fmt: skip
            self.emit(EventType.NEW_MAIL, mail, targets, checks)
        note = ObjectNotification(
            kind=kind, entry_id=eid, parent_id=parent, object_type=otype,
            old_entry_id=old_eid, old_parent_id=old_parent,
        )  # fmt: skip
        self.emit(kind, note, targets, checks)

    def folder_modified(self, folder_id: int, parent_id: int | None) -> None:
        eid = self.ctx.folder_eid(folder_id)
        parent = self.feid(parent_id)
        note = ObjectNotification(
            kind=EventType.OBJECT_MODIFIED, entry_id=eid, parent_id=parent,
            object_type=pt.MAPI_FOLDER,
        )  # fmt: skip
        self.emit(
            EventType.OBJECT_MODIFIED, note, (eid, parent),
            [(folder_id, permissions.FOLDER_VISIBLE)],
        )  # fmt: skip

    # --- The batch ------------------------------------------------------------------------

    def render(self, changes: Sequence[Change]) -> list[tuple[Subscription, Notification]]:
        rows: dict[tuple[str, int], dict[int, TableEvent | None]] = {}
        touched: dict[int, None] = {}
        explicit: set[int] = set()
        gone: set[int] = set()

        def row(kind: str, folder_id: int | None, key: int, event: TableEvent) -> None:
            if folder_id is None:
                return
            events = rows.setdefault((kind, folder_id), {})
            events[key] = _merge(events.get(key), event)

        for change in changes:
            self.object_event(change)
            kind = "hierarchy" if change.folder else "contents"
            oid, parent, old_parent = change.object_id, change.parent_id, change.old_parent_id
            if change.op == Op.MOVED:
                row(kind, old_parent, oid, _DELETED)
                row(kind, parent, oid, _ADDED)
            elif change.op == Op.DELETED:
                row(kind, parent, oid, _DELETED)
            else:
                event = _MODIFIED if change.op == Op.MODIFIED else _ADDED
                row(kind, parent, oid, event)
            for fid in (parent, old_parent):
                if fid is not None:
                    touched[fid] = None
            if change.folder:
                explicit.add(oid)
                if change.op == Op.DELETED:
                    gone.add(oid)
        for fid in touched:
            if fid in explicit or fid in gone:
                continue
            exists, grand = self.parent_of(fid)
            if not exists:
                continue
            self.folder_modified(fid, grand)
            row("hierarchy", grand, fid, _MODIFIED)
        for (kind, folder_id), events in rows.items():
            subs = self.table_subs.get((kind, self.ctx.folder_eid(folder_id)))
            if subs:
                self.table_events(kind, folder_id, events, subs)
        return self.out

    # --- Table events ---------------------------------------------------------------------

    def table_events(
        self, kind: str, folder_id: int, events: dict[int, TableEvent | None],
        subs: list[Subscription],
    ) -> None:  # fmt: skip
        net = [(key, ev) for key, ev in events.items() if ev is not None]
        if not net:
            return
        feid = self.ctx.folder_eid(folder_id)
        need = permissions.READ_ANY if kind == "contents" else permissions.FOLDER_VISIBLE
        subs = [s for s in subs if self.visible(s.viewer, folder_id, need)]
        if len(net) > BULK_ROWS:
            reload = TableNotification(
                kind=EventType.TABLE_MODIFIED, table_event=TableEvent.TABLE_RELOAD,
                table_kind=kind, folder_id=feid,
            )  # fmt: skip
            self.out.extend((sub, reload) for sub in subs)
            return
        for key, event in net:
            data = self.load_row(kind, folder_id, key) if event != _DELETED else None
            if data is None:
                event = _DELETED
            for sub in subs:
                assert sub.table is not None
                hidden = data is not None and kind == "hierarchy"
                if hidden and not self.visible(sub.viewer, key, permissions.FOLDER_VISIBLE):
                    continue
                note = TableNotification(
                    kind=EventType.TABLE_MODIFIED, table_event=event, table_kind=kind,
                    folder_id=feid, instance_key=instance_key(key),
                    prior_instance_key=(
                        None if data is None else self.prior(kind, folder_id, key, sub.table.sort)
                    ),
                    row=None if data is None else tuple(build_row(data, sub.table.columns)),
                )  # fmt: skip
                self.out.append((sub, note))

    def load_row(self, kind: str, folder_id: int, key: int) -> rs.DictRow | None:
        """The current row of ``key`` in the table, or None if it is not there."""
        if kind == "contents":
            found = self.ctx.db.contents.record(self.txn, key, folder_id)
            return None if found is None else message_row(self.ctx, self.txn, found)
        row = self.ctx.db.folders.child(self.txn, folder_id, key)
        return None if row is None else self.folder_row(row)

    def folder_row(self, row: FolderRow) -> rs.DictRow:
        """A hierarchy table row of a direct subfolder."""
        props = folder_props(self.ctx, self.txn, row)
        props[pt.PR_DEPTH] = 1
        return rs.DictRow(props)

    def prior(
        self, kind: str, folder_id: int, key: int, sort: tuple[tuple[int, bool], ...]
    ) -> bytes | None:
        """Instance key of the row before ``key`` in ``sort`` order (None: first)."""
        if kind == "contents":
            table = self._tables.get((folder_id, sort))
            if table is None:
                table = ContentsTable(self.ctx, folder_id, checked=False)  # see visible()
                if sort:
                    table.sort_table(sort)
                self._tables[(folder_id, sort)] = table
            pos = table._position_of(key)
            keys = table._keys(pos - 1, 1) if pos else []
            return instance_key(keys[0]) if keys else None
        order = self._orders.get((folder_id, sort))
        if order is None:
            if sort:
                children = self.ctx.db.folders.children(self.txn, folder_id)  # by name, id
                loaded = [(row.id, self.folder_row(row)) for row in children]
                order = [i for i, _ in sort_rows(loaded, sort)]
            else:
                order = self.ctx.db.changes.subfolder_order(self.txn, folder_id)
            self._orders[(folder_id, sort)] = order
        pos = order.index(key) if key in order else 0
        return instance_key(order[pos - 1]) if pos else None


__all__ = ["BULK_ROWS", "Change", "Op", "publish", "record"]
