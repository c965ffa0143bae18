"""The store's DCE/RPC interface: logon, sessions and batches (DESIGN.md, "Wire contract").

Theory of operation
-------------------
Interface :data:`mapi.wire.STORE_SYNTAX`, stub data in our msgpack transfer syntax
(:data:`dcerpc.syntax.MSGPACK`): every request and response stub is one msgpack map,
and every response carries ``"hresult"`` (0, or the MAPI error of the call as a
whole). Opnums:

0 ``connect``
    Step 1 ``{"user"}`` answers a logon challenge ``{"salt", "kdf", "nonce"}``.
    Step 2 ``{"user", "nonce", "cnonce", "response"}`` answers ``{"session", "user"}``:
    the password never crosses the wire (:mod:`mapi.access.logon`). A LAN client may add
    ``"wake_port"``: when events are queued, the server sends a UDP datagram
    (:data:`~mapi.wire.WAKE_MAGIC`) to that port at the client's address, at most every
    :data:`~mapi.wire.WAKE_INTERVAL` seconds, as a hint to long-poll now.
    Step 2's answer also carries ``"proof"`` (:func:`mapi.access.logon.server_proof`),
    which the client checks. Or ``{"resume": session}`` takes up a live session on a
    new connection (after a connection was cut): its objects, subscriptions and queued
    events are intact (on a connection without an identity, with step 2's fields too).
1 ``disconnect`` ``{"session"}``: closes every object of the session.
2 ``execute`` ``{"session", "ops"}``: a batch (:mod:`mapi.rpc.ops`), answered with
    ``{"results": [[hresult, value], ...]}``.
3 ``wait_for_events`` ``{"session", "after", "timeout", "max"}``: the long-poll of
    [MS-OXCNOTIF]'s idea. Answers at once with the events numbered after ``after``, or
    when some arrive, or empty after ``timeout`` seconds; ``"resync": true`` when events
    were lost (queue overflow, or the session is new to the hub) and the client must
    re-read what it shows. Acknowledges everything up to ``after``. It does not take the
    session's lock, so it runs beside batches on the same connection.

Who may call (docs/security.md): the interface's policy (``min_auth_level``,
privacy by default, anonymous refused) is enforced by the runtime before any handler
runs. A connection's *identity* is the user its NTLM/SPNEGO authentication proved
(``ctx.auth``), or the user the tunnel's proxy authenticated (``attach(proxy_user=)``),
or none. Logon is the same challenge-response on every connection; when the
connection has an identity, the logon user must be it. A session belongs to its
logon user (its *owner*) and remembers whether it was made on a connection with an
identity (*bound*). A call naming a session is served on the connection that made or
resumed it, or on a connection whose identity is the owner; anything else is
answered MAPI_E_LOGON_FAILED and logged with the real peer. A resume on a connection
with an identity needs that identity to be the owner; on one without, it needs the
logon's challenge-response for the owner (``{"resume", "user", "nonce", "cnonce",
"response"}`` after a step-1 challenge), and it is refused for a bound session (no
downgrade from an authenticated connection to a clear one). So a session id alone,
overheard or stolen, is worth nothing.

The NT hashes NTLM needs come from the directory's in-memory copy
(:meth:`StoreService.lookup_nt_hash`, on the event loop); failures are counted by the
shared :class:`~mapi.access.throttle.LogonThrottle` (:meth:`StoreService.security`).

A session id is 16 random bytes, valid on the connections said above (so a client that
reconnects, or that comes through the tunnel, keeps its session) until
``disconnect`` or ``session_idle`` seconds without a call (the grace period: a
client back in time resumes and loses no event; later, its session is gone and it
must log on and resynchronise). One session runs one batch
at a time (its lock), each batch in a worker thread, so SQLite never blocks the
event loop. Malformed stubs and batches get MAPI_E_INVALID_PARAMETER; limits bound
sessions per user and in all, batch size and open objects.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import logging
import math
import secrets
import socket
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import msgpack
import trio

from dcerpc.auth_context import Peer, ServerSecurity
from dcerpc.interface import CONNECTION_CLOSED, CallContext, Interface
from dcerpc.ntlm import ServerNames
from dcerpc.security import AuthLevel, AuthPolicy, split_user_name
from dcerpc.syntax import MSGPACK
from mapi.access.directory import UserRecord
from mapi.access.logon import challenge_name
from mapi.access.throttle import LogonThrottle
from mapi.budget import WorkBudget, applied
from mapi.model import errors
from mapi.notify.subscriptions import NotificationHub
from mapi.rpc import ops
from mapi.rpc.workers import WorkerPools
from mapi.storage.guard import NeedsWorker, inline
from mapi.store import ObjectStore, Session
from mapi.wire import (
    MAX_WAIT,
    OP_CONNECT,
    OP_DISCONNECT,
    OP_EXECUTE,
    OP_WAIT_FOR_EVENTS,
    OPNUM_COUNT,
    STORE_SYNTAX,
    WAKE_INTERVAL,
    WAKE_MAGIC,
)

log = logging.getLogger("mapi.rpc.service")

#: Seconds between sweeps for idle sessions and mailbox databases.
SWEEP_INTERVAL: Final = 60.0
#: Seconds between looks for sessions whose connections all closed (housekeeping).
REAP_INTERVAL: Final = 5.0
#: Longest a batch tried inline may run on the event loop before it goes to a worker.
INLINE_SECONDS: Final = 0.02
#: Largest request stub tried inline (reads are small; writes go to a worker anyway).
_INLINE_STUB_LIMIT: Final = 16 * 1024
#: The logon challenges issued on a connection (connection_state key).
_PENDING_LOGONS: Final = "mapi.pending_logons"
#: The sessions used on a connection (connection_state key): counted on its close.
_CONNECTION_SESSIONS: Final = "mapi.sessions"
#: Limits of a decoded stub (the runtime already caps the stub at 4 MiB).
_UNPACK_LIMITS: Final = {
    "max_str_len": 1 << 20,
    "max_bin_len": 4 << 20,
    "max_array_len": 1 << 16,
    "max_map_len": 1 << 12,
    "max_ext_len": 0,
}


@dataclass(slots=True)
class _LiveSession:
    session: Session
    handles: ops.HandleTable
    user: str
    #: What the session's batches run against (built once: every call needs it).
    context: ops.Context
    lock: trio.Lock = field(default_factory=trio.Lock)
    last_used: float = 0.0
    #: Set under ``lock`` when the session ends; a batch queued behind it must not run.
    closed: bool = False
    #: Set (from any thread, through the trio token) when events are queued for it.
    events_ready: trio.Event = field(default_factory=trio.Event)
    #: Where to send UDP wake-up datagrams (the LAN client's address and its port).
    wake_address: tuple[str, int] | None = None
    last_wake: float = -math.inf
    #: Who and where, for ``mapi-anywhere sessions``.
    address: str | None = None
    transport: str = "lan"
    created: float = 0.0
    #: Connections that used this session and are still open; when the last one
    #: closes, ``detached_at`` starts the grace period for a resume.
    connections: int = 0
    detached_at: float | None = None
    #: Made on a connection with an identity (the owner, ``user``): a connection
    #: without one may not take it up.
    bound: bool = False


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session, as ``mapi-anywhere sessions`` lists it."""

    #: A short name for the session (a hash of its id: the id itself is a secret).
    handle: str
    user: str
    address: str | None
    #: "lan" (a TCP connection) or "tunnel" (through the HTTPS tunnel).
    transport: str
    #: Seconds since logon, and since the last call.
    age: float
    idle: float
    #: Connections using it now (0: waiting for a resume).
    connections: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceLimits:
    max_sessions: int = 4096
    #: Logons begun and not finished on one connection (their challenges are kept with
    #: the connection, and go with it).
    max_pending_logons_per_connection: int = 8
    #: Longest user name accepted at logon, in characters.
    max_username_chars: int = 256
    #: Seconds without a call before a session is closed.
    session_idle: float = 1800.0
    #: Seconds a session whose connections all closed waits for a resume.
    detached_grace: float = 60.0
    #: Seconds one batch may run (restrictions, sorts and everything else in it);
    #: past it the operation running answers MAPI_E_TIMEOUT.
    batch_seconds: float = 30.0
    max_handles: int = ops.MAX_HANDLES


def _wake_address(request: dict[str, Any], ctx: CallContext) -> tuple[str, int] | None:
    """The wake-up target a LAN client registered: its own address (never one it names,
    so the server cannot be aimed at third parties) and an unprivileged UDP port."""
    port = request.get("wake_port")
    if not isinstance(port, int) or isinstance(port, bool) or ctx.peer is None:
        return None
    if not 1024 <= port <= 65535:
        raise errors.InvalidParameter("wake_port must be in [1024, 65535]")
    return (ctx.peer[0], port)


def _throttled_address(ctx: CallContext) -> str | None:
    """The client address failures are counted for, or None for loopback peers: the
    tunnel (which throttles each user at its own authentication) and local tools all
    come from loopback, and one counter for all of them would let one user's failures
    delay everyone."""
    if ctx.peer is None:
        return None
    if ctx.attached:  # through the tunnel, which named its client: that address
        return ctx.peer[0]
    try:
        return None if ipaddress.ip_address(ctx.peer[0]).is_loopback else ctx.peer[0]
    except ValueError:
        return ctx.peer[0]


def account_name(user: str) -> str:
    """The login name an NTLM user name stands for: ``DOMAIN\\user``, ``user@domain``
    and ``user`` all name ``user`` (one domain per server), lower case."""
    split = split_user_name(user)
    return "" if split is None else split[0].lower()


def identity_of(ctx: CallContext) -> str | None:
    """The login name ``ctx``'s connection authenticated as (NTLM/SPNEGO, or the
    tunnel's proxy), or None: unauthenticated (or anonymous)."""
    auth = ctx.auth
    if auth is None or auth.anonymous or not auth.user:
        return None
    return account_name(auth.user)


def _where(ctx: CallContext) -> str:
    """The real peer of a call, for the log."""
    peer = "an unknown address" if ctx.peer is None else f"{ctx.peer[0]}:{ctx.peer[1]}"
    how = " through the tunnel" if ctx.attached else ""
    who = identity_of(ctx)
    proven = f" (authenticated as {who})" if who else " (unauthenticated connection)"
    return f"{peer}{how}{proven}"


def _failure_address(peer: Peer) -> str | None:
    """As :func:`_throttled_address`, for the security hooks (which know the peer only)."""
    if peer is None:
        return None
    try:
        return None if ipaddress.ip_address(peer[0]).is_loopback else peer[0]
    except ValueError:
        return peer[0]


def _handle_of(sid: bytes) -> str:
    return hashlib.sha256(sid).hexdigest()[:12]


def _read_only(batch: object) -> bool:
    """True for a well-formed batch of side-effect-free operations (see ``ops.READ_ONLY``)."""
    if not isinstance(batch, list) or not batch or len(batch) > ops.MAX_OPS:
        return False
    for item in batch:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            return False
        if item[0] not in ops.READ_ONLY:
            return False
    return True


#: ``{"hresult": 0, "results": <array>}`` up to the array, which ops.run_batch_packed
#: encodes.
_RESULTS_HEAD: Final[bytes] = (
    b"\x82" + msgpack.packb("hresult") + msgpack.packb(0) + msgpack.packb("results")
)


def _pack(value: dict[str, Any]) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _error(exc: errors.MapiError) -> bytes:
    return _pack({"hresult": exc.hresult, "error": ops.error_detail(exc)})


class StoreService:
    """Serves one :class:`~mapi.store.ObjectStore` over DCE/RPC."""

    def __init__(
        self,
        store: ObjectStore,
        limits: ServiceLimits | None = None,
        throttle: LogonThrottle | None = None,
        pools: WorkerPools | None = None,
        *,
        min_auth_level: int = AuthLevel.PKT_PRIVACY,
    ) -> None:
        """``min_auth_level``: the least DCE/RPC auth level a LAN connection needs
        (``[rpc] min_auth_level``; the runtime refuses less before any handler runs)."""
        self.min_auth_level = min_auth_level
        self.store = store
        self.limits = limits or ServiceLimits()
        #: Shared with every other logon path (the tunnel's Basic authentication).
        self.throttle = throttle or LogonThrottle()
        #: Worker threads by kind of work (shared with the tunnel's password checks).
        self.pools = pools or WorkerPools()
        self._credentials_changed: list[Callable[[str], None]] = []
        #: Set when the directory's in-memory NT hashes may be stale (housekeeping).
        self._refresh_wanted = trio.Event()
        self._sessions: dict[bytes, _LiveSession] = {}
        self._last_sweep = 0.0
        self._token: trio.lowlevel.TrioToken | None = None
        self._wake_socket: socket.socket | None = None

    def interface(self) -> Interface:
        return Interface(
            STORE_SYNTAX,
            self.handle,
            OPNUM_COUNT,
            transfer_syntaxes=(MSGPACK,),
            name="store",
            inline=self.handle_inline,
            policy=AuthPolicy(min_level=self.min_auth_level, allow_anonymous=False),
        )

    # -- NTLM: the directory and the throttle, as the runtime asks for them ----------------

    def security(self, names: ServerNames) -> ServerSecurity:
        """The runtime's security providers, fed from the directory's in-memory NT
        hashes and reporting to the logon throttle."""
        return ServerSecurity(
            lookup_nt_hash=self.lookup_nt_hash,
            names=names,
            on_auth_failure=self._ntlm_failed,
            admit=self._ntlm_admitted,
        )

    def lookup_nt_hash(self, user: str, domain: str) -> bytes | None:
        """The NT hash of an enabled user, from memory (on the event loop). A user whose
        password predates NTLM has none: logged, with what to do."""
        name = account_name(user)
        known, digest = self.store.directory.cached_nt_hash(name)
        if not known:
            self._refresh_wanted.set()  # added by another process? (housekeeping looks)
        if known and digest is None:
            log.warning(
                "NTLM logon of %r refused: no NT hash is kept for this account yet (its "
                "password was set before NTLM support); set the password again with "
                "'mapi-anywhere passwd %s' (or log on once through the tunnel)",
                name, name,
            )  # fmt: skip
        return digest

    def _ntlm_admitted(self, user: str, domain: str, peer: Peer) -> bool:
        name, address = account_name(user), _failure_address(peer)
        wait = self.throttle.delay(name, address, trio.current_time())
        if wait > 0:
            log.warning("NTLM logon of %r from %s refused: too many failures", name, peer)
        return wait <= 0

    def _ntlm_failed(self, user: str, domain: str, peer: Peer) -> None:
        name = account_name(user) or None
        self.throttle.failed(name, _failure_address(peer), trio.current_time())
        log.info("failed NTLM logon of %r (domain %r) from %s", name, domain, peer)

    async def handle(self, ctx: CallContext, stub: bytes) -> bytes:
        try:
            request = msgpack.unpackb(stub, raw=False, **_UNPACK_LIMITS)
        except ValueError as exc:
            if "exceeds max_str_len" in str(exc) or "exceeds max_bin_len" in str(exc):
                return _error(
                    errors.TooBig(
                        f"a value in this call is too large for one call ({exc}); write "
                        "large values through a stream (open_stream)"
                    )
                )
            return _error(errors.InvalidParameter(f"stub is not valid msgpack: {exc}"))
        except Exception as exc:  # msgpack raises several unrelated types
            return _error(errors.InvalidParameter(f"stub is not valid msgpack: {exc}"))
        if not isinstance(request, dict):
            return _error(errors.InvalidParameter("stub must be a msgpack map"))
        if self._token is None:
            # The hub publishes from worker threads; wake long-polls through the loop.
            self._token = trio.lowlevel.current_trio_token()
            self.store.notifications.set_waker(self._wake_from_thread)
        try:
            if ctx.opnum == OP_EXECUTE:
                return await self._execute(request, ctx)
            if ctx.opnum == OP_WAIT_FOR_EVENTS:
                return await self._wait_for_events(request, ctx)
            if ctx.opnum == OP_CONNECT:
                return await self._connect(request, ctx)
            return await self._disconnect(request, ctx)
        except errors.MapiError as exc:
            return _error(exc)

    def handle_inline(self, ctx: CallContext, stub: bytes) -> bytes | None:
        """Answer a batch of reads on the event loop when nothing in it blocks.

        Only ``execute`` batches made of :data:`mapi.rpc.ops.READ_ONLY` operations, for a
        session whose lock is free, are tried, under :func:`mapi.storage.guard.inline`: the
        first touch of SQLite, or a mailbox lock held by a worker thread, abandons the
        attempt and the batch goes to :meth:`handle`, which runs it from the top in a
        worker thread. Anything unusual (a bad stub, an unknown session) also goes
        there, so errors are answered in one place. None means "not answered".
        """
        if ctx.opnum != OP_EXECUTE or len(stub) > _INLINE_STUB_LIMIT:
            return None  # a large stub is a write: not worth decoding twice
        try:
            request = msgpack.unpackb(stub, raw=False, **_UNPACK_LIMITS)
        except Exception:  # msgpack raises several unrelated types
            return None
        if not isinstance(request, dict):
            return None
        sid, batch = request.get("session"), request.get("ops")
        live = self._sessions.get(sid) if isinstance(sid, bytes) else None
        if live is None or live.closed or live.lock.locked() or not _read_only(batch):
            return None
        assert isinstance(sid, bytes)
        if not self._may_use(live, sid, ctx):
            return None  # refused (and logged) on the async path
        now = trio.current_time()
        if now - self._last_sweep >= SWEEP_INTERVAL:
            return None  # the idle sweep is due: it needs the async path
        self._attach(live, sid, ctx)
        try:
            # Bounded on the loop too: past INLINE_SECONDS it goes to a worker.
            with (
                inline(),
                applied(WorkBudget(INLINE_SECONDS, time.monotonic, escalate=NeedsWorker)),
            ):
                results = ops.run_batch_packed(live.context, batch)
        except NeedsWorker:
            return None
        live.last_used = now
        return _RESULTS_HEAD + results

    async def close(self) -> None:
        """Close every session (at shutdown)."""
        for sid in list(self._sessions):
            await self._drop(sid)
        if self._wake_socket is not None:
            self._wake_socket.close()

    # -- logon -----------------------------------------------------------------------------

    async def _connect(self, request: dict[str, Any], ctx: CallContext) -> bytes:
        caller = identity_of(ctx)
        if "resume" in request:
            if caller is None and "response" not in request:
                raise errors.LogonFailed(
                    "a resume on an unauthenticated connection must prove the user "
                    "(the logon's challenge-response)"
                )
            return await self._resume(request, ctx, caller)
        user = request.get("user")
        if not isinstance(user, str) or not 0 < len(user) <= self.limits.max_username_chars:
            raise errors.InvalidParameter("connect needs a user name")
        pending = ctx.connection_state.get(_PENDING_LOGONS)
        if pending is None:
            limit = self.limits.max_pending_logons_per_connection
            pending = ctx.connection_state[_PENDING_LOGONS] = self.store.pending_challenges(limit)
        if caller is not None and challenge_name(user) != caller:
            log.warning(
                "logon as %r refused: the connection from %s authenticated as another user",
                challenge_name(user), _where(ctx),
            )  # fmt: skip
            raise errors.LogonFailed("not the user this connection authenticated as")
        if "response" not in request:
            if pending.full():
                raise errors.NotEnoughResources("too many logons in progress on this connection")
            challenge = await trio.to_thread.run_sync(
                self.store.begin_logon, user, limiter=self.pools.logons
            )
            pending.add(challenge)
            params = challenge.params
            return _pack(
                {
                    "hresult": 0,
                    "salt": challenge.salt,
                    "nonce": challenge.server_nonce,
                    "kdf": {"n": params.n, "r": params.r, "p": params.p},
                }
            )
        nonce, cnonce, response = (
            request.get("nonce"),
            request.get("cnonce"),
            request.get("response"),
        )
        if not (
            isinstance(nonce, bytes) and isinstance(cnonce, bytes) and isinstance(response, bytes)
        ):
            raise errors.InvalidParameter("nonce, cnonce and response must be bytes")
        address = _throttled_address(ctx)
        # The answer is judged, and throttled, for the user the challenge was issued to
        # on this connection: never for the name that comes with the answer.
        issued = pending.take(nonce)
        if issued is None:  # never issued here, used already, or expired
            self.throttle.failed(None, address, trio.current_time())
            log.info("logon answer from %s to no challenge of its connection", address)
            raise errors.LogonFailed()
        user = issued.username
        await self._expire_idle()
        if len(self._sessions) >= self.limits.max_sessions:
            raise errors.SessionLimit("too many sessions on this server")
        wake_address = _wake_address(request, ctx)  # checked before any session exists
        now = trio.current_time()
        wait = self.throttle.delay(user, address, now)
        if wait > 0:
            log.warning("logon of %r from %s refused: too many failures", user, address)
            raise errors.LogonFailed(
                f"too many failed logons; try again in {max(1, math.ceil(wait))} s"
            )
        if challenge_name(request["user"]) != user:
            self.throttle.failed(user, address, now)
            log.info("logon answer for %r named another user, from %s", user, address)
            raise errors.LogonFailed()
        # Wrong answers and per-user session limits are the store's to judge.
        try:
            session, proof = await trio.to_thread.run_sync(
                self.store.answer_logon, issued, cnonce, response, limiter=self.pools.logons
            )
        except errors.LogonFailed:
            self.throttle.failed(user, address, trio.current_time())
            log.info("failed logon of %r from %s", user, address)
            raise
        self.throttle.succeeded(user, address, trio.current_time())
        name = session.user.username
        sid = secrets.token_bytes(16)
        handles = ops.HandleTable(self.limits.max_handles)
        now = trio.current_time()
        live = self._sessions[sid] = _LiveSession(
            session,
            handles,
            name,
            ops.Context(session, handles, self.store.limits, sid),
            last_used=now,
            wake_address=wake_address,
            address=None if ctx.peer is None else ctx.peer[0],
            transport="tunnel" if ctx.attached or ctx.peer is None else "lan",
            created=now,
            bound=caller is not None,
        )
        self._attach(live, sid, ctx)
        log.info("%s logged on from %s", name, _where(ctx))
        return _pack({"hresult": 0, "session": sid, "user": name, "proof": proof})

    async def _resume(self, request: dict[str, Any], ctx: CallContext, caller: str | None) -> bytes:
        """Take up a live session on this connection (see the module docstring: the
        caller's identity must be the owner, or, without one, the logon's proof)."""
        sid = request.get("resume")
        live = self._sessions.get(sid) if isinstance(sid, bytes) else None
        if live is None:
            raise errors.LogonFailed("unknown or expired session")
        assert isinstance(sid, bytes)
        extra: dict[str, Any] = {}
        if caller is None and live.bound:
            self._refuse(live, sid, ctx, "made on an authenticated connection")
        if caller is not None and caller != live.user:
            self._refuse(live, sid, ctx, "owned by another user")
        if "response" in request:  # needed without an identity, checked whenever sent
            extra["proof"] = await self._prove(request, ctx, live)
        live.last_used = trio.current_time()
        live.wake_address = _wake_address(request, ctx)
        self._attach(live, sid, ctx)
        log.info("%s resumed session %s from %s", live.user, _handle_of(sid), _where(ctx))
        return _pack({"hresult": 0, "session": sid, "user": live.user, **extra})

    async def _prove(self, request: dict[str, Any], ctx: CallContext, live: _LiveSession) -> bytes:
        """Check the challenge-response of a resume without an identity (throttled like
        a logon); returns the server's proof."""
        pending = ctx.connection_state.get(_PENDING_LOGONS)
        nonce, cnonce, response = (
            request.get("nonce"),
            request.get("cnonce"),
            request.get("response"),
        )
        if not (isinstance(cnonce, bytes) and isinstance(response, bytes)):
            raise errors.InvalidParameter("nonce, cnonce and response must be bytes")
        address = _throttled_address(ctx)
        issued = pending.take(nonce) if pending is not None else None
        now = trio.current_time()
        if issued is None or issued.username != live.user:
            self.throttle.failed(None if issued is None else issued.username, address, now)
            log.warning(
                "resume of a session of %s refused: no proof for its owner, from %s",
                live.user, _where(ctx),
            )  # fmt: skip
            raise errors.LogonFailed()
        wait = self.throttle.delay(live.user, address, now)
        if wait > 0:
            raise errors.LogonFailed(
                f"too many failed logons; try again in {max(1, math.ceil(wait))} s"
            )
        try:
            _user, proof = await trio.to_thread.run_sync(
                self.store.check_answer, issued, cnonce, response, limiter=self.pools.logons
            )
        except errors.LogonFailed:
            self.throttle.failed(live.user, address, trio.current_time())
            log.warning("resume of a session of %s: wrong proof from %s", live.user, _where(ctx))
            raise
        self.throttle.succeeded(live.user, address, trio.current_time())
        return proof

    def _may_use(self, live: _LiveSession, sid: bytes, ctx: CallContext) -> bool:
        """Whether ``ctx``'s connection may use the session: it made or resumed it, or
        it authenticated as its owner. Cheap: the inline path asks it per call."""
        used: set[bytes] | None = ctx.connection_state.get(_CONNECTION_SESSIONS)
        if used is not None and sid in used:
            return True
        return identity_of(ctx) == live.user

    def _refuse(self, live: _LiveSession, sid: bytes, ctx: CallContext, why: str) -> NoReturn:
        log.warning(
            "refused session %s of %s (%s) to %s",
            _handle_of(sid), live.user, why, _where(ctx),
        )  # fmt: skip
        raise errors.LogonFailed("unknown or expired session")

    async def _disconnect(self, request: dict[str, Any], ctx: CallContext) -> bytes:
        sid = request.get("session")
        if not isinstance(sid, bytes) or sid not in self._sessions:
            raise errors.InvalidParameter("unknown session")
        live = self._sessions[sid]
        if not self._may_use(live, sid, ctx):
            self._refuse(live, sid, ctx, "not this connection's")
        await self._drop(sid)
        return _pack({"hresult": 0})

    async def _drop(self, sid: bytes) -> None:
        live = self._sessions.pop(sid, None)
        if live is not None:
            await _close_session(live, self.store.notifications, sid)

    async def _expire_idle(self) -> None:
        """Close sessions idle for ``session_idle`` seconds (every SWEEP_INTERVAL)."""
        now = trio.current_time()
        if now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        deadline = now - self.limits.session_idle
        closed = await trio.to_thread.run_sync(self.store.close_idle_mailboxes)
        if closed:
            log.debug("closed %d idle mailbox database(s)", closed)
        for sid, live in list(self._sessions.items()):
            if live.last_used < deadline and not live.lock.locked():
                del self._sessions[sid]
                log.info("session of %s expired after %.0f s idle", live.user, now - live.last_used)
                await _close_session(live, self.store.notifications, sid)
        await self._reap_detached()

    async def _reap_detached(self) -> None:
        """End sessions whose connections all closed ``detached_grace`` seconds ago and
        that were not resumed (a client killed, or gone without ``disconnect``)."""
        now = trio.current_time()
        for sid, live in list(self._sessions.items()):
            detached = live.detached_at
            if detached is not None and now - detached >= self.limits.detached_grace:
                if self._sessions.get(sid) is live:
                    del self._sessions[sid]
                log.info(
                    "session of %s ended: its connection closed %.0f s ago",
                    live.user, now - detached,
                )  # fmt: skip
                await _close_session(live, self.store.notifications, sid)

    async def housekeeping(self) -> None:
        """Run the sweeps on a timer, until cancelled (``serve`` starts it): sessions of
        closed connections end after their grace even when no call comes."""
        while True:
            with trio.move_on_after(REAP_INTERVAL):
                await self._refresh_wanted.wait()
            await self.refresh_credentials()
            await self._reap_detached()
            await self._expire_idle()

    async def refresh_credentials(self) -> None:
        """Reload the directory's in-memory NT hashes if another process changed the
        file (``adduser`` on the files; asked by it through the control socket, after
        an NTLM bind named an unknown user, and every REAP_INTERVAL)."""
        self._refresh_wanted = trio.Event()
        await trio.to_thread.run_sync(
            self.store.directory.refresh_nt_hashes, limiter=self.pools.logons
        )

    def _attach(self, live: _LiveSession, sid: bytes, ctx: CallContext) -> None:
        """Count ``ctx``'s connection as a user of the session (once per connection)."""
        if ctx.connection_state.get(CONNECTION_CLOSED):
            # A call that started after its connection ended (request and close came
            # in one read): the close callbacks ran already, nobody would uncount it.
            return
        used: set[bytes] | None = ctx.connection_state.get(_CONNECTION_SESSIONS)
        if used is None:
            used = ctx.connection_state[_CONNECTION_SESSIONS] = set()
            ctx.on_close.append(functools.partial(self._connection_closed, used))
        if sid in used:
            return
        used.add(sid)
        live.connections += 1
        live.detached_at = None

    def _connection_closed(self, used: set[bytes]) -> None:
        now = trio.current_time()
        for sid in used:
            live = self._sessions.get(sid)
            if live is None:
                continue
            live.connections -= 1
            if live.connections <= 0:
                live.connections = 0
                live.detached_at = now
        used.clear()

    # -- administration (``mapi-anywhere sessions``, ``deluser``, ``passwd``) --------------

    def list_sessions(self) -> list[SessionInfo]:
        """Every live session, oldest first."""
        now = trio.current_time()
        return [
            SessionInfo(
                handle=_handle_of(sid),
                user=live.user,
                address=live.address,
                transport=live.transport,
                age=now - live.created,
                idle=now - live.last_used,
                connections=live.connections,
            )
            for sid, live in sorted(self._sessions.items(), key=lambda item: item[1].created)
        ]

    async def end_session(self, handle: str) -> bool:
        """End the session named ``handle`` (see :class:`SessionInfo`); False if none."""
        for sid in list(self._sessions):
            if _handle_of(sid) == handle:
                live = self._sessions[sid]
                log.info("session %s of %s ended by the administrator", handle, live.user)
                await self._drop(sid)
                return True
        return False

    async def end_user_sessions(self, username: str) -> int:
        """End every session of ``username``; returns how many."""
        name = username.strip().lower()
        ended = 0
        for sid, live in list(self._sessions.items()):
            if live.user.lower() == name:
                await self._drop(sid)
                ended += 1
        return ended

    def on_credentials_changed(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(username)`` after a password change or a deletion (the
        tunnel's authenticator forgets the user's cached credentials)."""
        self._credentials_changed.append(callback)

    def _announce(self, username: str) -> None:
        for callback in self._credentials_changed:
            callback(username)

    async def delete_user(self, username: str) -> UserRecord:
        """Delete an account while serving: its sessions end first, then its mailbox is
        closed (after any batch on it) and removed with the account.

        Raises:
            NotFound: no such user.
        """
        record = await trio.to_thread.run_sync(
            self.store.directory.get_user, username, limiter=self.pools.logons
        )
        self._announce(record.username)
        await self.end_user_sessions(record.username)
        deleted = await trio.to_thread.run_sync(
            self.store.delete_user, record.username, limiter=self.pools.batches
        )
        # Again, now that the account is gone: a logon or a tunnel check that completed
        # while the deletion ran must not outlive it.
        self._announce(record.username)
        await self.end_user_sessions(record.username)
        log.info("user %s deleted; their sessions ended", deleted.username)
        return deleted

    async def mailbox_quota(
        self, username: str, limit: int | None = None, *, change: bool = False
    ) -> tuple[int, int, bool]:
        """:meth:`ObjectStore.mailbox_quota <mapi.store.ObjectStore.mailbox_quota>` on
        the running server (a worker thread of the batch pool, waiting for the mailbox
        like any batch)."""
        return await trio.to_thread.run_sync(
            functools.partial(self.store.mailbox_quota, username, limit, change=change),
            limiter=self.pools.batches,
        )

    async def set_password(self, username: str, password: str) -> int:
        """Change a password while serving: the user's sessions end (they were opened
        with the old one) and cached credentials are forgotten. Returns the number of
        sessions ended.

        Raises:
            NotFound: no such user.
        """
        await trio.to_thread.run_sync(
            self.store.set_password, username, password, limiter=self.pools.password_checks
        )
        self._announce(username)
        ended = await self.end_user_sessions(username)
        log.info("password of %s changed; %d session(s) ended", username, ended)
        return ended

    # -- batches ---------------------------------------------------------------------------

    def _live(self, sid: object, ctx: CallContext) -> _LiveSession:
        """The session ``sid`` names, if ``ctx``'s connection may use it."""
        live = self._sessions.get(sid) if isinstance(sid, bytes) else None
        if live is None:
            raise errors.LogonFailed("unknown or expired session")
        assert isinstance(sid, bytes)
        if not self._may_use(live, sid, ctx):
            self._refuse(live, sid, ctx, "not this connection's")
        return live

    async def _execute(self, request: dict[str, Any], ctx: CallContext) -> bytes:
        sid = request.get("session")
        live = self._live(sid, ctx)
        assert isinstance(sid, bytes)
        self._attach(live, sid, ctx)
        batch = request.get("ops")
        await self._expire_idle()
        async with live.lock:
            if live.closed:  # disconnected while this batch waited for the lock
                raise errors.LogonFailed("the session has ended")
            live.last_used = trio.current_time()
            # The budget starts now: waiting for the session's lock is not its work.
            budget = WorkBudget(self.limits.batch_seconds, time.monotonic)
            results = await self.pools.run_batch(
                live.user, budget, functools.partial(ops.run_batch_packed, live.context, batch)
            )
            live.last_used = trio.current_time()
        return _RESULTS_HEAD + results

    # -- events ----------------------------------------------------------------------------

    def _wake_from_thread(self, key: Hashable) -> None:
        """The hub's waker: called on a worker thread holding a mailbox lock, so it only
        schedules the wake-up on the event loop and returns."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._wake, key)

    def _wake(self, key: Hashable) -> None:
        live = self._sessions.get(key) if isinstance(key, bytes) else None
        if live is None:
            return
        live.events_ready.set()
        now = trio.current_time()
        if live.wake_address is not None and now - live.last_wake >= WAKE_INTERVAL:
            live.last_wake = now
            self._send_wake(live)

    def _send_wake(self, live: _LiveSession) -> None:
        """The LAN wake-up datagram: a hint to long-poll now. It carries nothing but
        :data:`WAKE_MAGIC` (the client knows which session registered the port); losing
        it costs nothing, the long-poll stays the truth."""
        assert live.wake_address is not None
        if self._wake_socket is None:
            self._wake_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._wake_socket.setblocking(False)  # sendto never blocks the event loop
        try:
            self._wake_socket.sendto(WAKE_MAGIC, live.wake_address)
        except OSError as exc:  # full buffer, unreachable: the datagram is only a hint
            log.debug("wake-up datagram to %s not sent: %s", live.wake_address, exc)

    async def _wait_for_events(self, request: dict[str, Any], ctx: CallContext) -> bytes:
        sid = request.get("session")
        live = self._live(sid, ctx)
        assert isinstance(sid, bytes)
        self._attach(live, sid, ctx)
        after, timeout, most = (
            request.get("after", 0),
            request.get("timeout", 30.0),
            request.get("max", 256),
        )
        if not (isinstance(after, int) and isinstance(most, int) and 0 < most <= 4096):
            raise errors.InvalidParameter("after and max must be integers (max 1..4096)")
        if not isinstance(timeout, int | float) or not 0 <= timeout <= MAX_WAIT:
            raise errors.InvalidParameter(f"timeout must be in [0, {MAX_WAIT}] seconds")
        hub = self.store.notifications
        with trio.move_on_after(timeout):
            while True:
                live.last_used = trio.current_time()
                # A fresh event before polling: a publication after the poll still wakes us.
                live.events_ready = trio.Event()
                result = hub.poll(sid, after, most)
                if result.events or result.resync_required:
                    break
                await live.events_ready.wait()
        if live.closed:
            raise errors.LogonFailed("the session has ended")
        result = hub.poll(sid, after, most)
        return _pack(
            {
                "hresult": 0,
                "events": [event.to_dict() for event in result.events],
                "resync": result.resync_required,
                "last_seq": result.last_seq,
            }
        )


async def _close_session(live: _LiveSession, hub: NotificationHub, sid: bytes) -> None:
    """End a session: under its lock (after any running batch, whose budget bounds the
    wait), in a worker thread (closing objects takes the mailbox lock, which a batch
    elsewhere may hold). Shielded from the first step: callers remove the session from
    the table just before, and a session removed but not released would leak (its
    objects open, its place in the user's session count taken for good)."""
    with trio.CancelScope(shield=True):
        async with live.lock:
            if live.closed:
                return
            live.closed = True
            live.events_ready.set()  # a parked wait_for_events returns
            hub.forget(sid)
            await trio.to_thread.run_sync(_release_all, live)


def _release_all(live: _LiveSession) -> None:
    live.handles.clear()
    live.session.logoff()


# The wire constants live in mapi.wire (a client imports them without the store);
# they stay importable from here.
__all__ = [
    "INLINE_SECONDS",
    "MAX_WAIT",
    "OPNUM_COUNT",
    "OP_CONNECT",
    "OP_DISCONNECT",
    "OP_EXECUTE",
    "OP_WAIT_FOR_EVENTS",
    "REAP_INTERVAL",
    "STORE_SYNTAX",
    "SWEEP_INTERVAL",
    "WAKE_INTERVAL",
    "WAKE_MAGIC",
    "ServiceLimits",
    "SessionInfo",
    "StoreService",
]
