"""Work budgets in the store core: a spent budget stops the work with a MAPI error and
never leaves a transaction open (review finding: SQLite's progress handler used to
interrupt COMMIT and ROLLBACK themselves, about once in 6,700 transactions, leaving the
mailbox's read snapshot or write lock open for good)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mapi.budget import WorkBudget, applied
from mapi.model import errors
from mapi.model.limits import DEFAULT_LIMITS
from mapi.storage.db import SQLITE_PROGRESS_STEPS, MailboxDB

#: More transactions than it took to hit an interrupted COMMIT or ROLLBACK.
ROUNDS = SQLITE_PROGRESS_STEPS


def open_db(tmp_path: Path) -> MailboxDB:
    return MailboxDB(tmp_path / "m.sqlite3", limits=DEFAULT_LIMITS, clock=lambda: 0)


def test_reads_ended_by_a_spent_budget_never_leave_a_snapshot_open(tmp_path: Path):
    db = open_db(tmp_path)
    try:
        for _ in range(ROUNDS):
            work = WorkBudget(30, time.monotonic)
            with pytest.raises(errors.UserCancel), applied(work), db.reading() as conn:
                conn.execute("SELECT 1").fetchone()
                work.cancel()  # the client hung up mid-read
                work.check()
            assert not db.conn.in_transaction
        with db.transaction() as conn:  # the mailbox works on
            conn.execute("SELECT 1")
    finally:
        db.close()


def test_writes_ended_by_a_spent_budget_roll_back_and_release_the_lock(tmp_path: Path):
    db = open_db(tmp_path)
    other = sqlite3.connect(tmp_path / "m.sqlite3", timeout=0.1)
    try:
        for _ in range(ROUNDS):
            work = WorkBudget(30, time.monotonic)
            with pytest.raises(errors.Timeout), applied(work), db.transaction() as conn:
                conn.execute("UPDATE meta SET value = value WHERE key = 'change_num'")
                work.deadline = 0.0  # out of time
                work.check()
            assert not db.conn.in_transaction
        other.execute("BEGIN IMMEDIATE")  # nobody holds the write lock
        other.execute("ROLLBACK")
    finally:
        other.close()
        db.close()


def test_a_statement_past_the_budget_is_interrupted_with_the_budgets_error(tmp_path: Path):
    db = open_db(tmp_path)
    try:
        work = WorkBudget(30, time.monotonic)
        work.deadline = 0.0
        slow = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
            "SELECT max(i) FROM n"
        )  # endless without the progress handler
        with (
            pytest.raises(errors.Timeout, match="ran out of time"),
            applied(work),
            db.reading() as conn,
        ):
            conn.execute(slow).fetchone()
        assert not db.conn.in_transaction
    finally:
        db.close()


def test_opening_a_mailbox_is_never_cut_by_a_budget(tmp_path: Path):
    from mapi.store import ObjectStore

    store = ObjectStore(tmp_path / "data")
    try:
        user = store.add_user("alice", "pw")
        work = WorkBudget(30, time.monotonic)
        work.deadline = 0.0  # spent before the mailbox is even opened
        with applied(work):
            db = store.mailbox_db(user)
        with db.reading() as conn:
            assert conn.execute("SELECT count(*) FROM folders").fetchone()[0] > 0
    finally:
        store.close()
