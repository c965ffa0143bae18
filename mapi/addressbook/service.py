"""The address book's DCE/RPC services: NSPI ([MS-OXNSPI]) and the referral service
([MS-OXABREF]), thin layers over :mod:`mapi.addressbook.nspi`.

Theory of operation
-------------------
:class:`AddressBookService` gives two :class:`~dcerpc.interface.Interface` objects for
``serve`` to register: NSPI (``f5cc5a18-4264-101a-8c59-08002b2f8426`` v56.0) and the
referral interface (``1544f5e0-613c-11d1-93df-00c04fd7bd09`` v1.0). Both take NDR, and
both ask what the store asks of a LAN caller (``[rpc] min_auth_level``, privacy by
default, anonymous refused): the runtime refuses less before a handler runs.

A call: the stub is decoded with :mod:`dcerpc.idl.nspi`'s operation under a
:class:`~dcerpc.ndr_types.Limits` budget (:data:`DECODE_LIMITS`); a stub that does not
decode raises :class:`~dcerpc.errors.NdrError`, which the runtime answers with the fault
``nca_s_fault_ndr`` and the connection goes on. The context handle is looked up; the
core (:class:`~mapi.addressbook.nspi.NspiCore`, on the current GAL snapshot) runs; the
answer is encoded. Everything after the decode is plain computation on an immutable
snapshot, bounded by the core's limits.

Where a call runs: the cheap calls (NspiBind, NspiUnbind, NspiUpdateStat,
NspiGetSpecialTable, NspiDNToMId, NspiGetProps, ... and the referral service) run in the
handler itself, on the event loop. The calls whose work grows with the directory or
the request (:data:`HEAVY_OPNUMS`: NspiQueryRows, NspiSeekEntries, NspiGetMatches,
NspiResortRestriction, NspiResolveNames, NspiResolveNamesW; milliseconds to tens of
milliseconds over a 100,000-entry GAL) go, whole (decode, look-up of the handle,
computation, encode), to the injected ``offload``: the composition root runs them in a
worker thread of the address book's own pool under a :class:`~mapi.budget.WorkBudget`
(``serve``: :func:`mapi.rpc.workers.run_budgeted`), so one client's long search never
holds up another's calls. The core's loops call :func:`mapi.budget.tick`: a call whose
caller went away (the budget cancelled) stops at its next check (answered with the fault
``nca_s_fault_cancel``, which nobody reads), and one past its budget is answered with
the fault ``nca_s_server_too_busy``. A thread
reads the bind table only (dictionary look-ups, atomic under the GIL); NspiBind and
NspiUnbind, which change it, run on the event loop. Without ``offload`` (tests, tools)
every call runs in the handler.

Context handles: NspiBind makes one (20 octets, a random UUID) bound to the identity the
connection authenticated as (``ctx.auth``) and to the connection: it is forgotten when
the connection closes or at NspiUnbind. A call with a handle that is unknown, belongs to
another user or to another connection is answered with the fault
``nca_s_fault_context_mismatch``, as the RPC runtime does for a context handle it does
not know ([C706] 14.5); NspiUnbind of such a handle answers ``UnbindFailure``. At most
:data:`MAX_BINDS` handles per connection (more: ``OutOfResources``).

impacket's ``nspi.py`` marshals four calls differently from the IDL (its NspiGetMatches
and NspiResortRestriction are commented out): NspiGetProps and NspiGetSpecialTable send
``pStat`` as a unique pointer (and NspiGetSpecialTable ``lpVersion`` as one too; its
``hNspiGetProps`` also sends ``cValues`` one too large with the array's size equal to
it), NspiSeekEntries sends its two tag arrays inline without pointers (``cValues`` left
0, and an empty array where it means NULL), and
NspiGetIDsFromNames sends an array of structures rather than of pointers. We accept
those shapes too, so ``exchanger.py`` works: for NspiGetProps and NspiGetSpecialTable,
the word where the IDL puts ``STAT.SortType`` decides (a sort type [MS-OXNSPI] defines:
the IDL's shape; anything else, such as a referent id: impacket's); for the other two,
the IDL's shape is tried first and impacket's when that does not decode. Responses are
the same in both.

The referral service names this server: RfrGetNewDSA answers its fully qualified name,
RfrGetFQDNFromServerDN the same for any server DN (there is one server).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dcerpc.errors import FaultStatus, NdrError, RpcFault
from dcerpc.idl import nspi as idl
from dcerpc.interface import CallContext, Interface
from dcerpc.ndr import NULL_HANDLE, ContextHandle
from dcerpc.ndr_types import (
    U32,
    ConformantVaryingArray,
    Field,
    Limits,
    Operation,
    String,
    Struct,
    unique,
)
from dcerpc.security import AuthLevel, AuthPolicy
from dcerpc.syntax import SyntaxId
from mapi.addressbook import props as p
from mapi.addressbook.gal import Gal
from mapi.addressbook.nspi import NspiCore, Reply, decode8
from mapi.model import errors as mapi_errors

log = logging.getLogger("mapi.addressbook")

NSPI_SYNTAX: Final = idl.NSPI_SYNTAX
REFERRAL_SYNTAX: Final = SyntaxId.parse("1544f5e0-613c-11d1-93df-00c04fd7bd09", 1, 0)
#: The decode budget of one request: [MS-OXNSPI] caps a packet at 13 MB; a client has
#: no reason to send more than a few thousand elements.
DECODE_LIMITS: Final = Limits(max_bytes=1 << 20, max_elements=100_000, max_depth=64)
#: Live NSPI binds per connection.
MAX_BINDS: Final = 64
_BINDS: Final = "mapi.addressbook.binds"
#: NspiQueryRows, NspiSeekEntries, NspiGetMatches, NspiResortRestriction,
#: NspiResolveNames, NspiResolveNamesW: the calls given to ``offload``.
HEAVY_OPNUMS: Final = frozenset({3, 4, 5, 6, 19, 20})
#: Runs a call's whole work elsewhere (a worker thread under a work budget) and gives
#: its answer; raises the budget's MAPI error when the budget ran out or was cancelled.
Offload = Callable[[Callable[[], bytes]], Awaitable[bytes]]


# -- impacket's request shapes (see the module docstring) ------------------------------


@dataclass(frozen=True, slots=True)
class _LooseTags:
    """A tag array as impacket fills it: ``cValues`` is not kept in step with the array
    (hNspiGetProps sends one more, hNspiSeekEntries 0); the array's own count rules."""

    c_values: int
    tags: list[int]


_LOOSE_TAGS = Struct(
    "PropertyTagArray_r(impacket)",
    [
        Field("cValues", U32, attr="c_values", value_range=(0, idl.MAX_PROP_TAGS)),
        Field("aulPropTag", ConformantVaryingArray(U32), attr="tags"),
    ],
    _LooseTags,
)
_HANDLE = Field("hRpc", idl.CONTEXT_HANDLE)
_IMPACKET_GET_PROPS = Operation(
    "NspiGetProps(impacket)",
    9,
    [
        _HANDLE,
        Field("dwFlags", U32),
        Field("pStat", unique(idl.STAT)),
        Field("pPropTags", unique(_LOOSE_TAGS)),
    ],
    [],
)
_IMPACKET_GET_PROPS_IDL_TAGS = Operation(
    "NspiGetProps(impacket, IDL tags)",
    9,
    [
        _HANDLE,
        Field("dwFlags", U32),
        Field("pStat", unique(idl.STAT)),
        Field("pPropTags", idl.P_PTA),
    ],
    [],
)
_IMPACKET_SPECIAL_TABLE = Operation(
    "NspiGetSpecialTable(impacket)",
    12,
    [
        _HANDLE,
        Field("dwFlags", U32),
        Field("pStat", unique(idl.STAT)),
        Field("lpVersion", unique(U32)),
    ],
    [],
)
_IMPACKET_SEEK = Operation(
    "NspiSeekEntries(impacket)",
    4,
    [
        _HANDLE,
        Field("Reserved", U32),
        Field("pStat", idl.STAT),
        Field("pTarget", idl.PropertyValue_r),
        Field("lpETable", _LOOSE_TAGS),
        Field("pPropTags", _LOOSE_TAGS),
    ],
    [],
)
_IMPACKET_IDS_FROM_NAMES = Operation(
    "NspiGetIDsFromNames(impacket)",
    18,
    [
        _HANDLE,
        Field("Reserved", U32),
        Field("dwFlags", U32),
        Field("cPropNames", U32, count_of="pNames", value_range=(0, idl.MAX_VALUES)),
        Field(
            "pNames",
            ConformantVaryingArray(idl.PropertyName_r),
            size_is=("cPropNames", 0),
            length_is=("cPropNames", 0),
        ),
    ],
    [],
)
_KNOWN_SORT_TYPES: Final = frozenset(
    {p.SORT_DISPLAY_NAME, p.SORT_PHONETIC_DISPLAY_NAME, p.SORT_DISPLAY_NAME_RO,
     p.SORT_DISPLAY_NAME_W}
)  # fmt: skip


def _decode_first(stub: bytes, ctx: CallContext, ops: Sequence[Operation]) -> dict[str, Any]:
    """The first of ``ops`` that decodes ``stub``; the first one's error otherwise."""
    first: NdrError | None = None
    for op in ops:
        try:
            return op.decode_request(stub, _order(ctx), limits=DECODE_LIMITS)
        except NdrError as exc:
            first = first or exc
    assert first is not None
    raise first


def _order(ctx: CallContext) -> Any:
    return ">" if ctx.byteorder == ">" else "<"


def _stat_word_is_sort_type(stub: bytes, ctx: CallContext) -> bool:
    """Whether the word after the handle and one DWORD (where the IDL has
    ``STAT.SortType``) is a sort type: then the stub has the IDL's shape."""
    if len(stub) < 28:
        return True
    return int.from_bytes(stub[24:28], "big" if ctx.byteorder == ">" else "little") in (
        _KNOWN_SORT_TYPES
    )


# -- referral service ([MS-OXABREF] 3.1.4) ---------------------------------------------

_STR8 = String(wide=False)
RfrGetNewDSA = Operation(
    "RfrGetNewDSA",
    0,
    [
        Field("ulFlags", U32),
        Field("pUserDN", _STR8),
        Field("ppszUnused", unique(unique(_STR8))),
        Field("ppszServer", unique(unique(_STR8))),
    ],
    [
        Field("ppszUnused", unique(unique(_STR8))),
        Field("ppszServer", unique(unique(_STR8))),
        Field("result", U32),
    ],
)
RfrGetFQDNFromServerDN = Operation(
    "RfrGetFQDNFromServerDN",
    1,
    [
        Field("ulFlags", U32),
        Field("cbMailboxServerDN", U32, value_range=(10, 1024)),
        Field("szMailboxServerDN", _STR8),
    ],
    [Field("ppszServerFQDN", unique(_STR8)), Field("result", U32)],
)


@dataclass(slots=True)
class _Bind:
    owner: str
    code_page: int


def _caller(ctx: CallContext) -> str | None:
    auth = ctx.auth
    if auth is None or auth.anonymous or not auth.user:
        return None
    return auth.user.strip().rsplit("\\", 1)[-1].split("@", 1)[0].lower()


class AddressBookService:
    """NSPI and the referral service over the current GAL snapshot (``gal()``)."""

    def __init__(
        self,
        gal: Callable[[], Gal],
        *,
        server_fqdn: str,
        min_auth_level: int = AuthLevel.PKT_PRIVACY,
        offload: Offload | None = None,
    ) -> None:
        self._gal = gal
        self._offload = offload
        self.server_fqdn = server_fqdn
        self.min_auth_level = min_auth_level
        #: Handle UUID -> its bind; also listed per connection for the close.
        self._binds: dict[uuid.UUID, _Bind] = {}
        self._handlers: dict[int, Callable[[CallContext, bytes], bytes]] = {
            0: self._bind,
            1: self._unbind,
            2: self._update_stat,
            3: self._query_rows,
            4: self._seek_entries,
            5: self._get_matches,
            6: self._resort_restriction,
            7: self._dn_to_mid,
            8: self._get_prop_list,
            9: self._get_props,
            10: self._compare_mids,
            11: self._mod_props,
            12: self._special_table,
            13: self._template_info,
            14: self._mod_link_att,
            16: self._query_columns,
            17: self._names_from_ids,
            18: self._ids_from_names,
            19: self._resolve_names,
            20: self._resolve_names_w,
        }

    def _policy(self) -> AuthPolicy:
        return AuthPolicy(min_level=self.min_auth_level, allow_anonymous=False)

    def interface(self) -> Interface:
        """The NSPI interface."""
        return Interface(NSPI_SYNTAX, self.handle, 21, name="nspi", policy=self._policy())

    def referral_interface(self) -> Interface:
        """The referral interface ([MS-OXABREF])."""
        return Interface(
            REFERRAL_SYNTAX, self.handle_referral, 2, name="referral", policy=self._policy()
        )

    @property
    def bind_count(self) -> int:
        return len(self._binds)

    # -- dispatch -------------------------------------------------------------------------

    async def handle(self, ctx: CallContext, stub: bytes) -> bytes:
        handler = self._handlers.get(ctx.opnum)
        if handler is None:  # opnum 15: never used on the wire
            raise RpcFault(FaultStatus.OP_RNG_ERROR)
        if self._offload is None or ctx.opnum not in HEAVY_OPNUMS:
            return handler(ctx, stub)
        try:
            return await self._offload(lambda: handler(ctx, stub))
        except mapi_errors.UserCancel:
            raise RpcFault(FaultStatus.FAULT_CANCEL) from None
        except mapi_errors.Timeout:
            log.info("NSPI call (opnum %d) from %s ran out of time", ctx.opnum, ctx.peer)
            raise RpcFault(FaultStatus.SERVER_TOO_BUSY) from None

    async def handle_referral(self, ctx: CallContext, stub: bytes) -> bytes:
        if ctx.opnum == 0:
            RfrGetNewDSA.decode_request(stub, _order(ctx), limits=DECODE_LIMITS)
            server = self.server_fqdn.encode("ascii", "replace")
            return RfrGetNewDSA.encode_response(
                {"ppszUnused": None, "ppszServer": server, "result": p.SUCCESS}
            )
        RfrGetFQDNFromServerDN.decode_request(stub, _order(ctx), limits=DECODE_LIMITS)
        return RfrGetFQDNFromServerDN.encode_response(
            {"ppszServerFQDN": self.server_fqdn.encode("ascii", "replace"), "result": 0}
        )

    def _core(self) -> NspiCore:
        return NspiCore(self._gal())

    def _session(self, ctx: CallContext, handle: ContextHandle) -> _Bind:
        """The bind of ``handle`` if it is this caller's on this connection; else the
        fault the runtime gives for a context handle it does not know."""
        bind = self._binds.get(handle.uuid)
        mine = ctx.connection_state.get(_BINDS)
        if bind is None or mine is None or handle.uuid not in mine or bind.owner != _caller(ctx):
            log.info("NSPI call with an unknown or foreign context handle from %s", ctx.peer)
            raise RpcFault(FaultStatus.FAULT_CONTEXT_MISMATCH)
        return bind

    def _decode(self, op: Operation, ctx: CallContext, stub: bytes) -> dict[str, Any]:
        args = op.decode_request(stub, _order(ctx), limits=DECODE_LIMITS)
        if "hRpc" in args:
            self._session(ctx, args["hRpc"])
        return args

    # -- the calls ------------------------------------------------------------------------

    def _bind(self, ctx: CallContext, stub: bytes) -> bytes:
        args = idl.NspiBind.decode_request(stub, _order(ctx), limits=DECODE_LIMITS)
        owner = _caller(ctx)
        out: dict[str, Any] = {"pServerGuid": None, "contextHandle": NULL_HANDLE}
        if owner is None:  # the policy refuses this before us; kept as a second lock
            out["result"] = p.LOGON_FAILED
            return idl.NspiBind.encode_response(out)
        reply = self._core().bind(args["dwFlags"], args["pStat"])
        mine: set[uuid.UUID] = ctx.connection_state.setdefault(_BINDS, set())
        if reply.result == p.SUCCESS and len(mine) >= MAX_BINDS:
            reply = Reply(p.OUT_OF_RESOURCES)
        if reply.result != p.SUCCESS:
            out["result"] = reply.result
            return idl.NspiBind.encode_response(out)
        key = uuid.UUID(bytes=os.urandom(16))
        if not mine:
            ctx.on_close.append(lambda: self._forget(mine))
        mine.add(key)
        self._binds[key] = _Bind(owner, args["pStat"].code_page)
        assert reply.values is not None
        if args["pServerGuid"] is not None:
            out["pServerGuid"] = reply.values["pServerGuid"]
        out["contextHandle"] = ContextHandle(0, key)
        out["result"] = p.SUCCESS
        return idl.NspiBind.encode_response(out)

    def _forget(self, handles: set[uuid.UUID]) -> None:
        for key in handles:
            self._binds.pop(key, None)
        handles.clear()

    def _unbind(self, ctx: CallContext, stub: bytes) -> bytes:
        args = idl.NspiUnbind.decode_request(stub, _order(ctx), limits=DECODE_LIMITS)
        handle: ContextHandle = args["contextHandle"]
        mine = ctx.connection_state.get(_BINDS)
        bind = self._binds.get(handle.uuid)
        if bind is None or mine is None or handle.uuid not in mine or bind.owner != _caller(ctx):
            return idl.NspiUnbind.encode_response(
                {"contextHandle": handle, "result": p.UNBIND_FAILURE}
            )
        mine.discard(handle.uuid)
        del self._binds[handle.uuid]
        return idl.NspiUnbind.encode_response(
            {"contextHandle": NULL_HANDLE, "result": p.UNBIND_SUCCESS}
        )

    def _update_stat(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiUpdateStat, ctx, stub)
        stat = args["pStat"]
        reply = self._core().update_stat(stat, args["plDelta"] is not None)
        values = reply.values or {}
        return idl.NspiUpdateStat.encode_response(
            {
                "pStat": reply.stat or stat,
                "plDelta": values.get("plDelta", args["plDelta"]),
                "result": reply.result,
            }
        )

    def _query_rows(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiQueryRows, ctx, stub)
        stat = args["pStat"]
        reply = self._core().query_rows(
            args["dwFlags"], stat, args["lpETable"], args["Count"], args["pPropTags"]
        )
        rows = (reply.values or {}).get("ppRows")
        return idl.NspiQueryRows.encode_response(
            {"pStat": reply.stat or stat, "ppRows": rows, "result": reply.result}
        )

    def _seek_entries(self, ctx: CallContext, stub: bytes) -> bytes:
        args = _decode_first(stub, ctx, (idl.NspiSeekEntries, _IMPACKET_SEEK))
        self._session(ctx, args["hRpc"])
        stat = args["pStat"]
        etable, tags = args["lpETable"], args["pPropTags"]
        if isinstance(etable, _LooseTags):  # impacket's inline arrays; empty stands for NULL
            etable = etable.tags or None
        if isinstance(tags, _LooseTags):
            tags = tags.tags or None
        reply = self._core().seek_entries(stat, args["pTarget"], etable, tags)
        rows = (reply.values or {}).get("ppRows")
        return idl.NspiSeekEntries.encode_response(
            {"pStat": reply.stat or stat, "ppRows": rows, "result": reply.result}
        )

    def _get_matches(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiGetMatches, ctx, stub)
        stat = args["pStat"]
        reply = self._core().get_matches(
            stat, args["Filter"], args["lpPropName"], args["ulRequested"], args["pPropTags"]
        )
        values = reply.values or {}
        return idl.NspiGetMatches.encode_response(
            {
                "pStat": reply.stat or stat,
                "ppOutMIds": values.get("ppOutMIds"),
                "ppRows": values.get("ppRows"),
                "result": reply.result,
            }
        )

    def _resort_restriction(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiResortRestriction, ctx, stub)
        stat = args["pStat"]
        reply = self._core().resort_restriction(stat, args["pInMIds"])
        return idl.NspiResortRestriction.encode_response(
            {
                "pStat": reply.stat or stat,
                "ppOutMIds": (reply.values or {}).get("ppOutMIds"),
                "result": reply.result,
            }
        )

    def _dn_to_mid(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiDNToMId, ctx, stub)
        reply = self._core().dn_to_mid(args["pNames"])
        return idl.NspiDNToMId.encode_response(
            {"ppOutMIds": (reply.values or {}).get("ppOutMIds"), "result": reply.result}
        )

    def _get_prop_list(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiGetPropList, ctx, stub)
        reply = self._core().get_prop_list(args["dwFlags"], args["dwMId"], args["CodePage"])
        return idl.NspiGetPropList.encode_response(
            {"ppPropTags": (reply.values or {}).get("ppPropTags"), "result": reply.result}
        )

    def _get_props(self, ctx: CallContext, stub: bytes) -> bytes:
        if _stat_word_is_sort_type(stub, ctx):
            args = self._decode(idl.NspiGetProps, ctx, stub)
            tags = args["pPropTags"]
        else:  # impacket's shape: pStat as a unique pointer
            args = _decode_first(stub, ctx, (_IMPACKET_GET_PROPS, _IMPACKET_GET_PROPS_IDL_TAGS))
            self._session(ctx, args["hRpc"])
            loose = args["pPropTags"]
            tags = loose.tags if isinstance(loose, _LooseTags) else loose
            if args["pStat"] is None:
                raise NdrError("NspiGetProps: pStat is NULL")
        reply = self._core().get_props(args["dwFlags"], args["pStat"], tags)
        return idl.NspiGetProps.encode_response(
            {"ppRows": (reply.values or {}).get("ppRows"), "result": reply.result}
        )

    def _compare_mids(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiCompareMIds, ctx, stub)
        reply = self._core().compare_mids(args["pStat"], args["MId1"], args["MId2"])
        return idl.NspiCompareMIds.encode_response(
            {"plResult": (reply.values or {}).get("plResult", 0), "result": reply.result}
        )

    def _mod_props(self, ctx: CallContext, stub: bytes) -> bytes:
        # The directory is changed by its administrator only (mapi-anywhere usermod).
        self._decode(idl.NspiModProps, ctx, stub)
        return idl.NspiModProps.encode_response({"result": p.ACCESS_DENIED})

    def _mod_link_att(self, ctx: CallContext, stub: bytes) -> bytes:
        # An object that is not there is InvalidParameter (NspiModLinkAtt rule 4);
        # links of one that is are not the client's to change.
        args = self._decode(idl.NspiModLinkAtt, ctx, stub)
        known = args["dwMId"] in self._gal().by_mid
        result = p.ACCESS_DENIED if known else p.INVALID_PARAMETER
        return idl.NspiModLinkAtt.encode_response({"result": result})

    def _template_info(self, ctx: CallContext, stub: bytes) -> bytes:
        # No display or address-creation templates are kept, in any locale.
        self._decode(idl.NspiGetTemplateInfo, ctx, stub)
        return idl.NspiGetTemplateInfo.encode_response({"ppData": None, "result": p.INVALID_LOCALE})

    def _special_table(self, ctx: CallContext, stub: bytes) -> bytes:
        if _stat_word_is_sort_type(stub, ctx):
            args = self._decode(idl.NspiGetSpecialTable, ctx, stub)
            version = args["lpVersion"]
        else:  # impacket's shape: pStat and lpVersion as unique pointers
            args = _decode_first(stub, ctx, (_IMPACKET_SPECIAL_TABLE,))
            self._session(ctx, args["hRpc"])
            version = args["lpVersion"] or 0
            if args["pStat"] is None:
                args["pStat"] = idl.Stat()
        reply = self._core().special_table(args["dwFlags"], args["pStat"], version)
        values = reply.values or {}
        return idl.NspiGetSpecialTable.encode_response(
            {
                "lpVersion": values.get("lpVersion", version),
                "ppRows": values.get("ppRows"),
                "result": reply.result,
            }
        )

    def _query_columns(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiQueryColumns, ctx, stub)
        reply = self._core().query_columns(args["dwFlags"])
        return idl.NspiQueryColumns.encode_response(
            {"ppColumns": (reply.values or {}).get("ppColumns"), "result": reply.result}
        )

    def _names_from_ids(self, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(idl.NspiGetNamesFromIDs, ctx, stub)
        reply = self._core().get_names_from_ids(args["lpguid"], args["pPropTags"])
        values = reply.values or {}
        return idl.NspiGetNamesFromIDs.encode_response(
            {
                "ppReturnedPropTags": values.get("ppReturnedPropTags"),
                "ppNames": values.get("ppNames"),
                "result": reply.result,
            }
        )

    def _ids_from_names(self, ctx: CallContext, stub: bytes) -> bytes:
        args = _decode_first(stub, ctx, (idl.NspiGetIDsFromNames, _IMPACKET_IDS_FROM_NAMES))
        self._session(ctx, args["hRpc"])
        reply = self._core().get_ids_from_names(args["dwFlags"], args["pNames"])
        return idl.NspiGetIDsFromNames.encode_response(
            {"ppPropTags": (reply.values or {}).get("ppPropTags"), "result": reply.result}
        )

    def _resolve(self, op: Operation, key: str, ctx: CallContext, stub: bytes) -> bytes:
        args = self._decode(op, ctx, stub)
        stat = args["pStat"]
        names = [decode8(s, stat.code_page) if isinstance(s, bytes) else s for s in args[key]]
        reply = self._core().resolve_names(stat, args["pPropTags"], names)
        values = reply.values or {}
        return op.encode_response(
            {
                "ppMIds": values.get("ppMIds"),
                "ppRows": values.get("ppRows"),
                "result": reply.result,
            }
        )

    def _resolve_names(self, ctx: CallContext, stub: bytes) -> bytes:
        return self._resolve(idl.NspiResolveNames, "paStr", ctx, stub)

    def _resolve_names_w(self, ctx: CallContext, stub: bytes) -> bytes:
        return self._resolve(idl.NspiResolveNamesW, "paWStr", ctx, stub)
