"""The allocator settings for megabyte messages: applied on glibc, skipped when the
operator opted out or chose glibc's own settings."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from clients.allocator import tune_allocator

GLIBC = platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c") is not None


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_applied_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MAPI_ANYWHERE_MALLOC_TUNING",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "GLIBC_TUNABLES",
    ):
        monkeypatch.delenv(name, raising=False)
    assert tune_allocator() is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAPI_ANYWHERE_MALLOC_TUNING", "0"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072"),
    ],
)
def test_left_alone_when_the_environment_says_so(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert tune_allocator() is False
