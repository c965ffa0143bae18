"""The durable outbound queue (internet_mail/outbound/queue.py, state.py)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from internet_mail.outbound import state
from internet_mail.outbound.queue import KEY_SECONDS, OutboundQueue


def test_enqueue_is_on_disk_and_reloads(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    qid = queue.enqueue("a@local.test", ["x@remote.test", "X@remote.test", "y@r.test"], b"hi\r\n")
    again = OutboundQueue(tmp_path / "queue")  # as after a restart
    [env] = again.load()
    assert env.id == qid and env.sender == "a@local.test"
    assert [r.address for r in env.recipients] == ["x@remote.test", "y@r.test"]
    assert all(r.status == state.PENDING for r in env.recipients)
    assert again.read_data(qid) == b"hi\r\n"
    assert (tmp_path / "queue" / f"{qid}.json").stat().st_mode & 0o077 == 0


def test_interrupted_enqueue_leftovers_are_cleared(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    (tmp_path / "queue" / "abc.eml").write_bytes(b"never acknowledged")
    (tmp_path / "queue" / "tmp" / "abd.json").write_bytes(b"{")
    (tmp_path / "queue" / "bad.json").write_bytes(b"not json")
    assert queue.load() == []
    assert not (tmp_path / "queue" / "abc.eml").exists()
    assert not (tmp_path / "queue" / "tmp" / "abd.json").exists()
    assert (tmp_path / "queue" / "corrupt" / "bad.json").exists()


def test_save_and_remove(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    qid = queue.enqueue("", ["x@remote.test"], b"x")
    [env] = queue.load()
    env.recipients[0].status = state.DONE
    queue.save(env)
    [back] = queue.load()
    assert back.recipients[0].status == state.DONE and back.finished()
    queue.remove(qid)
    assert queue.load() == []


def test_enqueue_as_is_idempotent(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    queue.enqueue_as("ndr-1", "", ["a@b.test"], b"one")
    queue.enqueue_as("ndr-1", "", ["a@b.test"], b"two")
    assert queue.read_data("ndr-1") == b"one"


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    for sender, rcpts in [("a@b", []), ("a\r\n@b", ["x@y"]), ("a@b", ["x>@y"]), ("a@b", [""])]:
        with pytest.raises(state.EnvelopeError):
            queue.enqueue(sender, rcpts, b"x")
    assert queue.load() == []


def test_enqueue_is_thread_safe_and_wakes(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    woken = []
    queue.set_wakeup(lambda: woken.append(1))
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda: ids.append(queue.enqueue("a@b", ["c@d"], b"m")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(set(ids)) == 8 and len(queue.load()) == 8 and len(woken) == 8


@given(st.binary(max_size=300))
def test_decode_never_crashes(data: bytes) -> None:
    with contextlib.suppress(state.EnvelopeError):
        state.decode(data)


@given(st.lists(st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.test", fullmatch=True), min_size=1))
def test_encode_decode_round_trip(addresses: list[str]) -> None:
    env = state.new_envelope("abc", "s@x.test", addresses, 12.5)
    assert state.decode(state.encode(env)) == env


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("next_try", "NaN"),  # was accepted: the runner's sleep then raised ValueError
        ("next_try", "Infinity"),
        ("next_try", "-1.0"),
        ("next_try", "1" + "0" * 400),  # an integer no float can hold
        ("attempts", "-1"),
        ("attempts", "99999999999999999999"),
        ("address", '"x\\ud800@y.test"'),  # a lone surrogate: not sendable as UTF-8
        ("address", '"x\\u0001@y.test"'),
    ],
)
def test_decode_refuses_values_the_runner_cannot_use(field: str, value: str) -> None:
    good = state.encode(state.new_envelope("abc", "a@b.test", ["x@y.test"], 100.0)).decode()
    assert state.decode(good.encode()).recipients[0].address == "x@y.test"
    old = {"next_try": '"next_try":100.0', "attempts": '"attempts":0'}.get(
        field, '"address":"x@y.test"'
    )
    assert old in good
    with pytest.raises(state.EnvelopeError):
        state.decode(good.replace(old, f'"{field}":{value}').encode())


@given(st.text(max_size=40))
def test_decoded_addresses_can_be_sent(text: str) -> None:
    """What check_address lets through encodes to UTF-8 and holds no line break."""
    try:
        address = state.check_address(text)
    except state.EnvelopeError:
        return
    assert "\r" not in address and "\n" not in address
    address.encode("utf-8")


def test_a_key_queues_once_across_delivery_and_restart(tmp_path: Path) -> None:
    """A submission handed in again (after a crash, or an SMTP retry) with its key is
    not queued twice: not while queued, not once delivered, not after a restart."""
    queue = OutboundQueue(tmp_path / "q")
    first = queue.enqueue(
        "a@example.org", ["b@remote.example"], b"Subject: x\r\n\r\nhi\r\n", key=b"k1"
    )
    again = queue.enqueue(
        "a@example.org", ["b@remote.example"], b"Subject: x\r\n\r\nhi\r\n", key=b"k1"
    )
    assert again == first
    assert [e.id for e in queue.load()] == [first]
    queue.remove(first)  # delivered
    restarted = OutboundQueue(tmp_path / "q")
    assert restarted.load() == []
    assert restarted.enqueue("a@example.org", ["b@remote.example"], b"...", key=b"k1") == first
    assert restarted.load() == []
    other = restarted.enqueue("a@example.org", ["b@remote.example"], b"...", key=b"k2")
    assert [e.id for e in restarted.load()] == [other]
    # Without a key every enqueue is a new message.
    one = restarted.enqueue("a@example.org", ["c@remote.example"], b"...")
    two = restarted.enqueue("a@example.org", ["c@remote.example"], b"...")
    assert one != two


def test_old_keys_are_forgotten_at_a_start(tmp_path: Path) -> None:
    now = [1_000_000.0]
    queue = OutboundQueue(tmp_path / "q", clock=lambda: now[0])
    qid = queue.enqueue("a@example.org", ["b@remote.example"], b"x", key=b"old")
    queue.remove(qid)
    for marker in (tmp_path / "q" / "keys").iterdir():
        os.utime(marker, (now[0], now[0]))
    now[0] += KEY_SECONDS + 1
    queue.load()
    assert list((tmp_path / "q" / "keys").iterdir()) == []
    assert queue.enqueue("a@example.org", ["b@remote.example"], b"x", key=b"old") != qid
