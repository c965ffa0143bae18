"""Running store code on the event loop thread, with a guard against anything that blocks.

The RPC service runs batches in worker threads so that SQLite never blocks the event
loop (DESIGN.md). That thread hop costs more than a small read itself (a
``get_props`` on an open message is served from memory), so the service first tries
batches of pure reads :func:`inline`, on the loop thread, under this guard:

- the first use of a mailbox's SQLite connection raises :class:`NeedsWorker`;
- a mailbox lock that another thread holds raises :class:`NeedsWorker` instead of
  waiting for it;
- so does reading pending data that may be spooled to a temporary file.

On :class:`NeedsWorker` the service runs the whole batch again in a worker thread.
That is only correct for operations without side effects (reads), which is why the
service tries only those. :class:`NeedsWorker` derives from ``BaseException`` so that
no ``except Exception`` in the store turns it into a MAPI error on the way out.
``tests/mapi/test_inline_reads.py`` runs every read-only operation under the guard
against a storage that raises on any use, so a new path that would block the event
loop fails there.
"""

from __future__ import annotations

import threading
from types import TracebackType

from mapi import budget
from mapi.model import errors

_state = threading.local()


class NeedsWorker(BaseException):  # a control-flow signal, like trio.Cancelled
    """The code running :func:`inline` reached something that may block."""


class _Guard:
    __slots__ = ()

    def __enter__(self) -> None:
        _state.active = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _state.active = False


_GUARD = _Guard()  # stateless (the flag is thread-local): one object, no allocation


def inline() -> _Guard:
    """Run the body under the guard (on this thread only; not re-entrant)."""
    return _GUARD


def may_block() -> None:
    """Raise :class:`NeedsWorker` when running :func:`inline`; the store calls it before
    anything that may block (SQLite, temporary files)."""
    if getattr(_state, "active", False):
        raise NeedsWorker


class MailboxLock:
    """A re-entrant lock that, under :func:`inline`, never waits: it raises
    :class:`NeedsWorker` if another thread holds it."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> None:
        if self._lock.acquire(blocking=False):
            return
        may_block()
        work = budget.current()
        if work is None:
            self._lock.acquire()
            return
        # Under a work budget the wait is bounded by it, in slices that notice a cancel.
        while not self._lock.acquire(timeout=max(0.0, min(work.remaining(), budget.LOCK_SLICE))):
            if work.spent():
                if work.cancelled:
                    raise work.error()
                raise errors.Timeout(
                    f"the mailbox stayed busy for {work.seconds:g} s (another call of a "
                    "session on it is running); try again"
                )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()
