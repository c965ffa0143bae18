"""The directory's storage object (mapi.storage.directory.SqliteDirectory), directly."""

from __future__ import annotations

import stat
from pathlib import Path

from mapi.storage.directory import SqliteDirectory, StoredVerifier, UserRecord

ROWS = SqliteDirectory()
VERIFIER = StoredVerifier(b"s" * 16, 1024, 8, 1, b"k" * 32)


def _user(user_id: str, username: str, email: str = "") -> UserRecord:
    return UserRecord(user_id, username, username.title(), email, f"{user_id}.sqlite3", 7, False)


def test_open_makes_tables_and_keeps_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "directory.sqlite3"
    conn = ROWS.open(path)
    secret = ROWS.server_secret(conn)
    assert len(secret) == 32
    ROWS.close(conn)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ROWS.open(path)
    try:
        assert ROWS.server_secret(again) == secret  # made once, kept
    finally:
        ROWS.close(again)


def test_users_round_trip(tmp_path: Path) -> None:
    conn = ROWS.open(tmp_path / "d.sqlite3")
    try:
        assert ROWS.add_user(conn, _user("id-b", "bob", "Bob@Example.org"), VERIFIER)
        assert ROWS.add_user(conn, _user("id-a", "alice", "shared@example.org"), VERIFIER)
        assert ROWS.add_user(conn, _user("id-c", "carol", "SHARED@example.org"), VERIFIER)
        # The login name, the id and the mailbox file are each unique: False, nothing added.
        assert not ROWS.add_user(conn, _user("id-x", "bob"), VERIFIER)
        assert not ROWS.add_user(conn, _user("id-a", "dave"), VERIFIER)
        assert [u.username for u in ROWS.users(conn)] == ["alice", "bob", "carol"]

        bob = ROWS.user_by_name(conn, "bob")
        assert bob == _user("id-b", "bob", "Bob@Example.org")
        assert ROWS.user_by_id(conn, "id-b") == bob
        assert ROWS.user_by_name(conn, "nobody") is None
        assert ROWS.user_by_id(conn, "nobody") is None
        # E-mail addresses compare case-insensitively; two sharing one: the first by name.
        assert ROWS.user_by_email(conn, "bob@example.ORG") == bob
        shared = ROWS.user_by_email(conn, "Shared@Example.org")
        assert shared is not None and shared.username == "alice"
        assert ROWS.user_by_email(conn, "") is None  # an empty address matches nobody

        assert ROWS.enabled_verifier(conn, "bob") == VERIFIER
        new = StoredVerifier(b"t" * 16, 2048, 8, 2, b"K" * 32)
        assert ROWS.set_verifier(conn, "bob", new)
        assert ROWS.enabled_verifier(conn, "bob") == new
        assert not ROWS.set_verifier(conn, "nobody", new)

        assert ROWS.set_disabled(conn, "bob", True)
        assert ROWS.enabled_verifier(conn, "bob") is None
        disabled = ROWS.user_by_name(conn, "bob")
        assert disabled is not None and disabled.disabled
        assert ROWS.set_disabled(conn, "bob", False)
        assert ROWS.enabled_verifier(conn, "bob") == new
        assert not ROWS.set_disabled(conn, "nobody", True)

        ROWS.delete_user(conn, "id-b")
        ROWS.delete_user(conn, "id-b")  # gone already: nothing happens
        assert ROWS.user_by_name(conn, "bob") is None
        assert [u.username for u in ROWS.users(conn)] == ["alice", "carol"]
    finally:
        ROWS.close(conn)
