"""Worker threads for store work: separate pools, per-user caps, budgets that cancel.

Theory of operation
-------------------
SQLite and scrypt block, so the service runs them in worker threads
(``trio.to_thread``). Trio's default pool (40 threads) is one pool for everything,
and a worker thread cannot be cancelled: one user's runaway query, or a pile of calls
waiting for one busy mailbox, could take every thread and stall every other user.
So:

- each kind of work has its own :class:`trio.CapacityLimiter` (:class:`WorkerPools`):
  store batches, logons (directory look-ups), and password checks (scrypt: as many as
  there are cores, shared with the tunnel's Basic authentication); none can drain
  another;
- within the batch pool, one user holds at most ``per_user`` threads; the user's
  further calls wait on the event loop (cheap; bounded by the RPC runtime's limits on
  calls and connections), never in a thread; and a quarter of the pool is kept for
  users with no batch running: a user's second and later batches wait while the rest
  is taken, so several accounts running many batches each cannot take every thread
  (it takes as many accounts as there are threads);
- :func:`run_budgeted` runs a function in a worker thread under a
  :class:`~mapi.budget.WorkBudget`: when the calling task is cancelled (its
  connection went away, the server is stopping) the budget is cancelled, so the
  thread stops at its next check and its transaction rolls back, instead of running
  on for nobody.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from mapi.budget import WorkBudget, applied

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLimits:
    """Threads per kind of work (see the module docstring)."""

    #: Store batches running at once, over all users.
    batches: int = 32
    #: Store batches of one user running at once.
    batches_per_user: int = 4
    #: Logon steps (directory look-ups, session set-up) running at once.
    logons: int = 8
    #: Password derivations (scrypt) running at once; 0: the number of cores.
    password_checks: int = 0

    def __post_init__(self) -> None:
        for name in ("batches", "batches_per_user", "logons"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.password_checks < 0:
            raise ValueError("password_checks must not be negative")


class WorkerPools:
    """The limiters of one server (one per kind of work, one per busy user)."""

    def __init__(self, limits: WorkerLimits | None = None) -> None:
        self.limits = limits or WorkerLimits()
        self.batches = trio.CapacityLimiter(self.limits.batches)
        self.logons = trio.CapacityLimiter(self.limits.logons)
        self.password_checks = trio.CapacityLimiter(
            self.limits.password_checks or os.cpu_count() or 2
        )
        self._per_user: dict[str, trio.CapacityLimiter] = {}
        #: Threads kept for users with no batch admitted: a user's second and later
        #: batches are admitted only while fewer than ``batches - reserve`` are.
        self.reserve = self.limits.batches // 4
        #: Batches admitted (running, or waiting for a thread), in all and per user.
        self._admitted = 0
        self._active: dict[str, int] = {}
        self._changed = trio.Event()

    async def _admit(self, user: str) -> None:
        """Admit a batch of ``user``: a first one at once; a further one only while
        fewer than ``batches - reserve`` batches are admitted in all, so a few accounts
        running many batches each leave threads to the users who have none running."""
        while self._active.get(user, 0) and self._admitted >= self.limits.batches - self.reserve:
            await self._changed.wait()
        self._active[user] = self._active.get(user, 0) + 1
        self._admitted += 1

    def _done(self, user: str) -> None:
        left = self._active[user] - 1
        if left:
            self._active[user] = left
        else:
            del self._active[user]
        self._admitted -= 1
        self._changed.set()
        self._changed = trio.Event()

    def _user_limiter(self, user: str) -> trio.CapacityLimiter:
        limiter = self._per_user.get(user)
        if limiter is None:
            limiter = self._per_user[user] = trio.CapacityLimiter(self.limits.batches_per_user)
        return limiter

    def _release_user(self, user: str, limiter: trio.CapacityLimiter) -> None:
        stats = limiter.statistics()
        if not stats.borrowed_tokens and not stats.tasks_waiting:
            self._per_user.pop(user, None)

    async def run_batch(self, user: str, budget: WorkBudget, fn: Callable[[], T]) -> T:
        """Run ``fn`` for ``user`` in the batch pool under ``budget``."""
        limiter = self._user_limiter(user)
        try:
            async with limiter:
                await self._admit(user)
                try:
                    return await run_budgeted(fn, budget, self.batches)
                finally:
                    self._done(user)
        finally:
            self._release_user(user, limiter)

    def users_waiting(self) -> int:
        """Users with batches running or queued (for tests and logs)."""
        return len(self._per_user)


async def run_budgeted(fn: Callable[[], T], budget: WorkBudget, limiter: trio.CapacityLimiter) -> T:
    """``fn()`` in a worker thread of ``limiter`` with ``budget`` as its current budget.

    Cancelling the calling task cancels the budget, then waits (shielded) for the
    thread to notice at its next check (milliseconds, unless it is inside one long C
    call), so nothing of the work outlives the call that asked for it, and the
    thread's slot in ``limiter`` is free again when this returns.
    """
    token = trio.lowlevel.current_trio_token()
    finished = trio.Event()
    state = _ThreadState()

    def work() -> T:
        with state.lock:
            if state.abandoned:  # the caller was cancelled before the thread started
                raise budget.error()
            state.started = True
        try:
            with applied(budget):
                budget.check()  # spent while it waited for a thread
                return fn()
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(finished.set)

    try:
        return await trio.to_thread.run_sync(work, limiter=limiter, abandon_on_cancel=True)
    except trio.Cancelled:
        budget.cancel()
        with state.lock:
            state.abandoned = True
            started = state.started
        if started:
            with trio.CancelScope(shield=True):
                await finished.wait()
        raise


class _ThreadState:
    """Whether the worker thread started, or was abandoned before it could."""

    __slots__ = ("abandoned", "lock", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.abandoned = False
