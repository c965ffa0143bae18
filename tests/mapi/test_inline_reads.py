"""Every read-only operation, run under the inline guard against a storage that raises.

The service answers batches of :data:`mapi.rpc.ops.READ_ONLY` operations on the event loop
under :func:`mapi.storage.guard.inline` (see :mod:`mapi.storage.guard`). That is safe only while
every path those operations take to SQLite goes through the guard, which turns it into
:class:`~mapi.storage.guard.NeedsWorker`. Here the mailbox's and the directory's connections
are replaced by objects that raise on any use: an operation may answer from memory or
raise NeedsWorker, and a new path that reaches storage without the guard (a blocking
call on the event loop) fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mapi.model import proptags as pt
from mapi.rpc import ops
from mapi.storage import guard as inline
from mapi.store import ObjectStore

PS_PUBLIC_STRINGS = bytes.fromhex("2908020000000000c000000000000046")
STORE, FOLDER, MESSAGE, ATTACHMENT = 1, 2, 5, 6
CONTENTS, HIERARCHY, RECIPIENTS, ATTACHMENTS = 7, 8, 9, 10
OBJECTS = {"store": STORE, "folder": FOLDER, "message": MESSAGE, "attachment": ATTACHMENT}
TABLES = {
    "contents": CONTENTS,
    "hierarchy": HIERARCHY,
    "recipients": RECIPIENTS,
    "attachments": ATTACHMENTS,
}


def _failed(hresult: int) -> bool:
    """An error, not success or a warning (MAPI_W_ERRORS_RETURNED for a missing prop)."""
    return bool(hresult & 0x80000000)


class StorageReached(BaseException):  # not an Exception: no store code may swallow it
    """Storage was used without passing through the inline guard."""


class RaisingConnection:
    """Stands in for a SQLite connection: any use raises :class:`StorageReached`."""

    def __getattr__(self, name: str) -> Any:
        raise StorageReached(f"connection.{name} used under the inline guard")


def _ok(ctx: ops.Context, batch: list[list[Any]]) -> list[Any]:
    results = ops.run_batch(ctx, batch)
    assert not any(_failed(hresult) for hresult, _ in results), results
    return [value for _, value in results]


def _context(store: ObjectStore) -> tuple[ops.Context, int]:
    """alice's session with every kind of object a read-only operation applies to open,
    and a named property id."""
    session = store.logon_with_password("alice", "alice-pw")
    ctx = ops.Context(session, ops.HandleTable(), store.limits, b"s" * 16)
    _, inbox = _ok(
        ctx, [["open_store", {"out": STORE}], ["special_folder", {"h": STORE, "role": "inbox"}]]
    )
    recipient = [
        [pt.PR_DISPLAY_NAME_W, "Bob"],
        [pt.PR_EMAIL_ADDRESS_W, "bob@example.org"],
        [pt.PR_ADDRTYPE_W, "SMTP"],
        [pt.PR_RECIPIENT_TYPE, pt.MAPI_TO],
    ]
    written = _ok(
        ctx,
        [
            ["open_folder", {"h": STORE, "eid": inbox, "out": FOLDER}],
            [
                "get_ids_from_names",
                {"h": STORE, "names": [[PS_PUBLIC_STRINGS, 1, "x"]], "create": True},
            ],
            ["create_message", {"h": FOLDER, "out": 3}],
            ["set_props", {"h": 3, "props": [[pt.PR_SUBJECT_W, "hello"]]}],
            ["modify_recipients", {"h": 3, "rows": [recipient], "flags": 2}],
            ["create_attach", {"h": 3, "out": 4}],
            ["set_props", {"h": 4, "props": [[pt.PR_ATTACH_FILENAME_W, "a.txt"]]}],
            ["save_changes", {"h": 4, "flags": 2}],
            ["save_changes", {"h": 3, "flags": 2}],
        ],
    )
    named_id, entry_id = written[1][0], written[-1]
    _ok(
        ctx,
        [
            ["release", {"handles": [3, 4]}],
            ["open_message", {"h": STORE, "eid": entry_id, "out": MESSAGE}],
            ["open_attach", {"h": MESSAGE, "num": 0, "out": ATTACHMENT}],
            ["contents_table", {"h": FOLDER, "out": CONTENTS}],
            ["hierarchy_table", {"h": FOLDER, "out": HIERARCHY}],
            ["recipient_table", {"h": MESSAGE, "out": RECIPIENTS}],
            ["attachment_table", {"h": MESSAGE, "out": ATTACHMENTS}],
        ],
    )
    return ctx, int(named_id)


def _read_only_batches(named_id: int) -> Iterator[tuple[str, list[Any]]]:
    """One batch per read-only operation and object it applies to."""
    for handle in OBJECTS.values():
        yield "get_props", ["get_props", {"h": handle, "tags": None}]
        yield "get_props", ["get_props", {"h": handle, "tags": [pt.PR_DISPLAY_NAME_W]}]
        yield "get_prop_list", ["get_prop_list", {"h": handle}]
    yield (
        "get_props",
        ["get_props", {"h": MESSAGE, "tags": [pt.PR_MESSAGE_SIZE, pt.PR_DISPLAY_TO_W]}],
    )
    yield "get_names_from_ids", ["get_names_from_ids", {"h": STORE, "ids": [named_id, 0x8FFF]}]
    for handle in TABLES.values():
        yield "query_position", ["query_position", {"h": handle}]
        yield "get_row_count", ["get_row_count", {"h": handle}]


def test_every_read_only_operation_is_covered() -> None:
    assert {name for name, _ in _read_only_batches(0x8000)} == ops.READ_ONLY


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_read_only_operations_reach_storage_only_through_the_guard(
    store: ObjectStore, warm: bool
) -> None:
    ctx, named_id = _context(store)
    batches = list(_read_only_batches(named_id))
    if warm:  # run each once as a worker would: what can be cached is now in memory
        for _, batch in batches:
            _ok(ctx, [batch])
    db = ctx.session.open_store().context.db
    real = db._conn, store.directory._conn
    db._conn = store.directory._conn = RaisingConnection()  # type: ignore[assignment]
    answered = 0
    try:
        for _, batch in batches:
            try:
                with inline.inline():
                    results = ops.run_batch(ctx, [batch])
            except inline.NeedsWorker:
                continue  # the guard sent it to a worker: correct
            assert not _failed(results[0][0]), (batch, results)
            answered += 1
    finally:
        db._conn, store.directory._conn = real  # type: ignore[assignment]
    if warm:
        assert answered > 0  # the fast path still answers something from memory
