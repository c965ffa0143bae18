"""Connecting: addresses, the LAN and tunnel transports, the endpoint mapper, logon
and :func:`connect`, which yields a :class:`~clients.session.Session`.
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from clients.autodiscover import discover, parse_email_address
from clients.session import Session, _call
from dcerpc.client import RpcClient, open_rpc_client, open_tcp_rpc_client
from dcerpc.errors import BindRejected, ConnectionClosed, RpcFault
from dcerpc.pdu import ProviderReason
from dcerpc.syntax import MSGPACK
from dcerpc.trio_util import single_errors
from endpoint_mapper import EPM_SYNTAX, map_endpoint_on
from mapi.access.logon import Challenge, KdfParams, client_response
from mapi.model import errors
from mapi.wire import OP_CONNECT, STORE_SYNTAX
from tunnel.errors import TunnelError
from tunnel.tls import normalize_fingerprint
from tunnel.transport import open_tunnel_stream

#: Largest scrypt cost (N) the client accepts from a server: 2**20 with r=8 is 1 GiB.
MAX_CLIENT_KDF_N = 1 << 20


_TCP_ADDRESS = re.compile(r"^ncacn_ip_tcp:(?P<host>[^\[\]]+)(?:\[(?P<port>\d+)\])?$")


def parse_address(address: str) -> tuple[str, int]:
    """``ncacn_ip_tcp:host[port]`` (port 135 when omitted) -> (host, port)."""
    match = _TCP_ADDRESS.match(address)
    if match is None:
        raise ValueError(
            f"not an ncacn_ip_tcp address: {address!r} (expected ncacn_ip_tcp:host[port])"
        )
    port = int(match["port"] or 135)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {address!r}: {port} is not a TCP port (1-65535)")
    return match["host"], port


@asynccontextmanager
async def _open_store_rpc(host: str, port: int) -> AsyncIterator[tuple[RpcClient, int]]:
    """A client bound to the store: at ``host:port`` directly, or via the EPM there."""
    async with open_tcp_rpc_client(host, port) as rpc:
        try:
            context_id = await rpc.bind(STORE_SYNTAX, (MSGPACK,))
        except BindRejected as exc:
            if exc.reason != ProviderReason.ABSTRACT_SYNTAX_NOT_SUPPORTED:
                raise
            context_id = None
        if context_id is not None:
            yield rpc, context_id
            return
        await rpc.bind(EPM_SYNTAX)  # not the store: ask the endpoint mapper there
        tower = await map_endpoint_on(rpc, STORE_SYNTAX)
    if tower is None or tower.port is None:
        raise ConnectionClosed(f"no store registered with the endpoint mapper at {host}[{port}]")
    async with open_tcp_rpc_client(host, tower.port) as rpc:
        yield rpc, await rpc.bind(STORE_SYNTAX, (MSGPACK,))


async def logon(
    rpc: RpcClient, context_id: int, user: str, password: str, *, wake_port: int | None = None
) -> Session:
    """Challenge-response logon on a bound connection (``wake_port``: see :func:`connect`)."""
    first = await _call(rpc, context_id, OP_CONNECT, {"user": user})
    kdf = first["kdf"]
    challenge = Challenge(
        user.strip().lower(),
        first["salt"],
        KdfParams(n=kdf["n"], r=kdf["r"], p=kdf["p"]),
        first["nonce"],
    )
    params = challenge.params
    if not (params.n <= MAX_CLIENT_KDF_N and params.r <= 32 and params.p <= 4):
        raise errors.LogonFailed("the server asks for a key derivation too costly to run")
    # scrypt is memory-hard and slow on purpose: keep it off the event loop.
    cnonce, response = await trio.to_thread.run_sync(client_response, password, challenge)
    request: dict[str, Any] = {
        "user": user,
        "nonce": challenge.server_nonce,
        "cnonce": cnonce,
        "response": response,
    }
    if wake_port is not None:
        request["wake_port"] = wake_port
    reply = await _call(rpc, context_id, OP_CONNECT, request)
    return Session(rpc, context_id, reply["session"], reply["user"])


#: Where the endpoint mapper listens behind a tunnel when the URL does not say.
DEFAULT_TUNNEL_EPM_PORT = 1135


def parse_tunnel_address(address: str) -> tuple[str, str, int]:
    """``https://host:port/[?epm=N]`` -> (tunnel URL, target server name, EPM port).

    Raises:
        ValueError: not an https:// URL, a bad port, or a bad ``?epm=`` (the message
            says which, in one line).
    """
    split = urllib.parse.urlsplit(address)
    if split.scheme != "https" or not split.hostname:
        raise ValueError(f"not an https:// tunnel address: {address!r}")
    try:
        split.port  # noqa: B018 - urllib checks the port when it is read
    except ValueError:
        raise ValueError(
            f"bad port in {address!r}: give https://host:PORT/ with PORT 1-65535"
        ) from None
    query = urllib.parse.parse_qs(split.query)
    epm = _epm_port(query.get("epm", [str(DEFAULT_TUNNEL_EPM_PORT)])[-1], address)
    url = urllib.parse.urlunsplit(("https", split.netloc, split.path or "/", "", ""))
    return url, split.hostname, epm


def _epm_port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(
            f"bad ?epm= in {address!r}: {text!r} is not a port number (the endpoint "
            "mapper's port behind the tunnel, 1-65535)"
        )
    return int(text)


def _names_epm(address: str) -> bool:
    """True when the tunnel address says where the endpoint mapper is (``?epm=``)."""
    return "epm" in urllib.parse.parse_qs(urllib.parse.urlsplit(address).query)


def check_fingerprint(fingerprint: str | None) -> None:
    """Refuse a malformed pin before connecting anywhere.

    Raises:
        ValueError: not a SHA-256 fingerprint (32 hex bytes, ``AB:CD:...``).
    """
    if fingerprint is None:
        return
    try:
        normalize_fingerprint(fingerprint)
    except ValueError:
        raise ValueError(
            f"bad fingerprint {fingerprint!r}: expected the certificate's SHA-256 as 32 hex "
            "bytes, AB:CD:... (the server logs it when it starts)"
        ) from None


@asynccontextmanager
async def _open_tunnel_store_rpc(
    address: str, user: str, password: str, *, fingerprint: str | None, http2: bool
) -> AsyncIterator[tuple[RpcClient, int]]:
    url, server, epm_port = parse_tunnel_address(address)
    tunnel = functools.partial(
        open_tunnel_stream,
        url,
        server,
        username=user,
        password=password,
        http2=http2,
        fingerprint=fingerprint,
    )
    try:
        async with tunnel(epm_port) as stream, open_rpc_client(stream) as rpc:
            await rpc.bind(EPM_SYNTAX)
            tower = await map_endpoint_on(rpc, STORE_SYNTAX)
    except TunnelError as exc:
        if exc.status == 401:  # the same answer as a refused logon on the LAN
            raise errors.LogonFailed("the tunnel refused the user name or password") from exc
        if exc.status in (403, 404, 502, 503) and not _names_epm(address):
            raise TunnelError(
                f"{exc} (the address names no endpoint mapper port, so port {epm_port} "
                "was tried: add ?epm=PORT to the URL with the port the server logs for "
                "its endpoint mapper)",
                status=exc.status,
                rpc_error=exc.rpc_error,
            ) from exc
        raise
    if tower is None or tower.port is None:
        raise ConnectionClosed(f"no store registered with the endpoint mapper behind {url}")
    async with tunnel(tower.port) as stream, open_rpc_client(stream) as rpc:
        yield rpc, await rpc.bind(STORE_SYNTAX, (MSGPACK,))


@asynccontextmanager
async def connect(
    address: str,
    user: str,
    password: str,
    *,
    fingerprint: str | None = None,
    http2: bool = True,
    resume: Session | None = None,
    wake_udp: bool = False,
) -> AsyncIterator[Session]:
    """Log on to the store at ``address``; the session is closed on exit.

    Args:
        address: ``ncacn_ip_tcp:host[port]`` (LAN), ``https://host:port/`` (tunnel), or
            an e-mail address ``user@domain`` (``user@domain:port`` for a server not on
            443): the tunnel is found by autodiscover (:mod:`clients.autodiscover`), and
            an empty ``user`` means the address's own (the part before the ``@``).
        fingerprint: SHA-256 of the tunnel's certificate to pin ("AB:CD:..."), for a
            self-signed server; None verifies with the system's trust store (with an
            e-mail address: the autodiscover host's, whose answer names the tunnel's).
        http2: through the tunnel, HTTP/2 (default) or RPC over HTTP v2 on HTTP/1.1.
        resume: a session whose connection was cut: take it up again (its server-side
            state, subscriptions and queued events; :attr:`Session.last_seq` carries on)
            instead of logging on anew. Raises LogonFailed when it has expired.
        wake_udp: on the LAN, also receive UDP wake-up datagrams when events are
            queued (:meth:`Session.wait_for_wakeup`); the long-poll stays the truth.

    Raises:
        LogonFailed: wrong user name or password.
        ConnectionClosed: the server could not be reached.
        TunnelError: the tunnel refused us (HTTP status and RPC error inside), or
            autodiscover found no server for an e-mail address.
        ValueError: a malformed address or fingerprint.
    """
    check_fingerprint(fingerprint)
    email = parse_email_address(address)
    if email is not None:  # find the tunnel first (see clients.autodiscover)
        if wake_udp:
            raise ValueError("UDP wake-ups are for the LAN (ncacn_ip_tcp addresses) only")
        user = user or email.local  # no user name given: the address's own
        found = await discover(email, user, password, fingerprint=fingerprint)
        address, fingerprint, http2 = found.url, found.fingerprint, http2 and found.http2
    if address.startswith("https://"):
        if wake_udp:
            raise ValueError("UDP wake-ups are for the LAN (ncacn_ip_tcp addresses) only")
        opener = _open_tunnel_store_rpc(
            address, user, password, fingerprint=fingerprint, http2=http2
        )
    else:
        opener = _open_store_rpc(*parse_address(address))
    async with contextlib.AsyncExitStack() as stack:
        wake_socket = None
        if wake_udp:
            wake_socket = stack.enter_context(trio.socket.socket(type=socket.SOCK_DGRAM))
            await wake_socket.bind(("0.0.0.0", 0))
        rpc, context_id = await stack.enter_async_context(opener)
        wake_port = wake_socket.getsockname()[1] if wake_socket is not None else None
        if resume is None:
            session = await logon(rpc, context_id, user, password, wake_port=wake_port)
        else:
            request: dict[str, Any] = {"resume": resume.session_id}
            if wake_port is not None:
                request["wake_port"] = wake_port
            reply = await _call(rpc, context_id, OP_CONNECT, request)
            session = Session(rpc, context_id, reply["session"], reply["user"])
            session.last_seq = resume.last_seq
        session.wake_socket = wake_socket
        try:
            with single_errors():  # the caller's own exception, not a group of one
                async with trio.open_nursery() as nursery:
                    session.nursery = nursery
                    try:
                        yield session
                    finally:
                        session.nursery = None
        finally:
            # Shielded and quiet: a failing goodbye must not mask the body's own error.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(5),
                contextlib.suppress(ConnectionClosed, RpcFault, errors.MapiError),
            ):
                await session.close()
