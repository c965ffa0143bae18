"""State shared by the tunnel's connection handlers (one per listener).

:class:`ProxyContext` holds the configuration, the allow list, the authenticator,
the quotas and the MS-RPCH virtual-connection table; the HTTP/1.1 and HTTP/2
handlers take it as their first argument.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import trio

from dcerpc.peers import client_network
from tunnel.autodiscover import Site
from tunnel.config import TunnelConfig
from tunnel.drivers.backend import AttachedBackend, Backend, LocalService, StreamBackend
from tunnel.drivers.vc_table import VcTable
from tunnel.http_auth import (
    BasicCredentials,
    ConnectionAuth,
    Scheme,
    challenges,
    ntlm_directory_of,
    parse_credentials,
    server_names,
)
from tunnel.policy import (
    AllowList,
    Authenticator,
    CachingAuthenticator,
    CheckQueue,
    Quota,
    ScreeningAuthenticator,
)

log = logging.getLogger("tunnel")

#: At most one warning about refused credential checks this often (seconds).
_REFUSAL_LOG_EVERY = 10.0
#: Seconds a client refused for too many credential checks is asked to wait
#: (``Retry-After``): about what a queue of checks takes to drain.
AUTH_RETRY_AFTER = 1


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """What :meth:`ProxyContext.check_credentials` decided.

    Attributes:
        user: the authenticated user name; None when not authenticated.
        offered: the user name the request's credentials carried (None without
            credentials); for the logs of a refusal.
        busy: the credentials were not checked: too many checks were in progress (for
            this client address, or waiting in all). Answer ``503`` with
            ``Retry-After: AUTH_RETRY_AFTER`` rather than ``401``: a 401 tells a client
            its password is wrong (Outlook asks the user for another, our client and
            impacket give up with "access denied"), while the password was never
            looked at; 503 is "come back later", which every RPC over HTTP client
            already handles as RPC_S_SERVER_TOO_BUSY (the form the proxy uses for its
            other limits).
    """

    user: str | None
    offered: str | None = None
    busy: bool = False

    def refusal(self, address: str) -> str:
        """The end of the log line of a refused request, after its method and path:
        the answer and why (the same for both HTTP versions)."""
        if self.busy:
            return f" of {self.offered!r}: 503 (too many credential checks)"
        if self.offered is None:
            return " without credentials: 401"
        return f": 401: failed logon of {self.offered!r} from {address}"


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
        #: Admission of credential checks (see :class:`~tunnel.policy.CheckQueue`).
        self.checks = CheckQueue(
            config.max_auth_checks, config.max_auth_checks_per_address, config.max_auth_waiting
        )
        #: Wakes the waiter of each queued ticket once it is granted.
        self._check_wakers: dict[int, trio.Event] = {}
        #: Checks refused unchecked since the last warning, and when it was logged.
        self._refused = 0
        self._refusal_logged = -math.inf
        is_cached = getattr(authenticate, "is_cached", None)
        self._is_cached = (
            cast(CachingAuthenticator, authenticate).is_cached if callable(is_cached) else None
        )
        refuses = getattr(authenticate, "refuses", None)
        self._refuses = (
            cast(ScreeningAuthenticator, authenticate).refuses if callable(refuses) else None
        )
        #: NT hashes and the throttle's hooks (None: the authenticator offers no NTLM).
        self.ntlm = ntlm_directory_of(authenticate)
        self.ntlm_names = server_names(config.server_names)
        #: The schemes offered, in order: NTLM and Negotiate only with :attr:`ntlm`.
        self.schemes = tuple(
            s for s in config.schemes if not s.connection_bound or self.ntlm is not None
        )
        #: ``WWW-Authenticate`` values of a 401 that starts authentication.
        self.challenges = challenges(self.schemes)
        if self.ntlm is None and any(s.connection_bound for s in config.schemes):
            log.info("tunnel: NTLM/Negotiate not offered (no NT hashes from the directory)")

    def connection_auth(self, address: str) -> ConnectionAuth | None:
        """The NTLM/Negotiate state of a new HTTP/1.1 connection (None: not offered)."""
        if self.ntlm is None or not any(s.connection_bound for s in self.schemes):
            return None
        refuses = self._refuses
        return ConnectionAuth(
            self.schemes, self.ntlm, self.ntlm_names, _client_ip(address), refuses=refuses
        )

    async def check_credentials(self, headers: Mapping[str, str], address: str) -> AuthOutcome:
        """Check the request's Basic credentials. Never raises for bad input. (NTLM and
        Negotiate are the connection's: :class:`~tunnel.http_auth.ConnectionAuth`.)

        Credentials the authenticator has cached as good are accepted at once (no queue:
        a known user is not held up by a flood of guesses). Others take a place in
        :attr:`checks`: at most ``max_auth_checks`` run at once in all, at most
        ``max_auth_checks_per_address`` are in progress per client ``address`` and at
        most ``max_auth_waiting`` wait; a check beyond these is refused at once
        (``busy``). A waiting check is bounded by its connection's own deadlines.
        """
        creds = parse_credentials(headers.get("authorization"))
        if not isinstance(creds, BasicCredentials) or Scheme.BASIC not in self.schemes:
            return AuthOutcome(None)
        user = creds.user  # the bare name: DOMAIN\user, \user and user@domain name user
        try:
            if self._is_cached is not None and self._is_cached(user, creds.password):
                await trio.lowlevel.checkpoint()
                return AuthOutcome(user, user)
            if self._refuses is not None and self._refuses(user, _client_ip(address)):
                await trio.lowlevel.checkpoint()
                return AuthOutcome(None, user)  # held back: no check, no place in the queue
        except Exception:
            log.exception("authenticator failed (is_cached or refuses)")
        ticket = self.checks.enter(client_network(address))
        if ticket is None:
            self._note_refusal(address)
            await trio.lowlevel.checkpoint()
            return AuthOutcome(None, user, busy=True)
        try:
            if not self.checks.granted(ticket):
                waker = self._check_wakers[ticket] = trio.Event()
                await waker.wait()
            ok = await self.authenticate(user, creds.password, _client_ip(address))
        except Exception:
            log.exception("authenticator failed")
            ok = False
        finally:
            self._check_wakers.pop(ticket, None)
            for granted in self.checks.leave(ticket):
                self._check_wakers[granted].set()
        return AuthOutcome(user if ok else None, user)

    def _note_refusal(self, address: str) -> None:
        """Count a check refused unchecked; warn at most every ``_REFUSAL_LOG_EVERY``
        seconds (the handlers log each refusal at INFO: a flood must not flood the log
        at WARNING too)."""
        self._refused += 1
        now = trio.current_time()
        if now < self._refusal_logged + _REFUSAL_LOG_EVERY:
            return
        log.warning(
            "credential checks saturated: %d request(s) refused unchecked (503) since the"
            " last warning; now %d running, %d waiting; the last from %s",
            self._refused, self.checks.running, self.checks.waiting, address,
        )  # fmt: skip
        self._refused = 0
        self._refusal_logged = now

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

    async def connect_backend(
        self, address: tuple[str, int], client: str = "", user: str | None = None
    ) -> Backend:
        """Connect to an allow-listed backend address for the tunnel's ``client`` (its
        IP address, as :func:`peer_address` gives it), authenticated as ``user``.

        A port served by this process is attached in memory (no loopback TCP hop); its
        calls that need a task run in the tunnel's nursery and end with the backend,
        and its handlers see ``client`` as their peer (the store throttles and lists
        tunnel logons by the client's address, not the tunnel's) and ``user`` as the
        user the proxy authenticated (``RpcServer.attach(proxy_user=)``).

        Raises:
            OSError: refused or timed out.
        """
        service = self.local_services.get(address[1])
        if service is not None and self.nursery is not None:
            await trio.lowlevel.checkpoint()
            ip = _client_ip(client)
            peer = None if ip is None else (ip, 0)
            return AttachedBackend(service, self.nursery, peer, proxy_user=user)
        try:
            with trio.fail_after(self.config.connect_timeout):
                stream = await trio.open_tcp_stream(*address)
        except trio.TooSlowError as exc:
            raise OSError(f"connecting to {address} timed out") from exc
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return StreamBackend(
            stream, max_fragment=self.config.max_fragment, receive_size=self.config.receive_size
        )


def _client_ip(address: str) -> str | None:
    """The address handed to the authenticator: None when unknown (``peer_address``)."""
    return None if address in ("", "?") else address


def peer_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else "?"
    except OSError:
        return "?"
