"""Sans-IO client side of one connection-oriented DCE/RPC association.

Theory of operation
-------------------
:class:`ClientConnection` queues a bind (the first time) or an alter_context
(afterwards) with :meth:`~ClientConnection.bind`, and requests with
:meth:`~ClientConnection.request`, fragmented to the size the server acknowledged
([C706] 12.6.3.1). Received bytes become events: bind results, reassembled
responses, faults, a shutdown request. Several calls may be outstanding; each
response is reassembled under its ``call_id`` and bounded by
``max_response_size``. Anything the server sends that does not belong to a call we
made is a :class:`RemoteProtocolError`, after which the connection is closed.

With a :class:`~dcerpc.auth_context.ClientAuth` the first bind carries the
mechanism's first token ([MS-RPCE] 3.3.1.5.2) and asks for header signing. The bind_ack's
token is answered by an auth3 (NTLM, whose exchange is then over) or by an
alter_context with the same presentation contexts (SPNEGO, which waits for the
server's last token and mechListMIC); the bind's :class:`BindAckReceived` is held
back until the exchange is complete, so a caller sees one bind either way. From then
on every request fragment is protected and every response fragment verified (and
decrypted) by :class:`~dcerpc.auth_context.SecurityContext`; a response that does not
verify is a :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import enum
import uuid

from dcerpc.auth_context import PROTECTION_OVERHEAD, ClientAuth, SecurityContext
from dcerpc.config import RpcConfig
from dcerpc.errors import FaultStatus, LocalProtocolError, RemoteProtocolError
from dcerpc.events import (
    BindAckReceived,
    BindNakReceived,
    ConnectionEnded,
    Event,
    FaultReceived,
    ResponseReceived,
    ShutdownReceived,
)
from dcerpc.framing import PduFramer
from dcerpc.pdu import (
    FIRST_FRAG,
    LAST_FRAG,
    MIN_FRAGMENT_SIZE,
    REQUEST_HEADER_SIZE,
    RESPONSE_HEADER_SIZE,
    WHOLE,
    AlterContextPdu,
    Auth3Pdu,
    BindAckPdu,
    BindNakPdu,
    BindPdu,
    ContextElement,
    FaultPdu,
    OrphanedPdu,
    PfcFlags,
    PType,
    ResponsePdu,
    RtsPdu,
    ShutdownPdu,
    decode_pdu,
    parse_header,
    request_fragments,
)
from dcerpc.security import AuthError, SecTrailer, split_verifier

#: Orphaned calls remembered so their late responses are dropped quietly.
MAX_ORPHANED = 256


class ClientState(enum.Enum):
    IDLE = "idle"  # nothing sent yet
    BINDING = "binding"  # bind sent, no answer yet
    BOUND = "bound"
    CLOSED = "closed"


class ClientConnection:
    """The client end of one DCE/RPC connection. See the module docstring."""

    def __init__(self, config: RpcConfig | None = None, *, auth: ClientAuth | None = None) -> None:
        self.config = config or RpcConfig()
        #: What the first bind authenticates with (None: no authentication).
        self.auth = auth
        self._security: SecurityContext | None = None
        #: The bind's ack, held until the exchange completes: (bind call_id, event).
        self._held_ack: BindAckReceived | None = None
        #: alter_context call_id of an authentication leg -> the bind's call_id.
        self._auth_legs: dict[int, int] = {}
        self._bind_contexts: tuple[ContextElement, ...] = ()
        self.state = ClientState.IDLE
        self.assoc_group_id = 0
        self.max_xmit_frag = MIN_FRAGMENT_SIZE
        self.max_recv_frag = self.config.max_fragment
        self._framer = PduFramer(self.config.max_fragment)
        self._next_call_id = 1
        self._pending_binds: set[int] = set()
        self._calls: dict[int, list[bytes] | None] = {}
        self._sizes: dict[int, int] = {}
        #: Calls we orphaned whose response may still arrive: dropped, not an error.
        self._orphaned: dict[int, None] = {}
        self._outbox = bytearray()

    # -- commands --------------------------------------------------------------------------

    def bind(
        self, contexts: list[ContextElement], assoc_group_id: int = 0, *, now: float = 0.0
    ) -> int:
        """Queue a bind (first time) or alter_context for ``contexts``; returns its call_id.

        ``now`` (Unix seconds) is used by NTLM when the server sends no timestamp.
        """
        if self.state is ClientState.CLOSED:
            raise LocalProtocolError("connection is closed")
        if self.state is ClientState.BINDING:
            raise LocalProtocolError("a bind is already in flight")
        call_id = self._new_call_id()
        size = self.config.max_fragment
        kind = BindPdu if self.state is ClientState.IDLE else AlterContextPdu
        flags = WHOLE | PfcFlags.CONC_MPX
        verifier = b""
        if self.auth is not None and self.state is ClientState.IDLE:
            trailer = SecTrailer(self.auth.auth_type, self.auth.auth_level, 0, self.auth.context_id)
            mech = self.auth.initiator(now)
            self._security = SecurityContext(trailer, mech)
            verifier = trailer.encode() + mech.step(b"")
            flags |= PfcFlags.PENDING_CANCEL  # PFC_SUPPORT_HEADER_SIGN, as Windows asks
        pdu = kind(
            call_id=call_id,
            pfc_flags=flags,
            max_xmit_frag=size,
            max_recv_frag=size,
            assoc_group_id=self.assoc_group_id or assoc_group_id,
            contexts=tuple(contexts),
            auth_verifier=verifier,
        )
        if self.state is ClientState.IDLE:
            self.state = ClientState.BINDING
            self._bind_contexts = tuple(contexts)
        self._pending_binds.add(call_id)
        self._outbox += pdu.encode()
        return call_id

    def request(
        self, context_id: int, opnum: int, stub: bytes, *, object_uuid: uuid.UUID | None = None
    ) -> int:
        """Queue a request; returns its call_id."""
        if self.state is not ClientState.BOUND:
            raise LocalProtocolError(f"cannot send a request in state {self.state.value}")
        call_id = self._new_call_id()
        security = self._security
        protect = security is not None and security.protects
        frags = request_fragments(
            call_id=call_id,
            context_id=context_id,
            opnum=opnum,
            stub=stub,
            max_fragment=self.max_xmit_frag - (PROTECTION_OVERHEAD if protect else 0),
            object_uuid=object_uuid,
        )
        if protect:
            assert security is not None
            size = REQUEST_HEADER_SIZE + (16 if object_uuid is not None else 0)
            frags = [security.protect(frag, size) for frag in frags]
        for frag in frags:
            self._outbox += frag
        self._calls[call_id] = None
        return call_id

    def orphan(self, call_id: int) -> None:
        """Abandon an outstanding call: tell the server and drop any response to it."""
        if self._calls.pop(call_id, 0) != 0 and self.state is ClientState.BOUND:
            self._sizes.pop(call_id, None)
            self._orphaned[call_id] = None
            while len(self._orphaned) > MAX_ORPHANED:  # the oldest are long answered
                del self._orphaned[next(iter(self._orphaned))]
            self._outbox += OrphanedPdu(call_id=call_id).encode()

    @property
    def outbox_pending(self) -> bool:
        """True while queued bytes wait for :meth:`data_to_send`."""
        return bool(self._outbox)

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        """Feed bytes from the server; ``b""`` means EOF.

        Raises:
            RemoteProtocolError: the server broke the protocol; the connection is CLOSED.
        """
        if self.state is ClientState.CLOSED:
            raise LocalProtocolError("connection is closed")
        if not data:
            self.state = ClientState.CLOSED
            return [ConnectionEnded()]
        self._framer.feed(data)
        events: list[Event] = []
        try:
            while (raw := self._framer.next_pdu()) is not None:
                event = self._handle(raw)
                if event is not None:
                    events.append(event)
        except RemoteProtocolError:
            self.state = ClientState.CLOSED
            raise
        return events

    # -- internals -------------------------------------------------------------------------

    def _new_call_id(self) -> int:
        call_id = self._next_call_id
        self._next_call_id = (self._next_call_id % 0xFFFFFFFF) + 1
        return call_id

    @property
    def authenticated(self) -> bool:
        """Whether the connection's security context is established."""
        return self._security is not None and self._security.complete

    def _handle(self, raw: bytes) -> Event | None:
        security = self._security
        if security is not None and security.complete and raw[2] == PType.RESPONSE:
            header = parse_header(raw, self.config.max_fragment)
            try:
                raw = security.unprotect(raw, RESPONSE_HEADER_SIZE, header.auth_length)
            except AuthError as exc:
                raise RemoteProtocolError(f"response failed verification: {exc}") from exc
        pdu = decode_pdu(raw, self.config.max_fragment)
        if isinstance(pdu, BindAckPdu):  # includes alter_context_resp
            if pdu.call_id not in self._pending_binds:
                raise RemoteProtocolError(f"bind_ack for unknown call {pdu.call_id}")
            self._pending_binds.discard(pdu.call_id)
            if pdu.call_id in self._auth_legs:
                return self._finish_auth(pdu)
            if self.state is ClientState.BINDING:
                self.assoc_group_id = pdu.assoc_group_id
                # We send no more than either side allows, and no less than C706's floor.
                allowed = min(self.config.max_fragment, pdu.max_recv_frag)
                self.max_xmit_frag = max(MIN_FRAGMENT_SIZE, allowed) & ~7
                self.max_recv_frag = pdu.max_xmit_frag
                self.state = ClientState.BOUND
            ack = BindAckReceived(
                call_id=pdu.call_id,
                results=pdu.results,
                max_xmit_frag=pdu.max_xmit_frag,
                max_recv_frag=pdu.max_recv_frag,
                assoc_group_id=pdu.assoc_group_id,
                secondary_address=pdu.secondary_address,
            )
            if security is not None and not security.mech.complete:
                return self._continue_auth(pdu, ack)
            return ack
        if isinstance(pdu, BindNakPdu):
            if pdu.call_id not in self._pending_binds:
                raise RemoteProtocolError(f"bind_nak for unknown call {pdu.call_id}")
            self._pending_binds.discard(pdu.call_id)
            self.state = ClientState.CLOSED
            return BindNakReceived(call_id=pdu.call_id, reason=pdu.reason)
        if isinstance(pdu, ResponsePdu):
            return self._handle_response(pdu)
        if isinstance(pdu, FaultPdu):
            if self._orphaned.pop(pdu.call_id, 0) is None:
                return None  # the answer to a call we gave up on
            if pdu.call_id in self._auth_legs:
                # The server refused our credentials: the bind's caller hears of it.
                self._pending_binds.discard(pdu.call_id)
                self.state = ClientState.CLOSED
                return FaultReceived(call_id=self._auth_legs.pop(pdu.call_id), status=pdu.status)
            # A fault may end a call mid-response, or (call_id 0 / a bind's id) the connection.
            self._calls.pop(pdu.call_id, None)
            self._sizes.pop(pdu.call_id, None)
            if pdu.call_id in self._pending_binds:
                self._pending_binds.discard(pdu.call_id)
                self.state = ClientState.CLOSED
            return FaultReceived(call_id=pdu.call_id, status=pdu.status)
        if isinstance(pdu, ShutdownPdu):
            return ShutdownReceived()
        if isinstance(pdu, RtsPdu):
            return None  # keep-alive and flow control of a tunnel below us: not our business
        raise RemoteProtocolError(f"unexpected {type(pdu).__name__} from a server")

    def _auth_token(self, pdu: BindAckPdu) -> bytes:
        security = self._security
        assert security is not None
        if not pdu.auth_verifier:
            raise RemoteProtocolError("the server answered our authenticated bind without auth")
        try:
            trailer, token = split_verifier(pdu.auth_verifier)
        except AuthError as exc:
            raise RemoteProtocolError(str(exc)) from exc
        if not security.matches(trailer):
            raise RemoteProtocolError("the server's sec_trailer names another context")
        return token

    def _step(self, token: bytes) -> bytes:
        security = self._security
        assert security is not None
        try:
            return security.mech.step(token)
        except AuthError as exc:
            raise RemoteProtocolError(
                f"authentication failed: {exc}", FaultStatus.ACCESS_DENIED
            ) from exc

    def _continue_auth(self, pdu: BindAckPdu, ack: BindAckReceived) -> Event | None:
        """Answer the bind_ack's token: auth3 if that ends it, else an alter_context."""
        security = self._security
        assert security is not None
        out = self._step(self._auth_token(pdu))
        if security.mech.complete:
            if out:  # [MS-RPCE] 3.2.1.5.2: auth3 reuses the bind's call_id
                self._outbox += Auth3Pdu(
                    call_id=pdu.call_id, auth_verifier=security.trailer() + out
                ).encode()
            return ack
        # The mechanism needs the server's last word: an alter_context leg, whose
        # answer releases the held bind_ack.
        self.state = ClientState.BINDING
        call_id = self._new_call_id()
        self._pending_binds.add(call_id)
        self._auth_legs[call_id] = pdu.call_id
        self._held_ack = ack
        self._outbox += AlterContextPdu(
            call_id=call_id,
            pfc_flags=WHOLE | PfcFlags.CONC_MPX | PfcFlags.PENDING_CANCEL,
            max_xmit_frag=self.config.max_fragment,
            max_recv_frag=self.config.max_fragment,
            assoc_group_id=self.assoc_group_id,
            contexts=self._bind_contexts,
            auth_verifier=security.trailer() + out,
        ).encode()
        return None

    def _finish_auth(self, pdu: BindAckPdu) -> Event:
        security = self._security
        assert security is not None and self._held_ack is not None
        del self._auth_legs[pdu.call_id]
        self._step(self._auth_token(pdu))
        if not security.mech.complete:
            raise RemoteProtocolError("authentication needs more legs than we allow")
        ack, self._held_ack = self._held_ack, None
        self.state = ClientState.BOUND
        return ack

    def _handle_response(self, pdu: ResponsePdu) -> Event | None:
        call_id = pdu.call_id
        if call_id in self._orphaned:
            if pdu.pfc_flags & LAST_FRAG:
                del self._orphaned[call_id]
            return None
        if call_id not in self._calls:
            raise RemoteProtocolError(f"response for unknown call {call_id}")
        chunks = self._calls[call_id]
        if pdu.pfc_flags & FIRST_FRAG:
            if chunks is not None:
                raise RemoteProtocolError(f"second first fragment for call {call_id}")
            chunks = self._calls[call_id] = []
            self._sizes[call_id] = 0
        elif chunks is None:
            raise RemoteProtocolError(f"response for call {call_id} without a first fragment")
        size = self._sizes[call_id] + len(pdu.stub)
        if size > self.config.max_response_size:
            raise RemoteProtocolError(f"response to call {call_id} exceeds the size limit")
        self._sizes[call_id] = size
        chunks.append(pdu.stub)
        if not pdu.pfc_flags & LAST_FRAG:
            return None
        del self._calls[call_id]
        del self._sizes[call_id]
        stub = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return ResponseReceived(call_id=call_id, stub=stub)
