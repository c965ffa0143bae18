"""The composition root: the one place that starts and wires every service of ``serve``.

The endpoint mapper listens on its well-known port. Every other service (the object
store, and any extra ones a caller passes) gets a dynamic port and registers each
of its interfaces with the endpoint mapper (towers for ncacn_ip_tcp at the address
it listens on, and an annotation), so a LAN client finds it by interface UUID.
Everything runs in one nursery: stopping ``serve`` (SIGINT/SIGTERM or cancellation)
closes every listener and connection, then the store's databases.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from dcerpc.interface import Interface
from dcerpc.server import RpcServer
from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, Tower, epm_interface, mgmt_interface
from mapi import errors as mapi_errors
from mapi.service import StoreService
from mapi.store import ObjectStore
from mapi.throttle import LogonThrottle
from mapi_anywhere.authenticator import DirectoryAuthenticator
from mapi_anywhere.config import Config
from tunnel.drivers.context import TunnelInfo
from tunnel.policy import AllowList
from tunnel.proxy import serve_tunnel

log = logging.getLogger("mapi_anywhere")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A DCE/RPC service that ``serve`` starts on a dynamic port and registers."""

    name: str
    interfaces: Sequence[Interface]
    annotation: str


@dataclass(slots=True)
class RunningServer:
    """What ``serve`` started, handed to ``task_status.started`` (tests read the ports)."""

    host: str
    epm_port: int
    database: EndpointDatabase
    store: ObjectStore
    service_ports: dict[str, int] = field(default_factory=dict)
    tunnel: TunnelInfo | None = None


def _port_of(listeners: list[trio.SocketListener]) -> int:
    return int(listeners[0].socket.getsockname()[1])


def _tower_host(host: str) -> str:
    # A wildcard bind has no single address to advertise: register 0.0.0.0, which the
    # endpoint mapper replaces with the address each client reached it on.
    return "0.0.0.0" if host in ("", "0.0.0.0", "::") else host


def _backend_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


DEMO_USER = "demo"


def ensure_demo_user(store: ObjectStore, data_dir: Path) -> str | None:
    """On a store without users, create ``demo`` with a random password; returns it.

    The password is kept in ``<data_dir>/demo-password.txt`` (mode 0600) so later runs
    can show it again; None when the store already had users.
    """
    saved = data_dir / "demo-password.txt"
    if store.list_users():
        if saved.exists() and any(u.username == DEMO_USER for u in store.list_users()):
            return saved.read_text(encoding="utf-8").strip()
        return None
    password = secrets.token_urlsafe(12)
    store.add_user(DEMO_USER, password, display_name="Demo User", email="demo@localhost")
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return password


async def run_server(
    config: Config,
    services: Sequence[ServiceSpec] = (),
    *,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start the endpoint mapper, the object store and ``services``; run until cancelled."""
    data_dir = config.server.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store = await trio.to_thread.run_sync(ObjectStore, data_dir)
    throttle = LogonThrottle()  # one for every logon path
    store_service = StoreService(store, throttle=throttle)
    try:
        if config.store.demo_user:
            password = await trio.to_thread.run_sync(ensure_demo_user, store, data_dir)
            if password is not None:
                log.warning("demo user: %s, password: %s", DEMO_USER, password)
        all_services = [
            ServiceSpec("store", [store_service.interface()], "mapi-anywhere object store"),
            *services,
        ]
        await _run(config, store, all_services, throttle, task_status)
    finally:
        with trio.CancelScope(shield=True):
            await store_service.close()
            await trio.to_thread.run_sync(store.close)


async def _run(
    config: Config,
    store: ObjectStore,
    services: Sequence[ServiceSpec],
    throttle: LogonThrottle,
    task_status: trio.TaskStatus[RunningServer],
) -> None:
    host = config.server.host
    database = EndpointDatabase()
    async with trio.open_nursery() as nursery:
        epm = RpcServer([epm_interface(database), mgmt_interface()], config=config.rpc, name="epm")
        listeners = await nursery.start(epm.serve_tcp, config.endpoint_mapper.port, host)
        running = RunningServer(
            host=host, epm_port=_port_of(listeners), database=database, store=store
        )
        # The tunnel reaches these in memory rather than over loopback TCP.
        local_services: dict[int, RpcServer] = {running.epm_port: epm}
        database.register(
            EPM_SYNTAX,
            [Tower.tcp(EPM_SYNTAX, _tower_host(host), running.epm_port)],
            "Endpoint mapper",
        )
        log.info("endpoint mapper listening on ncacn_ip_tcp:%s[%d]", host, running.epm_port)
        for spec in services:
            server = RpcServer(
                [*spec.interfaces, mgmt_interface()], config=config.rpc, name=spec.name
            )
            listeners = await nursery.start(server.serve_tcp, config.services.dynamic_port, host)
            port = running.service_ports[spec.name] = _port_of(listeners)
            local_services[port] = server
            for iface in spec.interfaces:
                database.register(
                    iface.syntax,
                    [Tower.tcp(iface.syntax, _tower_host(host), port)],
                    spec.annotation,
                )
                log.info(
                    "%s listening on ncacn_ip_tcp:%s[%d] (interface %s)",
                    spec.name,
                    host,
                    port,
                    iface.syntax,
                )
        if config.tunnel.enabled:
            settings = config.tunnel.settings
            running.tunnel = await nursery.start(
                functools.partial(
                    serve_tunnel,
                    settings,
                    allowed_targets=AllowList.for_database(
                        database,
                        running.epm_port,
                        settings.server_names,
                        # The tunnel reaches the services where they listen.
                        backend_host=_backend_host(config.server.host),
                    ),
                    authenticate=DirectoryAuthenticator(store, throttle, trio.CapacityLimiter(2)),
                    data_dir=config.server.data_dir,
                    epm_port=running.epm_port,
                    local_services=local_services,
                )
            )
        task_status.started(running)
        await trio.sleep_forever()


async def serve_until_signal(config: Config, services: Sequence[ServiceSpec] = ()) -> None:
    """Run the server until SIGINT or SIGTERM, then stop everything cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_server, config, services)
            log.info("ready; press Ctrl-C to stop")
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("stopped")
