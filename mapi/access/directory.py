"""The user directory: accounts, password verifiers, mailbox locations.

Theory of operation
-------------------
One database of its own (``directory.sqlite3``, mode 0600, durable at each change;
the SQLite backend's rows and their table definitions are
:mod:`mapi.storage.directory`) holds the accounts: a stable random user id (used in
ACLs, so a re-created account with the same name inherits nothing), the login name
(lower case, checked against :data:`USERNAME_RE`), display name, e-mail address, the
scrypt salt and parameters, the verifier key K of :mod:`mapi.access.logon`
(password-equivalent: never exported), the NT hash NTLM needs (MD4 of the password,
password-equivalent as well, and weaker: never exported, never logged; NULL for
accounts whose password predates NTLM, filled at the next password change or at the
next tunnel Basic logon, :meth:`Directory.fill_nt_hash`), the mailbox file name, a
disabled flag, the address-book details (title, department, office, phone, company:
None when not set; :meth:`Directory.update_user` changes them) and a hidden-from-the-
address-book flag; and the server secret used for decoy salts. The address book
(:mod:`mapi.addressbook`) reads every account through :meth:`Directory.list_users` and
asks :meth:`Directory.version` whether to read again.

NT hashes are also kept in memory (:meth:`Directory.cached_nt_hash`): the DCE/RPC
runtime asks for one on the event loop while it handles a bind, where SQLite must
not run. The copy is loaded when the directory opens and replaced under the lock by
every change made through this object (password set, user added, disabled, deleted),
so it is never staler than the file as this process changed it; a change another
process made (``adduser`` on the files) is picked up by :meth:`Directory.refresh_nt_hashes`.
These are the functions the CLI calls for ``adduser``, ``passwd``, ``deluser`` and
``list users``.

Threading: one connection guarded by one lock, like a mailbox
(:mod:`mapi.storage.db`); every call of the storage object runs under that lock.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dcerpc.ntlm_crypto import nt_hash
from mapi.access.logon import SALT_BYTES, KdfParams, derive_key, normalise_password
from mapi.model import errors
from mapi.storage.api import Txn
from mapi.storage.directory import DETAIL_COLUMNS, SqliteDirectory, StoredVerifier, UserRecord

USERNAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class Verifier:
    """The stored credential of a user (K is password-equivalent)."""

    salt: bytes
    params: KdfParams
    key: bytes

    def stored(self) -> StoredVerifier:
        """As the directory's storage keeps it."""
        return StoredVerifier(self.salt, self.params.n, self.params.r, self.params.p, self.key)


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


def _nt_hash_of(password: str) -> bytes:
    """NTOWFv1 of ``password`` (checked as the verifier's is; not NFKC-normalised:
    NTLM clients hash the password as typed)."""
    normalise_password(password)  # the same checks: a str, not empty, not too long
    try:
        return nt_hash(password)
    except UnicodeEncodeError:  # a lone surrogate: no UTF-16 form
        raise errors.InvalidParameter("bad password") from None


def _text(value: object, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise errors.InvalidParameter(f"bad {what}")
    return value


#: The details :meth:`Directory.update_user` changes besides ``hidden``.
DETAILS: Final = ("display_name", "email", *DETAIL_COLUMNS)


def _details(changes: dict[str, object]) -> dict[str, object]:
    """Checked details: text fields (an empty optional one is cleared: None), ``hidden``."""
    out: dict[str, object] = {}
    for key, value in changes.items():
        if key == "hidden":
            if not isinstance(value, bool):
                raise errors.InvalidParameter("hidden must be a bool")
            out[key] = value
        elif key in DETAILS:
            text = _text(value, key.replace("_", " ")).strip()
            if key == "display_name" and not text:
                raise errors.InvalidParameter("the display name cannot be empty")
            out[key] = text if text or key in ("display_name", "email") else None
        else:
            raise errors.InvalidParameter(f"not a user detail: {key!r}")
    return out


class Directory:
    """The user directory database."""

    def __init__(self, path: Path, *, kdf: KdfParams, clock: Callable[[], int]) -> None:
        self._kdf = kdf.check()
        self._clock = clock
        self._lock = threading.RLock()
        self._rows = SqliteDirectory()
        with self._lock:
            #: The storage's handle on the directory database (opaque here).
            self._conn: Txn = self._rows.open(path)
            self.server_secret: bytes = self._rows.server_secret(self._conn)
            #: Enabled login name -> NT hash (None: not kept yet); replaced, never
            #: changed in place, so the event loop reads it without the lock.
            self._nt_hashes: dict[str, bytes | None] = self._rows.nt_hashes(self._conn)
            self._data_version = self._rows.data_version(self._conn)
            self._changes = 0

    def version(self) -> tuple[int, int]:
        """Changes so far: the file's data version (commits by other processes) and this
        object's own count of changes; equal pairs mean nothing changed. Blocks."""
        with self._lock:
            return self._rows.data_version(self._conn), self._changes

    def refresh_nt_hashes(self) -> bool:
        """Reload the in-memory NT hashes if another process changed the file (an
        ``adduser`` on the files while the server runs); True when it did. Blocks: call
        it from a worker thread."""
        with self._lock:
            version = self._rows.data_version(self._conn)
            if version == self._data_version:
                return False
            self._data_version = version
            self._reload_nt_hashes()
            return True

    def _reload_nt_hashes(self) -> None:
        """Called under the lock after a change of accounts or credentials."""
        self._changes += 1
        self._nt_hashes = self._rows.nt_hashes(self._conn)

    def cached_nt_hash(self, username: str) -> tuple[bool, bytes | None]:
        """From memory, never blocking: ``(known, hash)``: whether ``username`` is an
        enabled user, and its NT hash (None: unknown, disabled, or not kept yet)."""
        table = self._nt_hashes
        if username not in table:
            return False, None
        return True, table[username]

    def fill_nt_hash(self, username: str, password: str) -> bool:
        """Keep the NT hash of a password just verified (the migration of an account
        whose password predates NTLM: a tunnel Basic logon); True when it was missing.

        Raises:
            InvalidParameter: a bad name or password.
        """
        name = normalise_username(username)
        if self._nt_hashes.get(name, b"") is not None:
            return False  # unknown, disabled, or already kept
        digest = _nt_hash_of(password)
        with self._lock:
            self._rows.set_nt_hash(self._conn, name, digest)
            self._reload_nt_hashes()
        return True

    @property
    def kdf(self) -> KdfParams:
        return self._kdf

    def _found(self, record: UserRecord | None, name: str) -> UserRecord:
        if record is None:
            raise errors.NotFound(f"no user {name!r}")
        return record

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
        **details: object,
    ) -> UserRecord:
        """Create an account; ``details``: ``title``, ``department``, ``office``,
        ``phone``, ``company`` (text) and ``hidden`` (bool), as :meth:`update_user`.

        Raises:
            InvalidParameter: bad name, password or fields. Collision: name taken.
        """
        name = normalise_username(username)
        display = _text(display_name if display_name is not None else name, "display name")
        mail = _text(email if email is not None else "", "email")
        extra = _details({k: v for k, v in details.items() if v is not None})
        if set(extra) & {"display_name", "email"}:
            raise errors.InvalidParameter("display_name and email are arguments of their own")
        verifier = self._new_verifier(password)
        user_id = uuid.uuid4().hex
        user = UserRecord(
            user_id, name, display, mail, f"{user_id}.sqlite3", self._clock(), disabled=False,
            **extra,  # type: ignore[arg-type]
        )  # fmt: skip
        with self._lock:
            if not self._rows.add_user(self._conn, user, verifier.stored(), _nt_hash_of(password)):
                raise errors.Collision(f"user {name!r} exists")
            self._reload_nt_hashes()
        return self.get_user(name)

    def set_password(self, username: str, password: str) -> None:
        """Replace a user's password (new salt, current KDF parameters).

        Raises:
            NotFound: no such user.
        """
        name = normalise_username(username)
        verifier = self._new_verifier(password)
        with self._lock:
            if not self._rows.set_verifier(
                self._conn, name, verifier.stored(), _nt_hash_of(password)
            ):
                raise errors.NotFound(f"no user {name!r}")
            self._reload_nt_hashes()

    def update_user(self, username: str, **changes: object) -> UserRecord:
        """Change the address-book details of a user: ``display_name``, ``email``,
        ``title``, ``department``, ``office``, ``phone``, ``company`` (text; an empty
        optional one is cleared) and ``hidden`` (bool). Returns the new record.

        Raises:
            NotFound: no such user. InvalidParameter: a bad name or value.
        """
        name = normalise_username(username)
        checked = _details(changes)
        with self._lock:
            if not self._rows.set_details(self._conn, name, checked):
                raise errors.NotFound(f"no user {name!r}")
            self._changes += 1
        return self.get_user(name)

    def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable or enable logons of a user."""
        name = normalise_username(username)
        with self._lock:
            if not self._rows.set_disabled(self._conn, name, disabled):
                raise errors.NotFound(f"no user {name!r}")
            self._reload_nt_hashes()

    def delete_user(self, username: str) -> UserRecord:
        """Remove an account; return its record (the caller removes the mailbox)."""
        record = self.get_user(username)
        with self._lock:
            self._rows.delete_user(self._conn, record.user_id)
            self._reload_nt_hashes()
        return record

    def get_user(self, username: str) -> UserRecord:
        """The record of a login name.

        Raises:
            NotFound: no such user. InvalidParameter: not a valid name.
        """
        name = normalise_username(username)
        with self._lock:
            record = self._rows.user_by_name(self._conn, name)
        return self._found(record, name)

    def get_user_by_id(self, user_id: str) -> UserRecord:
        """The record of a user id."""
        with self._lock:
            record = self._rows.user_by_id(self._conn, user_id)
        return self._found(record, user_id)

    def find_by_address(self, address: str) -> UserRecord | None:
        """The user whose e-mail address (case-insensitive) or login name is ``address``."""
        if not isinstance(address, str) or not address.strip():
            return None
        text = address.strip()
        with self._lock:
            record = self._rows.user_by_email(self._conn, text)
        if record is not None:
            return record
        try:
            return self.get_user(text)
        except errors.MapiError:
            return None

    def list_users(self) -> list[UserRecord]:
        """Every account, sorted by login name."""
        with self._lock:
            return self._rows.users(self._conn)

    def verifier(self, username: str) -> Verifier | None:
        """The credential of an enabled user, or None (unknown, invalid or disabled)."""
        try:
            name = normalise_username(username)
        except errors.InvalidParameter:
            return None
        with self._lock:
            stored = self._rows.enabled_verifier(self._conn, name)
        if stored is None:
            return None
        return Verifier(stored.salt, KdfParams(stored.n, stored.r, stored.p), stored.key)

    def close(self) -> None:
        with self._lock:
            self._rows.close(self._conn)


__all__ = ["DETAILS", "USERNAME_RE", "Directory", "UserRecord", "Verifier", "normalise_username"]
