"""Small helpers shared by the tunnel drivers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise an exception group holding a single exception as that exception.

    Our context managers run a reader task in a nursery around their ``yield``; with
    trio's strict exception groups a caller's own exception (or a ``TunnelError``)
    would otherwise come out wrapped in an ``ExceptionGroup``.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group
        raise
