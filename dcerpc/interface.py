"""The contract between the runtime and the services it carries.

A service is an :class:`Interface`: its abstract syntax, the transfer syntaxes it
accepts, the number of opnums it defines and one async handler. The runtime
negotiates presentation contexts, reassembles requests and calls the handler with
a :class:`CallContext`; the handler returns the response stub data or raises
:class:`~dcerpc.errors.RpcFault` (any other exception becomes a fault too, and is
logged by the driver, never sent to the peer).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dcerpc.syntax import NDR, SyntaxId


@dataclass(slots=True)
class CallContext:
    """What a handler knows about the call it serves.

    ``connection_state`` lives as long as the transport connection: handlers keep
    per-connection state there (for example, context handles of an ``ept_lookup``
    iteration) and it is dropped when the connection closes.
    """

    opnum: int
    interface: SyntaxId
    transfer_syntax: SyntaxId
    object_uuid: uuid.UUID | None
    association_group: int
    peer: tuple[str, int] | None
    local: tuple[str, int] | None
    connection_state: dict[str, Any] = field(default_factory=dict)
    #: Every interface served on this endpoint (the management interface lists them).
    served_interfaces: tuple[SyntaxId, ...] = ()
    #: Byte order of the request stub's integers ("<" little, ">" big), from its drep;
    #: NDR decoders read with it, responses are always little-endian.
    byteorder: str = "<"


Handler = Callable[[CallContext, bytes], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Interface:
    """One DCE/RPC interface served by the runtime."""

    syntax: SyntaxId
    handler: Handler
    #: Opnums 0 .. opnum_count-1 exist; others fault with nca_s_op_rng_error.
    opnum_count: int
    transfer_syntaxes: tuple[SyntaxId, ...] = (NDR,)
    name: str = ""

    def __post_init__(self) -> None:
        if self.opnum_count < 0:
            raise ValueError("opnum_count must be >= 0")
        if not self.transfer_syntaxes:
            raise ValueError("an interface needs at least one transfer syntax")
