"""Helpers of the tunnel tests: a real endpoint mapper (plus an echo interface for large
stubs) on loopback, and our tunnel in front of it with real TLS.

Rules: loopback only, port 0, every test bounded by ``trio.fail_after``; durations are
never asserted (short timeouts in the configs only make the tests quick)."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from dcerpc.config import RpcConfig
from dcerpc.interface import CallContext, Interface
from dcerpc.server import RpcServer
from dcerpc.syntax import SyntaxId
from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, Tower, epm_interface, mgmt_interface
from tunnel.config import TunnelConfig
from tunnel.policy import AllowList
from tunnel.proxy import TunnelInfo, serve_tunnel

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


async def check_password(user: str, password: str) -> bool:
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
) -> Tunnel:
    allow = allow or AllowList.for_database(backend.database, backend.epm_port, [SERVER_NAME])
    info = await nursery.start(
        functools.partial(
            serve_tunnel,
            config,
            allowed_targets=allow,
            authenticate=check_password,
            data_dir=data_dir,
            local_services={backend.epm_port: backend.server} if backend.attached else None,
        )
    )
    return Tunnel(info, backend, replace(config, port=info.port))
