"""Endpoint mapper client: list endpoints and resolve an interface to a port.

Theory of operation
-------------------
The ``*_on`` functions speak the ``ept`` calls ([C706] Appendix O, [MS-RPCE] 3.1)
over any object with the runtime client's ``bind`` / ``call`` methods
(:class:`RpcCaller`), so a caller that already holds a connection (for example
through the HTTPS tunnel) can reuse it. :func:`lookup`, :func:`map_endpoint` and
:func:`resolve` open a TCP connection to the endpoint mapper first. The runtime owns
the timeouts; these helpers only bound the number of ``ept_lookup`` round trips.

Iteration follows what servers actually do: Windows ends with status 0 and a NULL
handle, Samba with its last batch, ``EPT_S_NOT_REGISTERED`` and possibly a live
handle. We stop at either and free any handle still open.
"""

from __future__ import annotations

from typing import Protocol

from dcerpc.client import open_tcp_rpc_client
from dcerpc.ndr import NULL_HANDLE, ContextHandle
from dcerpc.syntax import NIL_UUID, SyntaxId
from endpoint_mapper import stubs
from endpoint_mapper.database import EndpointEntry
from endpoint_mapper.stubs import EPM_SYNTAX, EPT_S_NOT_REGISTERED, RPC_S_OK
from endpoint_mapper.towers import Tower

#: At most this many ``ept_lookup`` calls (of 500 entries each) per listing.
MAX_LOOKUP_ROUNDS = 64


class RpcCaller(Protocol):
    """What these helpers need of ``dcerpc.client.RpcClient``."""

    async def bind(self, syntax: SyntaxId) -> int: ...

    async def call(self, ctx_id: int, opnum: int, stub: bytes) -> bytes: ...


class EpmError(Exception):
    """The endpoint mapper answered with a non-zero status."""

    def __init__(self, status: int, msg: str = "") -> None:
        super().__init__(msg or f"endpoint mapper status 0x{status:08X}")
        self.status = status


class EndpointNotRegistered(EpmError):
    """The endpoint mapper has no endpoint for the requested interface."""

    def __init__(self, interface: SyntaxId | None = None) -> None:
        what = f"interface {interface}" if interface else "the request"
        super().__init__(EPT_S_NOT_REGISTERED, f"no endpoint registered for {what}")
        self.interface = interface


async def _free(rpc: RpcCaller, ctx_id: int, handle: ContextHandle) -> None:
    if not handle.is_null:
        stub = stubs.encode_handle_free_request(handle)
        await rpc.call(ctx_id, stubs.OP_EPT_LOOKUP_HANDLE_FREE, stub)


async def lookup_on(rpc: RpcCaller) -> list[EndpointEntry]:
    """All entries of the endpoint mapper behind ``rpc`` (``ept_lookup``, all elements).

    Raises:
        EpmError: a status other than 0 or ``EPT_S_NOT_REGISTERED``, or more than
            :data:`MAX_LOOKUP_ROUNDS` batches.
        dcerpc.errors.BindRejected, dcerpc.errors.RpcFault: from the runtime.
        dcerpc.errors.NdrError: the response stub was malformed.
    """
    ctx_id = await rpc.bind(EPM_SYNTAX)
    entries: list[EndpointEntry] = []
    handle = NULL_HANDLE
    for _ in range(MAX_LOOKUP_ROUNDS):
        stub = stubs.encode_lookup_request(stubs.LookupRequest(entry_handle=handle))
        reply = await rpc.call(ctx_id, stubs.OP_EPT_LOOKUP, stub)
        resp = stubs.decode_lookup_response(reply)
        entries.extend(resp.entries)
        handle = resp.entry_handle
        if resp.status not in (RPC_S_OK, EPT_S_NOT_REGISTERED):
            await _free(rpc, ctx_id, handle)
            raise EpmError(resp.status)
        if handle.is_null or resp.status == EPT_S_NOT_REGISTERED:
            await _free(rpc, ctx_id, handle)
            return entries
    await _free(rpc, ctx_id, handle)
    raise EpmError(RPC_S_OK, f"ept_lookup did not finish in {MAX_LOOKUP_ROUNDS} rounds")


def _query_tower(interface: SyntaxId, protocol: str) -> Tower:
    if protocol == "ncacn_ip_tcp":
        return Tower.tcp(interface, "0.0.0.0", 0)
    if protocol == "ncacn_http":
        return Tower.http(interface, "0.0.0.0", 0)
    raise ValueError(f"unsupported protocol sequence {protocol!r}")


async def map_endpoint_on(
    rpc: RpcCaller, interface: SyntaxId, protocol: str = "ncacn_ip_tcp"
) -> Tower | None:
    """The first tower ``ept_map`` returns for ``interface`` over ``protocol``, or None.

    Raises:
        ValueError: ``protocol`` is not ``ncacn_ip_tcp`` or ``ncacn_http``.
        EpmError: a status other than 0 or ``EPT_S_NOT_REGISTERED``.
    """
    query = _query_tower(interface, protocol)
    ctx_id = await rpc.bind(EPM_SYNTAX)
    # A nil object UUID rather than NULL, as Windows' own clients send.
    request = stubs.MapRequest(NIL_UUID, query)
    reply = await rpc.call(ctx_id, stubs.OP_EPT_MAP, stubs.encode_map_request(request))
    resp = stubs.decode_map_response(reply)
    await _free(rpc, ctx_id, resp.entry_handle)
    if resp.status not in (RPC_S_OK, EPT_S_NOT_REGISTERED):
        raise EpmError(resp.status)
    return next((t for t in resp.towers if t.protocol == protocol), None)


async def lookup(host: str, port: int = 135) -> list[EndpointEntry]:
    """Lists every endpoint registered with the endpoint mapper at ``host:port``."""
    async with open_tcp_rpc_client(host, port) as rpc:
        return await lookup_on(rpc)


async def map_endpoint(
    interface: SyntaxId, host: str, port: int = 135, protocol: str = "ncacn_ip_tcp"
) -> Tower | None:
    """Asks the endpoint mapper at ``host:port`` where ``interface`` listens."""
    async with open_tcp_rpc_client(host, port) as rpc:
        return await map_endpoint_on(rpc, interface, protocol)


async def resolve(interface: SyntaxId, host: str, port: int = 135) -> tuple[str, int]:
    """The ``(host, port)`` to reach ``interface`` over ``ncacn_ip_tcp``.

    The host is the one we asked: the tower's IP is the server's view of itself and
    may not be reachable from here (NAT), which is why impacket does the same.

    Raises:
        EndpointNotRegistered: the endpoint mapper has no TCP endpoint for it.
    """
    tower = await map_endpoint(interface, host, port)
    if tower is None or not tower.port:
        raise EndpointNotRegistered(interface)
    return host, tower.port
