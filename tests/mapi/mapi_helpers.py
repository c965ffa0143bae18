"""Helpers shared by the store core tests."""

from __future__ import annotations

from mapi.logon import KdfParams

FAST_KDF = KdfParams(n=16, r=1, p=1)  # tests only: real deployments use the default


class Clock:
    """A FILETIME clock advancing one second per reading."""

    def __init__(self) -> None:
        self.now = 133_000_000_000_000_000

    def __call__(self) -> int:
        self.now += 10_000_000
        return self.now
