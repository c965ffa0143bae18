"""The endpoint database: which towers serve which interface ([C706] ch. 6, [MS-RPCE] 3.1).

Theory of operation
-------------------
Services register an interface with one or more towers (usually one ``ncacn_ip_tcp``
tower carrying the dynamic port they listen on) and an annotation; they get back a
registration handle to unregister with. The EPM service answers two questions from
this table:

* ``ept_lookup`` (:meth:`EndpointDatabase.lookup`): list entries, filtered by an
  inquiry type (all, by interface, by object, by both) and a version option.
* ``ept_map`` (:meth:`EndpointDatabase.map`): given a client's partially filled tower,
  find registered towers for the same interface (same UUID and major version, a minor
  version at least the requested one), transfer syntax and protocol stack.

Pure data structure: no I/O, no clocks, no locks (the trio driver runs on one thread).
Entries keep registration order, so lookups iterate deterministically.
"""

from __future__ import annotations

import enum
import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from dcerpc.syntax import NIL_UUID, SyntaxId
from endpoint_mapper.towers import Tower

#: ``ept_max_annotation_size`` ([C706] ept IDL): 64 octets including the NUL.
MAX_ANNOTATION_SIZE = 64


class InquiryType(enum.IntEnum):
    """``inquiry_type`` of ``ept_lookup`` ([C706] ``rpc_c_ep_*``)."""

    ALL_ELTS = 0
    MATCH_BY_IF = 1
    MATCH_BY_OBJ = 2
    MATCH_BY_BOTH = 3


class VersionOption(enum.IntEnum):
    """``vers_option`` of ``ept_lookup`` (values per [MS-RPCE]/Windows, from 1)."""

    ALL = 1
    COMPATIBLE = 2
    EXACT = 3
    MAJOR_ONLY = 4
    UPTO = 5


@dataclass(frozen=True, slots=True)
class EndpointEntry:
    """One ``ept_entry_t``: an object UUID, a tower and an annotation."""

    object_uuid: uuid.UUID
    tower: Tower
    annotation: str = ""

    @property
    def interface(self) -> SyntaxId | None:
        return self.tower.interface


def version_matches(registered: SyntaxId, requested: SyntaxId, option: int) -> bool:
    """Whether a registered interface version satisfies ``option`` ([C706] ept_lookup)."""
    if registered.uuid != requested.uuid:
        return False
    have, want = (registered.major, registered.minor), (requested.major, requested.minor)
    if option == VersionOption.ALL:
        return True
    if option == VersionOption.COMPATIBLE:
        return have[0] == want[0] and have[1] >= want[1]
    if option == VersionOption.EXACT:
        return have == want
    if option == VersionOption.MAJOR_ONLY:
        return have[0] == want[0]
    if option == VersionOption.UPTO:
        return have <= want
    return False  # unknown option: nothing matches


class EndpointDatabase:
    """Registered endpoints, in registration order."""

    def __init__(self, *, max_entries: int = 1024) -> None:
        self._max_entries = max_entries
        self._registrations: dict[int, tuple[EndpointEntry, ...]] = {}
        self._handles = itertools.count(1)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._registrations.values())

    def register(
        self,
        interface: SyntaxId,
        towers: Iterable[Tower],
        annotation: str = "",
        object_uuid: uuid.UUID | None = None,
    ) -> int:
        """Registers ``towers`` for ``interface``; returns a handle for :meth:`unregister`.

        Raises:
            ValueError: a tower names another interface or cannot be encoded, the
                annotation is not ASCII or longer than 63 characters, or the database
                is full.
        """
        towers = tuple(towers)
        if not towers:
            raise ValueError("register at least one tower")
        for tower in towers:
            if tower.interface != interface:
                raise ValueError(f"tower is for {tower.interface}, not {interface}")
            tower.encode()  # validates floor limits now rather than at lookup time
        if len(annotation.encode("ascii")) + 1 > MAX_ANNOTATION_SIZE:
            raise ValueError(f"annotation longer than {MAX_ANNOTATION_SIZE - 1} characters")
        if len(self) + len(towers) > self._max_entries:
            raise ValueError("endpoint database full")
        obj = object_uuid or NIL_UUID
        handle = next(self._handles)
        self._registrations[handle] = tuple(EndpointEntry(obj, t, annotation) for t in towers)
        return handle

    def unregister(self, handle: int) -> bool:
        """Removes a registration; returns False if the handle was unknown."""
        return self._registrations.pop(handle, None) is not None

    def entries(self) -> list[EndpointEntry]:
        return [e for entries in self._registrations.values() for e in entries]

    def lookup(
        self,
        inquiry_type: int = InquiryType.ALL_ELTS,
        *,
        object_uuid: uuid.UUID | None = None,
        interface: SyntaxId | None = None,
        vers_option: int = VersionOption.ALL,
    ) -> list[EndpointEntry]:
        """Entries selected as ``ept_lookup`` selects them ([C706] ept_lookup).

        A NULL object counts as the nil UUID. Matching by interface without an
        interface, or an unknown inquiry type, selects nothing.
        """
        obj = object_uuid or NIL_UUID
        by_if = inquiry_type in (InquiryType.MATCH_BY_IF, InquiryType.MATCH_BY_BOTH)
        by_obj = inquiry_type in (InquiryType.MATCH_BY_OBJ, InquiryType.MATCH_BY_BOTH)
        if inquiry_type not in tuple(InquiryType) or (by_if and interface is None):
            return []
        selected = []
        for entry in self.entries():
            if by_obj and entry.object_uuid != obj:
                continue
            registered = entry.interface
            if by_if and (
                registered is None
                or interface is None
                or not version_matches(registered, interface, vers_option)
            ):
                continue
            selected.append(entry)
        return selected

    def map(self, tower: Tower, object_uuid: uuid.UUID | None = None) -> list[EndpointEntry]:
        """Entries whose tower serves the client's ``map_tower`` ([C706] ept_map).

        Matches floor 1 (UUID and major equal, registered minor >= requested), floor 2
        (transfer syntax equal) and the protocol ids of floors 3 and 4. With a non-nil
        object, entries registered for that object are preferred, then nil-object
        entries; with a nil object any entry matches.
        """
        wanted_if, wanted_ts, wanted_ids = (
            tower.interface,
            tower.transfer_syntax,
            tower.protocol_ids,
        )
        if wanted_if is None or wanted_ts is None or wanted_ids is None:
            return []
        candidates = [
            e
            for e in self.entries()
            if (registered := e.interface) is not None
            and version_matches(registered, wanted_if, VersionOption.COMPATIBLE)
            and e.tower.transfer_syntax == wanted_ts
            and e.tower.protocol_ids == wanted_ids
        ]
        if object_uuid is None or object_uuid == NIL_UUID:
            return candidates
        exact = [e for e in candidates if e.object_uuid == object_uuid]
        return exact or [e for e in candidates if e.object_uuid == NIL_UUID]
