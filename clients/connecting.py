"""Connecting: addresses, the LAN and tunnel transports, the endpoint mapper, logon
and :func:`connect`, which yields a :class:`~clients.session.Session`.

Security (docs/security.md): on the LAN the store connection authenticates with NTLM
(or SPNEGO) at packet privacy by default, from the user's password: every PDU is signed
and sealed. Through the tunnel, TLS protects the traffic and the proxy authenticated
the user, so by default the store connection adds no DCE/RPC authentication (any level
can be asked for). The endpoint mapper is always asked anonymously. On every transport
the logon is the store's challenge-response; the client refuses a key derivation below
:data:`~mapi.access.logon.MIN_KDF_COST` and checks the server's proof.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import os
import re
import socket
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from clients.autodiscover import discover, parse_email_address
from clients.session import Session, _call
from dcerpc.auth_context import ClientAuth
from dcerpc.client import RpcClient, open_rpc_client, open_tcp_rpc_client
from dcerpc.errors import BindRejected, ConnectionClosed, FaultStatus, RpcFault
from dcerpc.pdu import ProviderReason
from dcerpc.security import AuthLevel, AuthType
from dcerpc.syntax import MSGPACK, SyntaxId
from dcerpc.trio_util import single_errors
from endpoint_mapper import EPM_SYNTAX, map_endpoint_on
from mapi.access.logon import (
    MIN_KDF_COST,
    NONCE_BYTES,
    Challenge,
    KdfParams,
    derive_key,
    response_with_key,
    server_proof,
)
from mapi.model import errors
from mapi.wire import OP_CONNECT, STORE_SYNTAX
from tunnel.errors import TunnelError
from tunnel.tls import normalize_fingerprint
from tunnel.transport import open_tunnel_stream

#: Largest scrypt cost (N) the client accepts from a server: 2**20 with r=8 is 1 GiB.
MAX_CLIENT_KDF_N = 1 << 20


#: ``auth_level`` names (:func:`connect`, ``mapi-cli --auth-level``) and their levels;
#: "none": no DCE/RPC authentication.
AUTH_LEVELS: dict[str, int] = {
    "none": AuthLevel.NONE,
    "connect": AuthLevel.CONNECT,
    "integrity": AuthLevel.PKT_INTEGRITY,
    "privacy": AuthLevel.PKT_PRIVACY,
}
#: ``auth_type`` names and their DCE/RPC auth types.
AUTH_TYPES: dict[str, int] = {"ntlm": AuthType.NTLM, "spnego": AuthType.SPNEGO}
#: The level asked for on each transport when ``auth_level`` is None.
DEFAULT_LAN_AUTH_LEVEL = "privacy"
DEFAULT_TUNNEL_AUTH_LEVEL = "none"

_REFUSED = (
    "wrong user name or password, or too many failed logons (NTLM's refusal does not say "
    "which); an account whose password was set before NTLM support needs it set again: "
    "mapi-anywhere passwd USER"
)


def client_auth(user: str, password: str, level: str, auth_type: str = "ntlm") -> ClientAuth | None:
    """The DCE/RPC authentication ``level`` (a name of :data:`AUTH_LEVELS`) asks for,
    None for "none".

    Raises:
        ValueError: an unknown level or auth type.
    """
    if level not in AUTH_LEVELS:
        raise ValueError(f"auth level must be one of {', '.join(AUTH_LEVELS)}, not {level!r}")
    if auth_type not in AUTH_TYPES:
        raise ValueError(f"auth type must be one of {', '.join(AUTH_TYPES)}, not {auth_type!r}")
    if level == "none":
        return None
    return ClientAuth(
        user=user,
        password=password,
        auth_type=AUTH_TYPES[auth_type],
        auth_level=AUTH_LEVELS[level],
    )


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
async def _open_store_rpc(
    host: str, port: int, auth: ClientAuth | None = None
) -> AsyncIterator[tuple[RpcClient, int]]:
    """A client bound to the store: at ``host:port`` directly, or via the EPM there.

    The first connection is anonymous (the endpoint mapper is open to all): it binds
    the store, and when ``port`` is an endpoint mapper's, asks it where the store is.
    With ``auth``, the store connection is then made authenticated.
    """
    tower_port: int | None = None
    async with open_tcp_rpc_client(host, port) as rpc:
        try:
            context_id: int | None = await rpc.bind(STORE_SYNTAX, (MSGPACK,))
        except BindRejected as exc:
            if exc.result and exc.reason == ProviderReason.ABSTRACT_SYNTAX_NOT_SUPPORTED:
                context_id = None  # not the store: an endpoint mapper, perhaps
            elif auth is not None:
                context_id, tower_port = None, port  # the store, refusing the anonymous
            else:
                raise BindRejected(
                    f"{exc} (the store needs an authenticated connection: use an auth "
                    "level other than none)",
                    result=exc.result,
                    reason=exc.reason,
                ) from exc
        if context_id is not None:
            if auth is None:
                yield rpc, context_id
                return
            tower_port = port
        elif tower_port is None:
            await rpc.bind(EPM_SYNTAX)  # not the store: ask the endpoint mapper there
            tower = await map_endpoint_on(rpc, STORE_SYNTAX)
            if tower is None or tower.port is None:
                raise ConnectionClosed(
                    f"no store registered with the endpoint mapper at {host}[{port}]"
                )
            tower_port = tower.port
    async with open_tcp_rpc_client(host, tower_port, auth=auth) as rpc:
        yield rpc, await _bind_store(rpc, auth)


async def _bind_store(rpc: RpcClient, auth: ClientAuth | None) -> int:
    """Bind the store; a refused authentication is a refused logon."""
    try:
        return await rpc.bind(STORE_SYNTAX, (MSGPACK,))
    except BindRejected as exc:
        if auth is None or exc.result:
            raise
        raise errors.LogonFailed(f"{_REFUSED} ({exc})") from exc


async def logon(
    rpc: RpcClient,
    context_id: int,
    user: str,
    password: str,
    *,
    wake_port: int | None = None,
    kdf_floor: int = MIN_KDF_COST,
) -> Session:
    """Challenge-response logon on a bound connection (``wake_port``: see :func:`connect`).

    The server's scrypt parameters must cost at least ``kdf_floor`` (``n * r``), and its
    answer must prove it knows the password's key.
    """
    reply, _ = await _prove(rpc, context_id, user, password, {}, wake_port, kdf_floor)
    return Session(rpc, context_id, reply["session"], reply["user"])


async def _prove(
    rpc: RpcClient,
    context_id: int,
    user: str,
    password: str,
    extra: dict[str, Any],
    wake_port: int | None,
    kdf_floor: int,
) -> tuple[dict[str, Any], bytes]:
    """The two steps of the challenge-response (``extra``: more of step 2's request, a
    ``resume``); checks the server's proof. Returns step 2's answer and K."""
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
    if not params.meets_floor(kdf_floor):
        raise errors.LogonFailed(
            f"the server offers a key derivation weaker than the floor (scrypt n*r = "
            f"{params.n * params.r} < {kdf_floor}): not answered, since a weak answer "
            "could be cracked offline; is this the real server?"
        )
    # scrypt is memory-hard and slow on purpose: keep it off the event loop.
    key = await trio.to_thread.run_sync(derive_key, password, challenge.salt, params)
    cnonce = os.urandom(NONCE_BYTES)
    request: dict[str, Any] = {
        "user": user,
        "nonce": challenge.server_nonce,
        "cnonce": cnonce,
        "response": response_with_key(key, challenge, cnonce),
        **extra,
    }
    if wake_port is not None:
        request["wake_port"] = wake_port
    reply = await _call(rpc, context_id, OP_CONNECT, request)
    proof = reply.get("proof")
    if not isinstance(proof, bytes) or not hmac.compare_digest(
        proof, server_proof(key, challenge, cnonce)
    ):
        raise errors.LogonFailed(
            "the server did not prove that it knows the password: not the server it claims to be"
        )
    return reply, key


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
async def open_tunnel_rpc(
    address: str,
    user: str,
    password: str,
    syntax: SyntaxId,
    service: str,
    *,
    fingerprint: str | None,
    http2: bool,
    auth: ClientAuth | None = None,
) -> AsyncIterator[RpcClient]:
    """A client connected to the service of interface ``syntax`` behind the tunnel at
    ``address``: the endpoint mapper behind the tunnel says where it is, and a second
    tunnelled connection (authenticated with ``auth``) goes there. ``service`` names it
    in errors ("store", "address book")."""
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
            tower = await map_endpoint_on(rpc, syntax)
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
        raise ConnectionClosed(f"no {service} registered with the endpoint mapper behind {url}")
    async with tunnel(tower.port) as stream, open_rpc_client(stream, auth=auth) as rpc:
        yield rpc


@asynccontextmanager
async def _open_tunnel_store_rpc(
    address: str,
    user: str,
    password: str,
    *,
    fingerprint: str | None,
    http2: bool,
    auth: ClientAuth | None = None,
) -> AsyncIterator[tuple[RpcClient, int]]:
    async with open_tunnel_rpc(
        address,
        user,
        password,
        STORE_SYNTAX,
        "store",
        fingerprint=fingerprint,
        http2=http2,
        auth=auth,
    ) as rpc:
        yield rpc, await _bind_store(rpc, auth)


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
    auth_level: str | None = None,
    auth_type: str = "ntlm",
    kdf_floor: int = MIN_KDF_COST,
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
        auth_level: DCE/RPC authentication of the store connection, from ``user`` and
            ``password``: "privacy" (signed and sealed), "integrity" (signed),
            "connect" or "none". None: "privacy" on the LAN, "none" through the tunnel
            (TLS protects it, and the proxy authenticated the user).
        auth_type: "ntlm" (default) or "spnego" (NTLM inside SPNEGO).
        kdf_floor: the least scrypt cost (``n * r``) the client answers
            (:data:`~mapi.access.logon.MIN_KDF_COST`; lower only for test servers).

    Raises:
        LogonFailed: wrong user name or password (at the NTLM bind or at logon), a
            server that offers too weak a key derivation or cannot prove it knows the
            password.
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
    tunnelled = address.startswith("https://")
    default = DEFAULT_TUNNEL_AUTH_LEVEL if tunnelled else DEFAULT_LAN_AUTH_LEVEL
    auth = client_auth(user, password, auth_level or default, auth_type)
    if tunnelled:
        if wake_udp:
            raise ValueError("UDP wake-ups are for the LAN (ncacn_ip_tcp addresses) only")
        opener = _open_tunnel_store_rpc(
            address, user, password, fingerprint=fingerprint, http2=http2, auth=auth
        )
    else:
        opener = _open_store_rpc(*parse_address(address), auth)
    async with contextlib.AsyncExitStack() as stack:
        wake_socket = None
        if wake_udp:
            wake_socket = stack.enter_context(trio.socket.socket(type=socket.SOCK_DGRAM))
            await wake_socket.bind(("0.0.0.0", 0))
        rpc, context_id = await stack.enter_async_context(opener)
        wake_port = wake_socket.getsockname()[1] if wake_socket is not None else None
        try:
            session = await _logon_or_resume(
                rpc, context_id, user, password, resume, auth, wake_port, kdf_floor
            )
        except RpcFault as exc:
            if auth is None or exc.status != FaultStatus.ACCESS_DENIED:
                raise
            # NTLM's answer is judged after the bind: a wrong password faults the call.
            raise errors.LogonFailed(_REFUSED) from exc
        session.wake_socket = wake_socket
        session.connect_params = {
            "address": address,
            "user": user,
            "password": password,
            "fingerprint": fingerprint,
            "http2": http2,
            "auth_level": auth_level,
            "auth_type": auth_type,
        }
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


async def _logon_or_resume(
    rpc: RpcClient,
    context_id: int,
    user: str,
    password: str,
    resume: Session | None,
    auth: ClientAuth | None,
    wake_port: int | None,
    kdf_floor: int,
) -> Session:
    if resume is None:
        return await logon(
            rpc, context_id, user, password, wake_port=wake_port, kdf_floor=kdf_floor
        )
    request: dict[str, Any] = {"resume": resume.session_id}
    if auth is not None:  # the connection's identity is the proof
        if wake_port is not None:
            request["wake_port"] = wake_port
        reply = await _call(rpc, context_id, OP_CONNECT, request)
    else:  # an unauthenticated connection proves the session's owner
        owner = resume.user or user
        reply, _ = await _prove(rpc, context_id, owner, password, request, wake_port, kdf_floor)
    session = Session(rpc, context_id, reply["session"], reply["user"])
    session.last_seq = resume.last_seq
    return session
