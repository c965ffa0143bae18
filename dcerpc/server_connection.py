"""Sans-IO server side of one connection-oriented DCE/RPC association.

Theory of operation
-------------------
:class:`ServerConnection` owns no socket. The driver feeds it bytes with
:meth:`~ServerConnection.receive_data` and gets back events; everything the core
wants to say (bind_ack, bind_nak, faults, responses) is queued and drained with
:meth:`~ServerConnection.data_to_send` after *every* call (h2's shape).

States ([C706] 12.4, simplified to what a server sees)::

    AWAITING_BIND --bind ok--> BOUND --(alter_context, requests)--> BOUND
         |                       |
         +--- any error ---------+--> CLOSED  (EOF, bind_nak, protocol error)

Presentation negotiation follows [MS-RPCE] 3.3.1.5.3: an unknown interface is a
provider rejection with reason 1, an interface with none of our transfer syntaxes
gets reason 2, a bind-time-feature-negotiation syntax gets negotiate_ack carrying
the features we support, and exactly one transfer syntax is accepted per context.

Requests are reassembled per ``call_id`` (several may be outstanding when the
client multiplexes), bounded in size (``max_request_size``, answered like Samba
with a fault ``access_denied`` and a disconnect) and in number. What every connection
of a server holds together is bounded by one :class:`ReassemblyBudget`, which the
driver shares between its cores: a request that would pass it gets a fault
``nca_s_server_too_busy`` at its last fragment and is not buffered. A protocol
violation queues a fault with ``nca_s_proto_error`` (or a bind_nak before the
bind) and raises :class:`RemoteProtocolError`; the driver flushes and closes.

Security ([MS-RPCE] 3.3.1.5.2): with a :class:`~dcerpc.auth_context.ServerSecurity`,
a bind or alter_context carrying a ``sec_trailer`` starts the connection's security
context (:mod:`dcerpc.auth_context`); auth3 or a further alter_context completes it.
We do not grant security context multiplexing, so a connection has at most one
context and every PDU must name its auth_context_id. The policy of each interface
(:class:`~dcerpc.security.AuthPolicy`) is applied twice, before any handler runs: a
bind whose every interface refuses the requested level is refused with a bind_nak
(reason 8, authentication type not recognized, as Samba answers an auth request it
will not serve), a context of an alter_context with a provider rejection; and a call
whose caller does not satisfy its interface (unauthenticated, too low a level,
anonymous where refused) gets the fault ``access_denied`` (5, what Windows' security
callbacks and Samba answer) with PFC_DID_NOT_EXECUTE, the connection kept. A failed
authentication (bad token at bind: bind_nak reason 9; a wrong password in auth3,
which has no reply: the next request), a verifier that does not verify, a missing
verifier at integrity or privacy, or a sec_trailer naming another context, is
answered with ``access_denied`` and the connection closed, as Samba does.
"""

from __future__ import annotations

import enum
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from dcerpc.auth_context import PROTECTION_OVERHEAD, SecurityContext, ServerSecurity, valid_level
from dcerpc.config import RpcConfig
from dcerpc.errors import (
    DecodeError,
    FaultStatus,
    LocalProtocolError,
    RemoteProtocolError,
)
from dcerpc.events import BindReceived, CallCancelled, CallReceived, ConnectionEnded, Event
from dcerpc.framing import PduFramer
from dcerpc.interface import Interface
from dcerpc.pdu import (
    FIRST_FRAG,
    LAST_FRAG,
    MIN_FRAGMENT_SIZE,
    OBJECT_UUID,
    REQUEST_HEADER_SIZE,
    RESPONSE_HEADER_SIZE,
    WHOLE,
    AlterContextPdu,
    AlterContextRespPdu,
    Auth3Pdu,
    BindAckPdu,
    BindNakPdu,
    BindNakReason,
    BindPdu,
    CoCancelPdu,
    ContextElement,
    ContextResult,
    ContextResultCode,
    FaultPdu,
    OrphanedPdu,
    PfcFlags,
    ProviderReason,
    PType,
    RequestPdu,
    decode_pdu,
    parse_header,
    response_fragments,
)
from dcerpc.security import (
    MAX_TOKEN_SIZE,
    AuthError,
    AuthLevel,
    CallerAuth,
    SecTrailer,
    split_verifier,
)
from dcerpc.syntax import BTFN_KEEP_CONNECTION_ON_ORPHAN, SyntaxId, btfn_features

#: Features we grant in bind time feature negotiation: we keep the connection open
#: when a call is orphaned; we offer no security contexts to multiplex.
SUPPORTED_BIND_FEATURES = BTFN_KEEP_CONNECTION_ON_ORPHAN


class ConnectionState(enum.Enum):
    AWAITING_BIND = "awaiting_bind"
    BOUND = "bound"
    CLOSED = "closed"


class InterfaceRegistry:
    """The interfaces one endpoint serves, looked up by abstract syntax."""

    def __init__(self, interfaces: Iterable[Interface]) -> None:
        self._by_uuid: dict[tuple[object, int], Interface] = {}
        for iface in interfaces:
            key = (iface.syntax.uuid, iface.syntax.major)
            if key in self._by_uuid:
                raise ValueError(f"interface {iface.syntax} registered twice")
            self._by_uuid[key] = iface

    def find(self, syntax: SyntaxId) -> Interface | None:
        """The interface serving ``syntax``: same UUID and major, our minor >= theirs."""
        iface = self._by_uuid.get((syntax.uuid, syntax.major))
        if iface is None or syntax.minor > iface.syntax.minor:
            return None
        return iface

    @property
    def syntaxes(self) -> tuple[SyntaxId, ...]:
        return tuple(iface.syntax for iface in self._by_uuid.values())


class AssociationGroups:
    """Association group ids shared by every connection of one server ([C706] 12.2.5).

    A group lives while at least one connection belongs to it; a bind naming a group
    that does not exist is refused.
    """

    def __init__(self) -> None:
        self._members: dict[int, int] = {}

    def join(self, requested: int) -> int | None:
        if requested == 0:
            group = 0
            while group == 0 or group in self._members:
                group = secrets.randbits(32)
            self._members[group] = 1
            return group
        if requested not in self._members:
            return None
        self._members[requested] += 1
        return requested

    def leave(self, group: int) -> None:
        count = self._members.get(group, 0) - 1
        if count <= 0:
            self._members.pop(group, None)
        else:
            self._members[group] = count

    def __len__(self) -> int:
        return len(self._members)


class ReassemblyBudget:
    """Bytes of unfinished fragmented requests that the connections sharing it may hold
    together (``RpcConfig.reassembly_budget``). Plain counters: every core of a server
    is fed from one thread, and a core updates ``used`` inline on its hot path."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


@dataclass(slots=True)
class _Context:
    interface: Interface
    transfer_syntax: SyntaxId


@dataclass(slots=True)
class _PartialCall:
    context_id: int
    opnum: int
    object_uuid: uuid.UUID | None
    byteorder: str
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    #: A fault decided at the first fragment, sent once the last fragment is in.
    fault: int = 0


class ServerConnection:
    """The server end of one DCE/RPC connection. See the module docstring."""

    def __init__(
        self,
        registry: InterfaceRegistry,
        groups: AssociationGroups,
        config: RpcConfig | None = None,
        *,
        secondary_address: str = "",
        budget: ReassemblyBudget | None = None,
        security: ServerSecurity | None = None,
    ) -> None:
        self.config = config or RpcConfig()
        #: Security providers; None refuses every authenticated bind (reason 8).
        self.security = security
        #: The connection's security context, once a bind or alter_context asked.
        self._auth: SecurityContext | None = None
        #: Unix time of the latest input (``receive_data(now=)``), for NTLM timestamps.
        self._now: float | None = None
        #: Set by a bind whose interfaces were refused only for its auth level.
        self._refused_by_policy = False
        #: Shared with the server's other connections (a private one if none is given).
        self._budget = budget or ReassemblyBudget(self.config.reassembly_budget)
        self.registry = registry
        self.groups = groups
        self.secondary_address = secondary_address
        self.state = ConnectionState.AWAITING_BIND
        self.assoc_group_id = 0
        #: Negotiated: largest fragment we may send / the peer may send us.
        self.max_xmit_frag = MIN_FRAGMENT_SIZE
        self.max_recv_frag = self.config.max_fragment
        self._framer = PduFramer(self.config.max_fragment)
        self._contexts: dict[int, _Context] = {}
        self._partial: dict[int, _PartialCall] = {}
        self._partial_bytes = 0
        self._executing: set[int] = set()
        self._ctx_of_call: dict[int, int] = {}
        #: Encoded PDUs for the peer, in order (kept apart: a relay may need boundaries).
        self._outbox: list[bytes] = []

    # -- public API ------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray, *, now: float | None = None) -> list[Event]:
        """Feed bytes from the peer; ``b""`` means EOF. Returns the events they complete.

        ``now`` (Unix seconds, wall clock) is the time NTLM CHALLENGE messages carry;
        drivers that offer security pass it.

        Raises:
            RemoteProtocolError: the peer broke the protocol; the reply (fault or
                bind_nak) is queued and the connection is CLOSED.
            LocalProtocolError: the connection was already closed.
        """
        if self.state is ConnectionState.CLOSED:
            raise LocalProtocolError("connection is closed")
        if not data:
            self._close()
            return [ConnectionEnded()]
        if now is not None:
            self._now = now
        self._framer.feed(data)
        events: list[Event] = []
        try:
            while (raw := self._next_pdu()) is not None:
                event = self._handle_pdu(raw)
                if event is not None:
                    events.append(event)
        except RemoteProtocolError:
            self._close()
            raise
        return events

    def send_response(self, call_id: int, stub: bytes) -> None:
        """Queue the response to an executing call, fragmented to the negotiated size."""
        context_id = self._finish_call(call_id)
        auth = self._auth
        if auth is None or not auth.protects:
            self._outbox += response_fragments(
                call_id=call_id, context_id=context_id, stub=stub, max_fragment=self.max_xmit_frag
            )
            return
        for frag in response_fragments(
            call_id=call_id,
            context_id=context_id,
            stub=stub,
            max_fragment=self.max_xmit_frag - PROTECTION_OVERHEAD,
        ):
            self._outbox.append(auth.protect(frag, RESPONSE_HEADER_SIZE))

    def send_fault(self, call_id: int, status: int) -> None:
        """Queue a fault answering a call that was dispatched to its handler.

        The handler ran (at least in part), so PFC_DID_NOT_EXECUTE is not set: a client
        must not assume it may retry. Faults decided before dispatch set it.
        """
        context_id = self._finish_call(call_id)
        self._outbox.append(
            FaultPdu(
                call_id=call_id, context_id=context_id, status=status, pfc_flags=WHOLE
            ).encode()
        )

    def abandon_call(self, call_id: int) -> None:
        """Forget an executing call without answering (the client orphaned it)."""
        self._executing.discard(call_id)
        self._ctx_of_call.pop(call_id, None)

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the peer."""
        out = b"".join(self._outbox)  # one PDU: no copy
        self._outbox.clear()
        return out

    def pdus_to_send(self) -> list[bytes]:
        """Drain the PDUs queued for the peer, one encoded PDU per item."""
        out, self._outbox = self._outbox, []
        return out

    def close(self) -> None:
        """Release the association group; further input is refused."""
        self._close()

    @property
    def has_partial_input(self) -> bool:
        """True while a PDU or a fragmented request is incomplete."""
        return self._framer.has_partial or bool(self._partial)

    @property
    def outbox_pending(self) -> bool:
        """True while queued bytes wait for :meth:`data_to_send`."""
        return bool(self._outbox)

    @property
    def executing(self) -> frozenset[int]:
        return frozenset(self._executing)

    @property
    def caller(self) -> CallerAuth | None:
        """Who the connection authenticated as (None: not, or not yet)."""
        return self._auth.caller() if self._auth is not None else None

    # -- internals -------------------------------------------------------------------------

    def _close(self) -> None:
        if self.state is not ConnectionState.CLOSED and self.assoc_group_id:
            self.groups.leave(self.assoc_group_id)
        self.state = ConnectionState.CLOSED
        self._partial.clear()
        self._budget.used -= self._partial_bytes  # idempotent: zeroed below
        self._partial_bytes = 0

    def _finish_call(self, call_id: int) -> int:
        if call_id not in self._executing:
            raise LocalProtocolError(f"call {call_id} is not executing")
        self._executing.discard(call_id)
        return self._ctx_of_call.pop(call_id, 0)

    def _protocol_error(
        self, call_id: int, msg: str, status: int = FaultStatus.PROTO_ERROR
    ) -> NoReturn:
        self._outbox.append(FaultPdu(call_id=call_id, status=status).encode())
        raise RemoteProtocolError(msg, status)

    def _next_pdu(self) -> bytes | None:
        try:
            return self._framer.next_pdu()
        except DecodeError as exc:
            self._reject_malformed(self._framer.head(), exc)

    def _reject_malformed(self, head: bytes, exc: DecodeError) -> NoReturn:
        """Answer bytes that are not a valid PDU: bind_nak before the bind, else a fault."""
        call_id = 0
        if len(head) >= 16:
            call_id = int.from_bytes(head[12:16], "little" if head[4] & 0x10 else "big")
        if self.state is ConnectionState.AWAITING_BIND and head[2:3] == b"\x0b":
            self._nak(call_id, BindNakReason.NOT_SPECIFIED, str(exc))
        self._protocol_error(call_id, str(exc))

    def _handle_pdu(self, raw: bytes) -> Event | None:
        if self._auth is not None and raw[2] == PType.REQUEST:
            raw = self._unprotect_request(raw)
        try:
            pdu = decode_pdu(raw, self.config.max_fragment)
        except DecodeError as exc:
            self._reject_malformed(raw, exc)
        if isinstance(pdu, AlterContextPdu):
            return self._handle_alter(pdu)
        if isinstance(pdu, BindPdu):
            return self._handle_bind(pdu)
        if self.state is ConnectionState.AWAITING_BIND:
            self._protocol_error(pdu.call_id, f"{type(pdu).__name__} before bind")
        if isinstance(pdu, RequestPdu):
            if pdu.auth_verifier and self._auth is None:
                # No bind here ever made a security context, so no verifier can be
                # checked: executing the call would pretend it was. Samba answers a
                # verifier it cannot verify with DCERPC_FAULT_ACCESS_DENIED (5) and a
                # disconnect (dcesrv_core.c, after dcesrv_auth_pkt_pull); we do the same,
                # with the status our other refusals of a request use.
                self._protocol_error(
                    pdu.call_id,
                    "request with an auth verifier on an unauthenticated connection",
                    FaultStatus.ACCESS_DENIED,
                )
            return self._handle_request(pdu, len(raw))
        if isinstance(pdu, CoCancelPdu | OrphanedPdu):
            orphaned = isinstance(pdu, OrphanedPdu)
            dropped = self._partial.pop(pdu.call_id, None)
            if dropped is not None:
                self._unbuffer(dropped)
                return None  # never delivered: nothing to cancel
            if pdu.call_id in self._executing:
                return CallCancelled(call_id=pdu.call_id, orphaned=orphaned)
            return None
        if isinstance(pdu, Auth3Pdu):
            # auth3 ([MS-RPCE] rpc_auth_3, no reply) only completes a three-leg
            # authentication a bind started. Anywhere else, Samba (dcesrv_auth3,
            # !allow_auth3) treats it as nca_s_proto_error with a disconnect; so do we.
            auth = self._auth
            if auth is None or auth.mech.complete or auth.failed:
                self._protocol_error(pdu.call_id, "auth3 without an authentication under way")
            trailer, token = self._split(pdu.call_id, pdu.auth_verifier)
            if not auth.matches(trailer):
                self._protocol_error(pdu.call_id, "auth3 names another security context")
            try:
                auth.mech.step(token)  # nothing can answer an auth3
            except AuthError:
                auth.failed = True  # the next request is refused (access_denied)
            return None
        self._protocol_error(pdu.call_id, f"unexpected {type(pdu).__name__} from a client")

    # -- binding ---------------------------------------------------------------------------

    def _nak(self, call_id: int, reason: int, msg: str) -> NoReturn:
        self._outbox.append(BindNakPdu(call_id=call_id, reason=reason).encode())
        raise RemoteProtocolError(msg)

    def _handle_bind(self, pdu: BindPdu) -> Event:
        if self.state is not ConnectionState.AWAITING_BIND:
            self._nak(pdu.call_id, BindNakReason.NOT_SPECIFIED, "second bind on a connection")
        level: int = AuthLevel.NONE
        verifier = b""
        if pdu.auth_verifier:
            auth, out = self._start_auth_at_bind(pdu)
            level = auth.auth_level
            verifier = auth.trailer() + out if out else b""
        if not pdu.contexts:
            self._nak(pdu.call_id, BindNakReason.NOT_SPECIFIED, "bind with no contexts")
        group = self.groups.join(pdu.assoc_group_id)
        if group is None:
            self._nak(pdu.call_id, BindNakReason.NOT_SPECIFIED, "unknown association group")
        self.assoc_group_id = group
        # [C706] 12.6.3.1: each side sends at most what the other can receive. Fragments
        # stay multiples of 8 so stub data keeps its NDR alignment.
        ours = self.config.max_fragment
        self.max_xmit_frag = max(MIN_FRAGMENT_SIZE, min(pdu.max_recv_frag, ours)) & ~7
        self.max_recv_frag = max(MIN_FRAGMENT_SIZE, min(pdu.max_xmit_frag, ours)) & ~7
        self._framer.max_fragment = self.max_recv_frag
        self._refused_by_policy = False
        results = self._negotiate(pdu.contexts, level)
        if self._refused_by_policy and not any(
            r.result == ContextResultCode.ACCEPTANCE for r in results
        ):
            self._nak(
                pdu.call_id,
                BindNakReason.AUTHENTICATION_TYPE_NOT_RECOGNIZED,
                f"auth level {level} is below what the interfaces require",
            )
        self.state = ConnectionState.BOUND
        flags = WHOLE | (pdu.pfc_flags & PfcFlags.CONC_MPX)
        if self._auth is not None:
            # [MS-RPCE] 2.2.2.3: echo PFC_SUPPORT_HEADER_SIGN. NTLM signs the header
            # whether or not it was asked to, so nothing else changes.
            flags |= pdu.pfc_flags & PfcFlags.PENDING_CANCEL
        self._outbox.append(
            BindAckPdu(
                call_id=pdu.call_id,
                pfc_flags=flags,
                max_xmit_frag=self.max_xmit_frag,
                max_recv_frag=self.max_recv_frag,
                assoc_group_id=group,
                secondary_address=self.secondary_address,
                results=results,
                auth_verifier=verifier,
            ).encode()
        )
        return BindReceived(
            assoc_group_id=group, accepted=self._accepted(results, pdu), alter=False
        )

    def _handle_alter(self, pdu: AlterContextPdu) -> Event:
        if self.state is not ConnectionState.BOUND:
            self._protocol_error(pdu.call_id, "alter_context before bind")
        verifier = b""
        if pdu.auth_verifier:
            if self.security is None:
                self._protocol_error(
                    pdu.call_id,
                    "authenticated alter_context is not supported",
                    FaultStatus.SEC_PKG_ERROR,
                )
            verifier = self._auth_at_alter(pdu)
        if pdu.assoc_group_id not in (0, self.assoc_group_id):
            self._protocol_error(pdu.call_id, "alter_context names another association group")
        level = self._auth.auth_level if self._auth is not None else AuthLevel.NONE
        results = self._negotiate(pdu.contexts, level)
        self._outbox.append(
            AlterContextRespPdu(
                call_id=pdu.call_id,
                max_xmit_frag=self.max_xmit_frag,
                max_recv_frag=self.max_recv_frag,
                assoc_group_id=self.assoc_group_id,
                results=results,
                auth_verifier=verifier,
            ).encode()
        )
        return BindReceived(
            assoc_group_id=self.assoc_group_id, accepted=self._accepted(results, pdu), alter=True
        )

    @staticmethod
    def _accepted(results: tuple[ContextResult, ...], pdu: BindPdu) -> tuple[SyntaxId, ...]:
        return tuple(
            ctx.abstract_syntax
            for ctx, res in zip(pdu.contexts, results, strict=True)
            if res.result == ContextResultCode.ACCEPTANCE
        )

    def _negotiate(
        self, contexts: tuple[ContextElement, ...], level: int
    ) -> tuple[ContextResult, ...]:
        results = []
        for ctx in contexts:
            results.append(self._negotiate_one(ctx, level))
        return tuple(results)

    def _negotiate_one(self, ctx: ContextElement, level: int) -> ContextResult:
        rejected = ContextResultCode.PROVIDER_REJECTION
        features = [f for ts in ctx.transfer_syntaxes if (f := btfn_features(ts)) is not None]
        if features:
            # [MS-RPCE] 3.3.1.5.3: answer with the subset of proposed features we support.
            return ContextResult(
                ContextResultCode.NEGOTIATE_ACK, features[0] & SUPPORTED_BIND_FEATURES
            )
        iface = self.registry.find(ctx.abstract_syntax)
        if iface is None:
            return ContextResult(rejected, ProviderReason.ABSTRACT_SYNTAX_NOT_SUPPORTED)
        if not iface.policy.admits_level(level):
            self._refused_by_policy = True
            return ContextResult(rejected, ProviderReason.NOT_SPECIFIED)
        existing = self._contexts.get(ctx.context_id)
        if existing is not None and existing.interface is not iface:
            # A presentation context id cannot be rebound to another interface ([C706] 12.4).
            return ContextResult(rejected, ProviderReason.NOT_SPECIFIED)
        chosen = next((ts for ts in ctx.transfer_syntaxes if ts in iface.transfer_syntaxes), None)
        if chosen is None:
            return ContextResult(rejected, ProviderReason.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED)
        if existing is None and len(self._contexts) >= self.config.max_contexts:
            return ContextResult(rejected, ProviderReason.LOCAL_LIMIT_EXCEEDED)
        self._contexts[ctx.context_id] = _Context(iface, chosen)
        return ContextResult(ContextResultCode.ACCEPTANCE, 0, chosen)

    # -- calls -----------------------------------------------------------------------------

    def _handle_request(self, pdu: RequestPdu, frag_size: int) -> Event | None:
        call_id = pdu.call_id
        flags = pdu.pfc_flags
        partial = self._partial.get(call_id)
        if flags & FIRST_FRAG:
            if partial is not None or call_id in self._executing:
                self._protocol_error(call_id, f"call_id {call_id} is already in use")
            if len(self._partial) >= self.config.max_concurrent_calls:
                # Calls being reassembled are state we hold for the peer: beyond the limit
                # the peer is flooding us, not waiting for answers.
                self._protocol_error(call_id, "too many fragmented calls at once")
            if len(self._partial) + len(self._executing) >= self.config.max_concurrent_calls:
                fault = int(FaultStatus.SERVER_TOO_BUSY)  # refuse this call, keep the connection
            else:
                fault = self._precheck(pdu)
            if pdu.alloc_hint > self.config.max_request_size:
                self._protocol_error(
                    call_id, "alloc_hint exceeds the request limit", FaultStatus.ACCESS_DENIED
                )
            if flags & LAST_FRAG:
                # The usual case, a whole call in one fragment: nothing to reassemble.
                self._check_request_size(call_id, len(pdu.stub), 0 if fault else len(pdu.stub))
                if fault:
                    self._queue_fault(call_id, pdu.context_id, fault)
                    return None
                return self._start_call(
                    call_id, pdu.context_id, pdu.opnum, pdu.object_uuid, pdu.byteorder, pdu.stub
                )
            partial = _PartialCall(
                pdu.context_id, pdu.opnum, pdu.object_uuid, pdu.byteorder, fault=fault
            )
            self._partial[call_id] = partial
        elif partial is None:
            self._protocol_error(call_id, f"fragment of unknown call {call_id}")
        elif pdu.context_id != partial.context_id or pdu.opnum != partial.opnum:
            self._protocol_error(call_id, "fragment changes context or opnum mid-call")
        size = len(pdu.stub)
        if not partial.fault:
            budget = self._budget
            if budget.used + size <= budget.limit:
                budget.used += size
                self._partial_bytes += size
                partial.chunks.append(pdu.stub)
            else:
                # All connections together hold too much: refuse this call (the fault
                # goes out with its last fragment; a client may retry) and drop what it
                # holds. The connection and its other calls go on.
                self._unbuffer(partial)
                partial.chunks.clear()
                partial.fault = FaultStatus.SERVER_TOO_BUSY
        partial.size += size
        self._check_request_size(call_id, partial.size, 0)
        if not flags & LAST_FRAG:
            return None
        del self._partial[call_id]
        self._unbuffer(partial)
        if partial.fault:
            self._queue_fault(call_id, partial.context_id, partial.fault)
            return None
        stub = partial.chunks[0] if len(partial.chunks) == 1 else b"".join(partial.chunks)
        return self._start_call(
            call_id, partial.context_id, partial.opnum, partial.object_uuid, partial.byteorder, stub
        )

    def _unbuffer(self, partial: _PartialCall) -> None:
        """Give back what ``partial`` holds of this connection's and the server's budget."""
        if not partial.fault:  # a refused call buffers nothing
            self._partial_bytes -= partial.size
            self._budget.used -= partial.size

    def _check_request_size(self, call_id: int, size: int, unbuffered: int) -> None:
        """Refuse a request past the size limit, or one that (with ``unbuffered`` bytes
        not yet counted in the buffered total) makes the connection hold too much."""
        if size > self.config.max_request_size:
            self._protocol_error(
                call_id, "request exceeds the size limit", FaultStatus.ACCESS_DENIED
            )
        if self._partial_bytes + unbuffered > 2 * self.config.max_request_size:
            # Several large requests interleaved: bound what one connection buffers.
            self._protocol_error(
                call_id, "too much request data buffered", FaultStatus.ACCESS_DENIED
            )

    def _queue_fault(self, call_id: int, context_id: int, status: int) -> None:
        """A fault decided before the call ran (the stub was never looked at)."""
        self._outbox.append(
            FaultPdu(call_id=call_id, context_id=context_id, status=status).encode()
        )

    def _start_call(
        self,
        call_id: int,
        context_id: int,
        opnum: int,
        object_uuid: uuid.UUID | None,
        byteorder: str,
        stub: bytes,
    ) -> CallReceived:
        ctx = self._contexts[context_id]
        self._executing.add(call_id)
        self._ctx_of_call[call_id] = context_id
        return CallReceived(
            call_id=call_id,
            context_id=context_id,
            interface=ctx.interface,
            transfer_syntax=ctx.transfer_syntax,
            opnum=opnum,
            object_uuid=object_uuid,
            stub=stub,
            byteorder=byteorder,
            auth=self.caller,
        )

    def _precheck(self, pdu: RequestPdu) -> int:
        """The fault a request will get whatever its stub, or 0 if it may run."""
        ctx = self._contexts.get(pdu.context_id)
        if ctx is None:
            return FaultStatus.UNK_IF
        if pdu.opnum >= ctx.interface.opnum_count:
            return FaultStatus.OP_RNG_ERROR
        if not ctx.interface.policy.admits(self.caller):
            return FaultStatus.ACCESS_DENIED
        return 0

    # -- security --------------------------------------------------------------------------

    def _split(self, call_id: int, verifier: bytes) -> tuple[SecTrailer, bytes]:
        try:
            trailer, token = split_verifier(verifier)
        except AuthError as exc:
            self._protocol_error(call_id, str(exc))
        if len(token) > MAX_TOKEN_SIZE:
            self._protocol_error(call_id, "security token too large")
        return trailer, token

    def _new_context(self, trailer: SecTrailer) -> SecurityContext | None:
        """A security context for ``trailer``, or None if we offer no such type/level."""
        if self.security is None or not valid_level(trailer.auth_level):
            return None
        mech = self.security.acceptor(trailer.auth_type, self._now)
        return None if mech is None else SecurityContext(trailer, mech)

    def _start_auth_at_bind(self, pdu: BindPdu) -> tuple[SecurityContext, bytes]:
        """Start the security context a bind asks for; bind_nak if we cannot."""
        try:
            trailer, token = split_verifier(pdu.auth_verifier)
        except AuthError as exc:
            self._nak(pdu.call_id, BindNakReason.NOT_SPECIFIED, str(exc))
        auth = self._new_context(trailer)
        if auth is None:
            self._nak(
                pdu.call_id,
                BindNakReason.AUTHENTICATION_TYPE_NOT_RECOGNIZED,
                f"auth type {trailer.auth_type} level {trailer.auth_level} is not offered",
            )
        if len(token) > MAX_TOKEN_SIZE:
            self._nak(pdu.call_id, BindNakReason.INVALID_CHECKSUM, "security token too large")
        try:
            out = auth.mech.step(token)
        except AuthError as exc:
            # [MS-RPCE] 2.2.2.5: "an unrecoverable error detected by the security package".
            self._nak(pdu.call_id, BindNakReason.INVALID_CHECKSUM, str(exc))
        self._auth = auth
        return auth, out

    def _auth_at_alter(self, pdu: AlterContextPdu) -> bytes:
        """Start or continue the security context; the verifier of our reply."""
        call_id = pdu.call_id
        trailer, token = self._split(call_id, pdu.auth_verifier)
        auth = self._auth
        if auth is None:
            auth = self._new_context(trailer)
            if auth is None:
                self._protocol_error(
                    call_id, "auth type or level not offered", FaultStatus.ACCESS_DENIED
                )
            self._auth = auth
        elif not auth.matches(trailer):
            # One context per connection (no multiplexing granted): a new id, type or
            # level is an attempt to change it.
            self._protocol_error(
                call_id, "sec_trailer names another context", FaultStatus.ACCESS_DENIED
            )
        elif auth.failed:
            self._protocol_error(call_id, "authentication failed", FaultStatus.ACCESS_DENIED)
        elif auth.mech.complete:
            return b""  # a new presentation context on the authenticated connection
        try:
            out = auth.mech.step(token)
        except AuthError as exc:
            auth.failed = True
            self._protocol_error(
                call_id, f"authentication failed: {exc}", FaultStatus.ACCESS_DENIED
            )
        return auth.trailer() + out if out else b""

    def _unprotect_request(self, raw: bytes) -> bytes:
        """A request of an authenticated connection with its verifier checked and its
        stub decrypted; anything wrong closes the connection with access_denied."""
        auth = self._auth
        assert auth is not None
        try:
            header = parse_header(raw, self.config.max_fragment)
        except DecodeError as exc:
            self._reject_malformed(raw, exc)
        if not auth.complete:
            self._protocol_error(
                header.call_id, "request on an unauthenticated context", FaultStatus.ACCESS_DENIED
            )
        size = REQUEST_HEADER_SIZE + (16 if header.pfc_flags & OBJECT_UUID else 0)
        try:
            return auth.unprotect(raw, size, header.auth_length)
        except AuthError as exc:
            self._protocol_error(header.call_id, str(exc), FaultStatus.ACCESS_DENIED)
