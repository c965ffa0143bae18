"""The endpoint mapper and management interfaces, as :class:`dcerpc.interface.Interface`.

Theory of operation
-------------------
:func:`epm_interface` answers the ``ept`` calls of [C706] Appendix O / [MS-RPCE] 3.1
from an :class:`~endpoint_mapper.database.EndpointDatabase`;
:func:`mgmt_interface` answers the ``mgmt`` calls of [C706] Appendix Q. Handlers
decode the stub with :mod:`endpoint_mapper.stubs`, act, and return the encoded
response; a malformed stub raises :class:`~dcerpc.errors.NdrError`, which the runtime
answers with the fault ``nca_s_fault_ndr`` (0x6F7).

Choices where the specifications leave room:

* ``ept_insert``, ``ept_delete``, ``ept_inq_object`` and ``ept_mgmt_delete`` are
  refused with ``EPT_S_CANT_PERFORM_OP`` in a response stub (as Windows does; Samba
  faults instead). Their requests are not unmarshalled. The response layouts are
  those of the C706 IDL: a lone ``error_status_t`` for 0, 1 and 6, and
  ``uuid_t ept_object, error_status_t`` for ``ept_inq_object``.
* Iteration ([MS-RPCE] 3.1.4): ``ept_lookup`` and ``ept_map`` return at most
  ``size = min(max, 500)`` results per call, and the iteration ends for every client
  we know of, as Windows' does:

  - a *full* batch (``size`` results) carries status 0 and a context handle, even
    when it holds the last results: the server does not look ahead, and Samba's
    ``rpcclient epmlookup`` (which asks for one entry at a time and loops until the
    status is not 0, starting over from the top on a NULL handle) needs the handle
    to reach the end;
  - the call after the last full batch answers ``num 0``, the NULL handle and
    ``EPT_S_NOT_REGISTERED``, and forgets the iteration;
  - a *short* batch (fewer than ``size`` results) is the last: status 0 and the NULL
    handle, which is where impacket's ``hept_lookup`` (500 at a time, stops on a NULL
    handle, raises on any non-zero status) stops. A listing that is an exact
    multiple of 500 therefore ends in ``EPT_S_NOT_REGISTERED`` for impacket too, as
    against Windows;
  - an empty result is ``num 0``, NULL handle, ``EPT_S_NOT_REGISTERED``.

  The remaining results are a snapshot taken by the first call, kept in
  ``CallContext.connection_state``; at most :data:`MAX_OPEN_HANDLES` iterations stay
  open per connection (the oldest is dropped).
* An unknown (or dropped, or wrong-kind) non-NULL handle faults with
  ``nca_s_fault_context_mismatch``, as an RPC runtime does for a stale ``[in]``
  context handle. ``ept_lookup_handle_free`` always succeeds: freeing a handle we no
  longer hold leaves the client exactly where it wanted to be.
* ``max_ents`` / ``max_towers`` of 0 cannot make progress: answered with
  ``EPT_S_CANT_PERFORM_OP`` and the NULL handle (any open iteration is closed).
* Towers registered with the address 0.0.0.0 are reported with the local address
  the client reached, as [C706] ept_map asks for a usable binding.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from dcerpc.errors import FaultStatus, RpcFault
from dcerpc.interface import CallContext, Interface
from dcerpc.ndr import NULL_HANDLE, ByteOrder, ContextHandle
from dcerpc.security import OPEN_POLICY
from dcerpc.syntax import NIL_UUID
from endpoint_mapper import stubs
from endpoint_mapper.database import EndpointDatabase, EndpointEntry
from endpoint_mapper.stubs import (
    EPM_SYNTAX,
    EPT_S_CANT_PERFORM_OP,
    EPT_S_NOT_REGISTERED,
    MAX_ENTRIES,
    MGMT_SYNTAX,
    RPC_S_OK,
)

MAX_OPEN_HANDLES = 64
_STATE_KEY = "endpoint_mapper.iterations"
_UNSPECIFIED_IP = "0.0.0.0"


def _byteorder(ctx: CallContext) -> ByteOrder:
    """Request stubs are read in the byte order of the request's drep."""
    return ">" if ctx.byteorder == ">" else "<"


class _Iterations:
    """Open ``ept_lookup`` / ``ept_map`` iterations of one connection, keyed by handle."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: OrderedDict[uuid.UUID, tuple[str, tuple[EndpointEntry, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def take(self, handle: ContextHandle, kind: str) -> tuple[EndpointEntry, ...]:
        state = self._open.pop(handle.uuid, None)
        if state is None or state[0] != kind:
            raise RpcFault(FaultStatus.FAULT_CONTEXT_MISMATCH, f"unknown {kind} handle")
        return state[1]

    def put(
        self, kind: str, rest: tuple[EndpointEntry, ...], previous: ContextHandle
    ) -> ContextHandle:
        """Stores the rest of an iteration; reuses the client's handle if it had one."""
        key = uuid.uuid4() if previous.is_null else previous.uuid
        self._open[key] = (kind, rest)
        while len(self._open) > self._limit:
            self._open.popitem(last=False)
        return ContextHandle(0, key)

    def close(self, handle: ContextHandle) -> None:
        self._open.pop(handle.uuid, None)


def _iterations(ctx: CallContext, limit: int) -> _Iterations:
    table = ctx.connection_state.get(_STATE_KEY)
    if not isinstance(table, _Iterations):
        table = ctx.connection_state[_STATE_KEY] = _Iterations(limit)
    return table


def _reachable(entry: EndpointEntry, ctx: CallContext) -> EndpointEntry:
    """Replaces an unspecified IP with the local address the client connected to."""
    if entry.tower.address != _UNSPECIFIED_IP or ctx.local is None:
        return entry
    try:
        ipaddress.IPv4Address(ctx.local[0])
    except ValueError:
        return entry  # IPv6 or a name: a tower's IP floor cannot carry it
    return EndpointEntry(
        entry.object_uuid, entry.tower.with_address(ctx.local[0]), entry.annotation
    )


def _next_batch(
    table: _Iterations,
    kind: str,
    handle: ContextHandle,
    results: tuple[EndpointEntry, ...],
    max_count: int,
) -> tuple[ContextHandle, tuple[EndpointEntry, ...], int]:
    """Splits off one batch: (handle to return, batch, status)."""
    size = min(max_count, MAX_ENTRIES)
    if size == 0:
        table.close(handle)
        return NULL_HANDLE, (), EPT_S_CANT_PERFORM_OP
    if not results:
        table.close(handle)
        return NULL_HANDLE, (), EPT_S_NOT_REGISTERED
    batch, rest = results[:size], results[size:]
    if rest or len(batch) == size:
        # A full batch keeps the handle even when nothing remains: the call after it
        # answers EPT_S_NOT_REGISTERED (see the module notes).
        return table.put(kind, rest, handle), batch, RPC_S_OK
    return NULL_HANDLE, batch, RPC_S_OK


def _lookup(db: EndpointDatabase, table: _Iterations, ctx: CallContext, stub: bytes) -> bytes:
    req = stubs.decode_lookup_request(stub, _byteorder(ctx))
    if req.entry_handle.is_null:
        found = db.lookup(
            req.inquiry_type,
            object_uuid=req.object_uuid,
            interface=req.interface,
            vers_option=req.vers_option,
        )
        results = tuple(_reachable(e, ctx) for e in found)
    else:
        results = table.take(req.entry_handle, "lookup")
    handle, batch, status = _next_batch(table, "lookup", req.entry_handle, results, req.max_ents)
    return stubs.encode_lookup_response(
        stubs.LookupResponse(handle, batch, status, req.max_ents, req.next_referent)
    )


def _map(db: EndpointDatabase, table: _Iterations, ctx: CallContext, stub: bytes) -> bytes:
    req = stubs.decode_map_request(stub, _byteorder(ctx))
    if not req.entry_handle.is_null:
        results = table.take(req.entry_handle, "map")
    elif req.tower is None:
        results = ()
    else:
        results = tuple(_reachable(e, ctx) for e in db.map(req.tower, req.object_uuid))
    handle, batch, status = _next_batch(table, "map", req.entry_handle, results, req.max_towers)
    towers = tuple(e.tower for e in batch)
    return stubs.encode_map_response(
        stubs.MapResponse(handle, towers, status, req.max_towers, req.next_referent)
    )


def epm_interface(db: EndpointDatabase, *, max_open_handles: int = MAX_OPEN_HANDLES) -> Interface:
    """The endpoint mapper ``e1af8308-5d1f-11c9-91a4-08002b14a0fa`` v3.0 over ``db``."""

    async def handler(ctx: CallContext, stub: bytes) -> bytes:
        table = _iterations(ctx, max_open_handles)
        match ctx.opnum:
            case stubs.OP_EPT_LOOKUP:
                return _lookup(db, table, ctx, stub)
            case stubs.OP_EPT_MAP:
                return _map(db, table, ctx, stub)
            case stubs.OP_EPT_LOOKUP_HANDLE_FREE:
                table.close(stubs.decode_handle_free_request(stub, _byteorder(ctx)))
                return stubs.encode_handle_response(NULL_HANDLE, RPC_S_OK)
            case stubs.OP_EPT_INSERT | stubs.OP_EPT_DELETE | stubs.OP_EPT_MGMT_DELETE:
                return stubs.encode_status(EPT_S_CANT_PERFORM_OP)
            case stubs.OP_EPT_INQ_OBJECT:
                return stubs.encode_inq_object_response(NIL_UUID, EPT_S_CANT_PERFORM_OP)
        raise RpcFault(FaultStatus.OP_RNG_ERROR)

    # Anyone may ask where an interface is: unauthenticated, anonymous NTLM or a user
    # at any level, as Windows' endpoint mapper answers (rpcdump, rpcmap).
    return Interface(EPM_SYNTAX, handler, stubs.EPT_OPNUM_COUNT, name="epm", policy=OPEN_POLICY)


def mgmt_interface(
    *,
    principal_names: Mapping[int, str] | None = None,
    statistics: Callable[[], Sequence[int]] | None = None,
) -> Interface:
    """The management interface ``afa8bd80-7d8a-11c9-bef4-08002b102989`` v1.0.

    Args:
        principal_names: server principal name per authentication service id, for
            ``inq_princ_name``; a service not listed answers
            ``RPC_S_UNKNOWN_AUTHN_SERVICE`` and an empty name.
        statistics: returns ``(calls in, calls out, packets in, packets out)`` for
            ``inq_stats``; zeros when not given.
    """
    names = dict(principal_names or {})

    async def handler(ctx: CallContext, stub: bytes) -> bytes:
        order = _byteorder(ctx)
        match ctx.opnum:
            case stubs.OP_MGMT_INQ_IF_IDS:
                served = ctx.served_interfaces[:MAX_ENTRIES]
                return stubs.encode_inq_if_ids_response(stubs.InqIfIdsResponse(served))
            case stubs.OP_MGMT_INQ_STATS:
                room = stubs.decode_inq_stats_request(stub, order)
                values = tuple(statistics()) if statistics else (0,) * stubs.STATS_COUNT
                kept = values[: min(room, stubs.STATS_COUNT)]
                return stubs.encode_inq_stats_response(kept, RPC_S_OK)
            case stubs.OP_MGMT_IS_SERVER_LISTENING:
                return stubs.encode_is_server_listening_response(True, RPC_S_OK)
            case stubs.OP_MGMT_STOP_SERVER_LISTENING:
                # Never let a remote caller stop the server.
                return stubs.encode_status(stubs.ERROR_ACCESS_DENIED)
            case stubs.OP_MGMT_INQ_PRINC_NAME:
                req = stubs.decode_inq_princ_name_request(stub, order)
                name = names.get(req.authn_proto)
                status = RPC_S_OK if name is not None else stubs.RPC_S_UNKNOWN_AUTHN_SERVICE
                return stubs.encode_inq_princ_name_response(name or "", req.princ_name_size, status)
        raise RpcFault(FaultStatus.OP_RNG_ERROR)

    # Open like the endpoint mapper: rpcmap lists interfaces through it anonymously.
    return Interface(MGMT_SYNTAX, handler, stubs.MGMT_OPNUM_COUNT, name="mgmt", policy=OPEN_POLICY)
