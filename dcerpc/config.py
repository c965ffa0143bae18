"""Limits and tunables of the DCE/RPC runtime, validated once (h2's ``config.py`` shape)."""

from __future__ import annotations

from dataclasses import dataclass

from dcerpc.pdu import MAX_FRAGMENT_SIZE, MIN_FRAGMENT_SIZE


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcConfig:
    """Limits of one RPC endpoint. Every decoder and buffer is bounded by these."""

    #: Largest fragment we send or accept, before negotiation lowers it. Windows uses
    #: 5840; larger fragments cost fewer headers on bulk transfers.
    max_fragment: int = 65528
    #: Largest reassembled request stub; Samba's default is 4 MiB.
    max_request_size: int = 4 * 1024 * 1024
    #: Largest reassembled response stub a client accepts.
    max_response_size: int = 64 * 1024 * 1024
    #: Calls being reassembled or executed at once on one connection.
    max_concurrent_calls: int = 32
    #: Presentation contexts one connection may negotiate.
    max_contexts: int = 64
    #: Seconds without any byte from the peer before the connection is closed.
    idle_timeout: float = 300.0
    #: Seconds a started PDU or a fragmented request may take to arrive whole.
    receive_timeout: float = 30.0
    #: Seconds a send may block on a peer that does not read. The client applies it to
    #: sends larger than ``dcerpc.client.UNBOUNDED_SEND`` (8 KiB) on TCP and through the
    #: tunnel (whose streams bound their own flow-control waits): a smaller request
    #: stalls only when the reply would never come either, which the caller bounds.
    send_timeout: float = 30.0
    #: Stream connections served at once by one server; more are refused at accept.
    #: Attached (tunnel) connections are counted apart against the same limit: they
    #: come authenticated and bounded by the tunnel's own quotas, and anonymous sockets
    #: on the LAN must not be able to take their slots.
    max_connections: int = 1024
    #: Stream connections at once from one peer address (loopback included: a local
    #: process is no more trusted than a LAN peer; the in-process tunnel is attached and
    #: not counted). A front end relaying many users over TCP needs this raised.
    max_connections_per_address: int = 64
    #: Seconds a new connection may take to complete its first bind; a peer that
    #: connects and says nothing holds a slot for this long, not ``idle_timeout``.
    bind_timeout: float = 10.0
    #: Bytes of unfinished fragmented requests all connections of one server may hold
    #: together; a request that would pass it is refused (``nca_s_server_too_busy``).
    reassembly_budget: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if not MIN_FRAGMENT_SIZE <= self.max_fragment <= MAX_FRAGMENT_SIZE:
            raise ValueError(f"max_fragment must be in [{MIN_FRAGMENT_SIZE}, {MAX_FRAGMENT_SIZE}]")
        for name in (
            "max_request_size",
            "max_response_size",
            "max_concurrent_calls",
            "max_contexts",
            "max_connections",
            "max_connections_per_address",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("idle_timeout", "receive_timeout", "send_timeout", "bind_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.reassembly_budget < self.max_request_size:
            # Else a request within the size limit could never be reassembled.
            raise ValueError("reassembly_budget must be at least max_request_size")
