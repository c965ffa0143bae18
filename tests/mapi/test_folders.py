"""Folders: the standard hierarchy, create/open/rename/delete/move/copy/empty, counts."""

from __future__ import annotations

import pytest

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.objects.folders import DEL_FOLDERS, DEL_MESSAGES, DELETE_HARD_DELETE, Folder
from mapi.store import MsgStore


def _name(folder: Folder) -> object:
    return folder.get_props([pt.PR_DISPLAY_NAME_W]).values[0].value


def _children(folder: Folder) -> list[object]:
    table = folder.hierarchy_table()
    table.set_columns([pt.PR_DISPLAY_NAME_W])
    return [row[0].value for row in table.query_rows(100)]


def _new_message(folder: Folder, subject: str = "s", flags: int | None = None) -> bytes:
    msg = folder.create_message()
    props: list[tuple[int, object]] = [(pt.PR_SUBJECT_W, subject)]
    if flags is not None:
        props.append((pt.PR_MESSAGE_FLAGS, flags))
    assert msg.set_props(props) == []
    msg.save_changes()
    assert msg.entry_id is not None
    return msg.entry_id


def test_standard_folders_exist_with_classes(alice: MsgStore) -> None:
    ipm = alice.open_folder(alice.special_folder_id("ipm_subtree"))
    assert _name(ipm) == "Top of Information Store"
    assert sorted(str(n) for n in _children(ipm)) == sorted(
        ["Inbox", "Outbox", "Sent Items", "Deleted Items", "Drafts", "Calendar", "Contacts",
         "Tasks", "Notes", "Journal"]
    )  # fmt: skip
    cal = alice.open_folder(alice.special_folder_id("calendar"))
    assert cal.get_props([pt.PR_CONTAINER_CLASS_W]).values[0].value == "IPF.Appointment"
    root = alice.root_folder()
    props = root.get_props([pt.PR_FOLDER_TYPE, pt.PR_IPM_APPOINTMENT_ENTRYID]).as_dict()
    assert props[pt.PR_FOLDER_TYPE] == pt.FOLDER_ROOT
    assert props[pt.PR_IPM_APPOINTMENT_ENTRYID] == cal.entry_id
    store_props = alice.get_props([pt.PR_IPM_WASTEBASKET_ENTRYID, pt.PR_OBJECT_TYPE]).as_dict()
    assert store_props[pt.PR_IPM_WASTEBASKET_ENTRYID] == alice.special_folder_id("deleted")
    assert store_props[pt.PR_OBJECT_TYPE] == pt.MAPI_STORE


def test_create_open_and_collision(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    sub = inbox.create_folder("Projects", comment="work")
    assert _name(alice.open_folder(sub.entry_id)) == "Projects"
    with pytest.raises(errors.Collision):
        inbox.create_folder("PROJECTS")
    again = inbox.create_folder("projects", open_if_exists=True)
    assert again.folder_id == sub.folder_id
    props = inbox.get_props([pt.PR_SUBFOLDERS, pt.PR_FOLDER_CHILD_COUNT]).as_dict()
    assert props == {pt.PR_SUBFOLDERS: True, pt.PR_FOLDER_CHILD_COUNT: 1}
    sub_props = sub.get_props([pt.PR_PARENT_ENTRYID, pt.PR_COMMENT_W]).as_dict()
    assert sub_props == {pt.PR_PARENT_ENTRYID: inbox.entry_id, pt.PR_COMMENT_W: "work"}
    with pytest.raises(errors.InvalidParameter):
        inbox.create_folder("")


def test_open_folder_errors(alice: MsgStore, bob: MsgStore) -> None:
    with pytest.raises(errors.InvalidEntryId):
        alice.open_folder(b"junk")
    with pytest.raises(errors.UnknownEntryId):
        alice.open_folder(bob.get_receive_folder())
    gone = alice.root_folder().entry_id[:22] + (999_999).to_bytes(8, "big")
    with pytest.raises(errors.NotFound):
        alice.open_folder(gone)
    msg_eid = _new_message(alice.open_folder(alice.get_receive_folder()))
    with pytest.raises(errors.InvalidEntryId):
        alice.open_folder(msg_eid)


def test_rename_and_computed_props(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    a = inbox.create_folder("A")
    inbox.create_folder("B")
    with pytest.raises(errors.Collision):
        a.rename("b")
    a.rename("C")
    assert _name(a) == "C"
    problems = a.set_props([(pt.PR_CONTENT_COUNT, 5), (pt.PR_COMMENT_W, "ok")])
    assert [(p.index, p.hresult) for p in problems] == [(0, errors.Hresult.MAPI_E_COMPUTED)]
    assert a.get_props([pt.PR_COMMENT_W]).values[0].value == "ok"
    with pytest.raises(errors.NoAccess):
        inbox.rename("Mail")


def test_counts(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    _new_message(inbox, "read", flags=pt.MSGFLAG_READ)
    unread = _new_message(inbox, "unread", flags=0)
    props = inbox.get_props([pt.PR_CONTENT_COUNT, pt.PR_CONTENT_UNREAD]).as_dict()
    assert props == {pt.PR_CONTENT_COUNT: 2, pt.PR_CONTENT_UNREAD: 1}
    inbox.set_read_flags([unread])
    assert inbox.get_props([pt.PR_CONTENT_UNREAD]).values[0].value == 0
    inbox.set_read_flags(None, clear=True)
    assert inbox.get_props([pt.PR_CONTENT_UNREAD]).values[0].value == 2


def test_delete_soft_then_hard(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    deleted = alice.open_folder(alice.special_folder_id("deleted"))
    doomed = inbox.create_folder("Old")
    _new_message(doomed)
    doomed.create_folder("Child")
    with pytest.raises(errors.HasMessages):
        inbox.delete_folder(doomed.entry_id)
    with pytest.raises(errors.HasFolders):
        inbox.delete_folder(doomed.entry_id, DEL_MESSAGES)
    inbox.delete_folder(doomed.entry_id, DEL_MESSAGES | DEL_FOLDERS)
    assert _children(inbox) == []
    assert _children(deleted) == ["Old"]
    deleted.delete_folder(doomed.entry_id, DEL_MESSAGES | DEL_FOLDERS)
    assert _children(deleted) == []
    with pytest.raises(errors.NotFound):
        alice.open_folder(doomed.entry_id)
    with pytest.raises(errors.ObjectDeleted):
        doomed.create_message().save_changes()
    hard = inbox.create_folder("Gone")
    inbox.delete_folder(hard.entry_id, DELETE_HARD_DELETE)
    assert _children(deleted) == []
    with pytest.raises(errors.UnknownFlags):
        inbox.delete_folder(hard.entry_id, 0x100)


def test_special_folders_are_protected(alice: MsgStore) -> None:
    ipm = alice.open_folder(alice.special_folder_id("ipm_subtree"))
    with pytest.raises(errors.NoAccess):
        ipm.delete_folder(alice.get_receive_folder(), DEL_MESSAGES | DEL_FOLDERS)
    with pytest.raises(errors.NoAccess):
        ipm.copy_folder(alice.get_receive_folder(), alice.root_folder(), move=True)


def test_soft_delete_renames_on_collision(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    deleted = alice.open_folder(alice.special_folder_id("deleted"))
    inbox.delete_folder(inbox.create_folder("X").entry_id)
    inbox.delete_folder(inbox.create_folder("X").entry_id)
    assert sorted(str(n) for n in _children(deleted)) == ["X", "X (2)"]


def test_move_copy_and_cycle(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    drafts = alice.open_folder(alice.special_folder_id("drafts"))
    parent = inbox.create_folder("P")
    child = parent.create_folder("C")
    _new_message(child, "deep")
    with pytest.raises(errors.FolderCycle):
        inbox.copy_folder(parent.entry_id, child, move=True)
    copy = inbox.copy_folder(parent.entry_id, drafts, "P2")
    assert copy.folder_id != parent.folder_id
    assert _children(copy) == ["C"]
    copied_child = [r for r in copy.hierarchy_table().query_rows(5)]
    assert len(copied_child) == 1
    moved = inbox.copy_folder(parent.entry_id, drafts, move=True)
    assert moved.folder_id == parent.folder_id
    assert sorted(str(n) for n in _children(drafts)) == ["P", "P2"]
    assert _children(inbox) == []
    with pytest.raises(errors.Collision):
        drafts.copy_folder(copy.entry_id, drafts, "p")
    with pytest.raises(errors.NotFound):
        inbox.copy_folder(copy.entry_id, drafts)
    deep = alice.root_folder().hierarchy_table(1)
    deep.set_columns([pt.PR_DISPLAY_NAME_W, pt.PR_DEPTH])
    rows = {(r[0].value, r[1].value) for r in deep.query_rows(100)}
    assert ("C", 4) in rows and ("Top of Information Store", 1) in rows


def test_empty_folder(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    f = inbox.create_folder("E")
    _new_message(f)
    f.create_folder("sub")
    f.empty_folder()
    assert f.get_props([pt.PR_CONTENT_COUNT, pt.PR_FOLDER_CHILD_COUNT]).as_dict() == {
        pt.PR_CONTENT_COUNT: 0,
        pt.PR_FOLDER_CHILD_COUNT: 0,
    }


def test_folder_depth_limit(tmp_path: object, alice: MsgStore) -> None:
    folder = alice.open_folder(alice.get_receive_folder())
    limit = alice.context.limits.max_folder_depth
    with pytest.raises(errors.TooComplex):
        for i in range(limit + 1):
            folder = folder.create_folder(f"d{i}")
