"""Who may use the tunnel, and where it may lead ([MS-RPCH] 2.1.2.1, 3.2.3; DESIGN.md "Security").

Theory of operation
-------------------
Three decisions are made before a single byte is forwarded, in this order:

1. **Authentication** (:mod:`tunnel.http_auth`): HTTP Basic (RFC 7617; the password
   travels inside TLS only), and NTLM and Negotiate on HTTP/1.1 connections when the
   composition root supplies NT hashes. For Basic the driver passes the credentials
   and the client's address to the injected async :class:`Authenticator` (the user
   directory); NTLM's handshake is :class:`tunnel.http_auth.ConnectionAuth`'s. A
   request without acceptable credentials gets ``401`` with the configured offers
   (``[tunnel] auth_schemes``); the drivers only ever see a yes/no and a user name.
   A full check is expensive (a memory-hard KDF), so :class:`CheckQueue` admits checks:
   a few run at once in all, a few per client address may be in progress, a bounded
   number wait (granted round-robin across addresses), and anything beyond is refused
   at once. Credentials the authenticator vouches for from memory
   (:meth:`CachingAuthenticator.is_cached`) skip the queue.
2. **Target** (:func:`parse_rpc_target`, :class:`AllowList`): the query of
   ``/rpc/rpcproxy.dll?<server>:<port>`` names the RPC server; it is split at the last
   ``:`` ([MS-RPCH] 2.1.2.1.1). Only our own names (``localhost``, ``127.0.0.1`` and the
   configured server names) and only the ports of our endpoint mapper and of the
   services registered with it are allowed, like IIS's ``ValidPorts``. Outlook Anywhere
   clients name fixed ports instead (6001 the store, 6002 the referral service, 6004
   the address book, as Exchange's own allow list does): the composition root may map
   such well-known ports to the ports our services listen on (``well_known``); a
   well-known port with no mapping is refused like any other, and a mapping never
   widens the names. An allowed target is mapped to the configured backend address:
   the proxy never resolves a client-supplied name and never connects anywhere else
   (no SSRF). A refused target gets ``503 RPC Error: 6ba`` on HTTP/1.1
   (RPC_S_SERVER_UNAVAILABLE, what impacket expects) and ``403`` on HTTP/2, in both
   cases without a connection attempt.
3. **Limits** (:class:`Quota`): connections per client address, virtual connections
   per user, both released when the connection or stream ends.

Pure logic: no I/O, no clocks.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from endpoint_mapper.database import EndpointDatabase, EndpointEntry


class Authenticator(Protocol):
    """Checks a user name and password; the composition root plugs in the user directory.

    Called as ``await authenticate(user, password, address)``, where ``address`` is the
    client's IP address as text (None when unknown), for the authenticator's own
    throttling and logs. True means the credentials are good. A plain async function
    of three arguments is one.
    """

    async def __call__(self, user: str, password: str, address: str | None, /) -> bool: ...


class CachingAuthenticator(Protocol):
    """An authenticator that remembers credentials it checked lately.

    ``is_cached(user, password)`` is synchronous and cheap (no KDF, no I/O): True when
    the authenticator would accept these credentials now without a full check. The
    tunnel asks it before queueing a check, so a known-good user never waits behind a
    flood of guesses. Authenticators without it are simply always queued.
    """

    def is_cached(self, user: str, password: str, /) -> bool: ...


class ScreeningAuthenticator(Protocol):
    """An authenticator that can refuse an attempt without checking it.

    ``refuses(user, address)`` is synchronous and cheap: True when the authenticator
    would refuse this user from this client address now whatever the password (its
    logon throttle holds the guesser back). The tunnel asks it before queueing a
    check, so refused guesses never take a place among the real checks; the client
    gets the 401 a wrong password gets.
    """

    def refuses(self, user: str, address: str | None, /) -> bool: ...


REALM = "mapi-anywhere"
#: The Basic offer alone (the drivers offer what ``[tunnel] auth_schemes`` and the
#: directory allow: :func:`tunnel.http_auth.challenges`). Offering Basic alone is what
#: makes impacket's AUTO mode fall back to Basic (impacket http.py).
CHALLENGES: tuple[str, ...] = (f'Basic realm="{REALM}"',)
#: impacket's "RPC Error" hex code for a refused target: RPC_S_SERVER_UNAVAILABLE.
RPC_S_SERVER_UNAVAILABLE = 0x6BA
#: Refusal over a per-user or global limit: RPC_S_SERVER_TOO_BUSY.
RPC_S_SERVER_TOO_BUSY = 0x6BB
#: Refusal of a successor channel that cannot join its VC (channel recycling).
RPC_S_PROTOCOL_ERROR = 0x6C0
#: The ports Outlook Anywhere clients name through an RPC proxy ([MS-OXCRPC],
#: [MS-OXABREF], [MS-OXNSPI] over RPC over HTTP): the store, the referral service, the
#: address book.
OA_STORE_PORT = 6001
OA_REFERRAL_PORT = 6002
OA_NSPI_PORT = 6004
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
    """Basic credentials from an ``Authorization`` value, the user name as sent; None if
    absent, malformed, too long or of another scheme (all of which are answered with
    401). The drivers use :func:`tunnel.http_auth.parse_credentials`, which also reads
    NTLM and Negotiate tokens and the user-name forms of Windows clients."""
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
    ``well_known`` maps a port a client names (Outlook Anywhere's 6001, 6002, 6004) to
    the port of ours it leads to; it is consulted first, so a well-known port always
    means its service (for our names only, like every other port).
    """

    def __init__(
        self,
        names: Iterable[str],
        ports: Callable[[], Iterable[int]],
        backend_host: str = "127.0.0.1",
        well_known: Mapping[int, int] | None = None,
    ) -> None:
        self.names = frozenset(
            n.strip("[]").lower() for n in (*names, "localhost", "127.0.0.1") if n
        )
        self._ports = ports
        self.backend_host = backend_host
        self.well_known: dict[int, int] = dict(well_known or {})
        for asked, served in self.well_known.items():
            if not (1 <= asked <= 65535 and 1 <= served <= 65535):
                raise ValueError(f"bad well-known port mapping {asked} -> {served}")

    def resolve(self, target: Target) -> tuple[str, int] | None:
        """The backend address for an allowed target, or None (refuse, do not connect)."""
        if target.server not in self.names:
            return None
        mapped = self.well_known.get(target.port)
        if mapped is not None:
            return (self.backend_host, mapped)
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
        well_known: Mapping[int, int] | None = None,
    ) -> AllowList:
        """Our names; the EPM port and every ncacn_ip_tcp port registered in ``database``
        (read at each decision, so later registrations count); ``well_known`` as in
        the class docstring."""
        return cls(
            names,
            lambda: registered_tcp_ports(database.entries(), epm_port),
            backend_host,
            well_known,
        )


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


class CheckQueue:
    """Admission of expensive credential checks (pure bookkeeping: the driver waits).

    Three limits, checked when a check asks to :meth:`enter`:

    * ``slots`` checks *run* at once, across all client addresses (the cores a KDF can
      use; more running at once only makes each slower);
    * ``per_key`` checks are *in progress* (running or waiting) at once for one key
      (a client address); one more is refused at once;
    * ``max_waiting`` checks *wait* at once in all; one more is refused at once.

    Waiting checks are granted round-robin across keys, not first come first served:
    a key that just arrived waits for at most one check of each other waiting key,
    however many the others queued. Refusal costs nothing, so a flood is answered at
    the rate it arrives instead of piling up without bound.

    Tickets are ints; :meth:`enter` returns one (granted now or waiting) or None
    (refused). Every ticket must be given back with :meth:`leave` exactly once, whether
    its check ran or its waiter gave up; it returns the tickets granted in its place,
    whose waiters the driver wakes.
    """

    def __init__(self, slots: int, per_key: int, max_waiting: int) -> None:
        if slots < 1 or per_key < 1 or max_waiting < 0:
            raise ValueError("slots and per_key must be at least 1, max_waiting at least 0")
        self.slots = slots
        self.per_key = per_key
        self.max_waiting = max_waiting
        self._next = 0
        self._running: set[int] = set()
        self._key_of: dict[int, str] = {}
        self._in_progress: dict[str, int] = {}
        #: Waiting tickets per key; the dict's order is the round-robin order.
        self._queues: OrderedDict[str, deque[int]] = OrderedDict()
        self._waiting = 0

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return self._waiting

    def in_progress(self, key: str) -> int:
        """Checks running or waiting for ``key``."""
        return self._in_progress.get(key, 0)

    def enter(self, key: str) -> int | None:
        """A ticket for a check of ``key`` (see :meth:`granted`), or None: refused."""
        if self._in_progress.get(key, 0) >= self.per_key:
            return None
        free = len(self._running) < self.slots and not self._waiting
        if not free and self._waiting >= self.max_waiting:
            return None
        ticket = self._next
        self._next += 1
        self._key_of[ticket] = key
        self._in_progress[key] = self._in_progress.get(key, 0) + 1
        if free:
            self._running.add(ticket)
        else:
            self._queues.setdefault(key, deque()).append(ticket)
            self._waiting += 1
        return ticket

    def granted(self, ticket: int) -> bool:
        """Whether the ticket's check may run now."""
        return ticket in self._running

    def leave(self, ticket: int) -> list[int]:
        """Give a ticket back (its check is done, or its waiter gave up); returns the
        waiting tickets granted a slot as a result."""
        key = self._key_of.pop(ticket, None)
        if key is None:
            return []
        left = self._in_progress[key] - 1
        if left:
            self._in_progress[key] = left
        else:
            del self._in_progress[key]
        if ticket in self._running:
            self._running.discard(ticket)
        else:
            queue = self._queues[key]
            queue.remove(ticket)
            self._waiting -= 1
            if not queue:
                del self._queues[key]
        granted: list[int] = []
        while len(self._running) < self.slots and self._queues:
            # The first key in line gets one check, then goes to the back of the line.
            first, queue = next(iter(self._queues.items()))
            ticket = queue.popleft()
            self._waiting -= 1
            if queue:
                self._queues.move_to_end(first)
            else:
                del self._queues[first]
            self._running.add(ticket)
            granted.append(ticket)
        return granted
