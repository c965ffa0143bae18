"""Streams over large property values.

Theory of operation
-------------------
[MS-OXCPRPT] 3.2.5.13-3.2.5.19 (RopOpenStream, RopReadStream, RopWriteStream,
RopSeekStream, RopSetStreamSize, RopCommitStream): a PT_BINARY or PT_UNICODE
property of a message or attachment (a body, PR_ATTACH_DATA_BIN) can be read and
written in pieces. A PT_UNICODE stream carries UTF-16LE bytes without terminator.

Reading a committed large value reads only the chunk rows under the requested range.
Writing goes to private pending data, a :class:`~mapi.storage.staging.StagedData`
whose whole chunks are staged in the mailbox database as they arrive (opening for
write without ``create`` first copies the current value into it); ``commit`` (or
``close`` of a dirty stream) hands that data to the owning object's pending changes,
so the bytes become visible only when the message is saved, in the message's single
transaction, which links the staged rows instead of copying them. Nothing here ever
holds more than one read or write request in memory (plus one partial chunk).

Limits apply as the bytes arrive, not only at the save: a write that takes the value
past :attr:`~mapi.model.limits.Limits.max_message_bytes` answers MAPI_E_TOO_BIG, and one
that grows it past the room its mailbox had when the stream first grew (quota minus
size, :mod:`mapi.objects.quota`; read once per stream) MAPI_E_NOT_ENOUGH_DISK, so a client
learns before it has sent gigabytes. The save checks again, exactly.

Besides the MAPI calls, which work at the stream's position, :meth:`PropStream.read_at`
and :meth:`PropStream.write_at` read and write at an explicit offset without using or
moving the position (like ``pread``/``pwrite``): a client may keep several of them in
flight, since they give the same result in any order.
"""

from __future__ import annotations

from typing import Final, Protocol

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import full_mailbox
from mapi.model.properties import to_stream_bytes
from mapi.objects.context import StoreContext
from mapi.storage.propbag import PropBag, Source, TempData

STREAM_SEEK_SET: Final = 0
STREAM_SEEK_CUR: Final = 1
STREAM_SEEK_END: Final = 2
#: Bytes per step when a committed value is copied into pending data.
_COPY_BLOCK: Final = 1 << 20


class StreamOwner(Protocol):
    """What a stream needs of the message or attachment it belongs to."""

    _ctx: StoreContext

    def _bag(self) -> PropBag: ...

    def read_large_at(self, tag: int, offset: int, size: int) -> bytes: ...

    def touch(self) -> None: ...

    def _is_computed(self, tag: int) -> bool: ...


class PropStream:
    """A stream on one property of a message or attachment."""

    def __init__(self, owner: StreamOwner, tag: int, *, write: bool, create: bool) -> None:
        if not isinstance(tag, int) or not 0 < tag <= 0xFFFFFFFF:
            raise errors.InvalidParameter("bad property tag")
        if pt.prop_type(tag) not in (pt.PropType.PT_BINARY, pt.PropType.PT_UNICODE):
            raise errors.NoSupport("streams are for PT_BINARY and PT_UNICODE properties")
        if write and owner._is_computed(tag):
            raise errors.Computed("computed properties cannot be written")
        self._owner = owner
        self._ctx = owner._ctx
        self._tag = pt.canonical_tag(tag)
        self._write = write
        self._pos = 0
        self._dirty = False
        self._closed = False
        self._temp: TempData | None = None
        self._value: bytes | None = None
        self._large: int | None = None
        #: The mailbox's room and limit (bytes), read when first needed; None: no limit.
        self._room: tuple[int, int] | None = None
        self._room_read = False
        #: The value's length when opened: growth past it needs room in the mailbox.
        self._base = 0
        found = owner._bag().lookup(self._tag)
        if create:
            self._temp = self._new_temp()
            self._dirty = True
            return
        if found is None:
            raise errors.NotFound(f"{pt.tag_name(tag)} does not exist")
        source, payload = found
        if source is Source.TEMP:
            assert isinstance(payload, TempData)
            self._temp = payload.copy() if write else payload
            self._base = payload.length
        elif source is Source.LARGE:
            assert isinstance(payload, int)
            self._large = self._base = payload
            if write:
                self._temp = self._copy_large(payload)
        else:
            assert not isinstance(payload, TempData)
            data = to_stream_bytes(self._tag, payload)
            self._base = len(data)
            if write:
                self._temp = self._new_temp()
                self._temp.write_at(0, data)
            else:
                self._value = data

    def _check_growth(self, length: int) -> None:
        """Refuse to grow the pending value to ``length`` bytes past the message size
        limit or the mailbox's room (see the module docstring).

        Raises:
            TooBig, NotEnoughDisk.
        """
        assert self._temp is not None
        if length <= self._temp.length:
            return
        limits = self._ctx.limits
        if limits.max_message_bytes and length > limits.max_message_bytes:
            raise errors.TooBig(
                f"{pt.tag_name(self._tag)} would be {length} bytes, more than the"
                f" {limits.max_message_bytes} bytes a message may hold"
            )
        if not self._room_read:
            stored = self._ctx.db.messages
            with self._ctx.db.reading() as txn:
                room = stored.mailbox_room(txn, limits)
                self._room = None if room is None else (room, stored.mailbox_quota(txn, limits))
            self._room_read = True
        if self._room is not None:
            room, limit = self._room
            if length - self._base > room:
                raise full_mailbox(limit - room, limit, length - self._base)

    def _new_temp(self) -> TempData:
        return self._ctx.db.pending_data(self._tag)

    def _copy_large(self, length: int) -> TempData:
        temp = self._new_temp()
        read = self._owner.read_large_at
        temp.fill(lambda offset, size: read(self._tag, offset, size), length, _COPY_BLOCK)
        return temp

    def _enter(self) -> None:
        if self._closed:
            raise errors.InvalidObject("the stream is closed")

    def size(self) -> int:
        """The current length in bytes."""
        with self._ctx.db.lock:
            self._enter()
            if self._temp is not None:
                return self._temp.length
            if self._value is not None:
                return len(self._value)
            return self._large or 0

    def read(self, size: int) -> bytes:
        """Read up to ``size`` bytes at the position and advance (b"" at the end).

        Raises:
            InvalidParameter: size negative or above the per-call limit.
        """
        with self._ctx.db.lock:
            data = self.read_at(self._pos, size)
            self._pos += len(data)
            return data

    def read_at(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` (b"" at or past the end); the position
        is neither used nor moved.

        Raises:
            InvalidParameter: size or offset negative, or size above the per-call limit.
        """
        with self._ctx.db.lock:
            self._enter()
            if not isinstance(size, int) or not 0 <= size <= self._ctx.limits.max_value_bytes:
                raise errors.InvalidParameter("bad read size")
            if not isinstance(offset, int) or offset < 0:
                raise errors.InvalidParameter("bad read offset")
            if self._temp is not None:
                return self._temp.read_at(offset, size)
            if self._value is not None:
                return self._value[offset : offset + size]
            return self._owner.read_large_at(self._tag, offset, size)

    def write(self, data: bytes) -> int:
        """Write ``data`` at the position and advance; return the bytes written.

        Raises:
            NoAccess: the stream is read-only. TooBig: beyond the stream size limit.
        """
        with self._ctx.db.lock:
            written = self.write_at(self._pos, data)
            self._pos += written
            return written

    def write_at(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (zero-filling a gap); return the bytes written.
        The position is neither used nor moved.

        Raises:
            NoAccess: the stream is read-only. TooBig: beyond the stream size limit.
            InvalidParameter: a negative offset, or more than the per-call limit.
        """
        with self._ctx.db.lock:
            self._enter()
            if not self._write:
                raise errors.NoAccess("the stream is read-only")
            if not isinstance(data, bytes | bytearray | memoryview):
                raise errors.InvalidParameter("write needs bytes")
            if not isinstance(offset, int) or offset < 0:
                raise errors.InvalidParameter("bad write offset")
            if len(data) > self._ctx.limits.max_value_bytes:
                raise errors.InvalidParameter("write larger than the per-call limit")
            if offset + len(data) > self._ctx.limits.max_stream_bytes:
                raise errors.TooBig("stream too large")
            assert self._temp is not None
            self._check_growth(offset + len(data))
            if self._temp.frozen:  # committed already: copy on write
                self._temp = self._temp.copy()
            self._temp.write_at(offset, bytes(data))
            self._dirty = True
            return len(data)

    def seek(self, offset: int, whence: int = STREAM_SEEK_SET) -> int:
        """Move the position; return the new position.

        Raises:
            InvalidParameter: bad origin, or a position before 0 or past the limit.
        """
        with self._ctx.db.lock:
            self._enter()
            if whence == STREAM_SEEK_SET:
                base = 0
            elif whence == STREAM_SEEK_CUR:
                base = self._pos
            elif whence == STREAM_SEEK_END:
                base = self.size()
            else:
                raise errors.InvalidParameter("bad seek origin")
            target = base + offset
            if not 0 <= target <= self._ctx.limits.max_stream_bytes:
                raise errors.InvalidParameter("seek out of range")
            self._pos = target
            return target

    def set_size(self, size: int) -> None:
        """Truncate or extend (with zeros) to ``size`` bytes."""
        with self._ctx.db.lock:
            self._enter()
            if not self._write:
                raise errors.NoAccess("the stream is read-only")
            if not isinstance(size, int) or not 0 <= size <= self._ctx.limits.max_stream_bytes:
                raise errors.TooBig("bad stream size")
            assert self._temp is not None
            self._check_growth(size)
            if self._temp.frozen:
                self._temp = self._temp.copy()
            self._temp.truncate(size)
            self._dirty = True

    def commit(self) -> None:
        """Make the written bytes a pending change of the owner (visible after save)."""
        with self._ctx.db.lock:
            self._enter()
            if self._write and self._dirty and self._temp is not None:
                if self._temp.length > self._ctx.limits.inline_value_bytes:
                    self._temp.flush()  # the save links it (smaller values go inline)
                self._owner._bag().set_temp(self._tag, self._temp)
                self._owner.touch()
                self._dirty = False

    def close(self) -> None:
        """Commit if dirty, then release the stream."""
        with self._ctx.db.lock:
            if self._closed:
                return
            self.commit()
            self._closed = True
