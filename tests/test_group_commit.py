"""GroupCommit: items handed in by many threads at once are committed in shared
batches, each caller gets its own result or exception, and nothing is lost or run
twice, whatever the interleaving."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from mapi_anywhere.group_commit import GroupCommit


def test_waiting_callers_share_batches_and_get_their_own_results() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def commit(batch: Sequence[int]) -> list[int | Exception]:
        if not seen:
            gate.wait(10)  # hold the first commit until the others wait behind it
        seen.append(list(batch))
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in batch]

    group: GroupCommit[int, int] = GroupCommit(commit)
    results: dict[int, object] = {}

    def call(n: int) -> None:
        try:
            results[n] = group.run(n)
        except ValueError as exc:
            results[n] = str(exc)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    while not seen and group.items == 0 and not group._busy:
        time.sleep(0.001)
    others = [threading.Thread(target=call, args=(n,)) for n in range(1, 20)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while len(group._pending) < 19 and time.monotonic() < deadline:
        time.sleep(0.001)
    gate.set()
    for thread in [first, *others]:
        thread.join(10)
    assert results == {n: (f"odd {n}" if n % 2 else n * 10) for n in range(20)}
    assert sorted(n for batch in seen for n in batch) == list(range(20))  # each once
    assert seen[0] == [0] and seen[1] == list(range(1, 20))  # the rest in one batch


def test_a_commit_that_raises_fails_its_whole_batch_and_the_next_one_runs() -> None:
    calls = 0

    def commit(batch: Sequence[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk gone")
        return [item.upper() for item in batch]

    group: GroupCommit[str, str] = GroupCommit(commit)
    with pytest.raises(OSError):
        group.run("a")
    assert group.run("b") == "B"


def test_many_threads_many_rounds_lose_nothing() -> None:
    committed: list[int] = []
    lock = threading.Lock()

    def commit(batch: Sequence[int]) -> list[int | Exception]:
        time.sleep(0.0005)
        with lock:
            committed.extend(batch)
        return list(batch)

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=5)
    got: list[int] = []

    def worker(base: int) -> None:
        for i in range(50):
            value = group.run(base + i)
            with lock:
                got.append(value)

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    expected = sorted(k * 1000 + i for k in range(16) for i in range(50))
    assert sorted(committed) == expected and sorted(got) == expected
    assert group.batches < group.items  # some batches held several items
    assert not group._busy and group._pending == []
