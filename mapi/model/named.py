"""Named properties: (property set GUID, name or numeric LID) <-> property id.

Theory of operation
-------------------
[MS-OXCPRPT] 3.2.5.8/3.2.5.9 (RopGetPropertyIdsFromNames, RopGetNamesFromPropertyIds)
and [MS-OXPROPS] 1.3.2: a named property is identified by a property set GUID plus
either a 32-bit LID (``MNID_ID``) or a string (``MNID_STRING``). Each store maps the
names it has seen to ids 0x8000..0xFFFE, allocated in order and never reused
(:func:`next_named_id`; the store's limit on how many it maps is
:attr:`~mapi.model.limits.Limits.max_named_props`); the mapping lives in the mailbox
(``MailboxDB.named``, in SQLite :mod:`mapi.storage.named`). Names in the PS_MAPI set
with a LID below 0x8000 are the tagged property of that id (:func:`tagged_id`: no
mapping), and property ids below 0x8000 name themselves (:func:`tagged_name`).

Looking up an unknown name without the create flag yields id 0 for that name (the
caller reports MAPI_W_ERRORS_RETURNED, the property itself MAPI_E_NOT_FOUND).

This module is the model: names, their checks and the mapping rules. Looking names up
and allocating ids is the storage's (it applies these rules), so a second backend
maps names exactly as the first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

from mapi.model import errors
from mapi.model.limits import Limits

MNID_ID: Final = 0
MNID_STRING: Final = 1

#: PS_MAPI {00020328-0000-0000-C000-000000000046}, in GUID wire (little-endian) order.
PS_MAPI: Final = uuid.UUID("00020328-0000-0000-c000-000000000046").bytes_le
PS_PUBLIC_STRINGS: Final = uuid.UUID("00020329-0000-0000-c000-000000000046").bytes_le
PSETID_COMMON: Final = uuid.UUID("00062008-0000-0000-c000-000000000046").bytes_le
PS_INTERNET_HEADERS: Final = uuid.UUID("00020386-0000-0000-c000-000000000046").bytes_le

FIRST_NAMED_ID: Final = 0x8000
LAST_NAMED_ID: Final = 0xFFFE


@dataclass(frozen=True, slots=True)
class PropName:
    """A property name ([MS-OXCDATA] 2.6.1 PropertyName)."""

    guid: bytes
    kind: int
    lid: int = 0
    name: str = ""

    @classmethod
    def by_id(cls, guid: bytes, lid: int) -> PropName:
        return cls(guid, MNID_ID, lid, "")

    @classmethod
    def by_name(cls, guid: bytes, name: str) -> PropName:
        return cls(guid, MNID_STRING, 0, name)

    def validate(self, limits: Limits) -> None:
        """Check the name.

        Raises:
            InvalidParameter: bad GUID, kind, LID or string.
        """
        if not isinstance(self.guid, bytes) or len(self.guid) != 16:
            raise errors.InvalidParameter("property set GUID must be 16 bytes")
        if self.kind == MNID_ID:
            if not isinstance(self.lid, int) or not 0 <= self.lid <= 0xFFFFFFFF or self.name:
                raise errors.InvalidParameter("bad LID name")
        elif self.kind == MNID_STRING:
            if not isinstance(self.name, str) or not 0 < len(self.name) <= limits.max_name_chars:
                raise errors.InvalidParameter("bad string name length")
            if "\x00" in self.name or self.lid:
                raise errors.InvalidParameter("bad string name")
        else:
            raise errors.InvalidParameter(f"bad name kind {self.kind!r}")


def check_name_count(names: list[PropName], limits: Limits) -> None:
    """Refuse a lookup of more names than one call may ask for.

    Raises:
        InvalidParameter: too many names.
    """
    if len(names) > limits.max_props_per_call:
        raise errors.InvalidParameter("too many names")


def tagged_id(name: PropName) -> int | None:
    """The id of a name that is a tagged property (PS_MAPI, a LID below 0x8000): no
    mapping; None for every other name."""
    if name.kind == MNID_ID and name.guid == PS_MAPI and name.lid < FIRST_NAMED_ID:
        return name.lid
    return None


def check_property_id(pid: object) -> int:
    """A property id asked about by RopGetNamesFromPropertyIds.

    Raises:
        InvalidParameter: not a 16-bit property id.
    """
    if not isinstance(pid, int) or not 0 <= pid <= 0xFFFF:
        raise errors.InvalidParameter(f"bad property id {pid!r}")
    return pid


def tagged_name(pid: int) -> PropName | None:
    """The name of a property id below the named range: itself in PS_MAPI (None for 0)."""
    return PropName.by_id(PS_MAPI, pid) if pid else None


def next_named_id(count: int, top: int | None, limits: Limits) -> int:
    """The id a new name gets, in a store that maps ``count`` names whose highest id is
    ``top`` (None: none yet): the next one, never reusing an id.

    Raises:
        NotEnoughResources: the id range, or the store's limit, is exhausted.
    """
    new_id = FIRST_NAMED_ID if top is None else top + 1
    if count >= limits.max_named_props or new_id > LAST_NAMED_ID:
        raise errors.NotEnoughResources("no named property ids left in this store")
    return new_id
