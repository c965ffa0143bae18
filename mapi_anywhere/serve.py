"""The composition root: the one place that starts and wires every service of ``serve``.

The endpoint mapper listens on its well-known port. Every other service gets a
dynamic port, and registers each of its interfaces with the endpoint mapper
(towers for ncacn_ip_tcp at the address it listens on, and an annotation), so a
LAN client finds it by interface UUID. Everything runs in one nursery: stopping
``serve`` (SIGINT/SIGTERM or cancellation) closes every listener and connection.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from dcerpc.interface import Interface
from dcerpc.server import RpcServer
from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, Tower, epm_interface, mgmt_interface
from mapi_anywhere.config import Config

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
    service_ports: dict[str, int] = field(default_factory=dict)


def _port_of(listeners: list[trio.SocketListener]) -> int:
    return int(listeners[0].socket.getsockname()[1])


def _tower_host(host: str) -> str:
    # A wildcard bind has no single address to advertise; the endpoint mapper answers
    # ept_map with the address the client reached, so loopback is only a fallback.
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


async def run_server(
    config: Config,
    services: Sequence[ServiceSpec] = (),
    *,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start the endpoint mapper and ``services``; run until cancelled."""
    host = config.server.host
    config.server.data_dir.mkdir(parents=True, exist_ok=True)
    database = EndpointDatabase()
    async with trio.open_nursery() as nursery:
        epm = RpcServer([epm_interface(database), mgmt_interface()], config=config.rpc, name="epm")
        listeners = await nursery.start(epm.serve_tcp, config.endpoint_mapper.port, host)
        running = RunningServer(host=host, epm_port=_port_of(listeners), database=database)
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
