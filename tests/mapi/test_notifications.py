"""Notifications: advise/unadvise, masks, commit-only delivery, visibility, table events,
queues, sequence numbers, overflow and the waker."""

from __future__ import annotations

import threading
from collections.abc import Hashable

import pytest

from mapi.access import permissions
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.notify import changes as events
from mapi.notify.subscriptions import (
    EventType,
    NewMailNotification,
    Notification,
    NotificationHub,
    ObjectNotification,
    Subscription,
    TableEvent,
    TableNotification,
)
from mapi.store import MsgStore, ObjectStore

SUB = b"session-1"
ALL = int(
    EventType.OBJECT_CREATED | EventType.OBJECT_MODIFIED | EventType.OBJECT_DELETED
    | EventType.OBJECT_MOVED | EventType.OBJECT_COPIED | EventType.NEW_MAIL
)  # fmt: skip


def _poll(store: ObjectStore, subscriber: Hashable = SUB, after: int = 0) -> list[Notification]:
    result = store.notifications.poll(subscriber, after, 1000)
    assert not result.resync_required
    return result.events


def _save(folder_store: MsgStore, role: str = "inbox", subject: str = "Hi") -> bytes:
    folder = folder_store.open_folder(folder_store.special_folder_id(role))
    msg = folder.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, subject)])
    msg.save_changes()
    assert msg.entry_id is not None
    return msg.entry_id


def _objects(notes: list[Notification], kind: EventType) -> list[ObjectNotification]:
    return [n for n in notes if isinstance(n, ObjectNotification) and n.kind == kind]


# --- Object events ------------------------------------------------------------------


def test_store_advise_sees_created_with_entry_ids(store: ObjectStore, alice: MsgStore) -> None:
    sub = alice.advise(SUB, EventType.OBJECT_CREATED)
    eid = _save(alice)
    notes = _poll(store)
    created = _objects(notes, EventType.OBJECT_CREATED)
    assert len(created) == 1 and len(notes) == 1  # the mask filters the folder-modified
    note = created[0]
    assert note.entry_id == eid
    assert note.parent_id == alice.get_receive_folder()
    assert note.object_type == pt.MAPI_MESSAGE
    assert note.subscription == sub and note.seq == 1
    assert note.store == alice.context.owner.user_id


def test_masks_and_unadvise(store: ObjectStore, alice: MsgStore) -> None:
    sub = alice.advise(SUB, EventType.OBJECT_MODIFIED)
    eid = _save(alice)
    # The Inbox's counts changed: one folder-modified, no message event.
    notes = _poll(store)
    assert [n.entry_id for n in _objects(notes, EventType.OBJECT_MODIFIED)] == [
        alice.get_receive_folder()
    ]
    msg = alice.open_message(eid, writable=True)
    msg.set_props([(pt.PR_SUBJECT_W, "changed")])
    msg.save_changes()
    notes = store.notifications.poll(SUB, notes[-1].seq).events
    assert eid in [n.entry_id for n in _objects(notes, EventType.OBJECT_MODIFIED)]
    alice.unadvise(SUB, sub)
    last = notes[-1].seq
    _save(alice)
    assert store.notifications.poll(SUB, last).events == []
    with pytest.raises(errors.NotFound):
        alice.unadvise(SUB, sub)
    with pytest.raises(errors.InvalidParameter):
        alice.advise(SUB, 0)
    with pytest.raises(errors.InvalidParameter):
        alice.advise(SUB, EventType.TABLE_MODIFIED)


def test_folder_and_message_targets(store: ObjectStore, alice: MsgStore) -> None:
    drafts = alice.special_folder_id("drafts")
    alice.advise(SUB, ALL, drafts)
    _save(alice, "inbox")
    assert _poll(store) == []
    eid = _save(alice, "drafts")
    notes = _poll(store)
    assert [n.entry_id for n in _objects(notes, EventType.OBJECT_CREATED)] == [eid]
    # A subscription on the message itself.
    alice.advise(b"other", EventType.OBJECT_MODIFIED | EventType.OBJECT_MOVED, eid)
    folder = alice.open_folder(drafts)
    folder.delete_messages([eid])  # soft: a move into Deleted Items
    moved = _objects(_poll(store, b"other"), EventType.OBJECT_MOVED)
    assert len(moved) == 1
    assert moved[0].old_parent_id == drafts
    assert moved[0].parent_id == alice.special_folder_id("deleted")
    assert moved[0].entry_id == moved[0].old_entry_id == eid
    with pytest.raises(errors.InvalidEntryId):
        alice.advise(SUB, ALL, b"nonsense")


def test_folder_events_copy_delete(store: ObjectStore, alice: MsgStore) -> None:
    alice.advise(SUB, ALL)
    root = alice.open_folder(alice.special_folder_id("ipm_subtree"))
    projects = root.create_folder("Projects")
    notes = _poll(store)
    created = _objects(notes, EventType.OBJECT_CREATED)
    assert [(n.entry_id, n.object_type) for n in created] == [(projects.entry_id, pt.MAPI_FOLDER)]
    after = notes[-1].seq
    inbox = alice.open_folder(alice.get_receive_folder())
    copy = root.copy_folder(projects.entry_id, inbox)
    notes = store.notifications.poll(SUB, after).events
    copied = _objects(notes, EventType.OBJECT_COPIED)
    assert [(n.entry_id, n.old_entry_id, n.parent_id) for n in copied] == [
        (copy.entry_id, projects.entry_id, inbox.entry_id)
    ]
    after = notes[-1].seq
    inbox.delete_folder(copy.entry_id, 0x10)
    deleted = _objects(store.notifications.poll(SUB, after).events, EventType.OBJECT_DELETED)
    assert [n.entry_id for n in deleted] == [copy.entry_id]


def test_events_only_after_commit(store: ObjectStore, alice: MsgStore) -> None:
    alice.advise(SUB, ALL)
    db = alice.context.db
    root = alice.open_folder(alice.special_folder_id("ipm_subtree"))
    with pytest.raises(RuntimeError), db.transaction():
        root.create_folder("Doomed")
        assert _poll(store) == []
        raise RuntimeError("roll back")
    assert _poll(store) == []
    with db.transaction():
        root.create_folder("Kept")
        root.create_folder("Kept too")
        assert _poll(store) == []  # nested: nothing until the outer commit
    created = _objects(_poll(store), EventType.OBJECT_CREATED)
    assert len(created) == 2
    # A failed save publishes nothing.
    eid = _save(alice)
    seen = _poll(store)[-1].seq
    first = alice.open_message(eid, writable=True)
    second = alice.open_message(eid, writable=True)
    second.set_props([(pt.PR_SUBJECT_W, "second")])
    second.save_changes()
    seen = store.notifications.poll(SUB, seen).events[-1].seq
    first.set_props([(pt.PR_SUBJECT_W, "first")])
    with pytest.raises(errors.ObjectChanged):
        first.save_changes()
    assert store.notifications.poll(SUB, seen).events == []


def test_visibility_follows_folder_rights(store: ObjectStore, alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    inbox.set_permission(store.directory.get_user("bob").user_id, permissions.ROLES["reviewer"])
    bob_view = store.logon_with_password("bob", "bob-pw").open_store("alice")
    bob_view.advise(b"bob", EventType.OBJECT_CREATED)
    in_inbox = _save(alice, "inbox")
    _save(alice, "drafts")
    notes = _poll(store, b"bob")
    assert [n.entry_id for n in _objects(notes, EventType.OBJECT_CREATED)] == [in_inbox]
    with pytest.raises(errors.NoAccess):
        bob_view.advise(b"bob", ALL, alice.special_folder_id("drafts"))
    with pytest.raises(errors.NoAccess):
        bob_view.advise_table(b"bob", alice.special_folder_id("drafts"))


# --- Table events ---------------------------------------------------------------------------


def _table(notes: list[Notification]) -> list[TableNotification]:
    return [n for n in notes if isinstance(n, TableNotification)]


def test_contents_table_rows_on_save_modify_delete(store: ObjectStore, alice: MsgStore) -> None:
    inbox_id = alice.get_receive_folder()
    cols = [pt.PR_INSTANCE_KEY, pt.PR_SUBJECT_W]
    alice.advise_table(SUB, inbox_id, "contents", cols, sort=[(pt.PR_SUBJECT_W, False)])
    b_eid = _save(alice, subject="b")
    a_eid = _save(alice, subject="a")
    c_eid = _save(alice, subject="c")
    notes = _table(_poll(store))
    assert [n.table_event for n in notes] == [TableEvent.TABLE_ROW_ADDED] * 3
    keys = {eid: alice.open_message(eid).get_props([pt.PR_INSTANCE_KEY]).values[0].value
            for eid in (a_eid, b_eid, c_eid)}  # fmt: skip
    assert notes[0].prior_instance_key is None  # "b" alone
    assert notes[1].prior_instance_key is None  # "a" sorts first
    assert notes[2].prior_instance_key == keys[b_eid]  # "c" after "b"
    assert notes[2].row is not None
    assert [(p.tag, p.value) for p in notes[2].row] == [
        (pt.PR_INSTANCE_KEY, keys[c_eid]),
        (pt.PR_SUBJECT_W, "c"),
    ]
    assert notes[0].folder_id == inbox_id and notes[0].table_kind == "contents"
    seen = _poll(store)[-1].seq
    msg = alice.open_message(a_eid, writable=True)
    msg.set_props([(pt.PR_SUBJECT_W, "z")])
    msg.save_changes()
    notes = _table(store.notifications.poll(SUB, seen).events)
    assert [(n.table_event, n.instance_key) for n in notes] == [
        (TableEvent.TABLE_ROW_MODIFIED, keys[a_eid])
    ]
    assert notes[0].prior_instance_key == keys[c_eid]  # "z" now sorts last
    seen = notes[-1].seq
    alice.open_folder(inbox_id).delete_messages([b_eid])
    notes = _table(store.notifications.poll(SUB, seen).events)
    assert [(n.table_event, n.instance_key, n.row) for n in notes] == [
        (TableEvent.TABLE_ROW_DELETED, keys[b_eid], None)
    ]


def test_move_gives_delete_and_add_in_two_tables(store: ObjectStore, alice: MsgStore) -> None:
    inbox_id, drafts_id = alice.get_receive_folder(), alice.special_folder_id("drafts")
    alice.advise_table(SUB, inbox_id)
    alice.advise_table(SUB, drafts_id)
    eid = _save(alice)
    seen = _poll(store)[-1].seq
    alice.open_folder(inbox_id).copy_messages([eid], alice.open_folder(drafts_id), move=True)
    notes = _table(store.notifications.poll(SUB, seen).events)
    assert [(n.folder_id, n.table_event) for n in notes] == [
        (inbox_id, TableEvent.TABLE_ROW_DELETED),
        (drafts_id, TableEvent.TABLE_ROW_ADDED),
    ]


def test_hierarchy_table_rows_and_folder_counts(store: ObjectStore, alice: MsgStore) -> None:
    top = alice.special_folder_id("ipm_subtree")
    alice.advise_table(SUB, top, "hierarchy", [pt.PR_DISPLAY_NAME_W, pt.PR_CONTENT_UNREAD])
    root = alice.open_folder(top)
    new = root.create_folder("Aardvark")
    notes = _table(_poll(store))
    assert [n.table_event for n in notes] == [TableEvent.TABLE_ROW_ADDED]
    assert notes[0].instance_key == new.get_props([pt.PR_INSTANCE_KEY]).values[0].value
    assert notes[0].prior_instance_key is None  # "Aardvark" sorts before "Calendar"
    seen = notes[-1].seq
    # New unread mail in the Inbox: the Inbox row of the hierarchy table changes.
    eid = _save(alice)
    alice.open_folder(alice.get_receive_folder()).set_read_flags([eid], clear=True)
    notes = _table(store.notifications.poll(SUB, seen).events)
    assert {n.table_event for n in notes} == {TableEvent.TABLE_ROW_MODIFIED}
    assert notes[-1].row is not None
    assert [p.value for p in notes[-1].row] == ["Inbox", 1]
    seen = notes[-1].seq
    root.delete_folder(new.entry_id)  # soft: moved into Deleted Items
    notes = _table(store.notifications.poll(SUB, seen).events)
    assert (TableEvent.TABLE_ROW_DELETED, new.get_props([pt.PR_INSTANCE_KEY]).values[0].value) in [
        (n.table_event, n.instance_key) for n in notes
    ]


def test_bulk_change_becomes_table_reload(store: ObjectStore, alice: MsgStore) -> None:
    inbox_id = alice.get_receive_folder()
    for i in range(events.BULK_ROWS + 1):
        _save(alice, subject=f"m{i}")
    alice.advise_table(SUB, inbox_id)
    alice.open_folder(inbox_id).set_read_flags(None, clear=True)
    notes = _table(_poll(store))
    assert [n.table_event for n in notes] == [TableEvent.TABLE_RELOAD]
    alice.open_folder(inbox_id).empty_folder()
    notes = _table(store.notifications.poll(SUB, notes[-1].seq).events)
    assert [n.table_event for n in notes] == [TableEvent.TABLE_RELOAD]


def test_rendering_failure_asks_for_resync(
    store: ObjectStore, alice: MsgStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice.advise(SUB, ALL)

    def boom(self: object, changes: object) -> list[tuple[Subscription, Notification]]:
        raise RuntimeError("bug")

    monkeypatch.setattr(events._Renderer, "render", boom)
    eid = _save(alice)  # the save itself succeeds
    assert alice.open_message(eid) is not None
    result = store.notifications.poll(SUB, 0)
    assert result.resync_required
    assert not store.notifications.poll(SUB, result.last_seq).resync_required


# --- The hub ----------------------------------------------------------------------------------


def _note(n: int = 0) -> ObjectNotification:
    return ObjectNotification(kind=EventType.OBJECT_CREATED, entry_id=n.to_bytes(4, "big"))


def _sub(hub: NotificationHub, key: Hashable = "s") -> Subscription:
    hub.advise(key, store="u", viewer="u", target=None, mask=EventType.OBJECT_CREATED)
    return hub.subscriptions_of(key)[-1]


def test_poll_acknowledges_and_retries() -> None:
    hub = NotificationHub()
    sub = _sub(hub)
    hub.deliver([(sub, _note(i)) for i in range(5)])
    first = hub.poll("s", 0, 2)
    assert [n.seq for n in first.events] == [1, 2] and first.last_seq == 5
    again = hub.poll("s", 0, 2)  # a lost answer: same events again
    assert [n.seq for n in again.events] == [1, 2]
    rest = hub.poll("s", 2, 10)
    assert [n.seq for n in rest.events] == [3, 4, 5]
    assert hub.poll("s", 5).events == []
    assert not hub.pending("s", 5)
    hub.deliver([(sub, _note())])
    assert hub.pending("s", 5)
    with pytest.raises(errors.InvalidParameter):
        hub.poll("s", -1)
    with pytest.raises(errors.InvalidParameter):
        hub.poll("s", 0, 0)


def test_overflow_requires_resync() -> None:
    hub = NotificationHub(max_queue=5)
    sub = _sub(hub)
    hub.deliver([(sub, _note(i)) for i in range(8)])
    result = hub.poll("s", 0, 100)
    assert result.resync_required
    assert [n.seq for n in result.events] == [4, 5, 6, 7, 8]
    assert not hub.poll("s", 3).resync_required  # nothing after 3 was lost
    assert not hub.poll("s", 8).resync_required
    assert hub.poll("s", 99).resync_required  # from the future: another incarnation


def test_forget_and_unknown_subscriber() -> None:
    hub = NotificationHub()
    sub = _sub(hub)
    hub.deliver([(sub, _note())])
    hub.forget("s")
    assert hub.poll("s", 1).resync_required
    assert hub.subscriptions("u") == []
    hub.deliver([(sub, _note())])  # a stale subscription is skipped
    assert hub.statistics() == {"subscribers": 0, "subscriptions": 0, "queued": 0}


def test_subscription_limit() -> None:
    hub = NotificationHub(max_subscriptions=2)
    _sub(hub)
    _sub(hub)
    with pytest.raises(errors.NotEnoughResources):
        _sub(hub)
    with pytest.raises(errors.NotFound):
        hub.unadvise("other", hub.subscriptions_of("s")[0].sub_id)


def test_to_dict_is_plain() -> None:
    note = NewMailNotification(
        kind=EventType.NEW_MAIL, entry_id=b"e", parent_id=b"p", message_class="IPM.Note"
    )
    assert note.to_dict() == {
        "kind": 2, "seq": 0, "subscription": 0, "store": "", "entry_id": b"e",
        "parent_id": b"p", "message_class": "IPM.Note", "message_flags": 0,
    }  # fmt: skip


def test_waker_and_threads(store: ObjectStore) -> None:
    woken: list[Hashable] = []
    lock = threading.Lock()

    def wake(subscriber: Hashable) -> None:
        with lock:
            woken.append(subscriber)

    store.notifications.set_waker(wake)
    views = {
        name: store.logon_with_password(name, f"{name}-pw").open_store()
        for name in ("alice", "bob")
    }
    for name, view in views.items():
        view.advise(name, EventType.OBJECT_CREATED)
    per_thread = 20

    def work(view: MsgStore) -> None:
        for i in range(per_thread):
            _save(view, subject=str(i))

    threads = [threading.Thread(target=work, args=(v,)) for v in views.values() for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in views:
        notes = _poll(store, name)
        assert [n.seq for n in notes] == list(range(1, 2 * per_thread + 1))
        assert all(n.store == views[name].context.owner.user_id for n in notes)
    assert set(woken) == {"alice", "bob"}
