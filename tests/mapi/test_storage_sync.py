"""The sync and changes storage objects (``MailboxDB.sync``, ``MailboxDB.changes``) on
their own: change numbers, pages of what changed since a CN, and what the notification
renderer reads after a commit (a folder's parent, its subfolders' order, a sorted
hierarchy table's prior rows)."""

from __future__ import annotations

from mapi.model import proptags as pt
from mapi.notify.subscriptions import TableEvent, TableNotification
from mapi.objects.folders import DEL_FOLDERS, DELETE_HARD_DELETE, Folder
from mapi.store import MsgStore, ObjectStore


def _save(folder: Folder, subject: str) -> int:
    msg = folder.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, subject)])
    msg.save_changes()
    assert msg.entry_id is not None
    return folder._ctx.parse(msg.entry_id).object_id


def _eid(folder: Folder, message_id: int) -> bytes:
    return folder._ctx.message_eid(message_id)


def test_change_numbers(alice: MsgStore) -> None:
    db = alice.context.db
    with db.reading() as txn:
        before = db.sync.counter(txn)
    with db.transaction() as txn:
        assert db.sync.next_change_number(txn) == before + 1
        assert db.sync.next_change_number(txn) == before + 2
        assert db.sync.counter(txn) == before + 2
    with db.reading() as txn:
        assert db.sync.horizon(txn) == 0  # nothing pruned yet


def test_contents_page(alice: MsgStore) -> None:
    db = alice.context.db
    inbox = alice.open_folder(alice.get_receive_folder())
    drafts = alice.open_folder(alice.special_folder_id("drafts"))
    a, b, c = (_save(inbox, s) for s in "abc")
    fid = inbox.folder_id
    with db.reading() as txn:
        initial = db.sync.contents_page(txn, fid, -1, 100)
        assert initial.changed == [a, b, c] and initial.deleted == [] and initial.read == []
        assert initial.upto == db.sync.counter(txn) and not initial.more
        cut = db.sync.contents_page(txn, fid, -1, 2)
        assert cut.changed == [a, b] and cut.more and cut.upto < initial.upto
    since = initial.upto
    inbox.set_read_flags([_eid(inbox, a)], clear=True)  # read state only
    inbox.copy_messages([_eid(inbox, b)], drafts, move=True)  # moved out
    inbox.copy_messages([_eid(inbox, c)], drafts, move=True)
    drafts.copy_messages([_eid(inbox, c)], inbox, move=True)  # and back: a change
    with db.reading() as txn:
        page = db.sync.contents_page(txn, fid, since, 100)
        assert page.changed == [c]
        assert page.deleted == [b]
        assert [m for m, _ in page.read] == [a]
        assert not page.read[0][1] & pt.MSGFLAG_READ  # the current flags


def test_hierarchy_page(alice: MsgStore) -> None:
    db = alice.context.db
    top = alice.open_folder(alice.special_folder_id("ipm_subtree"))
    with db.reading() as txn:
        since = db.sync.counter(txn)
    projects = top.create_folder("Projects")
    alpha = projects.create_folder("Alpha")
    with db.reading() as txn:
        page = db.sync.hierarchy_page(txn, top.folder_id, since, 100)
        assert page.changed == [projects.folder_id, alpha.folder_id] and page.deleted == []
        own = db.sync.hierarchy_page(txn, projects.folder_id, -1, 100)
        assert own.changed == [alpha.folder_id]  # the folder itself is not in its scope
    since = page.upto
    top.delete_folder(projects.entry_id, DEL_FOLDERS | DELETE_HARD_DELETE)
    with db.reading() as txn:
        page = db.sync.hierarchy_page(txn, top.folder_id, since, 100)
        assert page.deleted == [projects.folder_id]  # alone: Alpha is implied


def test_changes_reads(alice: MsgStore) -> None:
    db = alice.context.db
    top = alice.open_folder(alice.special_folder_id("ipm_subtree"))
    parent = top.create_folder("P")
    zed, abe, mid = (parent.create_folder(n) for n in ("zed", "Abe", "mid"))
    with db.reading() as txn:
        assert db.changes.parent_of(txn, zed.folder_id) == (True, parent.folder_id)
        root = db.folders.role_folder(txn, "root")
        assert db.changes.parent_of(txn, root) == (True, None)
        assert db.changes.parent_of(txn, 999_999) == (False, None)
        assert db.changes.subfolder_order(txn, parent.folder_id) == [
            abe.folder_id, mid.folder_id, zed.folder_id  # by name, case-insensitive
        ]  # fmt: skip
        assert db.changes.subfolder_order(txn, zed.folder_id) == []


def test_sorted_hierarchy_table_prior_rows(store: ObjectStore, alice: MsgStore) -> None:
    top = alice.open_folder(alice.special_folder_id("ipm_subtree"))
    parent = top.create_folder("P")
    first = parent.create_folder("b")
    alice.advise_table(
        b"s",
        parent.entry_id,
        "hierarchy",
        [pt.PR_DISPLAY_NAME_W],
        sort=[(pt.PR_DISPLAY_NAME_W, True)],
    )
    key = pt.PR_INSTANCE_KEY

    def instance(folder: Folder) -> object:
        return folder.get_props([key]).values[0].value

    second = parent.create_folder("a")  # sorts after "b" (descending)
    third = parent.create_folder("c")  # sorts first
    notes = [
        n for n in store.notifications.poll(b"s", 0, 100).events if isinstance(n, TableNotification)
    ]
    added = [n for n in notes if n.table_event == TableEvent.TABLE_ROW_ADDED]
    assert [n.instance_key for n in added] == [instance(second), instance(third)]
    assert added[0].prior_instance_key == instance(first)
    assert added[1].prior_instance_key is None
    assert added[0].row is not None and added[0].row[0].value == "a"
