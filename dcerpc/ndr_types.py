"""NDR 2.0 (NDR32) from declarative type descriptions: structures, unions, pointers, arrays.

Theory of operation
-------------------
:mod:`dcerpc.ndr` has the primitives a hand-written stub codec spells out call by call
(the endpoint mapper's stubs). An interface as large as [MS-OXNSPI] (recursive
restrictions, unions of seventeen property types, rows of values with deferred strings)
needs the general rules instead, applied by one engine to a description of each IDL type:

* a type is a small Python object (:class:`Primitive`, :class:`Struct`, :class:`Union`,
  :class:`Pointer`, :class:`ConformantArray`, :class:`ConformantVaryingArray`,
  :class:`String`, ...) with ``encode(encoder, value, arg)`` and ``decode(decoder, arg)``;
  a structure's members are :class:`Field` objects that carry the IDL attributes
  (``size_is``, ``length_is``, ``switch_is``, ``range``) by name;
* an operation (:class:`Operation`) lists its ``[in]`` and ``[out]`` parameters the same
  way and is marshalled parameter by parameter ([C706] 14.3.12).

Descriptions are written by hand from the IDL (see :mod:`dcerpc.idl.nspi`) rather than
generated: the IDL of one interface is a few hundred lines, the Python description
reads like it, and a generator would be an IDL parser to maintain for that.

The rules, all offsets relative to the start of the stub ([C706] chapter 14):

* Alignment (14.2.2): primitives align to their size; a structure or union to its
  largest member; pad octets are written as zeros and ignored when read.
* Conformant arrays (14.3.3.2) write ``max_count`` before the elements; a structure
  whose last member is a conformant array (a *conformant structure*) writes that
  ``max_count`` first, before its own alignment and members (hoisting, 14.3.7.1).
  Conformant varying arrays add ``offset, actual_count`` at the array's place.
* ``[string]`` (14.3.4): a conformant varying array of ``char`` or UTF-16 units whose
  counts include the terminating NUL. 8-bit strings stay :class:`bytes` (their code
  page is the caller's business); wide strings are :class:`str`.
* Unions (14.3.8): the discriminant, aligned to its size, then the arm, aligned to the
  largest arm. A non-encapsulated union (``switch_is`` naming a sibling member) still
  carries its discriminant on the wire; we check it equals the sibling's value.
* Pointers (14.3.10-12): ``[ref]`` at the top level writes nothing and, embedded, a
  non-zero referent id; ``[unique]`` and ``[ptr]`` (full) write a referent id, 0 for
  NULL. The pointee of a top-level pointer follows at once; the pointees of pointers
  embedded in a structure or array are *deferred* to after the outermost construct
  that holds them, in the order the pointers were written, and each pointee's own
  deferred pointees follow it before the next one (14.3.12.3). Full pointers that
  repeat a referent id share one pointee, sent once.
* Context handles (14.5): 20 octets.

Strict checks ([MS-OXNSPI] 2.1: the server enforces NDR consistency checks at target
level 6.0, the ``/robust`` rules): a ``max_count`` must equal the ``size_is`` expression,
an ``actual_count`` the ``length_is`` one, offsets are 0, counts respect ``[range]``,
strings end with their single terminator, union discriminants match their
``switch_is`` and name a known arm, embedded ``[ref]`` pointers are non-zero.

Limits (:class:`Limits`): every decode has a budget of stub bytes, of elements (array
elements plus pointees, summed over the whole stub) and of pointer depth. A count is
charged, and checked against the bytes that remain at its smallest element size,
*before* anything is allocated for it. The decoder never recurses through pointers
(deferred pointees are a work list), so a deep chain costs no Python stack.

Errors: decoding raises :class:`~dcerpc.errors.NdrError` (a ``DecodeError``, answered
with the fault ``nca_s_fault_ndr``) and nothing else; encoding a value that does not
fit its description raises :class:`ValueError` (a bug on our side).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dcerpc.errors import NdrError
from dcerpc.ndr import NULL_HANDLE, ByteOrder, ContextHandle
from dcerpc.syntax import NIL_UUID

#: MIDL numbers referents from here in steps of 4; any non-zero id is valid.
FIRST_REFERENT = 0x00020000


@dataclass(frozen=True, slots=True)
class Limits:
    """The budget of one decode.

    Attributes:
        max_bytes: the longest stub accepted ([MS-OXNSPI] 2.1 caps a packet at 13 MB).
        max_elements: array elements plus non-NULL pointees, over the whole stub.
        max_depth: how many pointers deep a pointee may sit.
    """

    max_bytes: int = 13 * 1024 * 1024
    max_elements: int = 1_000_000
    max_depth: int = 64

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_elements, self.max_depth) < 1:
            raise ValueError("limits must be positive")


DEFAULT_LIMITS = Limits()


# -- the encoder and decoder states ----------------------------------------------------


class Encoder:
    """Appends NDR32 little-endian to a buffer; queues deferred pointees."""

    __slots__ = ("_referents", "buf", "deferred", "full", "next_ref", "pad_spans")

    def __init__(
        self,
        *,
        referent_ids: Iterable[int] | None = None,
        pad_spans: list[tuple[int, int]] | None = None,
    ) -> None:
        self.buf = bytearray()
        self.deferred: list[tuple[NdrType, Any, Any]] = []
        self.full: dict[int, int] = {}
        self.next_ref = FIRST_REFERENT
        self._referents: Iterator[int] | None = iter(referent_ids) if referent_ids else None
        #: When a list, each run of padding is noted as (offset, length).
        self.pad_spans = pad_spans

    def align(self, n: int) -> None:
        pad = -len(self.buf) % n
        if pad:
            if self.pad_spans is not None:
                self.pad_spans.append((len(self.buf), pad))
            self.buf += bytes(pad)

    def u32(self, value: int) -> None:
        self.align(4)
        self.buf += _U32_LE.pack(value)

    def referent(self) -> int:
        if self._referents is not None:
            ref = next(self._referents, 0)
            if ref:
                return ref
        ref = self.next_ref
        self.next_ref += 4
        return ref

    def flush(self) -> None:
        """Writes the deferred pointees; each one's own pointees follow it (14.3.12.3)."""
        stack = [(self.deferred, 0)]
        self.deferred = []
        while stack:
            items, index = stack.pop()
            if index >= len(items):
                continue
            stack.append((items, index + 1))
            typ, value, arg = items[index]
            typ.encode(self, value, arg)
            if self.deferred:
                stack.append((self.deferred, 0))
                self.deferred = []


class _Deferred:
    """A pointee still to be read: where its value goes once it has been."""

    __slots__ = ("arg", "depth", "done", "slots", "typ", "value")

    def __init__(self, typ: NdrType, arg: Any, depth: int) -> None:
        self.typ = typ
        self.arg = arg
        self.depth = depth
        self.slots: list[tuple[Any, int | str]] = []
        self.done = False
        self.value: Any = None

    def fill(self, value: Any) -> None:
        self.value = value
        self.done = True
        for holder, key in self.slots:
            if isinstance(key, int) or type(holder) is dict:
                holder[key] = value
            else:
                object.__setattr__(holder, key, value)


def _bind(value: Any, holder: Any, key: int | str) -> None:
    if type(value) is _Deferred:
        value.slots.append((holder, key))


class Decoder:
    """Reads NDR32 in either byte order within a :class:`Limits` budget."""

    __slots__ = (
        "big",
        "data",
        "deferred",
        "depth",
        "elements",
        "end",
        "full",
        "limits",
        "pos",
        "referents",
        "u32s",
    )

    def __init__(
        self,
        data: bytes,
        byteorder: ByteOrder = "<",
        limits: Limits = DEFAULT_LIMITS,
        referents: list[int] | None = None,
    ) -> None:
        if byteorder not in ("<", ">"):
            raise ValueError("byteorder must be '<' or '>'")
        if len(data) > limits.max_bytes:
            raise NdrError(f"stub of {len(data)} bytes exceeds {limits.max_bytes}")
        self.data = bytes(data)
        self.pos = 0
        self.end = len(self.data)
        self.big = byteorder == ">"
        self.u32s = _U32_BE if self.big else _U32_LE
        self.limits = limits
        self.elements = 0
        self.depth = 0
        self.deferred: list[_Deferred] = []
        self.full: dict[int, _Deferred] = {}
        #: When a list, the non-zero referent ids read, in wire order.
        self.referents = referents

    def align(self, n: int) -> None:
        pos = self.pos + (-self.pos % n)
        if pos > self.end:
            raise NdrError(f"stub truncated at offset {self.pos}")
        self.pos = pos

    def take(self, n: int) -> bytes:
        pos = self.pos
        if n > self.end - pos:
            raise NdrError(f"stub truncated at offset {pos} (need {n} bytes)")
        self.pos = pos + n
        return self.data[pos : pos + n]

    def u32(self) -> int:
        pos = self.pos + (-self.pos % 4)
        if pos + 4 > self.end:
            raise NdrError(f"stub truncated at offset {self.pos}")
        self.pos = pos + 4
        value: int = self.u32s.unpack_from(self.data, pos)[0]
        return value

    def charge(self, count: int, min_size: int) -> None:
        """Accounts for ``count`` elements before they are allocated."""
        self.elements += count
        if self.elements > self.limits.max_elements:
            raise NdrError(f"more than {self.limits.max_elements} elements in the stub")
        if count * min_size > self.end - self.pos:
            raise NdrError(f"count {count} larger than the {self.end - self.pos} bytes left")

    def flush(self) -> None:
        """Reads the deferred pointees, in the order the encoder wrote them."""
        stack = [(self.deferred, 0)]
        self.deferred = []
        while stack:
            items, index = stack.pop()
            if index >= len(items):
                continue
            stack.append((items, index + 1))
            entry = items[index]
            self.depth = entry.depth
            value = entry.typ.decode(self, entry.arg)
            if type(value) is _Deferred:  # a pointer to a pointer
                value.slots.extend(entry.slots)
            else:
                entry.fill(value)
            if self.deferred:
                stack.append((self.deferred, 0))
                self.deferred = []
        self.depth = 0

    def finish(self) -> None:
        """The stub must end here, give or take alignment padding (fewer than 8 octets)."""
        if self.end - self.pos >= 8:
            raise NdrError(f"{self.end - self.pos} unexpected bytes after the stub")


_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct(">I")


# -- types -----------------------------------------------------------------------------


class NdrType:
    """An IDL type. ``arg`` carries what the enclosing construct knows (see subclasses)."""

    #: Alignment of the type's inline representation.
    align: int = 1
    #: Smallest inline size in octets (bounds counts before allocation); at least 1.
    min_size: int = 1
    #: Whether the inline representation starts with a hoisted ``max_count``.
    conformant: bool = False

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        raise NotImplementedError

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        raise NotImplementedError

    def encode_top(self, e: Encoder, value: Any, arg: Any = None) -> None:
        """As a parameter (or the pointee of a top-level pointer)."""
        self.encode(e, value, arg)

    def decode_top(self, d: Decoder, arg: Any = None) -> Any:
        return self.decode(d, arg)


class Primitive(NdrType):
    """An integer or a float; ``code`` is a :mod:`struct` format letter."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.le = struct.Struct("<" + code)
        self.be = struct.Struct(">" + code)
        self.align = self.min_size = self.le.size

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        e.align(self.align)
        try:
            e.buf += self.le.pack(value)
        except struct.error as exc:
            raise ValueError(f"{value!r} does not fit {self.code}") from exc

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        size = self.align
        pos = d.pos + (-d.pos % size)
        if pos + size > d.end:
            raise NdrError(f"stub truncated at offset {d.pos}")
        d.pos = pos + size
        return (self.be if d.big else self.le).unpack_from(d.data, pos)[0]


U8 = Primitive("B")
U16 = Primitive("H")
I16 = Primitive("h")
U32 = Primitive("I")
I32 = Primitive("i")
U64 = Primitive("Q")
I64 = Primitive("q")


class FixedBytes(NdrType):
    """``byte x[n]``, or a structure of bytes only (``FlatUID_r``): :class:`bytes`."""

    def __init__(self, size: int) -> None:
        self.size = self.min_size = size

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        if len(value) != self.size:
            raise ValueError(f"expected {self.size} bytes, got {len(value)}")
        e.buf += value

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        return d.take(self.size)


class Filetime(NdrType):
    """``FILETIME {DWORD low; DWORD high}`` as one integer (100 ns ticks since 1601)."""

    align = 4
    min_size = 8

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        e.align(4)
        if not 0 <= value < 1 << 64:
            raise ValueError(f"FILETIME {value} out of range")
        e.buf += struct.pack("<II", value & 0xFFFFFFFF, value >> 32)

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        low = d.u32()
        return low | d.u32() << 32


class ContextHandleType(NdrType):
    """A context handle ([C706] 14.5): :class:`dcerpc.ndr.ContextHandle`."""

    align = 4
    min_size = 20

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        e.u32(value.attributes)
        e.buf += value.uuid.bytes_le

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        attributes = d.u32()
        raw = d.take(16)
        value = uuid.UUID(bytes=raw) if d.big else uuid.UUID(bytes_le=raw)
        if attributes == 0 and value == NIL_UUID:
            return NULL_HANDLE
        return ContextHandle(attributes, value)


class String(NdrType):
    """``[string] char*`` (:class:`bytes`) or ``[string] wchar_t*`` (:class:`str`)."""

    align = 4
    min_size = 12

    def __init__(self, *, wide: bool) -> None:
        self.wide = wide
        self.unit = 2 if wide else 1

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        if self.wide:
            raw = (value + "\x00").encode("utf-16-le", "surrogatepass")
        else:
            if b"\x00" in value:
                raise ValueError("an 8-bit [string] cannot hold a NUL")
            raw = bytes(value) + b"\x00"
        count = len(raw) // self.unit
        e.align(4)
        e.buf += struct.pack("<III", count, 0, count)
        e.buf += raw

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        max_count = d.u32()
        offset = d.u32()
        actual = d.u32()
        if offset != 0 or actual == 0 or actual > max_count:
            raise NdrError(f"string counts max {max_count}, offset {offset}, actual {actual}")
        d.charge(actual, self.unit)
        raw = d.take(actual * self.unit)
        if not self.wide:
            if raw.find(b"\x00") != actual - 1:
                raise NdrError("8-bit string without its single terminating NUL")
            return raw[:-1]
        text = raw.decode("utf-16-be" if d.big else "utf-16-le", "surrogatepass")
        if text.find("\x00") != len(text) - 1:
            raise NdrError("wide string without its single terminating NUL")
        return text[:-1]


class Pointer(NdrType):
    """``[ref]``, ``[unique]`` or ``[ptr]`` (full) pointer to ``pointee``; NULL is None.

    ``arg`` (a ``size_is``/``length_is`` pair for an array pointee) passes to the pointee.
    """

    align = 4
    min_size = 4

    def __init__(self, pointee: NdrType, kind: str = "unique") -> None:
        if kind not in ("ref", "unique", "full"):
            raise ValueError(f"unknown pointer kind {kind!r}")
        self.pointee = pointee
        self.kind = kind

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        if value is None:
            if self.kind == "ref":
                raise ValueError("a [ref] pointer cannot be NULL")
            e.u32(0)
            return
        if self.kind == "full":
            known = e.full.get(id(value))
            if known is not None:
                e.u32(known)
                return
        ref = e.referent()
        if self.kind == "full":
            e.full[id(value)] = ref
        e.u32(ref)
        e.deferred.append((self.pointee, value, arg))

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        ref = d.u32()
        if ref == 0:
            if self.kind == "ref":
                raise NdrError("NULL [ref] pointer")
            return None
        if d.referents is not None:
            d.referents.append(ref)
        if self.kind == "full":
            known = d.full.get(ref)
            if known is not None:
                if known.typ is not self.pointee:
                    raise NdrError(f"referent {ref:#x} reused for another type")
                return known.value if known.done else known
        if d.depth >= d.limits.max_depth:
            raise NdrError(f"pointers nested deeper than {d.limits.max_depth}")
        d.charge(1, 0)
        entry = _Deferred(self.pointee, arg, d.depth + 1)
        if self.kind == "full":
            d.full[ref] = entry
        d.deferred.append(entry)
        return entry

    def encode_top(self, e: Encoder, value: Any, arg: Any = None) -> None:
        if self.kind != "ref":
            if value is None:
                e.u32(0)
                return
            e.u32(e.referent())
        elif value is None:
            raise ValueError("a [ref] pointer cannot be NULL")
        self.pointee.encode_top(e, value, arg)

    def decode_top(self, d: Decoder, arg: Any = None) -> Any:
        if self.kind != "ref":
            ref = d.u32()
            if ref == 0:
                return None
            if d.referents is not None:
                d.referents.append(ref)
        if d.depth >= d.limits.max_depth:
            raise NdrError(f"pointers nested deeper than {d.limits.max_depth}")
        d.charge(1, 0)
        d.depth += 1
        try:
            return self.pointee.decode_top(d, arg)
        finally:
            d.depth -= 1


def unique(pointee: NdrType) -> Pointer:
    return Pointer(pointee, "unique")


def ref(pointee: NdrType) -> Pointer:
    return Pointer(pointee, "ref")


def full(pointee: NdrType) -> Pointer:
    return Pointer(pointee, "full")


class _Array(NdrType):
    """Shared by the array kinds: a list of ``element`` values (:class:`bytes` for U8).

    ``arg`` is ``(max_count, length, hoisted)``: the counts the ``size_is`` and
    ``length_is`` expressions give (None: unchecked), and whether the ``max_count``
    was hoisted to the start of the enclosing structure (already read or written).
    """

    varying = False
    align = 4
    min_size = 4

    def __init__(self, element: NdrType) -> None:
        self.element = element
        self.conformant = True
        self.bulk = isinstance(element, Primitive)

    def counts(self, value: Any) -> tuple[int, int]:
        return len(value), len(value)

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        n = len(value)
        max_count, length, hoisted = arg if arg is not None else (n, n, False)
        max_count = n if max_count is None else max_count
        length = n if length is None else length
        if length != n or max_count < n:
            raise ValueError(f"{n} elements do not match size {max_count}, length {length}")
        if not hoisted:
            e.u32(max_count)
        if self.varying:
            e.u32(0)
            e.u32(n)
        element = self.element
        if self.bulk and n:
            assert isinstance(element, Primitive)
            e.align(element.align)
            try:
                e.buf += struct.pack(f"<{n}{element.code}", *value)
            except struct.error as exc:
                raise ValueError(f"array element does not fit {element.code}") from exc
            return
        for item in value:
            element.encode(e, item)

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        want_max: int | None
        want_len: int | None
        want_max, want_len, hoisted = arg if arg is not None else (None, None, False)
        max_count = d.u32() if want_max is None or not hoisted else want_max
        if want_max is not None and max_count != want_max:
            raise NdrError(f"max_count {max_count} but size_is gives {want_max}")
        count = max_count
        if self.varying:
            offset = d.u32()
            count = d.u32()
            if offset != 0 or count > max_count:
                raise NdrError(f"varying array offset {offset}, count {count} of {max_count}")
            if want_len is not None and count != want_len:
                raise NdrError(f"actual_count {count} but length_is gives {want_len}")
        element = self.element
        d.charge(count, element.min_size)
        if self.bulk:
            assert isinstance(element, Primitive)
            if count:
                d.align(element.align)
            raw = d.take(count * element.min_size)
            if element.code == "B":
                return raw
            return list(struct.unpack(f"{'>' if d.big else '<'}{count}{element.code}", raw))
        items = [element.decode(d) for _ in range(count)]
        for index, item in enumerate(items):
            if type(item) is _Deferred:
                item.slots.append((items, index))
        return items


class ConformantArray(_Array):
    """``[size_is(n)] T x[]`` or the pointee of ``[size_is(n)] T*``."""


class ConformantVaryingArray(_Array):
    """``[size_is(m), length_is(n)] T x[]``."""

    varying = True


class Field:
    """A structure member or an operation parameter, with its IDL attributes.

    Args:
        name: the IDL name; ``attr`` is the Python attribute (default: the name).
        typ: the member's type.
        size_is / length_is: the name of an earlier count member, and an addend
            (``("cValues", 1)`` is ``size_is(cValues + 1)``); for arrays or array pointers.
        count_of: this member is a count derived from the length of the named member
            (not part of the Python value; checked against it when decoding).
        value_range: ``[range(lo, hi)]``, checked when decoding and encoding.
        switch_is: ``(member, mask)``: the discriminant of a non-encapsulated union.
    """

    __slots__ = (
        "attr",
        "count_of",
        "length_is",
        "name",
        "size_is",
        "switch_is",
        "typ",
        "value_range",
    )

    def __init__(
        self,
        name: str,
        typ: NdrType,
        *,
        attr: str | None = None,
        size_is: tuple[str, int] | None = None,
        length_is: tuple[str, int] | None = None,
        count_of: str | None = None,
        value_range: tuple[int, int] | None = None,
        switch_is: tuple[str, int] | None = None,
    ) -> None:
        self.name = name
        self.attr = attr or name
        self.typ = typ
        self.size_is = size_is
        self.length_is = length_is
        self.count_of = count_of
        self.value_range = value_range
        self.switch_is = switch_is

    def check_range(self, value: int) -> None:
        if self.value_range is not None:
            low, high = self.value_range
            if not low <= value <= high:
                raise NdrError(f"{self.name} {value} outside [range({low}, {high})]")


def _array_arg(f: Field, known: Mapping[str, int], hoisted: bool) -> Any:
    if f.size_is is None:
        return None if not hoisted else (None, None, True)
    name, add = f.size_is
    max_count = known[name] + add
    length = None
    if f.length_is is not None:
        lname, ladd = f.length_is
        length = known[lname] + ladd
    return (max_count, length, hoisted)


def _field_arg(f: Field, known: Mapping[str, int], hoisted: bool) -> Any:
    if f.switch_is is not None:
        name, mask = f.switch_is
        return known[name] & mask
    if f.size_is is not None or hoisted:
        return _array_arg(f, known, hoisted)
    return None


def _counts_from(f: Field, items: Any) -> int:
    """The value of a ``count_of`` member, from the length of its array (None: 0)."""
    return 0 if items is None else len(items)


class Struct(NdrType):
    """A structure. Its Python value is an instance of ``cls`` built from the members
    that are not ``count_of`` counts, by keyword (their ``attr``); with ``cls=None`` and
    one such member, the value is that member's value (a list for an array wrapper)."""

    def __init__(self, name: str, fields: Sequence[Field], cls: type | None = None) -> None:
        self.name = name
        self.cls = cls
        self.fields: list[Field] = []
        self.set_fields(fields)

    def set_fields(self, fields: Sequence[Field]) -> None:
        """Sets the members (late, for recursive types)."""
        self.fields = list(fields)
        if not self.fields:
            return
        self.values = [f for f in self.fields if f.count_of is None]
        if self.cls is None and len(self.values) != 1:
            raise ValueError(f"{self.name}: cls=None needs exactly one value member")
        last = self.fields[-1].typ
        self.conformant = last.conformant
        self.align = max(4 if self.conformant else 1, *(f.typ.align for f in self.fields))
        inline = self.fields[:-1] if self.conformant else self.fields
        self.min_size = max(1, sum(f.typ.min_size for f in inline))
        self._sources = {f.count_of: f for f in self.fields if f.count_of is not None}
        self._ints = {
            ref[0]
            for f in self.fields
            for ref in (f.size_is, f.length_is, f.switch_is)
            if ref is not None
        }

    def _get(self, value: Any, f: Field) -> Any:
        return value if self.cls is None else getattr(value, f.attr)

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        known: dict[str, int] = {}
        for f in self.fields:
            if f.count_of is not None:
                count = _counts_from(f, self._get(value, self._sources_field(f)))
                _encode_range(f, count)
                known[f.name] = count
            elif f.name in self._ints:
                known[f.name] = self._get(value, f)
        if self.conformant:
            last = self.fields[-1]
            if arg is None:  # the outermost conformant structure writes max_count
                e.u32(self._max_count(value, last, known))
        e.align(self.align)
        for i, f in enumerate(self.fields):
            if f.count_of is not None:
                f.typ.encode(e, known[f.name])
                continue
            hoisted = self.conformant and i == len(self.fields) - 1
            sub = _field_arg(f, known, hoisted)
            if hoisted and isinstance(f.typ, Struct):
                sub = True
            f.typ.encode(e, self._get(value, f), sub)

    def _sources_field(self, f: Field) -> Field:
        for g in self.values:
            if g.name == f.count_of:
                return g
        raise ValueError(f"{self.name}: no member {f.count_of}")

    def _max_count(self, value: Any, last: Field, known: Mapping[str, int]) -> int:
        inner = self._get(value, last)
        if isinstance(last.typ, Struct):
            return last.typ._max_count(inner, last.typ.fields[-1], _ints_of(last.typ, inner))
        if last.size_is is not None:
            return known[last.size_is[0]] + last.size_is[1]
        return len(inner)

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        hoisted_max = None
        if self.conformant:
            hoisted_max = arg if arg is not None else d.u32()
        d.align(self.align)
        known: dict[str, int] = {}
        values: dict[str, Any] = {}
        pending: list[tuple[_Deferred, str]] = []
        last = len(self.fields) - 1
        for i, f in enumerate(self.fields):
            if f.count_of is not None:
                count = f.typ.decode(d)
                f.check_range(count)
                known[f.name] = count
                continue
            if self.conformant and i == last:
                if isinstance(f.typ, Struct):
                    sub: Any = hoisted_max
                else:
                    sub = _array_arg(f, known, True)
                    if sub[0] is None:
                        sub = (hoisted_max, None, True)
                    elif sub[0] != hoisted_max:
                        raise NdrError(f"{self.name}: max_count {hoisted_max}, size_is {sub[0]}")
            else:
                sub = _field_arg(f, known, False)
            item = f.typ.decode(d, sub)
            if f.name in self._ints:
                known[f.name] = item
            if type(item) is _Deferred:
                pending.append((item, f.attr))
            values[f.attr] = item
        if self.cls is None:
            return values[self.values[0].attr]
        obj = self.cls(**values)
        for entry, attr in pending:
            entry.slots.append((obj, attr))
        return obj


def _encode_range(f: Field, count: int) -> None:
    if f.value_range is None:
        return
    low, high = f.value_range
    if not low <= count <= high:
        raise ValueError(f"{f.name} {count} outside [range({low}, {high})]")


def _ints_of(s: Struct, value: Any) -> dict[str, int]:
    known: dict[str, int] = {}
    for f in s.fields:
        if f.count_of is not None:
            known[f.name] = _counts_from(f, s._get(value, s._sources_field(f)))
        elif f.name in s._ints:
            known[f.name] = s._get(value, f)
    return known


class Union(NdrType):
    """A discriminated union ([C706] 14.3.8) over ``arms``: discriminant -> type.

    Non-encapsulated (``switch_is`` on the member, the default): the value is the arm's
    value and ``arg`` is the discriminant the enclosing structure computed; the wire
    discriminant must equal it. Encapsulated (``encapsulated=True``): the value is a
    ``(discriminant, arm value)`` pair. An arm type of None is an empty arm.
    """

    def __init__(
        self,
        name: str,
        switch: Primitive,
        arms: Mapping[int, NdrType | None],
        *,
        encapsulated: bool = False,
    ) -> None:
        self.name = name
        self.switch = switch
        self.arms = dict(arms)
        self.encapsulated = encapsulated
        self.arm_align = max([1, *(t.align for t in self.arms.values() if t is not None)])
        self.align = max(switch.align, self.arm_align)
        self.min_size = switch.min_size

    def _arm(self, discriminant: int) -> NdrType | None:
        try:
            return self.arms[discriminant]
        except KeyError:
            raise NdrError(f"{self.name}: no arm for discriminant {discriminant:#x}") from None

    def encode(self, e: Encoder, value: Any, arg: Any = None) -> None:
        if self.encapsulated:
            arg, value = value
        if arg not in self.arms:
            raise ValueError(f"{self.name}: no arm for discriminant {arg!r}")
        arm = self.arms[arg]
        e.align(self.align)
        self.switch.encode(e, arg)
        if arm is not None:
            e.align(self.arm_align)
            arm.encode(e, value)

    def decode(self, d: Decoder, arg: Any = None) -> Any:
        d.align(self.align)
        discriminant = self.switch.decode(d)
        if not self.encapsulated and discriminant != arg:
            raise NdrError(f"{self.name}: discriminant {discriminant:#x}, switch_is {arg:#x}")
        arm = self._arm(discriminant)
        value = None
        if arm is not None:
            d.align(self.arm_align)
            value = arm.decode(d)
        if not self.encapsulated:
            return value
        pair = _Pair([discriminant, value])
        _bind(value, pair, 1)
        return pair


class _Pair(list[Any]):
    """An encapsulated union's value: ``[discriminant, arm value]``."""


# -- operations ------------------------------------------------------------------------


class Operation:
    """One RPC operation: ``[in]`` and ``[out]`` parameters, marshalled in order, each
    one's deferred pointees right after it; values are dicts keyed by parameter name.
    The return value, if any, is the last ``[out]`` parameter."""

    def __init__(self, name: str, opnum: int, ins: Sequence[Field], outs: Sequence[Field]):
        self.name = name
        self.opnum = opnum
        self.ins = list(ins)
        self.outs = list(outs)

    def encode_request(self, values: Mapping[str, Any], **options: Any) -> bytes:
        return _encode_params(self.ins, values, **options)

    def encode_response(self, values: Mapping[str, Any], **options: Any) -> bytes:
        return _encode_params(self.outs, values, **options)

    def decode_request(self, data: bytes, byteorder: ByteOrder = "<", **opt: Any) -> dict[str, Any]:
        return _decode_params(self.ins, data, byteorder, **opt)

    def decode_response(
        self, data: bytes, byteorder: ByteOrder = "<", **opt: Any
    ) -> dict[str, Any]:
        return _decode_params(self.outs, data, byteorder, **opt)


def _encode_params(
    params: Sequence[Field],
    values: Mapping[str, Any],
    *,
    referent_ids: Iterable[int] | None = None,
    pad_spans: list[tuple[int, int]] | None = None,
) -> bytes:
    e = Encoder(referent_ids=referent_ids, pad_spans=pad_spans)
    known: dict[str, int] = {}
    for f in params:
        if f.count_of is not None:
            count = _counts_from(f, values[f.count_of])
            _encode_range(f, count)
            known[f.name] = count
        elif isinstance(values.get(f.name), int):
            known[f.name] = values[f.name]
    for f in params:
        value = known[f.name] if f.count_of is not None else values[f.name]
        f.typ.encode_top(e, value, _field_arg(f, known, False))
        e.flush()
    return bytes(e.buf)


def _decode_params(
    params: Sequence[Field],
    data: bytes,
    byteorder: ByteOrder,
    *,
    limits: Limits = DEFAULT_LIMITS,
    referents: list[int] | None = None,
) -> dict[str, Any]:
    d = Decoder(data, byteorder, limits, referents)
    known: dict[str, int] = {}
    values: dict[str, Any] = {}
    for f in params:
        value = f.typ.decode_top(d, _field_arg(f, known, False))
        if f.count_of is not None:
            f.check_range(value)
        if isinstance(value, int):
            known[f.name] = value
        if f.count_of is None:
            values[f.name] = value
            _bind(value, values, f.name)
        d.flush()
    d.finish()
    return values


def encode(typ: NdrType, value: Any, **options: Any) -> bytes:
    """``value`` as one top-level construct (a ``[ref]`` parameter of type ``typ``)."""
    return _encode_params([Field("value", typ)], {"value": value}, **options)


def decode(typ: NdrType, data: bytes, byteorder: ByteOrder = "<", **options: Any) -> Any:
    """Decodes one top-level construct of type ``typ``; raises only :class:`NdrError`."""
    return _decode_params([Field("value", typ)], data, byteorder, **options)["value"]


__all__ = [
    "DEFAULT_LIMITS",
    "FIRST_REFERENT",
    "I16",
    "I32",
    "I64",
    "U8",
    "U16",
    "U32",
    "U64",
    "ConformantArray",
    "ConformantVaryingArray",
    "ContextHandleType",
    "Decoder",
    "Encoder",
    "Field",
    "Filetime",
    "FixedBytes",
    "Limits",
    "NdrType",
    "Operation",
    "Pointer",
    "Primitive",
    "String",
    "Struct",
    "Union",
    "decode",
    "encode",
    "full",
    "ref",
    "unique",
]
