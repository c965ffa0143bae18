"""Who may use the tunnel, and where it may lead ([MS-RPCH] 2.1.2.1, 3.2.3; DESIGN.md "Security").

Theory of operation
-------------------
Three decisions are made before a single byte is forwarded, in this order:

1. **Authentication** (:func:`parse_authorization`): HTTP Basic (RFC 7617) is the only
   scheme today; the password travels inside TLS only. The driver passes the
   credentials to the injected async :data:`Authenticator` (the user directory). A
   request without acceptable credentials gets ``401`` with :data:`CHALLENGES`.
   Negotiate/NTLM would be added as further :class:`Credentials` schemes and
   challenges here; the drivers only ever see a yes/no and a user name.
2. **Target** (:func:`parse_rpc_target`, :class:`AllowList`): the query of
   ``/rpc/rpcproxy.dll?<server>:<port>`` names the RPC server; it is split at the last
   ``:`` ([MS-RPCH] 2.1.2.1.1). Only our own names (``localhost``, ``127.0.0.1`` and the
   configured server names) and only the ports of our endpoint mapper and of the
   services registered with it are allowed, like IIS's ``ValidPorts``. An allowed
   target is mapped to the configured backend address: the proxy never resolves a
   client-supplied name and never connects anywhere else (no SSRF). A refused target
   gets ``503 RPC Error: 6ba`` on HTTP/1.1 (RPC_S_SERVER_UNAVAILABLE, what impacket
   expects) and ``403`` on HTTP/2, in both cases without a connection attempt.
3. **Limits** (:class:`Quota`): connections per client address, virtual connections
   per user, both released when the connection or stream ends.

Pure logic: no I/O, no clocks.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from endpoint_mapper.database import EndpointDatabase, EndpointEntry

#: Checks a user name and password; the lead plugs in the user directory.
Authenticator = Callable[[str, str], Awaitable[bool]]

REALM = "mapi-anywhere"
#: ``WWW-Authenticate`` values offered with a 401, strongest first. Add ``Negotiate``
#: (and ``NTLM``) here once :func:`parse_authorization` understands them. Offering Basic
#: alone is what makes impacket's AUTO mode fall back to Basic (impacket http.py).
CHALLENGES: tuple[str, ...] = (f'Basic realm="{REALM}"',)
#: impacket's "RPC Error" hex code for a refused target: RPC_S_SERVER_UNAVAILABLE.
RPC_S_SERVER_UNAVAILABLE = 0x6BA
#: Refusal over a per-user or global limit: RPC_S_SERVER_TOO_BUSY.
RPC_S_SERVER_TOO_BUSY = 0x6BB
#: Refusal of a successor channel that cannot join its VC (channel recycling).
RPC_S_PROTOCOL_ERROR = 0x6C0
RPC_PATHS = ("/rpc/rpcproxy.dll", "/rpcwithcert/rpcproxy.dll")
MAX_USERNAME = 256
MAX_PASSWORD = 1024
MAX_SERVER_NAME = 255
_SERVER_RE = re.compile(r"^[A-Za-z0-9._\-@]+$|^\[?[0-9A-Fa-f:.]+\]?$")


@dataclass(frozen=True, slots=True)
class Credentials:
    """Credentials parsed from an ``Authorization`` header."""

    scheme: str
    username: str
    password: str


def parse_authorization(value: str | bytes | None) -> Credentials | None:
    """Basic credentials from an ``Authorization`` value; None if absent, malformed,
    too long or of another scheme (all of which are answered with 401)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or len(token) > 4 * (MAX_USERNAME + MAX_PASSWORD):
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep or not username or len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
        return None
    return Credentials("Basic", username, password)


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` value a client sends for Basic."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


@dataclass(frozen=True, slots=True)
class Target:
    """The RPC server a channel asks for."""

    server: str
    port: int


def parse_rpc_target(path: str) -> Target | None:
    """The target of ``/rpc/rpcproxy.dll?<server>:<port>``; None when the path is not an
    RPC proxy path, the query is missing (impacket's first NTLM leg) or malformed."""
    base, sep, query = path.partition("?")
    if base.lower() not in RPC_PATHS or not sep:
        return None
    server, colon, port_text = query.rpartition(":")
    if not colon or not port_text.isdigit() or len(port_text) > 5:
        return None
    port = int(port_text)
    if not 1 <= port <= 65535 or not server or len(server) > MAX_SERVER_NAME:
        return None
    if not _SERVER_RE.match(server):
        return None
    return Target(server.strip("[]").lower(), port)


def is_rpc_path(path: str) -> bool:
    return path.partition("?")[0].lower() in RPC_PATHS


class AllowList:
    """The (server, port) pairs the proxy may connect to, and where they lead.

    ``ports`` is called at each decision, so services that register later are allowed
    without a restart. ``backend_host`` is the only address ever connected to.
    """

    def __init__(
        self,
        names: Iterable[str],
        ports: Callable[[], Iterable[int]],
        backend_host: str = "127.0.0.1",
    ) -> None:
        self.names = frozenset(
            n.strip("[]").lower() for n in (*names, "localhost", "127.0.0.1") if n
        )
        self._ports = ports
        self.backend_host = backend_host

    def resolve(self, target: Target) -> tuple[str, int] | None:
        """The backend address for an allowed target, or None (refuse, do not connect)."""
        if target.server not in self.names:
            return None
        if target.port not in set(self._ports()):
            return None
        return (self.backend_host, target.port)

    @classmethod
    def from_pairs(
        cls, pairs: Callable[[], Iterable[tuple[str, int]]], backend_host: str = "127.0.0.1"
    ) -> AllowList:
        """Allow exactly the (server, port) pairs ``pairs()`` returns at each decision."""
        return _PairAllowList(pairs, backend_host)

    @classmethod
    def static(
        cls, names: Iterable[str], ports: Iterable[int], backend_host: str = "127.0.0.1"
    ) -> AllowList:
        """A fixed set of ports (tests, or a deployment without an endpoint mapper)."""
        fixed = frozenset(ports)
        return cls(names, lambda: fixed, backend_host)

    @classmethod
    def for_database(
        cls,
        database: EndpointDatabase,
        epm_port: int,
        names: Iterable[str],
        backend_host: str = "127.0.0.1",
    ) -> AllowList:
        """Our names; the EPM port and every ncacn_ip_tcp port registered in ``database``
        (read at each decision, so later registrations count)."""
        return cls(names, lambda: registered_tcp_ports(database.entries(), epm_port), backend_host)


class _PairAllowList(AllowList):
    def __init__(self, pairs: Callable[[], Iterable[tuple[str, int]]], backend_host: str) -> None:
        super().__init__((), lambda: (), backend_host)
        self._pairs = pairs

    def resolve(self, target: Target) -> tuple[str, int] | None:
        allowed = {(name.strip("[]").lower(), port) for name, port in self._pairs()}
        if (target.server, target.port) not in allowed:
            return None
        return (self.backend_host, target.port)


def registered_tcp_ports(entries: Iterable[EndpointEntry], epm_port: int) -> set[int]:
    """Every ncacn_ip_tcp port in an endpoint database listing, plus the EPM port."""
    ports = {epm_port}
    for entry in entries:
        if entry.tower.protocol == "ncacn_ip_tcp" and entry.tower.port is not None:
            ports.add(entry.tower.port)
    return ports


class Quota:
    """Counts held slots per key (a client address, a user name) against a limit."""

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, key: str, units: int = 1) -> bool:
        held = self._held.get(key, 0)
        if held + units > self.limit:
            return False
        self._held[key] = held + units
        return True

    def release(self, key: str, units: int = 1) -> None:
        held = self._held.get(key, 0) - units
        if held <= 0:
            self._held.pop(key, None)
        else:
            self._held[key] = held

    def held(self, key: str) -> int:
        return self._held.get(key, 0)
