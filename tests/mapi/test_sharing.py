"""Sharing between users: opening another user's store tells nobody who has an account
and opens nothing before the permission check; folder permissions name their members
by user name (stored as user ids, as before) and refuse members that are not users."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapi.access import permissions
from mapi.model import errors
from mapi.store import MsgStore, ObjectStore


def user_id(store: ObjectStore, name: str) -> str:
    return store.directory.get_user(name).user_id


def mailbox_file(store: ObjectStore, name: str) -> Path:
    return store.data_dir / "mailboxes" / store.directory.get_user(name).mailbox


def refusal(store: ObjectStore, owner: str) -> tuple[int, str]:
    """What Alice's attempt to open ``owner``'s store answers."""
    session = store.logon_with_password("alice", "alice-pw")
    with pytest.raises(errors.MapiError) as caught:
        session.open_store(owner)
    return caught.value.hresult, str(caught.value)


def test_open_store_answers_alike_for_unknown_unshared_and_invalid_users(
    store: ObjectStore, bob: MsgStore
) -> None:
    store.add_user("carol", "carol-pw")  # an account whose mailbox was never made
    answers = {name: refusal(store, name) for name in ("bob", "carol", "nobody", "Not A Name!")}
    assert set(answers.values()) == {
        (errors.Hresult.MAPI_E_NO_ACCESS, "MAPI_E_NO_ACCESS: no permission on this mailbox")
    }, answers


def test_open_store_never_creates_another_users_mailbox(store: ObjectStore) -> None:
    store.add_user("carol", "carol-pw")
    assert not mailbox_file(store, "carol").exists()
    refusal(store, "carol")
    assert not mailbox_file(store, "carol").exists()
    # Her own first logon makes it, as before.
    store.logon_with_password("carol", "carol-pw").open_store()
    assert mailbox_file(store, "carol").exists()


def test_a_refused_open_store_holds_nothing_open(store: ObjectStore) -> None:
    store.add_user("carol", "carol-pw")
    carol = store.logon_with_password("carol", "carol-pw")
    carol.open_store()
    carol.logoff()
    alice = store.logon_with_password("alice", "alice-pw")
    with pytest.raises(errors.NoAccess):
        alice.open_store("carol")
    # Alice's session (still alive) does not pin Carol's mailbox open.
    assert store.close_idle_mailboxes(0) >= 1
    assert user_id(store, "carol") not in store._mailboxes


def test_members_are_named_by_user_name_or_address(store: ObjectStore, alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    inbox.set_permission("bob", permissions.ROLES["reviewer"])
    # Stored as the user id, as before (ACL rows written by older versions stay valid).
    assert inbox.get_permissions() == [(user_id(store, "bob"), 0x401)]
    shared = store.logon_with_password("bob", "bob-pw").open_store("alice")
    assert shared.open_folder(alice.get_receive_folder()).folder_id == inbox.folder_id
    inbox.set_permission("BOB@example.org", permissions.ROLES["editor"])
    assert inbox.get_permissions() == [(user_id(store, "bob"), 0x47B)]
    inbox.set_permission("default", permissions.ROLES["reviewer"])
    assert sorted(inbox.permission_rows()) == sorted(
        [(user_id(store, "bob"), "bob", 0x47B), ("default", "default", 0x401)]
    )
    inbox.set_permission("bob", 0)
    inbox.set_permission("default", 0)
    assert inbox.get_permissions() == []


def test_a_member_that_is_not_a_user_is_refused(store: ObjectStore, alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    for member in ("mallory", "mallory@example.org", "0" * 32, "Not A Name!"):
        with pytest.raises(errors.NotFound, match="no user"):
            inbox.set_permission(member, permissions.ROLES["reviewer"])
    assert inbox.get_permissions() == []


def test_user_ids_still_work_and_rows_of_deleted_users_can_be_revoked(
    store: ObjectStore, alice: MsgStore
) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    store.add_user("carol", "carol-pw")
    carol_id = user_id(store, "carol")
    inbox.set_permission(carol_id, permissions.ROLES["reviewer"])  # as older clients do
    store.delete_user("carol")
    assert inbox.permission_rows() == [(carol_id, None, 0x401)]
    with pytest.raises(errors.NotFound):  # no new grant to someone who is gone
        inbox.set_permission(carol_id, permissions.ROLES["owner"])
    inbox.set_permission(carol_id, 0)  # but the stale row can go
    assert inbox.get_permissions() == []


def test_roles_by_name_and_back() -> None:
    assert permissions.ROLES["author"] == 0x41B
    assert permissions.role_name(0x401) == "reviewer"
    assert permissions.role_name(0x7FB) == "owner"
    assert permissions.role_name(0x400) == "custom"
    assert permissions.parse_rights("editor") == 0x47B
    assert permissions.parse_rights("0x401") == 0x401
    with pytest.raises(errors.InvalidParameter, match="unknown role"):
        permissions.parse_rights("boss")
