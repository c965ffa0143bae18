"""glibc allocator settings for processes that move megabyte messages.

Bulk transfers allocate a megabyte at a time: a 1 MiB stream call's request stub, the
msgpack value unpacked from it, the reassembled fragments, the file read for a
download. glibc serves blocks above its mmap threshold (128 KiB, raised on its own up
to the size of the last such block freed) with fresh ``mmap`` pages, and gives the top
of the heap back to the kernel once twice that much is free there. Either way, each
new megabyte costs 256 page faults and the zeroing of its pages. With the settings
below msgpack packs and unpacks a megabyte many times faster, and bulk uploads run
faster (the figures: ``docs/benchmarks.md``, "Notes").

:func:`tune_allocator` keeps blocks under :data:`MMAP_THRESHOLD` in the heap and up to
:data:`TRIM_THRESHOLD` of free heap for reuse. The cost is memory a process keeps
without using it: up to that much per malloc arena (the event loop's, and one per
worker thread that did store work, at most 8 per core). The ``serve`` command
applies these settings, and so does the ``mapi-cli`` client, unless the environment
already sets glibc's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (or
``glibc.malloc`` tunables in ``GLIBC_TUNABLES``), or sets
``MAPI_ANYWHERE_MALLOC_TUNING=0``. On other C libraries it does nothing.

It is process set-up, not protocol code, so it lives with the command-line roots: here
in ``clients/`` (the lower of the two), where ``mapi-cli`` and ``serve``
(:mod:`mapi_anywhere.cli`) both reach it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

#: Blocks smaller than this come from the heap, not from fresh mmap pages.
MMAP_THRESHOLD = 4 << 20
#: Free memory kept at the top of the heap before it is given back to the kernel.
TRIM_THRESHOLD = 64 << 20

# glibc's mallopt() parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Apply the settings above to this process; True when they were applied."""
    if os.environ.get("MAPI_ANYWHERE_MALLOC_TUNING", "1") == "0":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False  # the operator chose glibc's settings
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no such knobs)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("allocator: mmap threshold %d, trim threshold %d: %s",
              MMAP_THRESHOLD, TRIM_THRESHOLD, "applied" if applied else "refused")  # fmt: skip
    return applied
