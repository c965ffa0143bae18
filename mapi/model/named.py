"""Named properties: (property set GUID, name or numeric LID) <-> property id.

Theory of operation
-------------------
[MS-OXCPRPT] 3.2.5.8/3.2.5.9 (RopGetPropertyIdsFromNames, RopGetNamesFromPropertyIds)
and [MS-OXPROPS] 1.3.2: a named property is identified by a property set GUID plus
either a 32-bit LID (``MNID_ID``) or a string (``MNID_STRING``). Each store maps the
names it has seen to ids 0x8000..0xFFFE, allocated in order and never reused; the
mapping lives in the ``named_props`` table of the mailbox. Names in the PS_MAPI set
with a LID below 0x8000 are the tagged property of that id (no mapping row).

Looking up an unknown name without the create flag yields id 0 for that name (the
caller reports MAPI_W_ERRORS_RETURNED, the property itself MAPI_E_NOT_FOUND).
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from typing import Final

from mapi.model import errors
from mapi.model.limits import Limits
from mapi.model.proptags import is_named_id

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


def get_ids(
    conn: sqlite3.Connection, names: list[PropName], *, create: bool, limits: Limits
) -> list[int]:
    """Ids of ``names`` (0 for unknown ones when not creating); call in a transaction
    when ``create`` is set.

    Raises:
        InvalidParameter: a bad name, or too many names.
        NotEnoughResources: the id range of the store is exhausted.
    """
    if len(names) > limits.max_props_per_call:
        raise errors.InvalidParameter("too many names")
    out = []
    for name in names:
        name.validate(limits)
        if name.kind == MNID_ID and name.guid == PS_MAPI and name.lid < FIRST_NAMED_ID:
            out.append(name.lid)
            continue
        row = conn.execute(
            "SELECT id FROM named_props WHERE guid = ? AND kind = ? AND lid = ? AND name = ?",
            (name.guid, name.kind, name.lid, name.name),
        ).fetchone()
        if row is not None:
            out.append(int(row[0]))
        elif not create:
            out.append(0)
        else:
            out.append(_allocate(conn, name, limits))
    return out


def _allocate(conn: sqlite3.Connection, name: PropName, limits: Limits) -> int:
    count, top = conn.execute("SELECT count(*), max(id) FROM named_props").fetchone()
    new_id = FIRST_NAMED_ID if top is None else int(top) + 1
    if count >= limits.max_named_props or new_id > LAST_NAMED_ID:
        raise errors.NotEnoughResources("no named property ids left in this store")
    conn.execute(
        "INSERT INTO named_props(id, guid, kind, lid, name) VALUES (?, ?, ?, ?, ?)",
        (new_id, name.guid, name.kind, name.lid, name.name),
    )
    return new_id


def get_names(conn: sqlite3.Connection, ids: list[int]) -> list[PropName | None]:
    """Names of property ids (None where the id is not mapped)."""
    out: list[PropName | None] = []
    for pid in ids:
        if not isinstance(pid, int) or not 0 <= pid <= 0xFFFF:
            raise errors.InvalidParameter(f"bad property id {pid!r}")
        if not is_named_id(pid):
            out.append(PropName.by_id(PS_MAPI, pid) if pid else None)
            continue
        row = conn.execute(
            "SELECT guid, kind, lid, name FROM named_props WHERE id = ?", (pid,)
        ).fetchone()
        out.append(None if row is None else PropName(row[0], row[1], row[2], row[3]))
    return out


def is_mapped(conn: sqlite3.Connection, pid: int) -> bool:
    """True when a named-range id is mapped in this store."""
    return conn.execute("SELECT 1 FROM named_props WHERE id = ?", (pid,)).fetchone() is not None
