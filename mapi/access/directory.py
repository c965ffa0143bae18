"""The user directory: accounts, password verifiers, mailbox locations.

Theory of operation
-------------------
One SQLite database (``directory.sqlite3``, mode 0600, WAL, ``synchronous=FULL``)
with a ``users`` table: a stable random user id (used in ACLs, so a re-created
account with the same name inherits nothing), the login name (lower case, checked
against :data:`USERNAME_RE`), display name, e-mail address, the scrypt salt and
parameters, the verifier key K of :mod:`mapi.access.logon` (password-equivalent: never
exported), the mailbox file name and a disabled flag. A ``secrets`` table holds the
server secret used for decoy salts. These are the functions the CLI calls for
``adduser``, ``passwd``, ``deluser`` and ``list users``.

Threading: one connection guarded by one lock, like a mailbox
(:mod:`mapi.storage.db`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mapi.access.logon import SALT_BYTES, KdfParams, derive_key
from mapi.model import errors
from mapi.storage.db import connect

USERNAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DDL: Final = """
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
    disabled     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
"""
_SELECT: Final = "user_id, username, display_name, email, mailbox, created, disabled"


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


@dataclass(frozen=True, slots=True)
class Verifier:
    """The stored credential of a user (K is password-equivalent)."""

    salt: bytes
    params: KdfParams
    key: bytes


def normalise_username(username: object) -> str:
    """Lower-case and check a login name.

    Raises:
        InvalidParameter: not a valid name.
    """
    if not isinstance(username, str):
        raise errors.InvalidParameter("username must be a str")
    name = username.strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise errors.InvalidParameter(f"invalid username {username!r}")
    return name


def _text(value: object, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise errors.InvalidParameter(f"bad {what}")
    return value


class Directory:
    """The user directory database."""

    def __init__(self, path: Path, *, kdf: KdfParams, clock: Callable[[], int]) -> None:
        self._kdf = kdf.check()
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = connect(path)
        with self._lock:
            self._conn.executescript(_DDL)
            self._conn.execute(
                "INSERT OR IGNORE INTO secrets(name, value) VALUES ('server_secret', ?)",
                (os.urandom(32),),
            )
            row = self._conn.execute(
                "SELECT value FROM secrets WHERE name = 'server_secret'"
            ).fetchone()
        self.server_secret: bytes = row[0]

    @property
    def kdf(self) -> KdfParams:
        return self._kdf

    def _record(self, row: tuple[object, ...] | None, name: str) -> UserRecord:
        if row is None:
            raise errors.NotFound(f"no user {name!r}")
        uid, username, display, email, mailbox, created, disabled = row
        return UserRecord(
            str(uid), str(username), str(display), str(email), str(mailbox),
            int(created), bool(disabled),  # type: ignore[call-overload]
        )  # fmt: skip

    def _new_verifier(self, password: str) -> Verifier:
        salt = os.urandom(SALT_BYTES)
        return Verifier(salt, self._kdf, derive_key(password, salt, self._kdf))

    def add_user(
        self,
        username: str,
        password: str,
        *,
        display_name: str | None = None,
        email: str | None = None,
    ) -> UserRecord:
        """Create an account.

        Raises:
            InvalidParameter: bad name, password or fields. Collision: name taken.
        """
        name = normalise_username(username)
        display = _text(display_name if display_name is not None else name, "display name")
        mail = _text(email if email is not None else "", "email")
        verifier = self._new_verifier(password)
        user_id = uuid.uuid4().hex
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO users(user_id, username, display_name, email, salt, kdf_n,"
                    " kdf_r, kdf_p, verifier, mailbox, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (user_id, name, display, mail, verifier.salt, verifier.params.n,
                     verifier.params.r, verifier.params.p, verifier.key,
                     f"{user_id}.sqlite3", self._clock()),
                )  # fmt: skip
            except sqlite3.IntegrityError:
                raise errors.Collision(f"user {name!r} exists") from None
        return self.get_user(name)

    def set_password(self, username: str, password: str) -> None:
        """Replace a user's password (new salt, current KDF parameters).

        Raises:
            NotFound: no such user.
        """
        name = normalise_username(username)
        verifier = self._new_verifier(password)
        with self._lock:
            cur = self._conn.execute(
                "UPDATE users SET salt = ?, kdf_n = ?, kdf_r = ?, kdf_p = ?, verifier = ?"
                " WHERE username = ?",
                (verifier.salt, verifier.params.n, verifier.params.r, verifier.params.p,
                 verifier.key, name),
            )  # fmt: skip
            if cur.rowcount != 1:
                raise errors.NotFound(f"no user {name!r}")

    def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable or enable logons of a user."""
        name = normalise_username(username)
        with self._lock:
            cur = self._conn.execute(
                "UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), name)
            )
            if cur.rowcount != 1:
                raise errors.NotFound(f"no user {name!r}")

    def delete_user(self, username: str) -> UserRecord:
        """Remove an account; return its record (the caller removes the mailbox)."""
        record = self.get_user(username)
        with self._lock:
            self._conn.execute("DELETE FROM users WHERE user_id = ?", (record.user_id,))
        return record

    def get_user(self, username: str) -> UserRecord:
        """The record of a login name.

        Raises:
            NotFound: no such user. InvalidParameter: not a valid name.
        """
        name = normalise_username(username)
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_SELECT} FROM users WHERE username = ?", (name,)
            ).fetchone()
        return self._record(row, name)

    def get_user_by_id(self, user_id: str) -> UserRecord:
        """The record of a user id."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_SELECT} FROM users WHERE user_id = ?", (user_id,)
            ).fetchone()
        return self._record(row, user_id)

    def find_by_address(self, address: str) -> UserRecord | None:
        """The user whose e-mail address (case-insensitive) or login name is ``address``."""
        if not isinstance(address, str) or not address.strip():
            return None
        text = address.strip()
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_SELECT} FROM users WHERE email <> '' AND lower(email) = lower(?)"
                " ORDER BY username LIMIT 1",
                (text,),
            ).fetchone()
        if row is not None:
            return self._record(row, text)
        try:
            return self.get_user(text)
        except errors.MapiError:
            return None

    def list_users(self) -> list[UserRecord]:
        """Every account, sorted by login name."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_SELECT} FROM users ORDER BY username").fetchall()
        return [self._record(row, "") for row in rows]

    def verifier(self, username: str) -> Verifier | None:
        """The credential of an enabled user, or None (unknown, invalid or disabled)."""
        try:
            name = normalise_username(username)
        except errors.InvalidParameter:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT salt, kdf_n, kdf_r, kdf_p, verifier FROM users"
                " WHERE username = ? AND disabled = 0",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return Verifier(row[0], KdfParams(row[1], row[2], row[3]), row[4])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
