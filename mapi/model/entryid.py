"""Entry ids, record keys, instance keys and change keys.

Theory of operation
-------------------
An entry id names an object for as long as it exists ([MS-OXCDATA] 2.2.4 "Folder
EntryID" / "Message EntryID" are the models). Ours is a fixed 30-byte long-term id:

======  ====  ===============================================================
offset  size  field
======  ====  ===============================================================
0       4     flags: 0x00000000 (long-term id, [MS-OXCDATA] 2.2.4.1)
4       16    provider UID: the store's random GUID (also PR_STORE_RECORD_KEY)
20      2     type, little-endian: 0x0001 folder (eitLTPrivateFolder), 0x0007
              message (eitLTPrivateMessage), 0x0100 the message store itself
22      8     object id, big-endian (the SQLite rowid of the folder or message)
======  ====  ===============================================================

Object ids are never reused within a store (``AUTOINCREMENT`` tables), so a deleted
object's entry id never names a different object later. Parsing checks length,
flags and type; the caller checks that the provider UID is its store's and answers
``MAPI_E_UNKNOWN_ENTRYID`` otherwise.

A change key is an XID ([MS-OXCFXICS] 2.2.2.2): the provider UID followed by the
6-byte big-endian change number of the object's last save.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from mapi.model import errors

ENTRYID_SIZE = 30
_LAYOUT = struct.Struct("<I16sH")


class EntryKind(enum.IntEnum):
    """The type field of an entry id."""

    FOLDER = 0x0001
    MESSAGE = 0x0007
    STORE = 0x0100


@dataclass(frozen=True, slots=True)
class EntryId:
    """A parsed entry id."""

    provider_uid: bytes
    kind: EntryKind
    object_id: int

    def to_bytes(self) -> bytes:
        """The 30-byte wire form."""
        return make_entryid(self.provider_uid, self.kind, self.object_id)


def make_entryid(provider_uid: bytes, kind: EntryKind, object_id: int) -> bytes:
    """Build the wire form of an entry id."""
    if len(provider_uid) != 16:
        raise ValueError("provider UID must be 16 bytes")
    if not 0 <= object_id < 1 << 64:
        raise ValueError("object id must fit in 64 bits")
    return _LAYOUT.pack(0, provider_uid, kind) + object_id.to_bytes(8, "big")


def parse_entryid(data: object) -> EntryId:
    """Parse an entry id.

    Raises:
        InvalidEntryId: wrong length, flags or type.
    """
    if not isinstance(data, bytes) or len(data) != ENTRYID_SIZE:
        raise errors.InvalidEntryId("entry id must be 30 bytes")
    flags, uid, kind = _LAYOUT.unpack_from(data)
    if flags != 0:
        raise errors.InvalidEntryId("entry id flags must be 0")
    try:
        entry_kind = EntryKind(kind)
    except ValueError:
        raise errors.InvalidEntryId(f"unknown entry id type 0x{kind:04X}") from None
    return EntryId(uid, entry_kind, int.from_bytes(data[22:30], "big"))


def instance_key(object_id: int) -> bytes:
    """PR_INSTANCE_KEY of a table row for ``object_id`` (unique within its table)."""
    return object_id.to_bytes(8, "big")


def change_key(provider_uid: bytes, change_number: int) -> bytes:
    """PR_CHANGE_KEY: an XID of the provider UID and the 6-byte change number."""
    return provider_uid + (change_number & 0xFFFFFFFFFFFF).to_bytes(6, "big")
