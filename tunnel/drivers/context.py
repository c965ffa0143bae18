"""State shared by the tunnel's connection handlers (one per listener).

:class:`ProxyContext` holds the configuration, the allow list, the authenticator,
the quotas and the MS-RPCH virtual-connection table; the HTTP/1.1 and HTTP/2
handlers take it as their first argument.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tunnel.autodiscover import Site
from tunnel.config import TunnelConfig
from tunnel.drivers.backend import AttachedBackend, Backend, LocalService, StreamBackend
from tunnel.drivers.vc_table import VcTable
from tunnel.policy import AllowList, Authenticator, Quota, parse_authorization

log = logging.getLogger("tunnel")


@dataclass(slots=True)
class TunnelInfo:
    """What ``serve_tunnel`` hands to ``task_status.started``."""

    host: str
    port: int
    fingerprint: str
    cert_file: Path
    url: str
    listeners: list[trio.SocketListener] = field(default_factory=list)


class ProxyContext:
    """State shared by every connection of one tunnel listener."""

    def __init__(
        self,
        config: TunnelConfig,
        allow: AllowList,
        authenticate: Authenticator,
        site: Site,
        local_services: Mapping[int, LocalService] | None = None,
    ) -> None:
        self.config = config
        #: Ports served by this very process: attached in memory, no socket.
        self.local_services = dict(local_services or {})
        #: Where in-process service connections run (set by ``serve_tunnel``).
        self.nursery: trio.Nursery | None = None
        self.allow = allow
        self.authenticate = authenticate
        self.site = site
        self.connections = 0
        self.address_quota = Quota(config.max_connections_per_address)
        # Units: an MS-RPCH channel is one, an h2 stream (a whole VC) two.
        self.user_quota = Quota(2 * config.max_vcs_per_user)
        self.vcs_open = 0
        self.vc_table = VcTable(config)
        #: Credential checks under way (and waiting) per client address.
        self._checks: dict[str, trio.CapacityLimiter] = {}

    async def check_credentials(self, headers: Mapping[str, str], address: str) -> str | None:
        """The authenticated user name, or None (answer 401). Never raises for bad input.

        At most ``max_auth_checks_per_address`` checks run at once for one client
        ``address``; more wait their turn (their connection's own deadlines bound the
        wait).
        """
        creds = parse_authorization(headers.get("authorization"))
        if creds is None:
            return None
        limiter = self._checks.get(address)
        if limiter is None:
            limiter = self._checks[address] = trio.CapacityLimiter(
                self.config.max_auth_checks_per_address
            )
        try:
            async with limiter:
                ok = await self.authenticate(creds.username, creds.password)
        except Exception:
            log.exception("authenticator failed")
            return None
        finally:
            stats = limiter.statistics()
            if not stats.borrowed_tokens and not stats.tasks_waiting:
                self._checks.pop(address, None)
        return creds.username if ok else None

    def acquire_vc(self, user: str, units: int = 2) -> bool:
        """Take ``units`` half-VC slots for ``user`` (False: over a limit)."""
        if self.vcs_open + units > 2 * self.config.max_vcs:
            return False
        if not self.user_quota.acquire(user, units):
            return False
        self.vcs_open += units
        return True

    def release_vc(self, user: str, units: int = 2) -> None:
        self.vcs_open -= units
        self.user_quota.release(user, units)

    async def connect_backend(self, address: tuple[str, int]) -> Backend:
        """Connect to an allow-listed backend address.

        A port served by this process is attached in memory (no loopback TCP hop); its
        calls that need a task run in the tunnel's nursery and end with the backend.

        Raises:
            OSError: refused or timed out.
        """
        service = self.local_services.get(address[1])
        if service is not None and self.nursery is not None:
            await trio.lowlevel.checkpoint()
            return AttachedBackend(service, self.nursery)
        try:
            with trio.fail_after(self.config.connect_timeout):
                stream = await trio.open_tcp_stream(*address)
        except trio.TooSlowError as exc:
            raise OSError(f"connecting to {address} timed out") from exc
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return StreamBackend(
            stream, max_fragment=self.config.max_fragment, receive_size=self.config.receive_size
        )


def peer_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else "?"
    except OSError:
        return "?"
