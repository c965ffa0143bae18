"""The property interface shared by folders, messages and attachments.

Theory of operation
-------------------
[MS-OXCPRPT] 3.2.5 (RopGetPropertiesSpecific, RopGetPropertiesAll,
RopGetPropertiesList, RopSetProperties, RopDeleteProperties): :class:`MapiObject`
implements ``get_props`` / ``set_props`` / ``delete_props`` / ``get_prop_list`` once,
on top of four hooks a subclass provides: its :class:`~mapi.storage.propbag.PropBag`, its
*computed* properties (owned by the server: entry ids, sizes, times, counts, change
keys), how to read a committed large value, and how to apply changes (pending for
transacted objects, immediate for folders).

Reads never fail as a whole: a missing property comes back as a ``PT_ERROR`` value
holding MAPI_E_NOT_FOUND, a value larger than
:attr:`~mapi.model.limits.Limits.max_value_bytes` as MAPI_E_NOT_ENOUGH_MEMORY (open it as a
stream instead), and the call's status is MAPI_W_ERRORS_RETURNED. Writes report a
:class:`~mapi.model.properties.PropProblem` per property that failed (MAPI_E_COMPUTED for
a computed property, the validation error otherwise) and apply the others.

String properties are stored once per id (PT_UNICODE); a read with the PT_STRING8
tag returns the same text. A read with type PT_UNSPECIFIED returns whatever type is
stored under that id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.properties import PropData, PropProblem, PropValue, from_stream_bytes, validate
from mapi.objects.context import StoreContext
from mapi.storage.propbag import PropBag, Source, TempData

_PT_ERROR = int(pt.PropType.PT_ERROR)
_PT_UNSPECIFIED = int(pt.PropType.PT_UNSPECIFIED)
#: Types whose storage key differs (8-bit strings are kept as their UTF-16 twin).
_STRING8_TYPES = frozenset({int(pt.PropType.PT_STRING8), int(pt.PropType.PT_MV_STRING8)})


@dataclass(frozen=True, slots=True)
class PropsResult:
    """The answer of ``get_props``: values in request order and the call's status."""

    hresult: int
    values: list[PropValue]

    def as_dict(self) -> dict[int, PropData]:
        """Tag -> value of the successful values."""
        return {v.tag: v.value for v in self.values if not v.is_error}


def _normalise_input(item: PropValue | tuple[int, object]) -> tuple[int, object]:
    if isinstance(item, PropValue):
        return item.tag, item.value
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int):
        return item[0], item[1]
    raise errors.InvalidParameter("property values are (tag, value) pairs")


class MapiObject:
    """Base of the objects that carry properties."""

    #: Property ids the server owns (read-only, MAPI_E_COMPUTED on write).
    computed_ids: frozenset[int] = frozenset()

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx
        self._closed = False

    # --- Hooks -------------------------------------------------------------------------

    def _bag(self) -> PropBag:
        raise NotImplementedError

    def _computed(self, tag: int) -> PropData | None:
        """The value of computed property ``tag`` (canonical), or None."""
        raise NotImplementedError

    def _computed_tags(self) -> list[int]:
        """Tags of the computed properties this object has."""
        raise NotImplementedError

    def _read_large(self, tag: int, length: int) -> bytes:
        """All the bytes of a committed large value."""
        raise NotImplementedError

    def _apply(self, sets: list[tuple[int, PropData]], deletes: list[int]) -> None:
        """Apply validated changes (canonical tags)."""
        raise NotImplementedError

    def _check_writable(self) -> None:
        """Raise unless the caller may modify this object."""

    def _begin(self) -> None:
        """Called at the start of every property call (drop per-call caches)."""

    # --- Common machinery ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InvalidObject("the object is closed")

    def _is_computed(self, tag: int) -> bool:
        return (tag >> 16) & 0xFFFF in self.computed_ids

    def _value_of(self, tag: int) -> PropData | errors.MapiError:
        """Current value of a canonical tag, or the error to report."""
        if tag >> 16 in self.computed_ids:  # _is_computed, inlined: runs for every read
            value = self._computed(tag)
            return errors.NotFound() if value is None else value
        found = self._bag().lookup(tag)
        if found is None:
            return errors.NotFound()
        source, payload = found
        if source is Source.VALUE:
            assert not isinstance(payload, TempData)
            return payload
        length = payload.length if isinstance(payload, TempData) else int(payload)  # type: ignore[arg-type]
        if length > self._ctx.limits.max_value_bytes:
            return errors.NotEnoughMemory("value too large: open it as a stream")
        data = (
            payload.read_all() if isinstance(payload, TempData) else self._read_large(tag, length)
        )
        return from_stream_bytes(tag, data)

    def _resolve_unspecified(self, tag: int) -> int:
        pid = pt.prop_id(tag)
        for candidate in self._all_tags():
            if pt.prop_id(candidate) == pid:
                return candidate
        return tag

    def _all_tags(self) -> list[int]:
        tags = [t for t in self._bag().tags() if not self._is_computed(t)]
        return tags + self._computed_tags()

    def get_props(self, tags: Sequence[int] | None = None) -> PropsResult:
        """Read properties (all of them when ``tags`` is None).

        Returns:
            A :class:`PropsResult`: values in request order, PT_ERROR values where a
            property could not be read, and MAPI_W_ERRORS_RETURNED if any.

        Raises:
            InvalidParameter: too many tags.
        """
        hresult, pairs = self.get_prop_pairs(tags)
        return PropsResult(hresult, [PropValue(tag, value) for tag, value in pairs])

    def get_prop_pairs(self, tags: Sequence[int] | None = None) -> tuple[int, list[list[Any]]]:
        """:meth:`get_props` as the wire carries it: the status, and ``[tag, value]``
        pairs (a PT_ERROR tag's value is the HRESULT). The RPC service's read path:
        no :class:`PropValue` is built only to be taken apart again."""
        with self._ctx.db.lock:
            self._check_open()
            self._begin()
            if tags is None:
                tags = self._all_tags()
            elif len(tags) > self._ctx.limits.max_props_per_call:
                raise errors.InvalidParameter("too many property tags")
            get_one = self._get_one
            pairs = [get_one(tag) for tag in tags]
            warn = _PT_ERROR in {pair[0] & 0xFFFF for pair in pairs}
            return (int(errors.MAPI_W_ERRORS_RETURNED) if warn else 0), pairs

    def _get_one(self, tag: object) -> list[Any]:
        # Plain int comparisons: this runs for every property of every read.
        if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag <= 0xFFFFFFFF:
            return [_PT_ERROR, int(errors.Hresult.MAPI_E_INVALID_PARAMETER)]
        ptype = tag & 0xFFFF
        if ptype == _PT_UNSPECIFIED:
            tag = self._resolve_unspecified(tag)
            ptype = tag & 0xFFFF
        value = self._value_of(pt.canonical_tag(tag) if ptype in _STRING8_TYPES else tag)
        if isinstance(value, errors.MapiError):
            return [pt.error_tag(tag), value.hresult]
        return [tag, value]

    def get_prop_list(self) -> list[int]:
        """Tags of every property the object has (strings as PT_UNICODE)."""
        with self._ctx.db.lock:
            self._check_open()
            self._begin()
            return self._all_tags()

    def set_props(self, values: Iterable[PropValue | tuple[int, object]]) -> list[PropProblem]:
        """Set properties; return the problems of the ones that failed.

        Raises:
            InvalidParameter: too many values, or an item is not a (tag, value) pair.
            NoAccess: the caller may not modify the object.
        """
        with self._ctx.db.lock:
            self._check_open()
            self._begin()
            items = [_normalise_input(item) for item in values]
            if len(items) > self._ctx.limits.max_props_per_call:
                raise errors.InvalidParameter("too many property values")
            self._check_writable()
            problems: list[PropProblem] = []
            sets: list[tuple[int, PropData]] = []
            for index, (tag, value) in enumerate(items):
                try:
                    if self._is_computed(tag):
                        raise errors.Computed()
                    clean = validate(tag, value, self._ctx.limits)
                    self._check_settable(tag)
                except errors.MapiError as exc:
                    problems.append(PropProblem(index, tag, exc.hresult))
                    continue
                sets.append((pt.canonical_tag(tag), clean))
            if len(set(self._bag().tags()) | {t for t, _ in sets}) > (
                self._ctx.limits.max_props_per_object
            ):
                raise errors.TooBig("too many properties on one object")
            if sets:
                self._apply(sets, [])
            return problems

    def _check_settable(self, tag: int) -> None:
        """Extra per-tag checks of a subclass (e.g. unmapped named ids)."""
        if pt.is_named_id(pt.prop_id(tag)) and not self._named_mapped(pt.prop_id(tag)):
            raise errors.InvalidParameter("named property id is not mapped in this store")

    def _named_mapped(self, pid: int) -> bool:
        db = self._ctx.db
        with db.reading() as txn:
            return db.named.is_mapped(txn, pid)

    def delete_props(self, tags: Iterable[int]) -> list[PropProblem]:
        """Delete properties; computed ones are reported as MAPI_E_COMPUTED.

        Raises:
            InvalidParameter: too many tags.
            NoAccess: the caller may not modify the object.
        """
        with self._ctx.db.lock:
            self._check_open()
            tag_list = list(tags)
            if len(tag_list) > self._ctx.limits.max_props_per_call:
                raise errors.InvalidParameter("too many property tags")
            self._check_writable()
            problems: list[PropProblem] = []
            deletes: list[int] = []
            for index, tag in enumerate(tag_list):
                if not isinstance(tag, int) or not 0 <= tag <= 0xFFFFFFFF:
                    problems.append(
                        PropProblem(index, 0, int(errors.Hresult.MAPI_E_INVALID_PARAMETER))
                    )
                elif self._is_computed(tag):
                    problems.append(PropProblem(index, tag, int(errors.Hresult.MAPI_E_COMPUTED)))
                else:
                    deletes.append(pt.canonical_tag(tag))
            if deletes:
                self._apply([], deletes)
            return problems
