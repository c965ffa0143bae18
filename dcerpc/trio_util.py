"""Small trio helpers shared by the drivers (the DCE/RPC runtime's and the tunnel's).

These run on hot paths (every PDU sent or relayed), so they avoid what trio's
conveniences cost there: a context-manager generator per timeout, a scheduler pass per
uncontended lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Protocol

import trio

#: Longest the send that follows a consumed receive may take before the transport
#: counts as stuck (seconds).
AFTER_RECEIVE_LIMIT = 30.0


@contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise an exception group holding a single exception as that exception.

    Our context managers run a reader task in a nursery around their ``yield``; with
    trio's strict exception groups a caller's own exception would otherwise come out
    wrapped in an ``ExceptionGroup``.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group
        raise


class _Sender(Protocol):
    async def send_all(self, data: bytes, /) -> None: ...


async def send_within(stream: _Sender, data: bytes, seconds: float) -> None:
    """``stream.send_all(data)`` bounded by ``seconds``, raising ``trio.TooSlowError`` as
    ``fail_after`` does, without a context-manager generator per message (these run for
    every relayed PDU)."""
    with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
        await stream.send_all(data)
    if scope.cancelled_caught:
        raise trio.TooSlowError


async def acquire(lock: trio.Lock) -> None:
    """Take ``lock``: at once when it is free (no scheduler pass, unlike ``acquire()``),
    else wait. The caller releases it. The send that follows still checkpoints."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


async def finish_shielded(
    work: Callable[[], Awaitable[None]], seconds: float = AFTER_RECEIVE_LIMIT
) -> bool:
    """Run ``work()`` shielded from cancellation and bounded by ``seconds``: for a send
    (a window update, an acknowledgement) that must follow data a ``receive_some`` has
    already consumed, since cancelling it then would lose that data. A broken stream is
    ignored (the data is still good; the next call reports the break). False when the
    time ran out: the transport is stuck."""
    deadline = trio.current_time() + seconds
    with (
        trio.CancelScope(shield=True, deadline=deadline) as scope,
        suppress(trio.BrokenResourceError),
    ):
        await work()
    return not scope.cancelled_caught
