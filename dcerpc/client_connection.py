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
"""

from __future__ import annotations

import enum
import uuid

from dcerpc.config import RpcConfig
from dcerpc.errors import LocalProtocolError, RemoteProtocolError
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
    WHOLE,
    AlterContextPdu,
    BindAckPdu,
    BindNakPdu,
    BindPdu,
    ContextElement,
    FaultPdu,
    OrphanedPdu,
    PfcFlags,
    ResponsePdu,
    RtsPdu,
    ShutdownPdu,
    decode_pdu,
    request_fragments,
)

#: Orphaned calls remembered so their late responses are dropped quietly.
MAX_ORPHANED = 256


class ClientState(enum.Enum):
    IDLE = "idle"  # nothing sent yet
    BINDING = "binding"  # bind sent, no answer yet
    BOUND = "bound"
    CLOSED = "closed"


class ClientConnection:
    """The client end of one DCE/RPC connection. See the module docstring."""

    def __init__(self, config: RpcConfig | None = None) -> None:
        self.config = config or RpcConfig()
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

    def bind(self, contexts: list[ContextElement], assoc_group_id: int = 0) -> int:
        """Queue a bind (first time) or alter_context for ``contexts``; returns its call_id."""
        if self.state is ClientState.CLOSED:
            raise LocalProtocolError("connection is closed")
        if self.state is ClientState.BINDING:
            raise LocalProtocolError("a bind is already in flight")
        call_id = self._new_call_id()
        size = self.config.max_fragment
        kind = BindPdu if self.state is ClientState.IDLE else AlterContextPdu
        pdu = kind(
            call_id=call_id,
            pfc_flags=WHOLE | PfcFlags.CONC_MPX,
            max_xmit_frag=size,
            max_recv_frag=size,
            assoc_group_id=self.assoc_group_id or assoc_group_id,
            contexts=tuple(contexts),
        )
        if self.state is ClientState.IDLE:
            self.state = ClientState.BINDING
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
        for frag in request_fragments(
            call_id=call_id,
            context_id=context_id,
            opnum=opnum,
            stub=stub,
            max_fragment=self.max_xmit_frag,
            object_uuid=object_uuid,
        ):
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

    def _handle(self, raw: bytes) -> Event | None:
        pdu = decode_pdu(raw, self.config.max_fragment)
        if isinstance(pdu, BindAckPdu):  # includes alter_context_resp
            if pdu.call_id not in self._pending_binds:
                raise RemoteProtocolError(f"bind_ack for unknown call {pdu.call_id}")
            self._pending_binds.discard(pdu.call_id)
            if self.state is ClientState.BINDING:
                self.assoc_group_id = pdu.assoc_group_id
                # We send no more than either side allows, and no less than C706's floor.
                allowed = min(self.config.max_fragment, pdu.max_recv_frag)
                self.max_xmit_frag = max(MIN_FRAGMENT_SIZE, allowed) & ~7
                self.max_recv_frag = pdu.max_xmit_frag
                self.state = ClientState.BOUND
            return BindAckReceived(
                call_id=pdu.call_id,
                results=pdu.results,
                max_xmit_frag=pdu.max_xmit_frag,
                max_recv_frag=pdu.max_recv_frag,
                assoc_group_id=pdu.assoc_group_id,
                secondary_address=pdu.secondary_address,
            )
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
