"""Group commit: many threads hand in work, one at a time commits all that waits.

A delivery to a mailbox ends in a transaction commit, and the commit's fsync is most
of its cost; mailbox writes also take turns on the mailbox's lock. When several
SMTP sessions deliver at once, :class:`GroupCommit` lets the first caller *lead*: it
takes every item waiting (up to ``max_batch``) and commits them with one call of
``commit`` (one transaction per mailbox, so one fsync for the lot); the others wait
for their result. A leader whose own item is done hands the lead to the next waiter,
so no caller serves the queue for longer than its own batch.

``commit(batch)`` returns one result per item, in order: a value, or the exception
that item's caller gets raised. If ``commit`` itself raises, every item of the batch
gets that exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("finished", "item", "lead", "result", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        #: Set when the item is committed, or when its caller is to lead.
        self.wake = threading.Event()
        self.finished = False
        self.result: R | Exception | None = None
        self.lead = False


class GroupCommit(Generic[T, R]):
    """Batches the items that callers (threads) hand in while a commit is running."""

    def __init__(
        self, commit: Callable[[Sequence[T]], Sequence[R | Exception]], max_batch: int = 64
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Slot[T, R]] = []
        self._busy = False
        #: Batches committed and items in them (for the log and the benchmark).
        self.batches = 0
        self.items = 0

    def run(self, item: T) -> R:
        """Commit ``item`` (with whatever else waits); blocks until it is committed.
        Raises the exception ``commit`` gave for it."""
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.wake.wait()
            lead = slot.lead and not slot.finished
        if lead:
            self._lead(slot)
        result = slot.result
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[return-value]  # set by the batch that held the slot

    def _lead(self, slot: _Slot[T, R]) -> None:
        while not slot.finished:
            with self._lock:
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
            self._commit_batch(batch)
        with self._lock:
            if self._pending:
                successor = self._pending[0]
                successor.lead = True
                successor.wake.set()  # it leads next; its item is still waiting
            else:
                self._busy = False

    def _commit_batch(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results: Sequence[R | Exception] = self._commit([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError("commit returned a result count unlike its batch")
        except Exception as exc:
            results = [exc] * len(batch)
        self.batches += 1
        self.items += len(batch)
        for waiting, result in zip(batch, results, strict=True):
            waiting.result = result
            waiting.finished = True
            waiting.wake.set()


__all__ = ["GroupCommit"]
