"""The guard that lets the service answer reads on the event loop (mapi.storage.guard): under it,
nothing touches SQLite or waits for a mailbox lock; it raises NeedsWorker instead."""

from __future__ import annotations

import threading

import pytest

from mapi.model import proptags as pt
from mapi.storage import guard as inline
from mapi.store import MsgStore

TAGS = [pt.PR_SUBJECT_W, pt.PR_MESSAGE_SIZE, pt.PR_MESSAGE_FLAGS, pt.PR_DISPLAY_TO_W]


def saved_message(ms: MsgStore, body: str = "") -> bytes:
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    msg = inbox.create_message()
    props: list[tuple[int, object]] = [(pt.PR_SUBJECT_W, "hello")]
    if body:
        props.append((pt.PR_BODY_W, body))
    msg.set_props(props)
    msg.save_changes()
    assert msg.entry_id is not None
    return msg.entry_id


def test_sqlite_is_refused_under_the_guard(alice: MsgStore) -> None:
    msg = alice.open_message(saved_message(alice))
    with inline.inline(), pytest.raises(inline.NeedsWorker):
        msg.get_props(TAGS)  # the first read of PR_MESSAGE_SIZE needs the recipients
    expected = msg.get_props(TAGS)  # as a worker thread would run it
    with inline.inline():
        again = msg.get_props(TAGS)  # now from memory
    assert again == expected
    assert again.values[0].value == "hello"


def test_a_commit_makes_cached_reads_go_to_sqlite_again(alice: MsgStore) -> None:
    msg = alice.open_message(saved_message(alice))
    msg.get_props(TAGS)
    saved_message(alice)  # any commit in the mailbox may change what was cached
    with inline.inline(), pytest.raises(inline.NeedsWorker):
        msg.get_props(TAGS)


def test_large_values_are_read_by_a_worker(alice: MsgStore) -> None:
    body = "x" * (alice.context.limits.inline_value_bytes + 1)
    msg = alice.open_message(saved_message(alice, body))
    msg.get_props(TAGS)
    with inline.inline(), pytest.raises(inline.NeedsWorker):
        msg.get_props([pt.PR_BODY_W])  # lives in chunk rows
    assert msg.get_props([pt.PR_BODY_W]).values[0].value == body


def test_a_mailbox_lock_held_elsewhere_is_not_waited_for(alice: MsgStore) -> None:
    msg = alice.open_message(saved_message(alice))
    msg.get_props(TAGS)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with alice.context.db.lock:
            held.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert held.wait(10)
        with inline.inline(), pytest.raises(inline.NeedsWorker):
            msg.get_props(TAGS)
    finally:
        release.set()
        worker.join(10)
    with inline.inline():
        assert msg.get_props(TAGS).values[0].value == "hello"


def test_the_guard_is_per_thread(alice: MsgStore) -> None:
    msg = alice.open_message(saved_message(alice))
    results: list[object] = []
    with inline.inline():
        worker = threading.Thread(target=lambda: results.append(msg.get_props(TAGS)))
        worker.start()
        worker.join(10)
    assert len(results) == 1  # the worker thread was free to use SQLite
