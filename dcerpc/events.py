"""Events produced by the connection cores (h11 ``_events.py``, h2 ``events.py``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from dcerpc.interface import Interface
from dcerpc.pdu import ContextResult
from dcerpc.security import CallerAuth
from dcerpc.syntax import SyntaxId


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of every event."""


# -- server side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BindReceived(Event):
    """A bind or alter_context was answered; the reply is already queued."""

    assoc_group_id: int
    accepted: tuple[SyntaxId, ...]
    alter: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CallReceived(Event):
    """A complete (reassembled) request for a known interface and a valid opnum."""

    call_id: int
    context_id: int
    interface: Interface
    transfer_syntax: SyntaxId
    opnum: int
    object_uuid: uuid.UUID | None
    stub: bytes
    #: Byte order of integers in the stub, from the request's data representation.
    byteorder: str = "<"
    #: The connection's authenticated caller, None if it did not authenticate.
    auth: CallerAuth | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCancelled(Event):
    """The client asked to cancel (co_cancel) or abandoned (orphaned) a call."""

    call_id: int
    orphaned: bool


# -- client side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BindAckReceived(Event):
    """The server answered our bind or alter_context with per-context results."""

    call_id: int
    results: tuple[ContextResult, ...]
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    secondary_address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BindNakReceived(Event):
    """The server refused our bind."""

    call_id: int
    reason: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived(Event):
    """The complete (reassembled) response to one of our calls."""

    call_id: int
    stub: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultReceived(Event):
    """The server answered one of our calls (or the connection, call_id 0) with a fault."""

    call_id: int
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownReceived(Event):
    """The server asked us to close the connection once our calls are done."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEnded(Event):
    """The peer closed its side (EOF)."""
