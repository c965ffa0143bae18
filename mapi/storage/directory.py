"""The user directory in SQLite: accounts and the server secret.

Part of the SQLite backend. The directory is its own database file
(``directory.sqlite3``), not a mailbox: :mod:`mapi.access.directory` keeps the account
logic (names, verifiers, the lock) and calls a :class:`SqliteDirectory` for its rows.
As the mailbox storage objects do, the directory object is stateless and every method
takes the handle it works on: the connection :meth:`SqliteDirectory.open` returned
(opened by :func:`mapi.storage.db.connect`: WAL, ``synchronous=FULL``, mode 0600, so a
change that returned survives a crash). Each write is one autocommit statement; the
caller serialises the calls (one lock over the connection).

Tables: ``users`` (a stable random user id, used in ACLs; the login name, unique;
display name; e-mail address; the scrypt salt and parameters; the verifier key K,
password-equivalent and never exported; the mailbox file name, unique; the creation
time; a disabled flag; the NT hash of the password, MD4 of its UTF-16LE form, which
NTLM needs and which is password-equivalent too, NULL for accounts whose password was
set before it was kept: :meth:`SqliteDirectory.open` adds the column to an older file
in place; the address-book details ``title``, ``department``, ``office``, ``phone``,
``company``, NULL when not set, and ``hidden`` (1: hidden from the address book), also
added in place to an older file) and ``secrets`` (the server secret used for decoy
salts).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mapi.storage.db import connect

DDL: Final = """
CREATE TABLE IF NOT EXISTS users (
    user_id      TEXT PRIMARY KEY,
    username     TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    email        TEXT NOT NULL,
    salt         BLOB NOT NULL,
    kdf_n        INTEGER NOT NULL,
    kdf_r        INTEGER NOT NULL,
    kdf_p        INTEGER NOT NULL,
    verifier     BLOB NOT NULL,
    mailbox      TEXT NOT NULL UNIQUE,
    created      INTEGER NOT NULL,
    disabled     INTEGER NOT NULL DEFAULT 0,
    nt_hash      BLOB,
    title        TEXT,
    department   TEXT,
    office       TEXT,
    phone        TEXT,
    company      TEXT,
    hidden       INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
"""
#: The address-book details (nullable text), in the order of :class:`UserRecord`.
DETAIL_COLUMNS: Final = ("title", "department", "office", "phone", "company")
#: Columns added after the first release, each with its definition (added in place).
_LATER_COLUMNS: Final = (
    ("nt_hash", "BLOB"),
    *((name, "TEXT") for name in DETAIL_COLUMNS),
    ("hidden", "INTEGER NOT NULL DEFAULT 0"),
)
_SELECT: Final = (
    "user_id, username, display_name, email, mailbox, created, disabled, "
    + ", ".join(DETAIL_COLUMNS)
    + ", hidden"
)


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A directory entry without its credentials."""

    user_id: str
    username: str
    display_name: str
    email: str
    mailbox: str
    created: int
    disabled: bool
    title: str | None = None
    department: str | None = None
    office: str | None = None
    phone: str | None = None
    company: str | None = None
    #: Hidden from the address book (the GAL and its searches leave it out).
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class StoredVerifier:
    """A user's stored credential as the directory keeps it: the scrypt salt, its
    parameters (N, r, p) and the verifier key K (password-equivalent)."""

    salt: bytes
    n: int
    r: int
    p: int
    key: bytes


def _record(row: tuple[object, ...] | None) -> UserRecord | None:
    if row is None:
        return None
    uid, username, display, email, mailbox, created, disabled = row[:7]
    title, department, office, phone, company = (None if v is None else str(v) for v in row[7:12])
    return UserRecord(
        str(uid), str(username), str(display), str(email), str(mailbox),
        int(created), bool(disabled),  # type: ignore[call-overload]
        title, department, office, phone, company, bool(row[12]),
    )  # fmt: skip


class SqliteDirectory:
    """The SQLite implementation of the directory's rows (stateless)."""

    __slots__ = ()

    def open(self, path: Path) -> sqlite3.Connection:
        """Open (creating) the directory database at ``path``: its tables and, on first
        use, a random server secret. Returns the handle the other methods take."""
        conn = connect(path)
        conn.executescript(DDL)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
        for name, definition in _LATER_COLUMNS:  # an older directory: upgraded in place
            if name not in columns:
                conn.execute(f"ALTER TABLE users ADD COLUMN {name} {definition}")
        conn.execute(
            "INSERT OR IGNORE INTO secrets(name, value) VALUES ('server_secret', ?)",
            (os.urandom(32),),
        )
        return conn

    def server_secret(self, conn: sqlite3.Connection) -> bytes:
        """The server secret (made by :meth:`open`)."""
        row = conn.execute("SELECT value FROM secrets WHERE name = 'server_secret'").fetchone()
        value: bytes = row[0]
        return value

    def add_user(
        self,
        conn: sqlite3.Connection,
        user: UserRecord,
        verifier: StoredVerifier,
        nt_hash: bytes | None = None,
    ) -> bool:
        """Add an account (its ``disabled`` flag is not stored: new accounts are enabled);
        False when its login name (or id, or mailbox file) is taken."""
        try:
            conn.execute(
                "INSERT INTO users(user_id, username, display_name, email, salt, kdf_n,"
                " kdf_r, kdf_p, verifier, mailbox, created, nt_hash, title, department,"
                " office, phone, company, hidden)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (user.user_id, user.username, user.display_name, user.email, verifier.salt,
                 verifier.n, verifier.r, verifier.p, verifier.key, user.mailbox,
                 user.created, nt_hash, user.title, user.department, user.office,
                 user.phone, user.company, int(user.hidden)),
            )  # fmt: skip
        except sqlite3.IntegrityError:
            return False
        return True

    def set_verifier(
        self,
        conn: sqlite3.Connection,
        username: str,
        verifier: StoredVerifier,
        nt_hash: bytes | None = None,
    ) -> bool:
        """Replace the credentials of login name ``username`` (the verifier and the NT
        hash, both of the same password); False: no such user."""
        cur = conn.execute(
            "UPDATE users SET salt = ?, kdf_n = ?, kdf_r = ?, kdf_p = ?, verifier = ?,"
            " nt_hash = ? WHERE username = ?",
            (verifier.salt, verifier.n, verifier.r, verifier.p, verifier.key, nt_hash,
             username),
        )  # fmt: skip
        return cur.rowcount == 1

    def set_nt_hash(self, conn: sqlite3.Connection, username: str, nt_hash: bytes) -> bool:
        """Store the NT hash of ``username``'s current password (the migration of an
        account made before NTLM); False: no such user."""
        cur = conn.execute("UPDATE users SET nt_hash = ? WHERE username = ?", (nt_hash, username))
        return cur.rowcount == 1

    def data_version(self, conn: sqlite3.Connection) -> int:
        """A number that changes when another connection (another process) committed."""
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def nt_hashes(self, conn: sqlite3.Connection) -> dict[str, bytes | None]:
        """The NT hash of every enabled login name (None: not kept yet)."""
        rows = conn.execute("SELECT username, nt_hash FROM users WHERE disabled = 0")
        return {str(name): (bytes(nt) if nt is not None else None) for name, nt in rows}

    def set_details(
        self, conn: sqlite3.Connection, username: str, changes: dict[str, object]
    ) -> bool:
        """Set some of ``display_name``, ``email``, the :data:`DETAIL_COLUMNS` (None:
        cleared) and ``hidden`` of login name ``username``; False: no such user.

        Raises:
            ValueError: a key that is not one of those columns.
        """
        allowed = {"display_name", "email", "hidden", *DETAIL_COLUMNS}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not a user detail: {sorted(unknown)}")
        if not changes:
            return self.user_by_name(conn, username) is not None
        names = sorted(changes)  # only names from the allowed set reach the statement
        assignments = ", ".join(f"{name} = ?" for name in names)
        values = [int(bool(changes[n])) if n == "hidden" else changes[n] for n in names]
        cur = conn.execute(
            f"UPDATE users SET {assignments} WHERE username = ?", (*values, username)
        )
        return cur.rowcount == 1

    def set_disabled(self, conn: sqlite3.Connection, username: str, disabled: bool) -> bool:
        """Disable or enable login name ``username``; False: no such user."""
        cur = conn.execute(
            "UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username)
        )
        return cur.rowcount == 1

    def delete_user(self, conn: sqlite3.Connection, user_id: str) -> None:
        """Remove the account ``user_id`` (nothing when there is none)."""
        conn.execute("DELETE FROM users WHERE user_id = ?", (user_id,))

    def user_by_name(self, conn: sqlite3.Connection, username: str) -> UserRecord | None:
        """The account of a (normalised) login name."""
        row = conn.execute(f"SELECT {_SELECT} FROM users WHERE username = ?", (username,))
        return _record(row.fetchone())

    def user_by_id(self, conn: sqlite3.Connection, user_id: str) -> UserRecord | None:
        """The account of a user id."""
        row = conn.execute(f"SELECT {_SELECT} FROM users WHERE user_id = ?", (user_id,))
        return _record(row.fetchone())

    def user_by_email(self, conn: sqlite3.Connection, address: str) -> UserRecord | None:
        """The account whose e-mail address is ``address``, compared case-insensitively
        (the first by login name, should two share one)."""
        row = conn.execute(
            f"SELECT {_SELECT} FROM users WHERE email <> '' AND lower(email) = lower(?)"
            " ORDER BY username LIMIT 1",
            (address,),
        )
        return _record(row.fetchone())

    def users(self, conn: sqlite3.Connection) -> list[UserRecord]:
        """Every account, sorted by login name."""
        rows = conn.execute(f"SELECT {_SELECT} FROM users ORDER BY username").fetchall()
        return [record for record in map(_record, rows) if record is not None]

    def enabled_verifier(self, conn: sqlite3.Connection, username: str) -> StoredVerifier | None:
        """The credential of an enabled login name (None: unknown or disabled)."""
        row = conn.execute(
            "SELECT salt, kdf_n, kdf_r, kdf_p, verifier FROM users"
            " WHERE username = ? AND disabled = 0",
            (username,),
        ).fetchone()
        if row is None:
            return None
        return StoredVerifier(row[0], row[1], row[2], row[3], row[4])

    def close(self, conn: sqlite3.Connection) -> None:
        """Close the directory database."""
        conn.close()
