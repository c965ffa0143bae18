"""The Global Address List: a read-only snapshot of the user directory, as NSPI serves it.

Theory of operation
-------------------
:func:`build_gal` turns the directory's accounts (:meth:`mapi.access.directory.Directory.
list_users`) into a :class:`Gal`: every enabled account not hidden from the address book
becomes a :class:`GalEntry` with the properties of a mail user (display name, SMTP
address, legacy DN, entry ids, ...), sorted by display name (case-folded, then MId, so
the order is total). Disabled and hidden accounts are left out entirely: they are in no
table, resolve to nothing and have no MId.

Containers ([MS-OXNSPI] 2.2.9, 3.1.4.1.3 ``NspiGetSpecialTable``): the GAL (container id
0, every entry) and "All Users" (:data:`ALL_USERS_ID`, the same entries: every recipient
here is a user). There are no distribution lists, contacts, rooms or templates.

Minimal entry ids (MIds, 2.2.9.1) are numbers the server picks: here they are given in
order of first sight from :data:`FIRST_MID` up and kept across rebuilds (``previous``),
so a client's MIds stay valid while the server runs when the directory changes. They
are never below :data:`FIRST_MID`, so never one of the reserved MIds (0, 1, 2).

Names: the legacy DN of a user is ``/o=<org>/ou=Exchange Administrative Group
(FYDIBOHF23SPDLT)/cn=Recipients/cn=<login name>``; the object GUID is the account's
stable random user id. A snapshot is immutable: a rebuild makes a new one, and NSPI
calls in flight keep the one they started with.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from mapi.access.directory import UserRecord
from mapi.addressbook import props as p

#: The container id of the GAL (2.2.9) and of "All Users".
GAL_ID: Final = 0
ALL_USERS_ID: Final = 0x00000010
#: The first MId given to an entry.
FIRST_MID: Final = 0x00001000
ADMIN_GROUP: Final = "Exchange Administrative Group (FYDIBOHF23SPDLT)"
#: The organisation named in legacy DNs (``/o=...``).
DEFAULT_ORGANIZATION: Final = "mapi-anywhere"


def fold(text: str) -> str:
    """The comparison key of names: case-folded (sorts and searches ignore case)."""
    return text.casefold()


@dataclass(frozen=True, slots=True)
class GalEntry:
    """One mail user of the address book."""

    mid: int
    username: str
    display_name: str
    smtp: str
    dn: str
    object_guid: uuid.UUID
    title: str | None = None
    department: str | None = None
    office: str | None = None
    phone: str | None = None
    company: str | None = None

    def permanent_entry_id(self) -> bytes:
        """[MS-OXNSPI] 2.3.8.3: type 0, the NSPI provider GUID, version 1, display type,
        the DN as a NUL-terminated 8-bit string."""
        return (
            b"\x00\x00\x00\x00"
            + p.GUID_NSPI
            + (1).to_bytes(4, "little")
            + p.DT_MAILUSER.to_bytes(4, "little")
            + self.dn.encode("ascii", "replace")
            + b"\x00"
        )

    def ephemeral_entry_id(self, server_guid: bytes) -> bytes:
        """[MS-OXNSPI] 2.3.8.2: type 0x87, the server's GUID, version 1, display type,
        the MId."""
        return (
            b"\x87\x00\x00\x00"
            + server_guid
            + (1).to_bytes(4, "little")
            + p.DT_MAILUSER.to_bytes(4, "little")
            + self.mid.to_bytes(4, "little")
        )

    def values(self, server_guid: bytes) -> dict[int, object]:
        """Every property the entry has, by Unicode tag (strings as :class:`str`)."""
        out: dict[int, object] = {
            p.PR_ENTRYID: self.permanent_entry_id(),
            p.PR_RECORD_KEY: self.permanent_entry_id(),
            p.PR_INSTANCE_KEY: self.mid.to_bytes(4, "little"),
            p.PR_MAPPING_SIGNATURE: p.GUID_NSPI,
            p.PR_OBJECT_TYPE: p.MAPI_MAILUSER,
            p.PR_DISPLAY_TYPE: p.DT_MAILUSER,
            p.PR_DISPLAY_TYPE_EX: p.DT_MAILUSER,
            p.PR_DISPLAY_NAME: self.display_name,
            p.PR_TRANSMITABLE_DISPLAY_NAME: self.display_name,
            p.PR_DISPLAY_NAME_PRINTABLE: self.display_name.encode("ascii", "replace").decode(),
            p.PR_ADDRTYPE: "EX",
            p.PR_EMAIL_ADDRESS: self.dn,
            p.PR_SEARCH_KEY: b"EX:" + self.dn.upper().encode("ascii", "replace") + b"\x00",
            p.PR_ACCOUNT: self.username,
            p.PR_EMS_AB_OBJECT_GUID: self.object_guid.bytes_le,
        }
        if self.smtp:
            out[p.PR_SMTP_ADDRESS] = self.smtp
            out[p.PR_EMS_AB_PROXY_ADDRESSES] = [f"SMTP:{self.smtp}"]
        for tag, value in (
            (p.PR_TITLE, self.title),
            (p.PR_DEPARTMENT_NAME, self.department),
            (p.PR_OFFICE_LOCATION, self.office),
            (p.PR_BUSINESS_TELEPHONE_NUMBER, self.phone),
            (p.PR_PRIMARY_TELEPHONE_NUMBER, self.phone),
            (p.PR_COMPANY_NAME, self.company),
        ):
            if value:
                out[tag] = value
        return out


#: Every tag an entry may have (NspiQueryColumns), in a stable order.
ENTRY_TAGS: Final = (
    p.PR_ENTRYID,
    p.PR_RECORD_KEY,
    p.PR_INSTANCE_KEY,
    p.PR_MAPPING_SIGNATURE,
    p.PR_OBJECT_TYPE,
    p.PR_DISPLAY_TYPE,
    p.PR_DISPLAY_TYPE_EX,
    p.PR_DISPLAY_NAME,
    p.PR_TRANSMITABLE_DISPLAY_NAME,
    p.PR_DISPLAY_NAME_PRINTABLE,
    p.PR_ADDRTYPE,
    p.PR_EMAIL_ADDRESS,
    p.PR_SEARCH_KEY,
    p.PR_ACCOUNT,
    p.PR_EMS_AB_OBJECT_GUID,
    p.PR_SMTP_ADDRESS,
    p.PR_EMS_AB_PROXY_ADDRESSES,
    p.PR_TITLE,
    p.PR_DEPARTMENT_NAME,
    p.PR_OFFICE_LOCATION,
    p.PR_BUSINESS_TELEPHONE_NUMBER,
    p.PR_PRIMARY_TELEPHONE_NUMBER,
    p.PR_COMPANY_NAME,
)


@dataclass(frozen=True, slots=True)
class Container:
    """An address book container: its id, name and the entries it lists."""

    cid: int
    name: str
    depth: int = 0


@dataclass(slots=True)
class _Index:
    """Sorted keys for prefix searches: ``keys[i]`` belongs to ``mids[i]``."""

    keys: list[str] = field(default_factory=list)
    mids: list[int] = field(default_factory=list)

    def prefixed(self, prefix: str, limit: int) -> list[int]:
        """MIds whose key starts with ``prefix`` (at most ``limit``, in key order)."""
        start = bisect.bisect_left(self.keys, prefix)
        out: list[int] = []
        for i in range(start, len(self.keys)):
            if not self.keys[i].startswith(prefix) or len(out) >= limit:
                break
            out.append(self.mids[i])
        return out


class Gal:
    """An immutable snapshot of the address book."""

    def __init__(
        self,
        entries: Iterable[GalEntry],
        *,
        organization: str,
        server_guid: bytes,
        version: int = 1,
    ) -> None:
        ordered = sorted(entries, key=lambda e: (fold(e.display_name), e.mid))
        self.organization = organization
        self.server_guid = server_guid
        self.version = version
        #: Entries in display-name order (the order of every container's table).
        self.entries: tuple[GalEntry, ...] = tuple(ordered)
        self.mids: tuple[int, ...] = tuple(e.mid for e in ordered)
        self.by_mid: dict[int, GalEntry] = {e.mid: e for e in ordered}
        self.position: dict[int, int] = {e.mid: i for i, e in enumerate(ordered)}
        #: Case-folded display names, in table order (bisect for NspiSeekEntries).
        self.sort_keys: list[str] = [fold(e.display_name) for e in ordered]
        self.by_dn: dict[str, int] = {fold(e.dn): e.mid for e in ordered}
        self.by_guid: dict[bytes, int] = {e.object_guid.bytes_le: e.mid for e in ordered}
        self.exact: dict[str, set[int]] = {}
        words: list[tuple[str, int]] = []
        for e in ordered:
            for name in (
                e.display_name,
                e.username,
                e.smtp,
                e.dn,
                f"smtp:{e.smtp}" if e.smtp else "",
            ):
                if name:
                    self.exact.setdefault(fold(name), set()).add(e.mid)
            keys = {fold(e.username), *fold(e.display_name).split()}
            if e.smtp:
                keys.add(fold(e.smtp))
            words.extend((k, e.mid) for k in keys)
        words.sort()
        self.words = _Index([k for k, _ in words], [m for _, m in words])
        self.containers: tuple[Container, ...] = (
            Container(GAL_ID, "Global Address List"),
            Container(ALL_USERS_ID, "All Users"),
        )
        self.container_ids = frozenset(c.cid for c in self.containers)

    def __len__(self) -> int:
        return len(self.entries)

    def dn_of_container(self, container: Container) -> str:
        if container.cid == GAL_ID:
            return "/"
        return f"/guid={uuid.uuid5(uuid.UUID(bytes=self.server_guid), container.name).hex}"

    def container_entry_id(self, container: Container) -> bytes:
        """The permanent entry id of a container (display type DT_CONTAINER)."""
        return (
            b"\x00\x00\x00\x00"
            + p.GUID_NSPI
            + (1).to_bytes(4, "little")
            + p.DT_CONTAINER.to_bytes(4, "little")
            + self.dn_of_container(container).encode("ascii")
            + b"\x00"
        )

    def mid_of_guid_dn(self, dn: str) -> int:
        """The MId of an object-GUID DN (``/guid=<32 hex>`` or ``/o=NT5/.../cn=<32
        hex>``, the GUID's little-endian layout, as impacket's ``get_dn_from_guid``
        writes it; case-folded), 0 when it is not one or names nobody here."""
        if not dn.startswith(("/guid=", "/o=nt5/")):
            return 0
        tail = dn.rsplit("=", 1)[-1]
        if len(tail) != 32:
            return 0
        try:
            return self.by_guid.get(bytes.fromhex(tail), 0)
        except ValueError:
            return 0

    def resolve(self, text: str, limit: int = 2) -> list[int]:
        """Ambiguous name resolution ([MS-OXNSPI] 3.1.4.7, our policy): the entries whose
        display name, login name, SMTP address (with or without ``SMTP:``) or legacy DN
        equals ``text`` ignoring case; else the one an object-GUID DN names
        (:meth:`mid_of_guid_dn`; ``exchanger.py nspi guid-known`` resolves those); if
        none, those with a display-name word, login name or SMTP address starting with
        it. At most ``limit`` MIds (in table order when
        ambiguous): the caller needs only to tell one from several."""
        key = fold(text.strip())
        if not key:
            return []
        exact = self.exact.get(key)
        if exact:
            return sorted(exact, key=self.position.__getitem__)[:limit]
        by_guid = self.mid_of_guid_dn(key)
        if by_guid:
            return [by_guid]
        found: list[int] = []
        for mid in self.words.prefixed(key, limit * 8):
            if mid not in found:
                found.append(mid)
            if len(found) >= limit:
                break
        return found


def legacy_dn(organization: str, username: str) -> str:
    return f"/o={organization}/ou={ADMIN_GROUP}/cn=Recipients/cn={username}"


def build_gal(
    users: Iterable[UserRecord],
    *,
    organization: str,
    server_guid: bytes,
    previous: Mapping[str, int] | None = None,
    version: int = 1,
) -> tuple[Gal, dict[str, int]]:
    """The snapshot of ``users`` (disabled and hidden ones left out), and the user id ->
    MId map to pass as ``previous`` next time (MIds are kept, new users get new ones)."""
    mids = dict(previous or {})
    next_mid = max([FIRST_MID - 1, *mids.values()]) + 1
    entries: list[GalEntry] = []
    for user in users:
        if user.disabled or user.hidden:
            continue
        mid = mids.get(user.user_id)
        if mid is None:
            mid = mids[user.user_id] = next_mid
            next_mid += 1
        try:
            guid = uuid.UUID(hex=user.user_id)
        except ValueError:
            guid = uuid.uuid5(uuid.NAMESPACE_OID, user.user_id)
        entries.append(
            GalEntry(
                mid=mid,
                username=user.username,
                display_name=user.display_name or user.username,
                smtp=user.email,
                dn=legacy_dn(organization, user.username),
                object_guid=guid,
                title=user.title,
                department=user.department,
                office=user.office,
                phone=user.phone,
                company=user.company,
            )
        )
    return Gal(entries, organization=organization, server_guid=server_guid, version=version), mids
