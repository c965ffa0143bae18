"""Property bags of transacted objects, and temporary stream data.

Theory of operation
-------------------
A message or attachment is transacted ([MS-OXCMSG] 3.1.4.3 RopSaveChangesMessage):
nothing a client changes is visible to anyone else until the save. A
:class:`PropBag` therefore layers the *committed* state (small values read from the
object's blob and hot columns, plus the lengths of its large values still in chunk
rows) under the *pending* state (values set since open, values written through
streams into :class:`TempData`, deletions). Keys are canonical tags
(:func:`mapi.model.proptags.canonical_tag`).

A :class:`TempData` is a spooled temporary file: small writes stay in memory,
larger ones spill to disk, so even a pending multi-gigabyte attachment is never held
in memory. Once handed to a bag (``freeze``), a TempData is immutable; a stream that
keeps writing afterwards copies it first (copy on write), so a snapshot taken by an
attachment save or a message save never sees later writes.
"""

from __future__ import annotations

import enum
import tempfile
import weakref
from collections.abc import Callable
from typing import IO

from mapi.model import errors
from mapi.model.properties import PropData, value_size
from mapi.storage.guard import may_block


class TempData:
    """Pending bytes of one value, in a spooled temporary file."""

    def __init__(self, spool_bytes: int) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=spool_bytes)  # noqa: SIM115
        # Pending data dies with its last owner (a discarded message): close the file
        # then, deterministically, instead of leaving it to the file object's __del__.
        weakref.finalize(self, self._file.close)
        self._spool = spool_bytes
        self.length = 0
        self.frozen = False

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``."""
        if offset >= self.length or size <= 0:
            return b""
        may_block()  # the file may have spilled to disk
        self._file.seek(offset)
        return self._file.read(min(size, self.length - offset))

    def write_at(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (zero-filling a gap past the end)."""
        if self.frozen:
            raise errors.CallFailed("temporary data is frozen")
        if offset > self.length:
            self._file.seek(self.length)
            gap = offset - self.length
            while gap:
                step = min(gap, 1 << 16)
                self._file.write(b"\x00" * step)
                gap -= step
        self._file.seek(offset)
        self._file.write(data)
        self.length = max(self.length, offset + len(data))

    def truncate(self, size: int) -> None:
        """Set the length to ``size`` (zero-filling when growing)."""
        if size > self.length:
            self.write_at(size, b"")
        else:
            if self.frozen:
                raise errors.CallFailed("temporary data is frozen")
            self._file.truncate(size)
            self.length = size

    def copy(self) -> TempData:
        """A mutable copy (copy on write)."""
        other = TempData(self._spool)
        offset = 0
        while offset < self.length:
            block = self.read_at(offset, 1 << 16)
            other.write_at(offset, block)
            offset += len(block)
        return other

    def fill(self, read: Callable[[int, int], bytes], length: int, block: int) -> None:
        """Append ``length`` bytes taken from ``read(offset, size)`` in ``block`` pieces
        (a committed value opened for writing)."""
        offset = 0
        while offset < length:
            piece = read(offset, min(block, length - offset))
            if not piece:
                break
            self.write_at(self.length, piece)
            offset += len(piece)

    def flush(self) -> None:
        """Make the bytes ready for a save to link them (staged data writes its file);
        plain temporary data is copied by the save, so there is nothing to do."""

    def reader(self) -> _Reader:
        """A file-like reader from the start, for :func:`mapi.storage.chunks.write`."""
        return _Reader(self)

    def read_all(self) -> bytes:
        """All the bytes (callers bound ``length`` first)."""
        return self.read_at(0, self.length)

    def close(self) -> None:
        """Release the temporary file."""
        self._file.close()


class _Reader:
    def __init__(self, data: TempData) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = self._data.length
        block = self._data.read_at(self._pos, size)
        self._pos += len(block)
        return block


class Source(enum.Enum):
    """Where the current value of a tag lives."""

    VALUE = 1  # a Python value (pending or committed small value)
    TEMP = 2  # pending bytes in a TempData
    LARGE = 3  # committed bytes in chunk rows (payload: the length)


class PropBag:
    """Committed values under pending changes; keys are canonical tags."""

    def __init__(
        self, base: dict[int, PropData] | None = None, large: dict[int, int] | None = None
    ) -> None:
        self.base: dict[int, PropData] = base or {}
        self.large: dict[int, int] = large or {}
        self.changes: dict[int, PropData] = {}
        self.temps: dict[int, TempData] = {}
        self.deleted: set[int] = set()
        #: :meth:`size`, kept until the next change (PR_MESSAGE_SIZE is read often).
        self._size: int | None = None

    @property
    def dirty(self) -> bool:
        """True when there are pending changes."""
        return bool(self.changes or self.temps or self.deleted)

    def lookup(self, tag: int) -> tuple[Source, PropData | TempData] | None:
        """The current value of ``tag`` and where it lives, or None when absent."""
        if tag in self.changes:
            return Source.VALUE, self.changes[tag]
        if tag in self.temps:
            return Source.TEMP, self.temps[tag]
        if tag in self.deleted:
            return None
        if tag in self.base:
            return Source.VALUE, self.base[tag]
        if tag in self.large:
            return Source.LARGE, self.large[tag]
        return None

    def set(self, tag: int, value: PropData) -> None:
        """Set a pending value."""
        self._size = None
        self.temps.pop(tag, None)
        self.changes[tag] = value
        self._mask(tag)

    def set_temp(self, tag: int, data: TempData) -> None:
        """Set pending stream bytes (the bag freezes them)."""
        data.frozen = True
        self._size = None
        self.changes.pop(tag, None)
        self.temps[tag] = data
        self._mask(tag)

    def delete(self, tag: int) -> bool:
        """Delete ``tag``; True if it existed."""
        existed = self.lookup(tag) is not None
        self._size = None
        self.changes.pop(tag, None)
        self.temps.pop(tag, None)
        self._mask(tag)
        return existed

    def set_committed(self, tag: int, value: PropData) -> None:
        """Change a committed value in place (after the database already holds it)."""
        self._size = None
        self.base[tag] = value

    def size(self) -> int:
        """The bytes of every current value, as PR_MESSAGE_SIZE counts them: pending
        stream data by its length, large committed values by theirs."""
        if self._size is None:
            total = 0
            for tag in self.tags():
                found = self.lookup(tag)
                if found is None:
                    continue
                source, payload = found
                if isinstance(payload, TempData):
                    total += payload.length
                elif source is Source.LARGE:
                    assert isinstance(payload, int)
                    total += payload
                else:
                    total += value_size(tag, payload)
            self._size = total
        return self._size

    def _mask(self, tag: int) -> None:
        if tag in self.base or tag in self.large:
            self.deleted.add(tag)

    def tags(self) -> list[int]:
        """Every tag with a current value, in a stable order."""
        present = {t for t in self.base if t not in self.deleted}
        present |= {t for t in self.large if t not in self.deleted}
        present |= self.changes.keys() | self.temps.keys()
        return sorted(present)

    def snapshot(self) -> PropBag:
        """An independent copy sharing only frozen TempData."""
        other = PropBag(dict(self.base), dict(self.large))
        other.changes = dict(self.changes)
        other.temps = dict(self.temps)
        other.deleted = set(self.deleted)
        return other
