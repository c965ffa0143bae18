"""The runtime's connection limits, against real servers on loopback: a peer that
connects and never binds, many sockets from one address, LAN sockets that would lock
tunnel users out, reassembly memory summed over connections, and auth verifiers on
connections that never authenticated.

Rules: loopback only, port 0, every test bounded by ``fail_after``; durations are
never asserted (short timeouts in the configs only make the tests quick)."""

from __future__ import annotations

import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from dcerpc.client import open_rpc_client, open_tcp_rpc_client
from dcerpc.config import RpcConfig
from dcerpc.errors import FaultStatus, RemoteProtocolError, RpcFault
from dcerpc.interface import CallContext, Interface
from dcerpc.pdu import (
    FIRST_FRAG,
    LAST_FRAG,
    Auth3Pdu,
    BindAckPdu,
    BindPdu,
    CoCancelPdu,
    ContextElement,
    FaultPdu,
    Pdu,
    PfcFlags,
    RequestPdu,
    ResponsePdu,
    decode_pdu,
)
from dcerpc.server import RpcServer
from dcerpc.server_connection import (
    AssociationGroups,
    InterfaceRegistry,
    ReassemblyBudget,
    ServerConnection,
)
from dcerpc.syntax import NDR, SyntaxId
from mapi_anywhere.config import DEFAULT_CONFIG_TOML, parse_config
from tunnel.config import TunnelConfig
from tunnel.proxy import serve_tunnel
from tunnel.transport import open_tunnel_stream

ECHO = SyntaxId(uuid.UUID("5c1d7a0e-33b2-4f4e-9d7c-2a9b8c7d6e5f"), 1, 0)
USER, PASSWORD = "alice", "correct horse"
#: A verifier as a client would append it: sec_trailer (NTLM, integrity) + a signature.
VERIFIER = b"\x0a\x02\x00\x00\x00\x00\x00\x00" + b"N" * 16


class Echo:
    def __init__(self) -> None:
        self.calls = 0

    async def handler(self, ctx: CallContext, stub: bytes) -> bytes:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        return stub

    def interface(self) -> Interface:
        return Interface(ECHO, self.handler, 1, name="echo")


async def serve(nursery: trio.Nursery, config: RpcConfig) -> tuple[Echo, RpcServer, int]:
    echo = Echo()
    server = RpcServer([echo.interface()], config=config, name="test")
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    return echo, server, listeners[0].socket.getsockname()[1]


async def echo_once(port: int, stub: bytes = b"alive", local: str | None = None) -> bytes:
    if local is None:
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            return await rpc.call(await rpc.bind(ECHO), 0, stub)
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    async with open_rpc_client(stream) as rpc:
        return await rpc.call(await rpc.bind(ECHO), 0, stub)


async def wait_for(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 (a counter)
        await trio.sleep(0.01)


class RawPeer:
    """A hand-written client: sends encoded PDUs, reads whole PDUs or the end."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buf = bytearray()

    async def send(self, *pdus: Pdu) -> None:
        await self.stream.send_all(b"".join(p.encode() for p in pdus))

    async def bind(self, max_frag: int = 5840) -> None:
        ctx = ContextElement(0, ECHO, (NDR,))
        await self.send(
            BindPdu(call_id=1, max_xmit_frag=max_frag, max_recv_frag=max_frag, contexts=(ctx,))
        )
        assert isinstance(await self.next_pdu(), BindAckPdu)

    async def next_pdu(self) -> Pdu | None:
        """The next PDU, or None once the server closed (FIN or reset)."""
        while len(self._buf) < 10 or len(self._buf) < struct.unpack_from("<H", self._buf, 8)[0]:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self._buf += data
        length = struct.unpack_from("<H", self._buf, 8)[0]
        pdu = decode_pdu(bytes(self._buf[:length]))
        del self._buf[:length]
        return pdu

    async def closed(self) -> bool:
        return await self.next_pdu() is None


Connect = Callable[[int], Awaitable[RawPeer]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Opens raw peers to a port, all closed at the end of the test."""
    opened: list[RawPeer] = []

    async def open_peer(port: int) -> RawPeer:
        opened.append(RawPeer(await trio.open_tcp_stream("127.0.0.1", port)))
        return opened[-1]

    yield open_peer
    for peer in opened:
        await peer.stream.aclose()


# -- connections: bind timeout, per-address cap, tunnel users apart ------------------------


async def test_a_connection_that_never_binds_is_closed_after_bind_timeout(nursery, connect):
    config = RpcConfig(bind_timeout=0.3, idle_timeout=60, receive_timeout=60)
    _, server, port = await serve(nursery, config)
    with trio.fail_after(10):
        silent = await connect(port)
        half_bind = await connect(port)  # trickling a bind does not extend it
        await half_bind.stream.send_all(b"\x05\x00\x0b\x03\x10\x00\x00\x00")
        bound = await connect(port)
        await bound.bind()
        assert await silent.closed()
        assert await half_bind.closed()
        await trio.sleep(0.5)  # past the bind timeout: a bound connection stays
        await bound.send(RequestPdu(call_id=2, opnum=0, stub=b"still here"))
        reply = await bound.next_pdu()
        assert isinstance(reply, ResponsePdu) and reply.stub == b"still here"
        await wait_for(lambda: server.active_connections == 1)


async def test_connections_per_address_are_capped_and_released(nursery, connect):
    config = RpcConfig(max_connections_per_address=3, idle_timeout=60)
    _, server, port = await serve(nursery, config)
    with trio.fail_after(10):
        squatters = [await connect(port) for _ in range(3)]
        await wait_for(lambda: server.active_connections == 3)
        # The fourth from 127.0.0.1 is closed at accept, as max_connections refuses...
        assert await (await connect(port)).closed()
        # ...while another address is served as usual.
        assert await echo_once(port, local="127.0.0.2") == b"alive"
        await squatters[0].stream.aclose()
        await wait_for(lambda: server.active_connections == 2)
        assert await echo_once(port) == b"alive"
        for peer in squatters[1:]:
            await peer.stream.aclose()
        await wait_for(lambda: server.active_connections == 0)


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_lan_sockets_do_not_lock_tunnel_users_out(
    nursery, connect, tmp_path: Path, http2: bool
):
    """Stream connections fill ``max_connections``; attached ones (the tunnel's) have
    their own slots, so a tunnel user still gets through."""
    config = RpcConfig(max_connections=3, idle_timeout=60)
    _, server, port = await serve(nursery, config)

    async def authenticate(user: str, password: str, address: str | None) -> bool:
        await trio.lowlevel.checkpoint()
        return (user, password) == (USER, PASSWORD)

    info = await nursery.start(
        lambda task_status: serve_tunnel(
            TunnelConfig(port=0),
            allowed_targets=lambda: [("127.0.0.1", port)],
            authenticate=authenticate,
            data_dir=tmp_path,
            local_services={port: server},
            task_status=task_status,
        )
    )
    with trio.fail_after(20):
        squatters = [await connect(port) for _ in range(3)]
        await wait_for(lambda: server.active_connections == 3)
        assert await (await connect(port)).closed()  # the LAN is full
        async with (
            open_tunnel_stream(
                f"https://127.0.0.1:{info.port}/",
                "127.0.0.1",
                port,
                username=USER,
                password=PASSWORD,
                http2=http2,
                fingerprint=info.fingerprint,
            ) as stream,
            open_rpc_client(stream) as rpc,
        ):
            assert await rpc.call(await rpc.bind(ECHO), 0, b"via tunnel") == b"via tunnel"
            assert server.attached_connections == 1
        for peer in squatters:
            await peer.stream.aclose()


def test_new_limits_are_validated_and_in_the_sample_config():
    for bad in (
        {"bind_timeout": 0},
        {"max_connections_per_address": 0},
        {"reassembly_budget": 1024, "max_request_size": 4096},
    ):
        with pytest.raises(ValueError):
            RpcConfig(**bad)  # type: ignore[arg-type]
    assert parse_config(DEFAULT_CONFIG_TOML).rpc == RpcConfig()


# -- reassembly memory shared by every connection of a server -----------------------------

SMALL = {"max_request_size": 40_000, "reassembly_budget": 50_000}


def _core(budget: ReassemblyBudget) -> ServerConnection:
    echo = Echo()
    core = ServerConnection(
        InterfaceRegistry([echo.interface()]),
        AssociationGroups(),
        RpcConfig(**SMALL),  # type: ignore[arg-type]
        budget=budget,
    )
    ctx = ContextElement(0, ECHO, (NDR,))
    core.receive_data(
        BindPdu(call_id=1, max_xmit_frag=65528, max_recv_frag=65528, contexts=(ctx,)).encode()
    )
    core.data_to_send()
    return core


def _fragment(call_id: int, flags: int, size: int) -> bytes:
    return RequestPdu(call_id=call_id, pfc_flags=flags, opnum=0, stub=b"x" * size).encode()


def test_a_request_past_the_shared_budget_is_refused_and_the_budget_comes_back():
    budget = ReassemblyBudget(50_000)
    a, b = _core(budget), _core(budget)
    a.receive_data(_fragment(2, FIRST_FRAG, 30_000))
    assert budget.used == 30_000
    assert b.receive_data(_fragment(2, FIRST_FRAG, 15_000)) == []
    assert budget.used == 45_000
    # b's next fragment would bring the sum past the budget: what b's call holds is
    # dropped, the rest is not buffered, and its last fragment gets a fault (did not
    # execute: a client may retry). b's connection goes on.
    assert b.receive_data(_fragment(2, 0, 15_000)) == []
    assert budget.used == 30_000
    assert b.receive_data(_fragment(2, LAST_FRAG, 5_000)) == []
    fault = decode_pdu(b.data_to_send())
    assert isinstance(fault, FaultPdu) and fault.status == FaultStatus.SERVER_TOO_BUSY
    assert fault.pfc_flags & PfcFlags.DID_NOT_EXECUTE
    assert budget.used == 30_000
    # a completes: its share comes back, and b's retry fits.
    (call,) = a.receive_data(_fragment(2, LAST_FRAG, 1_000))
    assert len(call.stub) == 31_000 and budget.used == 0
    b.receive_data(_fragment(3, FIRST_FRAG, 20_000))
    (call,) = b.receive_data(_fragment(3, LAST_FRAG, 20_000))
    assert len(call.stub) == 40_000 and budget.used == 0


def test_cancel_protocol_error_and_close_give_the_budget_back():
    budget = ReassemblyBudget(50_000)
    cancelled, broken, closed = _core(budget), _core(budget), _core(budget)
    cancelled.receive_data(_fragment(2, FIRST_FRAG, 10_000))
    broken.receive_data(_fragment(2, FIRST_FRAG, 10_000))
    closed.receive_data(_fragment(2, FIRST_FRAG, 10_000) + _fragment(3, FIRST_FRAG, 10_000))
    assert budget.used == 40_000
    cancelled.receive_data(CoCancelPdu(call_id=2).encode())
    assert budget.used == 30_000
    with pytest.raises(RemoteProtocolError):
        broken.receive_data(_fragment(9, 0, 10))  # a fragment of an unknown call
    assert budget.used == 20_000
    closed.close()
    closed.close()  # twice: nothing given back twice
    assert budget.used == 0


async def test_reassembly_is_bounded_across_connections_of_a_server(nursery, connect):
    config = RpcConfig(max_fragment=1432, idle_timeout=60, **SMALL)  # type: ignore[arg-type]
    echo, server, port = await serve(nursery, config)
    with trio.fail_after(10):
        hogs = []
        for _ in range(2):  # each holds 24,000 bytes of a request it never finishes
            hog = await connect(port)
            await hog.bind(max_frag=1432)
            await hog.send(
                *(
                    RequestPdu(call_id=2, pfc_flags=FIRST_FRAG if i == 0 else 0, stub=b"h" * 1200)
                    for i in range(20)
                )
            )
            hogs.append(hog)
        await wait_for(lambda: server.reassembly.used == 48_000)
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            ctx = await rpc.bind(ECHO)
            with pytest.raises(RpcFault) as refused:
                await rpc.call(ctx, 0, b"r" * 20_000)  # fragmented; 68,000 > 50,000
            assert refused.value.status == FaultStatus.SERVER_TOO_BUSY
            assert echo.calls == 0
            assert await rpc.call(ctx, 0, b"small") == b"small"  # one fragment: no budget
            for hog in hogs:
                await hog.stream.aclose()
            await wait_for(lambda: server.reassembly.used == 0)  # closing gave it back
            assert await rpc.call(ctx, 0, b"r" * 20_000) == b"r" * 20_000
        assert server.reassembly.used == 0


# -- auth verifiers on connections that never authenticated --------------------------------


@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "first fragment"])
async def test_a_request_with_an_auth_verifier_is_refused(nursery, connect, fragmented: bool):
    echo, _, port = await serve(nursery, RpcConfig())
    with trio.fail_after(10):
        peer = await connect(port)
        await peer.bind()
        flags = FIRST_FRAG if fragmented else FIRST_FRAG | LAST_FRAG
        await peer.send(
            RequestPdu(call_id=2, pfc_flags=flags, opnum=0, stub=b"x", auth_verifier=VERIFIER)
        )
        fault = await peer.next_pdu()
        assert isinstance(fault, FaultPdu)
        assert (fault.call_id, fault.status) == (2, FaultStatus.ACCESS_DENIED)
        assert await peer.closed()
        assert echo.calls == 0
        assert await echo_once(port) == b"alive"


async def test_auth3_on_an_unauthenticated_connection_is_a_protocol_error(nursery, connect):
    echo, _, port = await serve(nursery, RpcConfig())
    with trio.fail_after(10):
        peer = await connect(port)
        await peer.bind()
        await peer.send(
            Auth3Pdu(call_id=2, auth_verifier=VERIFIER),
            RequestPdu(call_id=3, opnum=0, stub=b"after auth3"),
        )
        fault = await peer.next_pdu()
        assert isinstance(fault, FaultPdu)
        assert (fault.call_id, fault.status) == (2, FaultStatus.PROTO_ERROR)
        assert await peer.closed()
        assert echo.calls == 0
