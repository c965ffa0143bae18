"""One mailbox database: connection, lock, transactions, counters.

Theory of operation
-------------------
A :class:`MailboxDB` owns one ``sqlite3`` connection to one mailbox file and one
re-entrant lock. **Threading contract:** every method of every store object that
touches a mailbox (folders, messages, attachments, streams, tables) takes that
mailbox's lock for the whole call, so a mailbox is used by one thread at a time and
the connection (opened with ``check_same_thread=False``) is never shared
concurrently; different mailboxes proceed in parallel. The RPC service may thus call
any store method from ``trio.to_thread.run_sync`` workers. A process holds one
:class:`MailboxDB` per mailbox file (the :class:`~mapi.store.ObjectStore` keeps the
registry); other processes may open the same file: SQLite's WAL locking and the
busy timeout serialise writers.

**Durability (fsync policy):** WAL journal with ``synchronous=FULL``: SQLite fsyncs
the WAL at every commit, so a save that returned has reached the disk and survives
a crash or power loss. Each save is one ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction: either all of it is visible or none. The one exception are *staging*
transactions (``transaction(staging=True)``), which only write pending stream data
that no message holds yet (:mod:`mapi.storage.staging`): they commit with
``synchronous=NORMAL`` (no fsync of their own; the mode is set before every
transaction, so no other commit ever runs without FULL). Nothing was promised about
that data; the save that adopts it commits with FULL, and its fsync of the WAL covers
the staged frames written before it.

The ``meta`` table holds the provider UID, the schema version and the change-number
counter. :attr:`generation` counts the commits made through this object, so caches
(materialised tables) know when to recompute.

**After-commit hooks:** code inside a transaction may register
:meth:`MailboxDB.after_commit` callbacks (notifications, :mod:`mapi.notify.changes`); they run
once the outermost transaction has committed, still under the lock, and are
discarded on rollback, so nobody hears of a change that did not happen.
:attr:`txn_local` is a scratch dict that lives for one outermost transaction.

**Schema upgrades:** version 1 files (before tombstones) are upgraded in place by
running the additive :data:`~mapi.storage.schema.UPGRADE_1_TO_2` script, version 2
files (before shared chunk data) by :func:`~mapi.storage.schema.upgrade_2_to_3`,
version 3 files (before stream data in files) by
:func:`~mapi.storage.schema.upgrade_3_to_4`, version 4 files (before the Internet-mail
view) by :data:`~mapi.storage.schema.UPGRADE_4_TO_5`, version 5 files (before the
view's record of vanished uids) by :data:`~mapi.storage.schema.UPGRADE_5_TO_6`. Opening a
mailbox also releases the staging rows a previous process left
(:func:`mapi.storage.chunks.release_staging`) and removes stream data files nothing
refers to (:mod:`mapi.storage.blobs`).

**Stream data files:** the connection (a :class:`MailboxConnection`) knows the
mailbox's :class:`~mapi.storage.blobs.BlobDir`; after each write commit the files of
rows dropped by it are unlinked (:meth:`~mapi.storage.blobs.BlobDir.sweep`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapi import budget
from mapi.model import errors
from mapi.model.limits import Limits
from mapi.model.restrictions import content_match
from mapi.storage.acl import SqliteAcl
from mapi.storage.blobs import BlobDir
from mapi.storage.changes import SqliteChanges
from mapi.storage.chunks import release_staging
from mapi.storage.contents import SqliteContents
from mapi.storage.folders import SqliteFolders
from mapi.storage.guard import MailboxLock, may_block
from mapi.storage.mailview import SqliteMailView
from mapi.storage.messages import SqliteMessages
from mapi.storage.named import SqliteNamedProps
from mapi.storage.schema import (
    DDL,
    SCHEMA_VERSION,
    UPGRADE_1_TO_2,
    UPGRADE_4_TO_5,
    UPGRADE_5_TO_6,
    upgrade_2_to_3,
    upgrade_3_to_4,
)
from mapi.storage.staging import StagedData
from mapi.storage.staging import collect as collect_staged
from mapi.storage.sync import SqliteSync

if TYPE_CHECKING:  # the interface these objects implement (checked by mypy)
    from mapi.storage.api import (
        AclStorage,
        ChangeStorage,
        ContentsStorage,
        FolderStorage,
        MailViewStorage,
        MessageStorage,
        NamedPropStorage,
        SyncStorage,
    )

BUSY_TIMEOUT_MS = 10_000
#: Page size of new databases (existing ones keep theirs).
PAGE_SIZE = 16384
#: SQLite virtual-machine steps between two looks at the current work budget.
SQLITE_PROGRESS_STEPS = 20_000
#: Write-ahead log kept before a checkpoint copies it into the database file.
WAL_CHECKPOINT_BYTES = 64 << 20


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite keeps the mode
    for its -wal and -shm companions)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def blob_dir_of(path: Path) -> Path:
    """Where the stream data files of the mailbox file ``path`` live."""
    return path.with_name(path.name + ".blobs")


class MailboxConnection(sqlite3.Connection):
    """A mailbox's connection, which also knows the mailbox's stream data files."""

    blobs: BlobDir


def connect(path: Path) -> MailboxConnection:
    """Open ``path`` in autocommit mode with WAL, synchronous=FULL and foreign keys."""
    create_private_file(path)
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
        factory=MailboxConnection,
    )
    conn.blobs = BlobDir(blob_dir_of(path))
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Only a new, empty file takes it (and only before WAL is on). Attachment data lives
    # in 64 KiB chunk rows: on 16 KiB pages they cost a quarter of the overflow pages
    # of the 4 KiB default, and large uploads stage faster (docs/benchmarks.md).
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":  # pragma: no cover - file systems without WAL
        raise errors.CallFailed(f"cannot enable WAL on {path}")
    conn.execute("PRAGMA synchronous = FULL")
    # Checkpoints run inside the commit that crosses the threshold: every 16 MiB of log at
    # SQLite's default (1000 pages) they took a large share of staging a large
    # attachment. Every 64 MiB they cost fewer fsyncs for the same copying (staging is
    # faster: docs/benchmarks.md); the log file is cut back to that size after a
    # checkpoint.
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_BYTES // page_size}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_CHECKPOINT_BYTES}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.create_function("mapi_content", 3, _sql_content, deterministic=True)
    # A statement past the current work budget is interrupted (:mod:`mapi.budget`).
    watch_budget(conn)
    return conn


def _budget_spent() -> int:
    """SQLite's progress handler: non-zero interrupts the running statement."""
    work = budget.current()
    return int(work is not None and work.spent())


def watch_budget(conn: sqlite3.Connection) -> None:
    """Make ``conn``'s statements stop when the current work budget is spent."""
    conn.set_progress_handler(_budget_spent, SQLITE_PROGRESS_STEPS)


def _sql_content(value: object, pattern: object, fuzzy: object) -> int:
    """SQL ``mapi_content(value, pattern, fuzzy)``: the restriction content test."""
    if not isinstance(value, str | bytes) or not isinstance(pattern, str | bytes):
        return 0
    if not isinstance(fuzzy, int):
        return 0
    return int(content_match(value, pattern, fuzzy))


class MailboxDB:
    """The database of one mailbox. See the module docstring for the threading contract."""

    def __init__(self, path: Path, *, limits: Limits, clock: Callable[[], int]) -> None:
        self.path = path
        self.limits = limits
        self.clock = clock
        #: Never waited for on the event loop (see :mod:`mapi.storage.guard`).
        self.lock = MailboxLock()
        self.generation = 0
        self._depth = 0
        self._closed = False
        self._hooks: list[Callable[[], None]] = []
        #: Scratch space of the current outermost transaction (reset at its end).
        self.txn_local: dict[str, Any] = {}
        #: Staging rows whose stream data died, released by the next staging transaction
        #: (appended to by finalisers on any thread; see :mod:`mapi.storage.staging`).
        self.staged_garbage: list[int] = []
        self._staging = False
        self._synchronous = "FULL"  # what connect() set
        self._conn = connect(path)
        self.provider_uid = self._init_schema()
        # What the core asks of storage, by job (the interface: :mod:`mapi.storage.api`).
        self.folders: FolderStorage = SqliteFolders()
        self.messages: MessageStorage = SqliteMessages()
        self.contents: ContentsStorage = SqliteContents()
        self.sync: SyncStorage = SqliteSync()
        self.changes: ChangeStorage = SqliteChanges()
        self.acl: AclStorage = SqliteAcl()
        self.named: NamedPropStorage = SqliteNamedProps()
        self.mailview: MailViewStorage = SqliteMailView()

    @property
    def conn(self) -> MailboxConnection:
        """The SQLite connection (raises :class:`~mapi.storage.guard.NeedsWorker` on the event
        loop: SQLite runs in worker threads only)."""
        may_block()
        return self._conn

    def _init_schema(self) -> bytes:
        with self.lock:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self.conn.executescript(DDL)
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version in (1, 2, 3, 4, 5):
                if version == 1:
                    self.conn.executescript(UPGRADE_1_TO_2)
                    self.conn.execute("PRAGMA user_version = 2")
                if version <= 2:
                    upgrade_2_to_3(self.conn)
                if version <= 3:
                    upgrade_3_to_4(self.conn)
                if version <= 4:
                    self.conn.executescript(
                        f"BEGIN IMMEDIATE;\n{UPGRADE_4_TO_5}PRAGMA user_version = 5;\nCOMMIT;"
                    )
                self.conn.executescript(
                    f"BEGIN IMMEDIATE;\n{UPGRADE_5_TO_6}PRAGMA user_version = 6;\nCOMMIT;"
                )
            elif version != SCHEMA_VERSION:
                raise errors.Version(f"mailbox schema {version}, expected {SCHEMA_VERSION}")
            with self.transaction() as conn:
                release_staging(conn)
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('provider_uid', ?)",
                    (os.urandom(16),),
                )
                conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('change_num', 0)")
            self.conn.blobs.remove_orphans(self.conn)
            uid = self.conn.execute("SELECT value FROM meta WHERE key = 'provider_uid'").fetchone()
            if not isinstance(uid[0], bytes) or len(uid[0]) != 16:
                raise errors.CorruptStore("bad provider UID")
            return uid[0]

    @contextmanager
    def transaction(self, *, staging: bool = False) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the body in one write transaction (nested calls join).

        Commits on normal exit, rolls back on any exception. SQLite "database is
        locked" (another process kept the write lock past the busy timeout) becomes
        MAPI_E_BUSY; a full disk MAPI_E_NOT_ENOUGH_DISK (nothing of the transaction is
        kept); other SQLite errors become MAPI_E_CALL_FAILED.

        Args:
            staging: the body only writes pending stream data no message holds: commit
                without an fsync (see the fsync policy) and leave :attr:`generation`
                alone (nothing visible changed). A staging transaction may join any
                transaction, but nothing may join a staging one.
        """
        with self.lock:
            self._check_open()
            if self._depth:
                if self._staging and not staging:
                    raise errors.CallFailed("a durable write inside a staging transaction")
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            try:
                # Set before every transaction (it cannot change inside one), so a failed
                # staging transaction never leaves a later save without its fsync.
                mode = "NORMAL" if staging else "FULL"
                if self._synchronous != mode:
                    self._control(f"PRAGMA synchronous = {mode}")
                    self._synchronous = mode
                self._control("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _translate(exc) from exc
            self._depth = 1
            self._staging = staging
            try:
                self.conn.blobs.forget_swept(self.conn)
                yield self.conn
            except sqlite3.Error as exc:  # disk full or I/O error inside the body
                self._abort()
                raise _translate(exc) from exc
            except BaseException:
                self._abort()
                raise
            self._depth = 0
            self._staging = False
            try:
                self._control("COMMIT")
            except sqlite3.Error as exc:  # disk full, I/O error
                self._abort()
                raise _translate(exc) from exc
            if not staging:
                self.generation += 1
            with contextlib.suppress(sqlite3.Error, OSError):  # files are swept next time
                self.conn.blobs.sweep(self.conn)
            self._run_hooks()

    def _abort(self) -> None:
        """Roll the outermost transaction back (SQLite may already have done so)."""
        self._depth = 0
        self._staging = False
        self._hooks.clear()
        self.txn_local = {}
        # A failed COMMIT on a full disk has already rolled back; and if ROLLBACK fails,
        # the transaction is gone either way: the original error says why.
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._control("ROLLBACK")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the body in one read snapshot (joins a transaction)."""
        with self.lock:
            self._check_open()
            if self._depth:
                yield self.conn
                return
            try:
                self._control("BEGIN")
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
            self._depth = 1
            try:
                yield self.conn
            except sqlite3.Error as exc:  # interrupted (the budget), I/O errors
                raise _translate(exc) from exc
            finally:
                self._depth = 0
                if self.conn.in_transaction:
                    self._control("COMMIT")  # a read snapshot: ending it cannot fail
            self._run_hooks()

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after the current outermost transaction commits (not on rollback).

        Raises:
            CallFailed: called outside a transaction.
        """
        if not self._depth:
            raise errors.CallFailed("after_commit outside a transaction")
        self._hooks.append(hook)

    def _run_hooks(self) -> None:
        hooks, self._hooks = self._hooks, []
        self.txn_local = {}
        for hook in hooks:
            hook()

    def next_change_number(self, conn: sqlite3.Connection) -> int:
        """Allocate a change number (call inside :meth:`transaction`)."""
        return self.sync.next_change_number(conn)

    def pending_data(self, tag: int) -> StagedData:
        """New staged data for a stream written to value ``tag`` (:mod:`mapi.storage.staging`)."""
        return StagedData(self, self.limits.chunk_bytes, tag)

    def release_dead_data(self) -> None:
        """Release the staging rows of stream data that died
        (:func:`mapi.storage.staging.collect`)."""
        collect_staged(self)

    def _control(self, sql: str) -> None:
        """Run a transaction-control statement (BEGIN, COMMIT, ROLLBACK, PRAGMA) that
        the work budget must never interrupt: an interrupted COMMIT or ROLLBACK would
        leave the transaction, and the mailbox's write lock, open. The progress handler
        is off while it runs."""
        conn = self.conn  # NeedsWorker on the event loop, as every statement
        conn.set_progress_handler(None, 0)
        try:
            conn.execute(sql)
        finally:
            watch_budget(conn)

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InvalidObject("mailbox is closed")

    def close(self) -> None:
        """Close the connection (checkpointing the WAL). Idempotent."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.conn.blobs.close()
            self.conn.close()


def _translate(exc: sqlite3.Error) -> errors.MapiError:
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_INTERRUPT or text == "interrupted":
        return budget.interrupted_error()
    if code == sqlite3.SQLITE_FULL or "disk is full" in text:
        return errors.NotEnoughDisk("the data directory's disk is full")
    if "locked" in text or "busy" in text:
        return errors.Busy(text)
    return errors.CallFailed(text)
