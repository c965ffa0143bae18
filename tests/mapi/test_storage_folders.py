"""The folder and ACL storage objects (``MailboxDB.folders``, ``MailboxDB.acl``) on their
own: what a second backend must do the same way (the folder objects' tests cover them
through the store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import DEFAULT_LIMITS
from mapi.objects.hierarchy import STANDARD_HIERARCHY
from mapi.storage import tombstones as tomb
from mapi.storage.acl import DEFAULT_MEMBER
from mapi.storage.db import MailboxDB


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MailboxDB]:
    mailbox = MailboxDB(tmp_path / "m.sqlite3", limits=DEFAULT_LIMITS, clock=lambda: 7)
    with mailbox.transaction() as txn:
        assert mailbox.folders.create_standard(txn, STANDARD_HIERARCHY, 5)
        assert not mailbox.folders.create_standard(txn, STANDARD_HIERARCHY, 5)
    yield mailbox
    mailbox.close()


def test_standard_hierarchy_and_rows(db: MailboxDB) -> None:
    folders = db.folders
    with db.reading() as txn:
        root = folders.role_folder(txn, "root")
        ipm = folders.role_folder(txn, "ipm_subtree")
        inbox = folders.row(txn, folders.role_folder(txn, "inbox"))
        assert inbox.parent_id == ipm and inbox.role == "inbox" and inbox.name == "Inbox"
        assert inbox.props == {pt.PR_CONTAINER_CLASS_W: "IPF.Note"}
        assert (inbox.created, inbox.modified, inbox.change_num) == (5, 5, 0)
        assert folders.ancestors(txn, inbox.id) == [inbox.id, ipm, root]
        assert folders.child(txn, ipm, inbox.id) == inbox
        assert folders.child(txn, root, inbox.id) is None
        assert folders.get(txn, 10_000) is None
        with pytest.raises(errors.ObjectDeleted):
            folders.row(txn, 10_000)
        with pytest.raises(errors.NotFound):
            folders.role_folder(txn, "no such role")
        names = [r.name for r in folders.children(txn, ipm)]
        assert names == sorted(names, key=str.lower)
        assert folders.user_children(txn, ipm) == []
        assert folders.counts(txn, ipm).subfolders == len(names)


def test_names_are_unique_among_siblings_case_insensitively(db: MailboxDB) -> None:
    folders = db.folders
    with db.transaction() as txn:
        ipm = folders.role_folder(txn, "ipm_subtree")
        a = folders.create(
            txn, ipm, "Work", folder_type=pt.FOLDER_GENERIC, now=1, change_num=1, props={}
        )
        assert folders.child_named(txn, ipm, "WORK") == a
        assert folders.child_named(txn, ipm, "work", excluding=a) is None
        assert folders.child_named(txn, None, "work") is None
        assert folders.unique_name(txn, ipm, "work") == "work (2)"
        assert folders.unique_name(txn, ipm, "Play") == "Play"
        folders.rename(txn, a, "Job")
        folders.write_props(txn, a, {pt.PR_COMMENT_W: "c"}, modified=9, change_num=2)
        row = folders.row(txn, a)
        assert (row.name, row.props, row.modified, row.change_num) == (
            "Job", {pt.PR_COMMENT_W: "c"}, 9, 2,
        )  # fmt: skip


def test_move_copy_and_delete_trees(db: MailboxDB) -> None:
    folders = db.folders
    with db.transaction() as txn:
        ipm = folders.role_folder(txn, "ipm_subtree")
        deleted = folders.role_folder(txn, "deleted")

        def make(parent: int, name: str) -> int:
            return folders.create(
                txn, parent, name, folder_type=pt.FOLDER_GENERIC, now=1, change_num=1, props={}
            )

        top = make(ipm, "Top")
        mid = make(top, "Mid")
        low = make(mid, "Low")
        assert folders.subtree(txn, top) == [top, mid, low]
        assert folders.subtree_height(txn, top) == 2
        assert folders.subtree_height(txn, low) == 0

        folders.move_tree(txn, top, deleted, "Top", change_num=50, now=3, left=ipm)
        assert folders.row(txn, top).parent_id == deleted
        assert {folders.row(txn, f).change_num for f in (top, mid, low)} == {50}
        left = txn.execute(
            "SELECT kind, object_id, folder_id, change_num FROM tombstones"
        ).fetchall()
        assert [tuple(r) for r in left] == [(tomb.FOLDER, top, ipm, 50)]

        stamps = iter(range(100, 200))
        shallow = folders.copy_tree(
            txn, top, ipm, "Shallow", recursive=False, limits=db.limits,
            now=lambda: 7, change_number=lambda: next(stamps),
        )  # fmt: skip
        deep = folders.copy_tree(
            txn, top, ipm, "Deep", recursive=True, limits=db.limits,
            now=lambda: 7, change_number=lambda: next(stamps),
        )  # fmt: skip
        assert folders.subtree(txn, shallow) == [shallow]
        copied = folders.subtree(txn, deep)
        assert len(copied) == 3
        assert [folders.row(txn, f).change_num for f in copied] == [101, 102, 103]
        assert [folders.row(txn, f).role for f in copied] == [None] * 3

        mids, fids = folders.empty(txn, deep, change_num=60, now=4)
        assert (mids, fids) == ([], [copied[1]])
        assert folders.subtree(txn, deep) == [deep]

        folders.delete_tree(txn, top, parent_id=deleted, change_num=70, now=5)
        assert all(folders.get(txn, f) is None for f in (top, mid, low))


def test_acl_rows(db: MailboxDB) -> None:
    acl = db.acl
    with db.transaction() as txn:
        fid = db.folders.role_folder(txn, "inbox")
        assert acl.rights(txn, fid, "u1") == 0
        assert not acl.grants_anything(txn, "u1")
        acl.set(txn, fid, DEFAULT_MEMBER, 0x401)
        assert acl.rights(txn, fid, "u1") == 0x401  # the default row
        assert acl.grants_anything(txn, "u1")
        acl.set(txn, fid, "u1", 0x41B)
        acl.set(txn, fid, "u1", 0x7FB)
        assert acl.rights(txn, fid, "u1") == 0x7FB  # its own row wins
        assert acl.members(txn, fid) == [(DEFAULT_MEMBER, 0x401), ("u1", 0x7FB)]
        acl.set(txn, fid, "u1", 0)
        acl.set(txn, fid, DEFAULT_MEMBER, 0)
        assert acl.members(txn, fid) == []
        with pytest.raises(errors.InvalidParameter):
            acl.set(txn, fid, "u1", 1 << 30)
