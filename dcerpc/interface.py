"""The contract between the runtime and the services it carries.

A service is an :class:`Interface`: its abstract syntax, the transfer syntaxes it
accepts, the number of opnums it defines and one async handler. The runtime
negotiates presentation contexts, reassembles requests and calls the handler with
a :class:`CallContext`; the handler returns the response stub data or raises
:class:`~dcerpc.errors.RpcFault` (any other exception becomes a fault too, and is
logged by the driver, never sent to the peer).

A service may also give an ``inline`` handler: a plain function the driver tries
first, in the task that read the request, before it starts a task for the async
handler. It answers calls it can serve at once, without waiting for anything, and
returns None for the others (which then go to the async handler). Small calls
answered this way skip a task start and its scheduler pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from dcerpc.security import OPEN_POLICY, AuthPolicy, CallerAuth
from dcerpc.syntax import NDR, SyntaxId


@dataclass(slots=True)
class CallContext:
    """What a handler knows about the call it serves.

    ``connection_state`` lives as long as the transport connection: handlers keep
    per-connection state there (for example, context handles of an ``ept_lookup``
    iteration) and it is dropped when the connection closes. ``on_close`` is the
    connection's list of callbacks run (on the event loop, once, without arguments)
    when it ends, however it ends: a handler appends to it what must not outlive the
    connection.
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
    on_close: list[Callable[[], None]] = field(default_factory=list)
    #: An in-process connection (the HTTPS tunnel's relay), not a socket of its own.
    attached: bool = False
    #: Who the connection authenticated as (user, domain, anonymous) and at which
    #: auth type and level; None when the connection did not authenticate. Checked
    #: against the interface's :attr:`Interface.policy` before the handler was called.
    auth: CallerAuth | None = None


#: Set (True) in ``connection_state`` once the connection has ended and its ``on_close``
#: callbacks ran: a call that starts after that (its request came with the close) must
#: not register anything that waits for a close.
CONNECTION_CLOSED: Final = "dcerpc.closed"

Handler = Callable[[CallContext, bytes], Awaitable[bytes]]
#: Answers at once, or returns None to hand the call to the async :data:`Handler`.
InlineHandler = Callable[[CallContext, bytes], bytes | None]


@dataclass(frozen=True, slots=True)
class Interface:
    """One DCE/RPC interface served by the runtime."""

    syntax: SyntaxId
    handler: Handler
    #: Opnums 0 .. opnum_count-1 exist; others fault with nca_s_op_rng_error.
    opnum_count: int
    transfer_syntaxes: tuple[SyntaxId, ...] = (NDR,)
    name: str = ""
    #: Tried first for every call; it must never block (see the module docstring).
    inline: InlineHandler | None = None
    #: Who may call: a bind asking for less is refused, and so is a call arriving at
    #: less (or anonymously, if the policy says so), before the handler runs.
    policy: AuthPolicy = OPEN_POLICY

    def __post_init__(self) -> None:
        if self.opnum_count < 0:
            raise ValueError("opnum_count must be >= 0")
        if not self.transfer_syntaxes:
            raise ValueError("an interface needs at least one transfer syntax")
