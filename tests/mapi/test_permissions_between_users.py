"""Authorization between users: a delegate cannot destroy folders it does not own
through empty_folder or a cascading delete, rights are checked again when a table is
read or a message saved (revocation, moves), and a name does not open a hidden folder."""

from __future__ import annotations

import pytest

from mapi.access import permissions
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.objects.folders import DEL_FOLDERS, DEL_MESSAGES, DELETE_HARD_DELETE
from mapi.store import MsgStore, ObjectStore

EDITOR = permissions.ROLES["editor"]


def bob_id(store: ObjectStore) -> str:
    return store.directory.get_user("bob").user_id


def bobs_view(store: ObjectStore) -> MsgStore:
    return store.logon_with_password("bob", "bob-pw").open_store("alice")


def saved(folder, subject: str, body: str = "") -> bytes:
    msg = folder.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, subject), (pt.PR_BODY_W, body)])
    msg.save_changes()
    assert msg.entry_id is not None
    return msg.entry_id


def test_empty_folder_spares_subfolders_the_delegate_does_not_own(
    store: ObjectStore, alice: MsgStore
) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    private = inbox.create_folder("Private")
    saved(private, "secret")
    saved(inbox, "ordinary")
    inbox.set_permission(bob_id(store), EDITOR)  # DELETE_ANY on Inbox, nothing on Private
    shared = bobs_view(store).open_folder(alice.get_receive_folder())
    with pytest.raises(errors.NoAccess):
        shared.empty_folder()
    assert alice.open_folder(private.entry_id).get_props([pt.PR_CONTENT_COUNT]).values[0].value == 1
    assert inbox.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 1  # all or nothing
    # Owning every subfolder (here: none left) makes it work as before.
    inbox.delete_folder(private.entry_id, DEL_MESSAGES | DEL_FOLDERS | DELETE_HARD_DELETE)
    shared.empty_folder()
    assert inbox.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 0


def test_a_hard_delete_needs_ownership_of_the_whole_subtree(
    store: ObjectStore, alice: MsgStore
) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    shared_folder = inbox.create_folder("Shared")
    diary = shared_folder.create_folder("Diary")
    shared_folder.set_permission(bob_id(store), permissions.ROLES["owner"])
    inbox.set_permission(bob_id(store), EDITOR)
    view = bobs_view(store).open_folder(alice.get_receive_folder())
    with pytest.raises(errors.NoAccess):
        view.delete_folder(shared_folder.entry_id, DEL_FOLDERS | DELETE_HARD_DELETE)
    assert alice.open_folder(diary.entry_id).get_props([pt.PR_DISPLAY_NAME_W]).values[0].value
    diary.set_permission(bob_id(store), permissions.ROLES["owner"])
    view.delete_folder(shared_folder.entry_id, DEL_FOLDERS | DELETE_HARD_DELETE)
    with pytest.raises(errors.MapiError):
        alice.open_folder(diary.entry_id)


def test_an_open_contents_table_stops_when_rights_are_revoked(
    store: ObjectStore, alice: MsgStore
) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    inbox.set_permission(bob_id(store), EDITOR)
    table = bobs_view(store).open_folder(alice.get_receive_folder()).contents_table()
    saved(inbox, "before")
    assert table.get_row_count() == 1
    inbox.set_permission(bob_id(store), 0)
    saved(inbox, "after revocation", "confidential")
    with pytest.raises(errors.NoAccess):
        table.query_rows(10)
    with pytest.raises(errors.NoAccess):
        table.get_row_count()


def test_a_save_checks_rights_where_the_message_is_now(store: ObjectStore, alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    private = inbox.create_folder("Private")
    eid = saved(inbox, "original", "original body")
    inbox.set_permission(bob_id(store), EDITOR)
    view = bobs_view(store)
    held = view.open_message(eid, writable=True)
    held.set_props([(pt.PR_BODY_W, "tampered")])
    inbox.copy_messages([eid], private, move=True)  # out of the granted folder
    with pytest.raises(errors.NoAccess):
        held.save_changes(0x6)  # KEEP_OPEN_READWRITE | FORCE_SAVE
    body = alice.open_message(eid).get_props([pt.PR_BODY_W]).values[0].value
    assert body == "original body"
    # Revoked in place, the same.
    eid2 = saved(inbox, "second")
    held2 = view.open_message(eid2, writable=True)
    inbox.set_permission(bob_id(store), 0)
    held2.set_props([(pt.PR_SUBJECT_W, "changed")])
    with pytest.raises(errors.NoAccess):
        held2.save_changes()


def test_a_delegate_may_save_again_what_it_created(store: ObjectStore, alice: MsgStore) -> None:
    """CREATE made the message; saving it again on the same object needs CREATE, not
    EDIT_ANY (the store records no creators for EDIT_OWNED)."""
    inbox = alice.open_folder(alice.get_receive_folder())
    inbox.set_permission(bob_id(store), permissions.CREATE | permissions.FOLDER_VISIBLE)
    shared = bobs_view(store).open_folder(alice.get_receive_folder())
    msg = shared.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, "draft")])
    msg.save_changes()
    msg.set_props([(pt.PR_SUBJECT_W, "final")])
    msg.save_changes()
    assert msg.entry_id is not None
    subject = alice.open_message(msg.entry_id).get_props([pt.PR_SUBJECT_W]).values[0].value
    assert subject == "final"


def test_open_if_exists_does_not_open_a_hidden_folder(store: ObjectStore, alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    inbox.create_folder("HR", comment="salary review")
    inbox.set_permission(bob_id(store), permissions.FOLDER_VISIBLE | permissions.CREATE_SUBFOLDER)
    shared = bobs_view(store).open_folder(alice.get_receive_folder())
    with pytest.raises(errors.NoAccess):
        shared.create_folder("HR", open_if_exists=True)
    created = shared.create_folder("Bob's", open_if_exists=True)  # a new name still works
    assert created.get_props([pt.PR_DISPLAY_NAME_W]).values[0].value == "Bob's"


def test_copies_between_mailboxes_are_refused_not_misfiled(
    store: ObjectStore, alice: MsgStore, bob: MsgStore
) -> None:
    """Both ends of a copy used to resolve in the source mailbox: alice's message
    'copied' to a folder of bob's landed in her own folder of the same number."""
    inbox = alice.open_folder(alice.get_receive_folder())
    eid = saved(inbox, "mine")
    sub = inbox.create_folder("Sub")
    bobs_inbox = bob.open_folder(bob.get_receive_folder())
    with pytest.raises(errors.NoSupport):
        inbox.copy_messages([eid], bobs_inbox)
    with pytest.raises(errors.NoSupport):
        inbox.copy_folder(sub.entry_id, bobs_inbox)
    assert bobs_inbox.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 0
    assert inbox.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 1
