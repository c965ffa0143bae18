"""Incremental sync: initial and incremental contents and hierarchy sync, paging,
tombstone pruning, bad states, and the schema upgrade that adds the bookkeeping."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mapi_helpers import FAST_KDF, Clock

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.objects.folders import DELETE_HARD_DELETE, Folder
from mapi.objects.sync import (
    SyncResult,
    SyncStateTooOld,
    prune_tombstones,
    sync_contents,
    sync_hierarchy,
)
from mapi.storage.schema import SCHEMA_VERSION
from mapi.store import MsgStore, ObjectStore


def _save(folder: Folder, subject: str) -> bytes:
    msg = folder.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, subject)])
    msg.save_changes()
    assert msg.entry_id is not None
    return msg.entry_id


def _subjects(result: SyncResult) -> set[object]:
    out = set()
    for item in result.created_or_changed:
        values = {p.tag: p.value for p in item.props}
        out.add(values.get(pt.PR_SUBJECT_W, values.get(pt.PR_DISPLAY_NAME_W)))
    return out


def _eids(result: SyncResult) -> set[bytes]:
    return {item.entry_id for item in result.created_or_changed}


def test_contents_initial_then_incremental(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    drafts = alice.open_folder(alice.special_folder_id("drafts"))
    a, b, c, d, e = (_save(inbox, s) for s in "abcde")
    first = sync_contents(inbox, None)
    assert _subjects(first) == set("abcde") and first.deleted == [] and not first.more
    item = first.created_or_changed[0]
    assert (
        item.change_key
        == alice.open_message(item.entry_id).get_props([pt.PR_CHANGE_KEY]).values[0].value
    )
    assert item.props[0].tag == pt.PR_SUBJECT_W
    assert item.props[1].tag == pt.error_tag(pt.PR_MESSAGE_CLASS_W)  # absent: PT_ERROR

    quiet = sync_contents(inbox, first.state)
    assert quiet.created_or_changed == [] and quiet.deleted == [] and quiet.read_changed == []

    f = _save(inbox, "f")  # created
    msg = alice.open_message(b, writable=True)  # modified
    msg.set_props([(pt.PR_SUBJECT_W, "b2")])
    msg.save_changes()
    inbox.delete_messages([c], hard=True)  # deleted
    inbox.copy_messages([d], drafts, move=True)  # moved out
    inbox.set_read_flags([e], clear=True)  # read state only
    second = sync_contents(inbox, quiet.state)
    assert _eids(second) == {f, b}
    assert _subjects(second) == {"f", "b2"}
    assert set(second.deleted) == {c, d}
    assert second.read_changed == [(e, False)]
    assert a not in _eids(second)

    # Moved back in: a change again, not a deletion.
    drafts.copy_messages([d], inbox, move=True)
    third = sync_contents(inbox, second.state)
    assert _eids(third) == {d} and third.deleted == []
    # Drafts saw it arrive and leave.
    drafts_sync = sync_contents(drafts, None)
    assert drafts_sync.created_or_changed == []


def test_soft_delete_is_a_move_to_deleted_items(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    deleted = alice.open_folder(alice.special_folder_id("deleted"))
    eid = _save(inbox, "x")
    inbox_state = sync_contents(inbox, None).state
    deleted_state = sync_contents(deleted, None).state
    inbox.delete_messages([eid])
    assert sync_contents(inbox, inbox_state).deleted == [eid]
    assert _eids(sync_contents(deleted, deleted_state)) == {eid}
    # Emptying reports every message.
    state = sync_contents(deleted, None).state
    deleted.empty_folder()
    assert sync_contents(deleted, state).deleted == [eid]


def test_hierarchy_sync(alice: MsgStore) -> None:
    top = alice.open_folder(alice.special_folder_id("ipm_subtree"))
    first = sync_hierarchy(top, None)
    names = _subjects(first)
    assert {"Inbox", "Sent Items", "Deleted Items", "Drafts"} <= names
    assert "Top of Information Store" not in names  # only the folders below

    projects = top.create_folder("Projects")
    alpha = projects.create_folder("Alpha")
    archive = top.create_folder("Archive")
    second = sync_hierarchy(top, first.state)
    assert _subjects(second) == {"Projects", "Alpha", "Archive"}

    archive.rename("Old")
    top.copy_folder(projects.entry_id, archive, move=True)  # moves Alpha along
    third = sync_hierarchy(top, second.state)
    assert _subjects(third) == {"Old", "Projects", "Alpha"}
    assert third.deleted == []  # moved within the scope: changes, not deletions
    parents = {
        item.entry_id: {p.tag: p.value for p in item.props}[pt.PR_PARENT_ENTRYID]
        for item in third.created_or_changed
    }
    assert parents[projects.entry_id] == archive.entry_id

    # Scope: the archive's subtree. Moving Projects out of it is a deletion there.
    arch_state = sync_hierarchy(archive, None)
    assert _eids(arch_state) == {projects.entry_id, alpha.entry_id}
    archive.copy_folder(projects.entry_id, top, move=True)
    after = sync_hierarchy(archive, arch_state.state)
    assert after.deleted == [projects.entry_id] and after.created_or_changed == []

    # Hard delete from the top scope.
    state = sync_hierarchy(top, None).state
    top.delete_folder(projects.entry_id, DELETE_HARD_DELETE | 0x1 | 0x4)
    gone = sync_hierarchy(top, state)
    assert gone.deleted == [projects.entry_id]  # Alpha is implied


def test_paging_never_splits_a_change_number(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    drafts = alice.open_folder(alice.special_folder_id("drafts"))
    eids = [_save(inbox, f"m{i}") for i in range(25)]
    seen: set[bytes] = set()
    state = None
    pages = []
    while True:
        page = sync_contents(inbox, state, max_items=10)
        pages.append(len(page.created_or_changed))
        seen |= _eids(page)
        state = page.state
        if not page.more:
            break
    assert pages == [10, 10, 5] and seen == set(eids)
    # One copy of 15 messages shares one change number: one page of 15.
    inbox.copy_messages(eids[:15], drafts)
    drafts_state = sync_contents(drafts, None, max_items=10)
    assert len(drafts_state.created_or_changed) == 15


def test_too_old_and_bad_states(alice: MsgStore, clock: Clock) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    drafts = alice.open_folder(alice.special_folder_id("drafts"))
    eid = _save(inbox, "x")
    old = sync_contents(inbox, None).state
    inbox.delete_messages([eid], hard=True)
    assert sync_contents(inbox, old).deleted == [eid]
    assert prune_tombstones(inbox, clock.now + 365 * 24 * 3600 * 10_000_000) == 1
    with pytest.raises(SyncStateTooOld) as info:
        sync_contents(inbox, old)
    assert info.value.hresult == errors.Hresult.MAPI_E_NOT_FOUND
    fresh = sync_contents(inbox, None)
    assert sync_contents(inbox, fresh.state).deleted == []
    with pytest.raises(errors.InvalidParameter):
        sync_contents(drafts, fresh.state)  # another folder's state
    with pytest.raises(errors.InvalidParameter):
        sync_hierarchy(inbox, fresh.state)  # another kind
    for bad in (b"", b"\xc1", b"junk" * 100):
        with pytest.raises(errors.InvalidParameter):
            sync_contents(inbox, bad)


def test_sync_respects_rights(store: ObjectStore, alice: MsgStore) -> None:
    bob_view = store.logon_with_password("bob", "bob-pw")
    inbox = alice.open_folder(alice.get_receive_folder())
    inbox.set_permission(store.directory.get_user("bob").user_id, 0x400)  # visible only
    view = bob_view.open_store("alice").open_folder(inbox.entry_id)
    with pytest.raises(errors.NoAccess):
        sync_contents(view, None)


def test_version_1_mailbox_is_upgraded(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "d"
    first = ObjectStore(data, kdf=FAST_KDF, clock=clock)
    first.add_user("carol", "pw")
    view = first.logon_with_password("carol", "pw").open_store()
    path = view.context.db.path
    first.close()
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE tombstones; DROP TABLE read_state; DROP TABLE submissions;"
        " DROP INDEX messages_by_cn; PRAGMA user_version = 1;"
    )
    conn.close()
    again = ObjectStore(data, kdf=FAST_KDF, clock=clock)
    view = again.logon_with_password("carol", "pw").open_store()
    inbox = view.open_folder(view.get_receive_folder())
    state = sync_contents(inbox, None).state
    eid = _save(inbox, "x")
    inbox.delete_messages([eid], hard=True)
    assert sync_contents(inbox, state).deleted == [eid]
    assert view.context.db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again.close()
