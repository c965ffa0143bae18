"""Property values: validation, normalisation, sizes, ordering and storage encoding.

Theory of operation
-------------------
A property value travels as a :class:`PropValue` (tag + Python value). The Python
representation of each type ([MS-OXCDATA] 2.11.1) is chosen to be exact and to fit
msgpack:

=====================  ======================================================
PT_SHORT / PT_LONG     ``int`` in the signed 16/32-bit range
PT_I8 / PT_CURRENCY    ``int`` in the signed 64-bit range (currency: 1/10000)
PT_FLOAT               ``float`` rounded to IEEE binary32 (no NaN)
PT_DOUBLE / PT_APPTIME ``float`` (no NaN: it would break ordering)
PT_BOOLEAN             ``bool``
PT_STRING8/PT_UNICODE  ``str`` without NUL or lone surrogates (8-bit = UTF-8)
PT_SYSTIME             ``int`` FILETIME: 100 ns ticks since 1601-01-01 UTC
PT_CLSID               ``bytes`` of length 16 (GUID in wire byte order)
PT_BINARY              ``bytes``
PT_MV_*                ``list`` of the single-valued representation
PT_ERROR               ``int`` HRESULT (read side only)
=====================  ======================================================

:func:`validate` checks a client value against its tag and the store's
:class:`~mapi.model.limits.Limits` and returns the normalised value; it raises the MAPI
error a per-property problem reports (``MAPI_E_INVALID_TYPE`` for a type that cannot
be stored, ``MAPI_E_INVALID_PARAMETER`` for a value of the wrong kind or range,
``MAPI_E_STRING_TOO_LONG`` / ``MAPI_E_TOO_BIG`` beyond the limits).

:func:`sort_key` orders values the way SQLite orders the store's hot columns
(``NULL`` first, strings compared with ``COLLATE NOCASE``: ASCII case folded, then
code point order), so SQL and Python evaluation of a table agree row for row.

:func:`pack_props` / :func:`unpack_props` encode a property dict with msgpack for
the per-object property blob; :func:`to_stream_bytes` / :func:`from_stream_bytes`
give the byte form a stream exposes (UTF-16LE for PT_UNICODE, UTF-8 for PT_STRING8).
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgpack

from mapi.model import errors
from mapi.model.limits import DEFAULT_LIMITS, Limits
from mapi.model.proptags import MV_FLAG, STORABLE_TYPES, PropType, prop_id, prop_type, tag_name

Scalar: TypeAlias = int | float | bool | str | bytes
PropData: TypeAlias = Scalar | list[Scalar]

_I16 = (-(1 << 15), (1 << 15) - 1)
_I32 = (-(1 << 31), (1 << 31) - 1)
_I64 = (-(1 << 63), (1 << 63) - 1)
_FILETIME_MAX = (1 << 63) - 1
_FILETIME_EPOCH = _dt.datetime(1601, 1, 1, tzinfo=_dt.UTC)


@dataclass(frozen=True, slots=True)
class PropValue:
    """One property: its tag and its value (an HRESULT ``int`` when the type is PT_ERROR)."""

    tag: int
    value: PropData

    @property
    def is_error(self) -> bool:
        """True when this is a PT_ERROR placeholder for a failed read."""
        return prop_type(self.tag) == PropType.PT_ERROR

    def __repr__(self) -> str:
        return f"PropValue({tag_name(self.tag)}, {self.value!r})"


@dataclass(frozen=True, slots=True)
class PropProblem:
    """A per-property failure of set_props/delete_props ([MS-OXCDATA] 2.7 PropertyProblem)."""

    index: int
    tag: int
    hresult: int


# --- Times ----------------------------------------------------------------------


def filetime_from_datetime(when: _dt.datetime) -> int:
    """FILETIME ticks of an aware datetime."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: give a timezone")
    delta = when - _FILETIME_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def datetime_from_filetime(ticks: int) -> _dt.datetime:
    """The UTC datetime of FILETIME ``ticks`` (precision: microseconds)."""
    return _FILETIME_EPOCH + _dt.timedelta(microseconds=ticks // 10)


def now_filetime() -> int:
    """The current time as FILETIME (the default clock of the store)."""
    return filetime_from_datetime(_dt.datetime.now(_dt.UTC))


# --- Validation -----------------------------------------------------------------


def _int(value: object, bounds: tuple[int, int], what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidParameter(f"{what} needs an int, got {type(value).__name__}")
    if not bounds[0] <= value <= bounds[1]:
        raise errors.InvalidParameter(f"{what} value out of range: {value}")
    return value


def _float(value: object, what: str, *, single: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.InvalidParameter(f"{what} needs a float, got {type(value).__name__}")
    number = float(value)
    if math.isnan(number):
        raise errors.InvalidParameter(f"{what} must not be NaN")
    if single:
        try:
            number = struct.unpack("<f", struct.pack("<f", number))[0]
        except OverflowError:
            raise errors.InvalidParameter(f"{what} value out of binary32 range") from None
    return number


def _string(value: object, what: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise errors.InvalidParameter(f"{what} needs a str, got {type(value).__name__}")
    if len(value) * 2 > limits.max_value_bytes:  # cheap check before encoding
        raise errors.StringTooLong(f"{what} longer than {limits.max_value_bytes} bytes")
    if "\x00" in value:
        raise errors.InvalidParameter(f"{what} must not contain NUL")
    try:
        encoded = value.encode("utf-16-le")
    except UnicodeEncodeError:
        raise errors.InvalidParameter(f"{what} holds a lone surrogate") from None
    if len(encoded) > limits.max_value_bytes:
        raise errors.StringTooLong(f"{what} longer than {limits.max_value_bytes} bytes")
    return value


def _binary(value: object, what: str, limits: Limits) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise errors.InvalidParameter(f"{what} needs bytes, got {type(value).__name__}")
    data = bytes(value)
    if len(data) > limits.max_value_bytes:
        raise errors.TooBig(f"{what} longer than {limits.max_value_bytes} bytes")
    return data


def _systime(value: object, what: str) -> int:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise errors.InvalidParameter(f"{what}: naive datetime")
        value = filetime_from_datetime(value)
    return _int(value, (0, _FILETIME_MAX), what)


def _scalar(ptype: int, value: object, what: str, limits: Limits) -> Scalar:
    if ptype == PropType.PT_SHORT:
        return _int(value, _I16, what)
    if ptype == PropType.PT_LONG:
        return _int(value, _I32, what)
    if ptype in (PropType.PT_I8, PropType.PT_CURRENCY):
        return _int(value, _I64, what)
    if ptype == PropType.PT_FLOAT:
        return _float(value, what, single=True)
    if ptype in (PropType.PT_DOUBLE, PropType.PT_APPTIME):
        return _float(value, what, single=False)
    if ptype == PropType.PT_BOOLEAN:
        if not isinstance(value, bool):
            raise errors.InvalidParameter(f"{what} needs a bool, got {type(value).__name__}")
        return value
    if ptype in (PropType.PT_STRING8, PropType.PT_UNICODE):
        return _string(value, what, limits)
    if ptype == PropType.PT_SYSTIME:
        return _systime(value, what)
    if ptype == PropType.PT_CLSID:
        data = _binary(value, what, limits)
        if len(data) != 16:
            raise errors.InvalidParameter(f"{what} needs 16 bytes, got {len(data)}")
        return data
    if ptype == PropType.PT_BINARY:
        return _binary(value, what, limits)
    raise errors.InvalidType(f"{what}: type 0x{ptype:04X} cannot be stored")


def check_tag(tag: int) -> None:
    """Check that ``tag`` names a storable property.

    Raises:
        InvalidParameter: not a 32-bit value, or the id is 0 (PROP_ID_NULL) or 0xFFFF.
        InvalidType: the type cannot be stored (PT_ERROR, PT_OBJECT, unknown types).
    """
    if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag <= 0xFFFFFFFF:
        raise errors.InvalidParameter(f"bad property tag {tag!r}")
    pid = prop_id(tag)
    if pid in (0, 0xFFFF):
        raise errors.InvalidParameter(f"bad property id in tag 0x{tag:08X}")
    if prop_type(tag) not in STORABLE_TYPES:
        raise errors.InvalidType(f"type of tag 0x{tag:08X} cannot be stored")


def validate(tag: int, value: object, limits: Limits = DEFAULT_LIMITS) -> PropData:
    """Check ``value`` against ``tag`` and ``limits``; return its normalised form.

    Raises:
        InvalidType, InvalidParameter, StringTooLong, TooBig: see the module docstring.
    """
    check_tag(tag)
    ptype = prop_type(tag)
    what = tag_name(tag)
    if not ptype & MV_FLAG:
        return _scalar(ptype, value, what, limits)
    if not isinstance(value, list | tuple):
        raise errors.InvalidParameter(f"{what} needs a list, got {type(value).__name__}")
    if len(value) > limits.max_mv_values:
        raise errors.TooBig(f"{what} has more than {limits.max_mv_values} values")
    items = [_scalar(ptype & ~MV_FLAG, item, what, limits) for item in value]
    if value_size(tag, items) > limits.max_value_bytes:
        raise errors.TooBig(f"{what} larger than {limits.max_value_bytes} bytes")
    return items


# --- Sizes and ordering -----------------------------------------------------------

_FIXED_SIZES = {
    PropType.PT_SHORT: 2,
    PropType.PT_LONG: 4,
    PropType.PT_FLOAT: 4,
    PropType.PT_DOUBLE: 8,
    PropType.PT_CURRENCY: 8,
    PropType.PT_APPTIME: 8,
    PropType.PT_ERROR: 4,
    PropType.PT_BOOLEAN: 2,
    PropType.PT_I8: 8,
    PropType.PT_SYSTIME: 8,
    PropType.PT_CLSID: 16,
}


def _scalar_size(ptype: int, value: Scalar) -> int:
    fixed = _FIXED_SIZES.get(ptype)  # type: ignore[call-overload]
    if fixed is not None:
        return int(fixed)
    if isinstance(value, str):
        if ptype == PropType.PT_STRING8:
            return len(value.encode("utf-8", "surrogatepass"))
        return len(value.encode("utf-16-le", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    return 0


def value_size(tag: int, value: PropData) -> int:
    """The size in bytes of ``value`` as RES_SIZE and PR_MESSAGE_SIZE count it.

    Strings count their encoded bytes without terminator; MV values sum their items.
    """
    ptype = prop_type(tag)
    if isinstance(value, list):
        return sum(_scalar_size(ptype & ~MV_FLAG, item) for item in value)
    return _scalar_size(ptype, value)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def nocase(text: str) -> str:
    """Fold ASCII letters to lower case, as SQLite's NOCASE collation does."""
    return text.translate(_ASCII_LOWER)


def sort_key(value: PropData | None) -> tuple[Any, ...]:
    """An ordering key matching SQLite's ordering of the hot columns.

    ``None`` (property missing) sorts first; numbers and booleans by value; strings
    with NOCASE; binaries bytewise; multi-valued values element by element.
    """
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, nocase(value))
    if isinstance(value, bytes):
        return (3, value)
    return (4, tuple(sort_key(item) for item in value))


# --- Storage encoding -------------------------------------------------------------


def pack_props(props: Mapping[int, PropData]) -> bytes:
    """Encode a property dict for the per-object blob (msgpack, int keys)."""
    data: bytes = msgpack.packb(dict(props), use_bin_type=True)
    return data


def unpack_props(blob: bytes) -> dict[int, PropData]:
    """Decode a blob written by :func:`pack_props`.

    Raises:
        CorruptData: the blob is not a msgpack map of int keys.
    """
    try:
        props = msgpack.unpackb(blob, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise errors.CorruptData(f"bad property blob: {exc}") from None
    if not isinstance(props, dict) or not all(isinstance(k, int) for k in props):
        raise errors.CorruptData("property blob is not a map of tags")
    return props


def to_stream_bytes(tag: int, value: PropData) -> bytes:
    """The bytes a stream on ``tag`` exposes for ``value``."""
    ptype = prop_type(tag)
    if ptype == PropType.PT_UNICODE and isinstance(value, str):
        return value.encode("utf-16-le")
    if ptype == PropType.PT_STRING8 and isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise errors.NoSupport(f"no stream form for {tag_name(tag)}")


def from_stream_bytes(tag: int, data: bytes) -> PropData:
    """The property value stored as stream ``data`` (undecodable text is replaced)."""
    ptype = prop_type(tag)
    if ptype == PropType.PT_UNICODE:
        return data.decode("utf-16-le", "replace").replace("\x00", "\ufffd")
    if ptype == PropType.PT_STRING8:
        return data.decode("utf-8", "replace").replace("\x00", "\ufffd")
    return data
