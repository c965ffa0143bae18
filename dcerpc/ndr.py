"""NDR 2.0 (NDR32) primitives: what hand-written stub codecs (EPM and mgmt) spell out.

The general codec (structures, unions, deferred pointers, strict checks, a decode
budget, from declarative type descriptions) is :mod:`dcerpc.ndr_types`, built for
[MS-OXNSPI] (:mod:`dcerpc.idl.nspi`); this module keeps the primitive API that
``endpoint_mapper/stubs.py`` uses.

Theory of operation
-------------------
NDR ([C706] chapter 14) marshals IDL types into a flat octet stream, the stub data of
a request or response PDU. This module is sans-IO: :class:`NdrWriter` appends to a
buffer, :class:`NdrReader` consumes a buffer; neither knows which call it serves. The
stub codecs (for example ``endpoint_mapper/stubs.py``) spell out each call's layout
with these primitives, in IDL parameter order.

The rules we rely on, all relative to the **start of the stub** (offset 0):

* Primitives are aligned to their size (14.2.2): ``u16`` to 2, ``u32`` to 4,
  ``u64`` to 8. The writer pads with zeros; the reader skips padding. Structures align
  to their largest member (14.3.2), so a GUID or a context handle aligns to 4.
* We *write* little-endian, ASCII, IEEE (``drep`` ``10 00 00 00``) and *read* either
  byte order, as the ``drep`` of the received PDU says (14.2.5). Character data is
  treated as ASCII/Latin-1: we never read EBCDIC.
* A GUID is the NDR struct ``{u32, u16, u16, u8[8]}``; in little-endian that is
  ``uuid.bytes_le`` (what :mod:`dcerpc.syntax` uses too).
* Arrays (14.3.3): a *conformant* array is preceded by ``max_count u32``; a
  *varying* array by ``offset u32, actual_count u32``; a *conformant varying* array by
  all three. In a conformant structure the ``max_count`` is hoisted to the start of
  the structure: the stub codecs write it themselves with :meth:`NdrWriter.conformance`.
* Strings (14.3.4) are conformant varying arrays of ``char`` or UTF-16LE ``wchar_t``
  whose counts include the terminating NUL.
* Pointers (14.3.10-12): a top-level ``[ref]`` pointer adds nothing; a ``[unique]``
  or ``[ptr]`` pointer is a ``u32`` referent id (0 means NULL) and, at top level, its
  pointee follows at once. Pointers *embedded* in structures or arrays have their
  pointees *deferred* to after the enclosing top-level construct, in the order the
  pointers were written: :meth:`NdrWriter.defer` queues them and
  :meth:`NdrWriter.flush_deferred` writes them. Readers accept any non-zero referent.
* A context handle (14.5) is 20 octets: ``u32 attributes`` and a GUID; all zeros is
  the NULL handle.

Hard limits: every count read from the wire is checked against a limit and against
the bytes that remain *before* anything is allocated, so a four-byte count cannot make
us allocate gigabytes. Any short, inconsistent or out-of-limit input raises
:class:`~dcerpc.errors.NdrError` (answered with the fault ``nca_s_fault_ndr``) and never
any other exception type.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from dcerpc.errors import NdrError
from dcerpc.syntax import NIL_UUID, SyntaxId

T = TypeVar("T")
ByteOrder = Literal["<", ">"]

#: Default cap on any element count the reader accepts.
DEFAULT_MAX_COUNT = 65536
CONTEXT_HANDLE_SIZE = 20
#: MIDL-generated stubs number referents this way too; any non-zero value is valid.
FIRST_REFERENT_ID = 1


def byteorder_from_drep(drep: bytes) -> ByteOrder:
    """The integer byte order of a PDU's data representation label ([C706] 14.1)."""
    if not drep:
        raise NdrError("empty data representation label")
    return "<" if drep[0] & 0x10 else ">"


@dataclass(frozen=True, slots=True)
class ContextHandle:
    """A 20-octet NDR context handle ([C706] 14.5, ``ndr_context_handle``)."""

    attributes: int
    uuid: uuid.UUID

    @property
    def is_null(self) -> bool:
        return self.attributes == 0 and self.uuid == NIL_UUID


NULL_HANDLE = ContextHandle(0, NIL_UUID)


class NdrWriter:
    """Builds NDR32 stub data, little-endian, aligned relative to the stub start."""

    def __init__(self, *, first_referent: int = FIRST_REFERENT_ID) -> None:
        if first_referent <= 0:
            raise ValueError("referent ids must be non-zero")
        self._buf = bytearray()
        self._next_referent = first_referent
        self._deferred: list[Callable[[NdrWriter], None]] = []

    def getvalue(self) -> bytes:
        if self._deferred:
            raise ValueError("deferred pointees were never flushed")
        return bytes(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    def align(self, n: int) -> None:
        self._buf.extend(b"\x00" * (-len(self._buf) % n))

    def u8(self, value: int) -> None:
        self._buf.extend(struct.pack("<B", value))

    def u16(self, value: int) -> None:
        self.align(2)
        self._buf.extend(struct.pack("<H", value))

    def u32(self, value: int) -> None:
        self.align(4)
        self._buf.extend(struct.pack("<I", value))

    def u64(self, value: int) -> None:
        self.align(8)
        self._buf.extend(struct.pack("<Q", value))

    def raw(self, data: bytes) -> None:
        """Unaligned octets (``byte`` arrays, padding already handled by the caller)."""
        self._buf.extend(data)

    def uuid(self, value: uuid.UUID) -> None:
        self.align(4)
        self._buf.extend(value.bytes_le)

    def syntax_id(self, value: SyntaxId) -> None:
        """``p_syntax_id_t`` / ``rpc_if_id_t``: GUID, u16 major, u16 minor."""
        self.align(4)
        self._buf.extend(value.encode("<"))

    def context_handle(self, handle: ContextHandle) -> None:
        self.u32(handle.attributes)
        self.uuid(handle.uuid)

    def pointer(self, present: bool) -> bool:
        """Writes a unique/full pointer's referent id (0 for NULL); returns ``present``."""
        if present:
            self.u32(self._next_referent)
            self._next_referent += 1
        else:
            self.u32(0)
        return present

    def unique(self, value: T | None, write: Callable[[NdrWriter, T], None]) -> None:
        """A top-level unique pointer: its referent id, then at once its pointee."""
        if value is None:
            self.pointer(False)
        else:
            self.pointer(True)
            write(self, value)

    def defer(self, write: Callable[[NdrWriter], None]) -> None:
        """Queues the pointee of an embedded pointer ([C706] 14.3.12.3)."""
        self._deferred.append(write)

    def flush_deferred(self) -> None:
        """Writes queued pointees in order; a pointee's own pointees follow it."""
        pending, self._deferred = self._deferred, []
        for write in pending:
            write(self)
            self.flush_deferred()

    def conformance(self, max_count: int) -> None:
        self.u32(max_count)

    def variance(self, actual_count: int, offset: int = 0) -> None:
        self.u32(offset)
        self.u32(actual_count)

    def conformant_array(
        self,
        items: Sequence[T],
        write_item: Callable[[NdrWriter, T], None],
        *,
        max_count: int | None = None,
    ) -> None:
        self.conformance(len(items) if max_count is None else max_count)
        for item in items:
            write_item(self, item)

    def varying_array(self, items: Sequence[T], write_item: Callable[[NdrWriter, T], None]) -> None:
        self.variance(len(items))
        for item in items:
            write_item(self, item)

    def conformant_varying_array(
        self,
        items: Sequence[T],
        write_item: Callable[[NdrWriter, T], None],
        *,
        max_count: int | None = None,
    ) -> None:
        if max_count is not None and max_count < len(items):
            raise ValueError("more items than max_count")
        self.conformance(len(items) if max_count is None else max_count)
        self.varying_array(items, write_item)

    def string(self, text: str, *, wide: bool = False, max_count: int | None = None) -> None:
        """A conformant varying string; counts include the NUL ([C706] 14.3.4)."""
        units = _string_units(text, wide)
        count = len(units) // (2 if wide else 1)
        if max_count is not None and max_count < count:
            raise ValueError("string longer than max_count")
        self.conformance(count if max_count is None else max_count)
        self.variance(count)
        self.raw(units)

    def varying_string(self, text: str, *, wide: bool = False) -> None:
        """A varying string (fixed-size ``[string]`` array, e.g. an EPM annotation)."""
        units = _string_units(text, wide)
        self.variance(len(units) // (2 if wide else 1))
        self.raw(units)


def _string_units(text: str, wide: bool) -> bytes:
    # latin-1 keeps char strings byte-transparent; non-Latin-1 text is a caller bug.
    return (text + "\x00").encode("utf-16-le" if wide else "latin-1")


class NdrReader:
    """Consumes NDR32 stub data in either byte order; raises only :class:`NdrError`."""

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        byteorder: ByteOrder = "<",
        *,
        max_count: int = DEFAULT_MAX_COUNT,
    ) -> None:
        if byteorder not in ("<", ">"):
            raise ValueError("byteorder must be '<' or '>'")
        self._data = bytes(data)
        self._pos = 0
        self.byteorder: ByteOrder = byteorder
        self.max_count = max_count

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise NdrError(f"stub truncated at offset {self._pos} (need {n} bytes)")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def align(self, n: int) -> None:
        self._take(-self._pos % n)

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        self.align(2)
        value: int = struct.unpack(self.byteorder + "H", self._take(2))[0]
        return value

    def u32(self) -> int:
        self.align(4)
        value: int = struct.unpack(self.byteorder + "I", self._take(4))[0]
        return value

    def u64(self) -> int:
        self.align(8)
        value: int = struct.unpack(self.byteorder + "Q", self._take(8))[0]
        return value

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def uuid(self) -> uuid.UUID:
        self.align(4)
        raw = self._take(16)
        return uuid.UUID(bytes_le=raw) if self.byteorder == "<" else uuid.UUID(bytes=raw)

    def syntax_id(self) -> SyntaxId:
        value = self.uuid()
        major = self.u16()
        return SyntaxId(value, major, self.u16())

    def context_handle(self) -> ContextHandle:
        attributes = self.u32()
        return ContextHandle(attributes, self.uuid())

    def pointer(self) -> int:
        """A unique/full pointer's referent id; 0 means NULL."""
        return self.u32()

    def unique(self, read: Callable[[NdrReader], T]) -> T | None:
        """A top-level unique pointer: None for NULL, else its pointee read at once."""
        return read(self) if self.pointer() else None

    def expect_end(self) -> None:
        if self.remaining:
            raise NdrError(f"{self.remaining} unexpected bytes after the stub")

    def conformance(self, elem_size: int, limit: int | None = None) -> int:
        """Reads a ``max_count``; it must fit the limit and the remaining bytes.

        ``elem_size`` is the smallest wire size of one element, so a count is refused
        before any per-element allocation happens.
        """
        count = self.u32()
        self._check_count(count, elem_size, limit)
        return count

    def variance(self, max_count: int | None, elem_size: int, limit: int | None = None) -> int:
        """Reads ``offset, actual_count``; returns ``actual_count``."""
        offset = self.u32()
        actual = self.u32()
        bound = max_count if max_count is not None else self._limit(limit)
        if offset > bound or actual > bound - offset:
            raise NdrError(f"varying array offset {offset} + count {actual} exceeds {bound}")
        self._check_count(actual, elem_size, limit)
        return actual

    def _limit(self, limit: int | None) -> int:
        return self.max_count if limit is None else min(limit, self.max_count)

    def _check_count(self, count: int, elem_size: int, limit: int | None) -> None:
        if count > self._limit(limit):
            raise NdrError(f"count {count} exceeds limit {self._limit(limit)}")
        if count * elem_size > self.remaining:
            raise NdrError(f"count {count} larger than the {self.remaining} bytes left")

    def conformant_array(
        self, read_item: Callable[[NdrReader], T], elem_size: int, limit: int | None = None
    ) -> list[T]:
        count = self.conformance(elem_size, limit)
        return [read_item(self) for _ in range(count)]

    def varying_array(
        self, read_item: Callable[[NdrReader], T], elem_size: int, limit: int | None = None
    ) -> list[T]:
        count = self.variance(None, elem_size, limit)
        return [read_item(self) for _ in range(count)]

    def conformant_varying_array(
        self, read_item: Callable[[NdrReader], T], elem_size: int, limit: int | None = None
    ) -> list[T]:
        max_count = self.u32()
        if max_count > self._limit(limit):
            raise NdrError(f"max_count {max_count} exceeds limit {self._limit(limit)}")
        count = self.variance(max_count, elem_size, limit)
        return [read_item(self) for _ in range(count)]

    def string(self, *, wide: bool = False, limit: int | None = None) -> str:
        """A conformant varying string (counts include the NUL)."""
        max_count = self.u32()
        if max_count > self._limit(limit):
            raise NdrError(f"string max_count {max_count} exceeds limit")
        return self._string_body(max_count, wide, limit)

    def varying_string(
        self, *, wide: bool = False, limit: int | None = None, max_count: int | None = None
    ) -> str:
        """A varying string (a fixed-size ``[string]`` array of ``max_count`` units)."""
        return self._string_body(max_count, wide, limit)

    def _string_body(self, max_count: int | None, wide: bool, limit: int | None) -> str:
        unit = 2 if wide else 1
        count = self.variance(max_count, unit, limit)
        raw = self._take(count * unit)
        if count and raw[-unit:] != b"\x00" * unit:
            raise NdrError("string is not NUL-terminated")
        raw = raw[: len(raw) - unit] if count else raw
        if not wide:
            return raw.decode("latin-1")
        codec = "utf-16-le" if self.byteorder == "<" else "utf-16-be"
        return raw.decode(codec, errors="replace")
