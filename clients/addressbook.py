"""The address book from the client side: resolve names, browse and search the Global
Address List, read a user's details, over NSPI ([MS-OXNSPI]) with our own DCE/RPC client.

::

    async with open_address_book("ncacn_ip_tcp:mail.lan[135]", "alice", "secret") as book:
        for res in await book.resolve(["Bob", "carol@example.org"]):
            print(res.name, res.status, res.entry or res.candidates)
        page = await book.gal_page(0, 50)
        async for entry in book.gal():
            ...
        matches = await book.search("bo")          # display names starting with "bo"
        entry = await book.details(matches[0])      # title, department, office, ...

How it connects is how :func:`clients.connecting.connect` does: the same addresses
(``ncacn_ip_tcp:host[port]``, ``https://host:port/[?epm=N]``, or an e-mail address found
by autodiscover), the same user and password. The endpoint mapper (asked anonymously,
on the LAN or behind the tunnel) says where the NSPI interface is; the NSPI connection
authenticates with NTLM (or SPNEGO) at ``auth_level``: privacy by default on the LAN,
the tunnel's default ("none": TLS protects it and the proxy authenticated the user)
through the tunnel. :func:`address_book_for` opens one with a connected session's own
parameters. One NspiBind per :class:`AddressBook`; NspiUnbind on exit.

Names are resolved with NspiResolveNamesW (ANR: exact display name, login name, SMTP
address or DN, else a prefix of one); an ambiguous name's candidates come from an
NspiGetMatches with a ``PR_ANR`` restriction. Strings are asked for as Unicode
(``PT_UNICODE`` tags), so the STAT's code page does not matter to us.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import trio

from clients.autodiscover import discover, parse_email_address
from clients.connecting import (
    _REFUSED,
    DEFAULT_LAN_AUTH_LEVEL,
    DEFAULT_TUNNEL_AUTH_LEVEL,
    check_fingerprint,
    client_auth,
    open_tunnel_rpc,
    parse_address,
)
from clients.session import Session
from dcerpc.auth_context import ClientAuth
from dcerpc.client import RpcClient, open_tcp_rpc_client
from dcerpc.errors import BindRejected, ConnectionClosed, FaultStatus, RpcFault
from dcerpc.idl import nspi as idl
from dcerpc.ndr_types import Operation
from dcerpc.pdu import ProviderReason
from endpoint_mapper import EPM_SYNTAX, map_endpoint_on
from mapi.model import errors
from mapi.model import proptags as pt

# Address-book properties ([MS-OXPROPS]; Unicode forms) not in mapi.model.proptags.
PR_ACCOUNT_W: Final = 0x3A00001F
PR_TITLE_W: Final = 0x3A17001F
PR_DEPARTMENT_NAME_W: Final = 0x3A18001F
PR_OFFICE_LOCATION_W: Final = 0x3A19001F
PR_COMPANY_NAME_W: Final = 0x3A16001F
PR_BUSINESS_TELEPHONE_NUMBER_W: Final = 0x3A08001F
PR_ANR_W: Final = 0x360C001F

#: [MS-OXNSPI] constants the client needs (2.2.1).
MID_BEGINNING_OF_TABLE: Final = 0
MID_UNRESOLVED: Final = 0
MID_AMBIGUOUS: Final = 1
CP_WINDOWS_1252: Final = 1252
FL_PREFIX: Final = 0x00000002
FL_IGNORECASE: Final = 0x00010000
RELOP_EQ: Final = 4
SUCCESS: Final = 0
ERRORS_RETURNED: Final = 0x00040380
TABLE_TOO_BIG: Final = 0x80040403

#: The GAL's container id; "All Users" is 0x10 on our server.
GAL_CONTAINER: Final = 0
#: Rows per NspiQueryRows when iterating the GAL (the server gives at most 1000).
PAGE_ROWS: Final = 100
#: Most matches a search or a candidate list asks for (more: TooManyMatches).
DEFAULT_MATCH_LIMIT: Final = 200

#: The columns of every :class:`Entry`, and its attribute for each.
COLUMNS: Final[dict[int, str]] = {
    pt.PR_DISPLAY_NAME_W: "display_name",
    pt.PR_SMTP_ADDRESS_W: "smtp_address",
    pt.PR_EMAIL_ADDRESS_W: "dn",
    PR_ACCOUNT_W: "account",
    PR_TITLE_W: "title",
    PR_DEPARTMENT_NAME_W: "department",
    PR_OFFICE_LOCATION_W: "office",
    PR_BUSINESS_TELEPHONE_NUMBER_W: "phone",
    PR_COMPANY_NAME_W: "company",
}
_TAGS: Final = list(COLUMNS)


class TooManyMatches(errors.MapiError):
    """A search matched more entries than asked for (NSPI's ``TableTooBig``)."""

    code = TABLE_TOO_BIG

    def __init__(self, message: str = "") -> None:
        super().__init__(TABLE_TOO_BIG, message)


@dataclass(frozen=True, slots=True)
class Entry:
    """One address-book entry: its minimal entry id (``mid``, valid on the server that
    gave it while it runs) and the properties it has (None: not set)."""

    mid: int
    display_name: str
    smtp_address: str | None = None
    dn: str | None = None
    account: str | None = None
    title: str | None = None
    department: str | None = None
    office: str | None = None
    phone: str | None = None
    company: str | None = None

    @property
    def address(self) -> str | None:
        """Where mail to this entry goes: its SMTP address, else None."""
        return self.smtp_address

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one name resolved to: one ``entry``, several ``candidates`` (ambiguous) or
    nothing (unknown)."""

    name: str
    entry: Entry | None = None
    candidates: list[Entry] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``"resolved"``, ``"ambiguous"`` or ``"unknown"``."""
        if self.entry is not None:
            return "resolved"
        return "ambiguous" if self.candidates else "unknown"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "entry": self.entry.as_dict() if self.entry is not None else None,
            "candidates": [c.as_dict() for c in self.candidates],
        }


@dataclass(frozen=True, slots=True)
class GalPage:
    """Rows ``offset`` .. ``offset + len(entries)`` of the GAL, of ``total``."""

    offset: int
    total: int
    entries: list[Entry]


def entry_of(row: idl.PropertyRow | None, mid: int = 0) -> Entry:
    """An :class:`Entry` from a row of :data:`COLUMNS` (PT_ERROR values: not set)."""
    values: dict[str, Any] = {}
    for prop in (row.props or []) if row is not None else []:
        name = COLUMNS.get((prop.tag & 0xFFFF0000) | 0x001F)
        if name is not None and prop.tag & 0xFFFF == 0x001F and isinstance(prop.value, str):
            values[name] = prop.value
    values.setdefault("display_name", "")
    return Entry(mid=mid, **values)


class AddressBook:
    """An NspiBind on a connected DCE/RPC client; open it with :func:`open_address_book`."""

    def __init__(self, rpc: RpcClient, context_id: int, handle: Any) -> None:
        self.rpc = rpc
        self.context_id = context_id
        self.handle = handle

    async def _call(self, op: Operation, values: dict[str, Any], ok: Sequence[int] = ()) -> Any:
        stub = await self.rpc.call(self.context_id, op.opnum, op.encode_request(values))
        reply = op.decode_response(stub)
        result = reply["result"]
        if result not in (SUCCESS, *ok):
            if result == TABLE_TOO_BIG:
                raise TooManyMatches(f"{op.name}: too many matches; narrow the search")
            raise errors.error_for(result, f"{op.name} answered 0x{result:08X}")
        return reply

    @staticmethod
    def _stat(**kw: Any) -> idl.Stat:
        return idl.Stat(container_id=GAL_CONTAINER, code_page=CP_WINDOWS_1252, **kw)

    async def gal_page(self, offset: int, count: int) -> GalPage:
        """``count`` entries of the GAL (in display-name order) from ``offset``."""
        if offset < 0 or count < 1:
            raise ValueError("offset must be 0 or more and count 1 or more")
        reply = await self._call(
            idl.NspiQueryRows,
            {
                "hRpc": self.handle,
                "dwFlags": 0,
                "pStat": self._stat(current_rec=MID_BEGINNING_OF_TABLE, delta=offset),
                "lpETable": None,
                "Count": count,
                "pPropTags": _TAGS,
            },
        )
        rows = reply["ppRows"] or []
        return GalPage(offset, reply["pStat"].total_recs, await self._entries(rows))

    async def gal(self, page_rows: int = PAGE_ROWS) -> AsyncIterator[Entry]:
        """Every GAL entry, a page at a time."""
        offset = 0
        while True:
            page = await self.gal_page(offset, page_rows)
            for entry in page.entries:
                yield entry
            offset += len(page.entries)
            if not page.entries or offset >= page.total:
                return

    async def _entries(self, rows: list[idl.PropertyRow]) -> list[Entry]:
        """Rows of a table come without MIds: ask for them by DN (one round trip)."""
        entries = [entry_of(row) for row in rows]
        dns = [e.dn for e in entries]
        if not entries or any(dn is None for dn in dns):
            return entries
        mids = await self.mids_of([dn for dn in dns if dn is not None])
        return [Entry(**{**e.as_dict(), "mid": m}) for e, m in zip(entries, mids, strict=True)]

    async def mids_of(self, dns: Sequence[str]) -> list[int]:
        """NspiDNToMId: the MId of each legacy DN (0: unknown)."""
        reply = await self._call(
            idl.NspiDNToMId,
            {"hRpc": self.handle, "Reserved": 0, "pNames": [dn.encode("ascii") for dn in dns]},
        )
        return list(reply["ppOutMIds"] or [])

    async def search(
        self, text: str, *, anr: bool = False, limit: int = DEFAULT_MATCH_LIMIT
    ) -> list[Entry]:
        """GAL entries whose display name starts with ``text`` (any case), or with
        ``anr``, that ambiguous name resolution matches (name, login, address, DN, or a
        prefix of a word of them). Raises :class:`TooManyMatches` past ``limit``."""
        value = idl.PropertyValue(PR_ANR_W if anr else pt.PR_DISPLAY_NAME_W, text)
        if anr:
            restriction = idl.Restriction(
                idl.RES_PROPERTY, idl.PropertyRestriction(RELOP_EQ, PR_ANR_W, value)
            )
        else:
            restriction = idl.Restriction(
                idl.RES_CONTENT,
                idl.ContentRestriction(FL_PREFIX | FL_IGNORECASE, pt.PR_DISPLAY_NAME_W, value),
            )
        reply = await self._call(
            idl.NspiGetMatches,
            {
                "hRpc": self.handle,
                "Reserved1": 0,
                "pStat": self._stat(),
                "pReserved": None,
                "Reserved2": 0,
                "Filter": restriction,
                "lpPropName": None,
                "ulRequested": limit,
                "pPropTags": _TAGS,
            },
        )
        mids = reply["ppOutMIds"] or []
        rows = reply["ppRows"] or []
        return [entry_of(row, mid) for row, mid in zip(rows, mids, strict=False)]

    async def resolve(self, names: Sequence[str]) -> list[Resolution]:
        """Resolve each name (display name, login, SMTP address or DN, or a prefix of
        one): one :class:`Resolution` per name, in order; an ambiguous name's
        candidates are listed (at most :data:`DEFAULT_MATCH_LIMIT`)."""
        if not names:
            return []
        reply = await self._call(
            idl.NspiResolveNamesW,
            {
                "hRpc": self.handle,
                "Reserved": 0,
                "pStat": self._stat(),
                "pPropTags": _TAGS,
                "paWStr": list(names),
            },
        )
        mids = list(reply["ppMIds"] or [])
        rows = iter(reply["ppRows"] or [])
        out: list[Resolution] = []
        for name, mid in zip(names, mids, strict=False):
            if mid == MID_UNRESOLVED:
                out.append(Resolution(name))
            elif mid == MID_AMBIGUOUS:
                try:
                    found = await self.search(name, anr=True)
                except TooManyMatches:
                    found = await self.search(name, anr=True, limit=10_000)
                out.append(Resolution(name, candidates=found))
            else:
                out.append(Resolution(name, entry=entry_of(next(rows, None), mid)))
        return out

    async def details(self, entry: Entry | int | str) -> Entry:
        """Every detail of an entry (an :class:`Entry`, its MId, or its legacy DN).

        Raises:
            NotFound: no such entry.
        """
        if isinstance(entry, str):
            mid = (await self.mids_of([entry]))[0]
        elif isinstance(entry, Entry):
            mid = entry.mid
        else:
            mid = entry
        if mid in (MID_UNRESOLVED, MID_AMBIGUOUS):
            raise errors.NotFound(f"no address-book entry {entry!r}")
        reply = await self._call(
            idl.NspiGetProps,
            {
                "hRpc": self.handle,
                "dwFlags": 0,
                "pStat": self._stat(current_rec=mid),
                "pPropTags": _TAGS,
            },
            ok=(ERRORS_RETURNED,),
        )
        return entry_of(reply["ppRows"], mid)

    async def _unbind(self) -> None:
        stub = idl.NspiUnbind.encode_request({"contextHandle": self.handle, "Reserved": 0})
        await self.rpc.call(self.context_id, idl.NspiUnbind.opnum, stub)


async def _bind_nspi(rpc: RpcClient, auth: ClientAuth | None) -> int:
    try:
        return await rpc.bind(idl.NSPI_SYNTAX)
    except BindRejected as exc:
        if auth is None or exc.result:
            if auth is None and not exc.result:
                raise BindRejected(
                    f"{exc} (the address book needs an authenticated connection: use an "
                    "auth level other than none)",
                    result=exc.result,
                    reason=exc.reason,
                ) from exc
            raise
        raise errors.LogonFailed(f"{_REFUSED} ({exc})") from exc


@asynccontextmanager
async def _open_lan(host: str, port: int, auth: ClientAuth | None) -> AsyncIterator[RpcClient]:
    """Ask the endpoint mapper at ``host:port`` where NSPI is (when ``port`` is not an
    endpoint mapper's, it is taken as the address book's own port)."""
    nspi_port = port
    async with open_tcp_rpc_client(host, port) as rpc:
        try:
            await rpc.bind(EPM_SYNTAX)
        except BindRejected as exc:
            if exc.reason != ProviderReason.ABSTRACT_SYNTAX_NOT_SUPPORTED:
                raise
        else:
            tower = await map_endpoint_on(rpc, idl.NSPI_SYNTAX)
            if tower is None or tower.port is None:
                raise ConnectionClosed(
                    f"no address book registered with the endpoint mapper at {host}[{port}]"
                )
            nspi_port = tower.port
    async with open_tcp_rpc_client(host, nspi_port, auth=auth) as rpc:
        yield rpc


@asynccontextmanager
async def open_address_book(
    address: str,
    user: str,
    password: str,
    *,
    fingerprint: str | None = None,
    http2: bool = True,
    auth_level: str | None = None,
    auth_type: str = "ntlm",
) -> AsyncIterator[AddressBook]:
    """Connect to the address book at ``address`` and bind; unbinds on exit.

    The arguments are :func:`clients.connecting.connect`'s (``auth_level`` None:
    "privacy" on the LAN, "none" through the tunnel).

    Raises:
        LogonFailed: wrong user name or password.
        ConnectionClosed: the server could not be reached, or has no address book.
        TunnelError: the tunnel refused us.
        ValueError: a malformed address or fingerprint.
    """
    check_fingerprint(fingerprint)
    email = parse_email_address(address)
    if email is not None:
        user = user or email.local
        found = await discover(email, user, password, fingerprint=fingerprint)
        address, fingerprint, http2 = found.url, found.fingerprint, http2 and found.http2
    tunnelled = address.startswith("https://")
    default = DEFAULT_TUNNEL_AUTH_LEVEL if tunnelled else DEFAULT_LAN_AUTH_LEVEL
    auth = client_auth(user, password, auth_level or default, auth_type)
    if tunnelled:
        opener = open_tunnel_rpc(
            address,
            user,
            password,
            idl.NSPI_SYNTAX,
            "address book",
            fingerprint=fingerprint,
            http2=http2,
            auth=auth,
        )
    else:
        opener = _open_lan(*parse_address(address), auth)
    async with opener as rpc:
        context_id = await _bind_nspi(rpc, auth)
        request = {"dwFlags": 0, "pStat": idl.Stat(code_page=CP_WINDOWS_1252), "pServerGuid": None}
        try:
            stub = await rpc.call(
                context_id, idl.NspiBind.opnum, idl.NspiBind.encode_request(request)
            )
        except RpcFault as exc:
            if auth is None or exc.status != FaultStatus.ACCESS_DENIED:
                raise
            raise errors.LogonFailed(_REFUSED) from exc
        reply = idl.NspiBind.decode_response(stub)
        if reply["result"] != SUCCESS:
            raise errors.error_for(reply["result"], f"NspiBind answered 0x{reply['result']:08X}")
        book = AddressBook(rpc, context_id, reply["contextHandle"])
        try:
            yield book
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(5),
                suppress(ConnectionClosed, RpcFault),
            ):
                await book._unbind()


def address_book_for(session: Session) -> Any:
    """:func:`open_address_book` with the parameters ``session`` was connected with
    (:attr:`Session.connect_params`, set by :func:`clients.connecting.connect`)."""
    params = getattr(session, "connect_params", None)
    if not params:
        raise ValueError("this session was not made by connect(): give the address book's address")
    return open_address_book(**params)
