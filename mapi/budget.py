"""Work budgets: how long one batch may run, and a way to stop it from outside.

Theory of operation
-------------------
A store batch runs in a worker thread, where trio's cancellation cannot reach it. A
:class:`WorkBudget` is the bridge: the service gives each batch one (a deadline on a
monotonic clock, and a ``cancelled`` flag another thread may set, for a call whose
connection went away or a server shutting down) and runs the batch under
:func:`applied`, which makes it the worker thread's *current* budget. Store code does
not pass it around; the places where work can grow without bound ask the current
budget instead:

- every database statement: the SQLite backend installs a progress handler that asks
  the current budget every few thousand virtual-machine steps
  (:func:`mapi.storage.db.watch_budget`); a statement past the budget is interrupted,
  and the transaction around it rolled back;
- Python loops over rows or text (restriction evaluation, the RELOP_RE matcher,
  sorting) call :func:`tick`, which looks at the clock every :data:`TICK_EVERY`
  calls;
- waiting for a mailbox's lock (:class:`mapi.storage.guard.MailboxLock`) waits no longer
  than the budget, in short slices that notice ``cancelled``.

A spent budget raises :class:`~mapi.model.errors.Timeout` (MAPI_E_TIMEOUT, "the call ran
out of time"), a cancelled one :class:`~mapi.model.errors.UserCancel`; both are ordinary
MAPI errors, so the batch unwinds through the store's own error handling: the
transaction in progress is rolled back, nothing half-done is kept, the mailbox lock
is released. Code with no current budget (local tools, delivery inside a batch that
has one, tests) behaves as before. The budget is per batch: a restriction, a sort
and the rest of the batch share it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from mapi.model import errors

#: :func:`tick` reads the clock once per this many calls.
TICK_EVERY: Final = 256
#: Longest single wait for a busy mailbox lock, so a cancel is noticed (seconds).
LOCK_SLICE: Final = 0.05

_local = threading.local()


class WorkBudget:
    """A deadline and a cancel flag for one unit of work (a batch)."""

    __slots__ = ("_ticks", "cancelled", "clock", "deadline", "escalate", "seconds")

    def __init__(
        self,
        seconds: float,
        clock: Callable[[], float],
        *,
        escalate: Callable[[], BaseException] | None = None,
    ) -> None:
        """``clock``: seconds on a monotonic clock (the driver's; this module reads
        none). ``escalate``: what a spent budget raises from :meth:`check` instead of its
        MAPI error (the inline fast path hands the call to a worker thread with
        :class:`~mapi.storage.guard.NeedsWorker`)."""
        if not seconds > 0:
            raise ValueError("a work budget must be positive")
        self.seconds = seconds
        self.clock = clock
        self.escalate = escalate
        self.deadline = clock() + seconds
        #: Set from any thread (a plain attribute write is atomic under the GIL).
        self.cancelled = False
        self._ticks = 0

    def cancel(self) -> None:
        """Stop the work at its next check (callable from any thread)."""
        self.cancelled = True

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def spent(self) -> bool:
        return self.cancelled or self.clock() >= self.deadline

    def error(self) -> errors.MapiError:
        if self.cancelled:
            return errors.UserCancel("the call was cancelled")
        return errors.Timeout(
            f"the call ran out of time ({self.seconds:g} s); narrow the restriction or "
            "ask for fewer rows"
        )

    def check(self) -> None:
        """Raise the budget's error when it is spent."""
        if self.spent():
            if self.escalate is not None:
                raise self.escalate()
            raise self.error()

    def tick(self) -> None:
        """:meth:`check`, every :data:`TICK_EVERY` calls (cheap enough for inner loops)."""
        self._ticks += 1
        if self._ticks >= TICK_EVERY:
            self._ticks = 0
            self.check()


def current() -> WorkBudget | None:
    """The budget of the work this thread is doing, if any."""
    budget: WorkBudget | None = getattr(_local, "budget", None)
    return budget


@contextmanager
def applied(budget: WorkBudget) -> Iterator[WorkBudget]:
    """Make ``budget`` this thread's current budget for the body."""
    previous = current()
    _local.budget = budget
    try:
        yield budget
    finally:
        _local.budget = previous


@contextmanager
def suspended() -> Iterator[None]:
    """Run the body with no current budget: work that must finish once begun (opening
    a mailbox: schema upgrades, recovery) is never cut in the middle."""
    previous = current()
    _local.budget = None
    try:
        yield
    finally:
        _local.budget = previous


def tick() -> None:
    """A cheap :func:`check` for inner loops."""
    budget = current()
    if budget is not None:
        budget.tick()


def interrupted_error() -> errors.MapiError:
    """What an interrupted database statement means: the current budget's error."""
    budget = current()
    if budget is not None and budget.spent():
        return budget.error()
    return errors.CallFailed("a database statement was interrupted")
