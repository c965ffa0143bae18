"""Helpers of the tunnel tests: a real endpoint mapper (plus an echo interface for large
stubs) on loopback, and our tunnel in front of it with real TLS.

Rules: loopback only, port 0, every test bounded by ``trio.fail_after``; durations are
never asserted (short timeouts in the configs only make the tests quick)."""

from __future__ import annotations

import base64
import functools
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from dcerpc.client import open_rpc_client
from dcerpc.config import RpcConfig
from dcerpc.interface import CallContext, Interface
from dcerpc.server import RpcServer
from dcerpc.syntax import SyntaxId
from endpoint_mapper import (
    EPM_SYNTAX,
    EndpointDatabase,
    Tower,
    epm_interface,
    lookup_on,
    mgmt_interface,
)
from tunnel.config import TunnelConfig
from tunnel.policy import AllowList, Authenticator
from tunnel.proxy import TunnelInfo, serve_tunnel
from tunnel.tls import client_context
from tunnel.transport import open_tunnel_stream

ECHO = SyntaxId(uuid.UUID("0f3c2b1a-7d6e-4c5b-9a8f-1e2d3c4b5a69"), 1, 0)
USER, PASSWORD = "alice", "correct horse"
SERVER_NAME = "mail.example.test"


async def _echo(ctx: CallContext, stub: bytes) -> bytes:
    if ctx.opnum == 1:  # "expand": a reply of N bytes, for large OUT transfers
        return bytes(i & 0xFF for i in range(int.from_bytes(stub[:4], "little")))
    if ctx.opnum == 2:  # a handler bug: not a reply the runtime can send
        return 5  # type: ignore[return-value]
    return stub


ECHO_INTERFACE = Interface(ECHO, _echo, 3, name="echo")


async def check_password(user: str, password: str, address: str | None) -> bool:
    await trio.lowlevel.checkpoint()
    return (user, password) == (USER, PASSWORD)


@dataclass
class Backend:
    database: EndpointDatabase
    epm_port: int
    server: RpcServer
    #: The tunnel attaches the server in memory (as ``serve`` does), else dials TCP.
    attached: bool = False


@dataclass
class Tunnel:
    info: TunnelInfo
    backend: Backend
    config: TunnelConfig

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.info.port}/"


FAST = TunnelConfig(
    port=0,
    server_names=(SERVER_NAME,),
    domain="example.test",
    head_timeout=1.0,
    idle_timeout=5.0,
    pair_timeout=1.0,
    connect_timeout=2.0,
    send_timeout=2.0,
    handshake_timeout=2.0,
)


async def make_backend(
    nursery: trio.Nursery, *, attached: bool = False, config: RpcConfig | None = None
) -> Backend:
    db = EndpointDatabase()
    server = RpcServer(
        [epm_interface(db), mgmt_interface(), ECHO_INTERFACE], config=config, name="epm"
    )
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    db.register(EPM_SYNTAX, [Tower.tcp(EPM_SYNTAX, "127.0.0.1", port)], "Endpoint mapper")
    db.register(ECHO, [Tower.tcp(ECHO, "127.0.0.1", port)], "Echo")
    return Backend(db, port, server, attached)


async def start_tunnel(
    nursery: trio.Nursery,
    backend: Backend,
    data_dir: Path,
    config: TunnelConfig = FAST,
    allow: AllowList | None = None,
    authenticate: Authenticator = check_password,
) -> Tunnel:
    allow = allow or AllowList.for_database(backend.database, backend.epm_port, [SERVER_NAME])
    info = await nursery.start(
        functools.partial(
            serve_tunnel,
            config,
            allowed_targets=allow,
            authenticate=authenticate,
            data_dir=data_dir,
            local_services={backend.epm_port: backend.server} if backend.attached else None,
        )
    )
    return Tunnel(info, backend, replace(config, port=info.port))


# -- raw clients (misbehaving on purpose) ---------------------------------------------------

AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


async def connect(
    tunnel: Tunnel, alpn: str = "http/1.1", *, source: str | None = None
) -> trio.SSLStream[trio.SocketStream]:
    """A TLS connection to the tunnel, nothing sent yet; from the loopback address
    ``source`` (127.0.0.2, ...) when given, so the proxy sees another client address."""
    tcp = await trio.open_tcp_stream("127.0.0.1", tunnel.info.port, local_address=source)
    ctx = client_context(alpn=[alpn], fingerprint=tunnel.info.fingerprint)
    stream = trio.SSLStream(tcp, ctx, server_hostname="localhost", https_compatible=True)
    await stream.do_handshake()
    return stream


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the peer sends until it closes (a reset counts as a close)."""
    data = b""
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return data
        if not chunk:
            return data
        data += chunk


async def read_out_pdus(
    stream: trio.abc.ReceiveStream, count: int, buffer: bytearray | None = None
) -> list[bytes]:
    """The next ``count`` PDUs of a raw OUT channel (past its response head); bytes read
    beyond them stay in ``buffer`` for the next call."""
    buffer = bytearray() if buffer is None else buffer
    pdus: list[bytes] = []
    while len(pdus) < count:
        if buffer.startswith(b"HTTP/") and b"\r\n\r\n" in buffer:
            del buffer[: buffer.index(b"\r\n\r\n") + 4]
        if len(buffer) >= 10 and not buffer.startswith(b"HTTP/"):
            size = int.from_bytes(buffer[8:10], "little")
            if len(buffer) >= size:
                pdus.append(bytes(buffer[:size]))
                del buffer[:size]
                continue
        chunk = await stream.receive_some(65536)
        assert chunk, "the OUT channel closed"
        buffer += chunk
    return pdus


def rpc_stream(tunnel: Tunnel, transport: str) -> AbstractAsyncContextManager[trio.abc.Stream]:
    """Our client's tunnel stream to the backend's endpoint mapper port (``h1``/``h2``)."""
    return open_tunnel_stream(
        tunnel.url,
        "127.0.0.1",
        tunnel.backend.epm_port,
        username=USER,
        password=PASSWORD,
        http2=transport == "h2",
        fingerprint=tunnel.info.fingerprint,
    )


async def still_serving(tunnel: Tunnel) -> None:
    """A normal client still gets answers through both tunnels (after a hostile one)."""
    for transport in ("h2", "h1"):
        async with rpc_stream(tunnel, transport) as stream, open_rpc_client(stream) as rpc:
            assert len(await lookup_on(rpc)) == 2
