"""The trio server and client on real loopback sockets: calls, concurrency, faults,
cancellation, timeouts and hostile peers, with the server serving others throughout.

Rules: loopback only, port 0, every test bounded by ``fail_after``; durations are
never asserted (short timeouts in the config only make the tests quick)."""

from __future__ import annotations

import socket
import struct
import uuid

import pytest
import trio
from local_streams import local_stream_pair

from dcerpc.client import open_rpc_client, open_tcp_rpc_client
from dcerpc.client_connection import ClientState
from dcerpc.config import RpcConfig
from dcerpc.errors import BindRejected, ConnectionClosed, FaultStatus, NdrError, RpcFault
from dcerpc.interface import CallContext, Interface
from dcerpc.pdu import BindPdu, ContextElement, FaultPdu, RequestPdu, ShutdownPdu, decode_pdu
from dcerpc.server import RpcServer
from dcerpc.syntax import MSGPACK, NDR, SyntaxId

ECHO = SyntaxId(uuid.UUID("12345678-1234-1234-1234-123456789abc"), 1, 0)
OPS_ECHO, OPS_FAULT, OPS_NDR, OPS_CRASH, OPS_WAIT, OPS_RELEASE, OPS_STATE = range(7)

FAST = RpcConfig(idle_timeout=0.5, receive_timeout=0.5, send_timeout=0.5)


class EchoService:
    def __init__(self) -> None:
        self.release = trio.Event()
        self.cancelled = 0
        self.cancel_seen = trio.Event()

    async def handler(self, ctx: CallContext, stub: bytes) -> bytes:
        if ctx.opnum == OPS_ECHO:
            return stub
        if ctx.opnum == OPS_FAULT:
            raise RpcFault(FaultStatus.ACCESS_DENIED)
        if ctx.opnum == OPS_NDR:
            raise NdrError("bad stub")
        if ctx.opnum == OPS_CRASH:
            raise ZeroDivisionError("handler bug")
        if ctx.opnum == OPS_WAIT:
            try:
                await self.release.wait()
            except trio.Cancelled:
                self.cancelled += 1
                self.cancel_seen.set()
                raise
            return b"released"
        if ctx.opnum == OPS_RELEASE:
            self.release.set()
            return b"ok"
        ctx.connection_state["n"] = ctx.connection_state.get("n", 0) + 1
        return str(ctx.connection_state["n"]).encode()

    def answer_inline(self, ctx: CallContext, stub: bytes) -> bytes | None:
        """Echoes are answered by the reading task; everything else goes to a task."""
        return stub if ctx.opnum == OPS_ECHO else None

    def interface(self, *, inline: bool = False) -> Interface:
        return Interface(
            ECHO,
            self.handler,
            7,
            transfer_syntaxes=(NDR, MSGPACK),
            name="echo",
            inline=self.answer_inline if inline else None,
        )


@pytest.fixture(params=["in a task", "inline"])
async def served(request, nursery):
    """The echo service, its echoes answered by a task per call, then inline."""
    service = EchoService()
    server = RpcServer(
        [service.interface(inline=request.param == "inline")], config=FAST, name="test"
    )
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    return service, server, port


async def check_still_serving(port: int) -> None:
    async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
        ctx = await rpc.bind(ECHO)
        assert await rpc.call(ctx, OPS_ECHO, b"alive") == b"alive"


async def test_call_fault_and_fragmented_payloads(served):
    _, _, port = served
    with trio.fail_after(10):
        async with open_tcp_rpc_client(
            "127.0.0.1", port, config=RpcConfig(max_fragment=1432)
        ) as rpc:
            ctx = await rpc.bind(ECHO)
            assert rpc.transfer_syntaxes[ctx] == NDR
            big = bytes(range(256)) * 4000  # a megabyte in 1432-byte fragments
            assert await rpc.call(ctx, OPS_ECHO, big) == big
            with pytest.raises(RpcFault) as fault:
                await rpc.call(ctx, OPS_FAULT, b"")
            assert fault.value.status == FaultStatus.ACCESS_DENIED
            with pytest.raises(RpcFault) as fault:
                await rpc.call(ctx, OPS_NDR, b"")
            assert fault.value.status == FaultStatus.FAULT_NDR
            with pytest.raises(RpcFault) as fault:
                await rpc.call(ctx, OPS_CRASH, b"")
            assert fault.value.status == FaultStatus.FAULT_UNSPEC
            with pytest.raises(RpcFault) as fault:
                await rpc.call(ctx, 99, b"")
            assert fault.value.status == FaultStatus.OP_RNG_ERROR
            # The connection survives every fault above.
            assert await rpc.call(ctx, OPS_ECHO, b"x") == b"x"


async def test_alter_context_and_connection_state(served):
    _, _, port = served
    with trio.fail_after(10):
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            first = await rpc.bind(ECHO)
            second = await rpc.bind(ECHO, (MSGPACK,))  # an alter_context
            assert rpc.transfer_syntaxes[second] == MSGPACK
            assert await rpc.call(first, OPS_STATE, b"") == b"1"
            assert await rpc.call(second, OPS_STATE, b"") == b"2"
            with pytest.raises(BindRejected) as rejected:
                await rpc.bind(SyntaxId(uuid.uuid4(), 1))
            assert (rejected.value.result, rejected.value.reason) == (2, 1)
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            ctx = await rpc.bind(ECHO)
            assert await rpc.call(ctx, OPS_STATE, b"") == b"1"  # state is per connection


async def test_calls_run_concurrently_on_one_connection(served):
    _, _, port = served
    with trio.fail_after(10):
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            ctx = await rpc.bind(ECHO)
            results = {}

            async def waiter():
                results["wait"] = await rpc.call(ctx, OPS_WAIT, b"")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.05)
                # The waiting call only returns if this one runs while it is outstanding.
                results["release"] = await rpc.call(ctx, OPS_RELEASE, b"")
            assert results == {"wait": b"released", "release": b"ok"}


async def test_cancelled_call_is_orphaned_and_connection_survives(served):
    service, _, port = served
    with trio.fail_after(10):
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            ctx = await rpc.bind(ECHO)
            with trio.move_on_after(0.1):
                await rpc.call(ctx, OPS_WAIT, b"")
            await service.cancel_seen.wait()  # the server cancelled the orphaned handler
            assert await rpc.call(ctx, OPS_ECHO, b"after") == b"after"


async def test_callers_take_turns_reading_and_a_cancelled_reader_hands_over(served):
    """No reader task: the first waiting caller reads for everyone. Cancelling it while
    another call waits must pass the reading on, or that call would hang."""
    service, _, port = served
    with trio.fail_after(10):
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            ctx = await rpc.bind(ECHO)
            got = {}
            first = trio.CancelScope()

            async def first_call():
                with first:
                    await rpc.call(ctx, OPS_WAIT, b"")

            async def second_call():
                got["second"] = await rpc.call(ctx, OPS_WAIT, b"")

            async def echo(i: int):
                got[i] = await rpc.call(ctx, OPS_ECHO, b"%d" % i)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first_call)
                await trio.sleep(0.05)  # the first call is now the one reading
                nursery.start_soon(second_call)
                await trio.sleep(0.05)
                first.cancel()
                await service.cancel_seen.wait()  # the server saw the orphan
                for i in range(30):  # replies for other callers, read by whoever leads
                    nursery.start_soon(echo, i)
                await trio.sleep(0.05)
                got["release"] = await rpc.call(ctx, OPS_RELEASE, b"")
            assert got.pop("second") == b"released"
            assert got.pop("release") == b"ok"
            assert got == {i: b"%d" % i for i in range(30)}
            assert await rpc.call(ctx, OPS_ECHO, b"after") == b"after"


async def raw_exchange(port: int, data: bytes, read: bool = True) -> bytes:
    """Send raw bytes, then read until the server closes; returns what it sent."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        if data:
            await stream.send_all(data)
        received = b""
        if read:
            while chunk := await stream.receive_some(65536):
                received += chunk
        return received


def bind_bytes() -> bytes:
    return BindPdu(call_id=1, contexts=(ContextElement(0, ECHO, (NDR,)),)).encode()


def split_pdus(data: bytes) -> list:
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<H", data, pos + 8)
        out.append(decode_pdu(data[pos : pos + length]))
        pos += length
    return out


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"\x05\x00\x0b\x03", None, id="truncated-header-then-silence"),
        pytest.param(b"", None, id="connects-and-sends-nothing"),
        pytest.param(
            RequestPdu(call_id=3).encode(), FaultStatus.PROTO_ERROR, id="request-before-bind"
        ),
        pytest.param(
            bind_bytes() + b"\x05\x00\x00\x03\x10\x00\x00\x00\x08\x00\x00\x00\x05\x00\x00\x00",
            FaultStatus.PROTO_ERROR,
            id="frag-length-below-header",
        ),
        pytest.param(
            b"\x05\x00\x63\x03\x10\x00\x00\x00\x10\x00\x00\x00\x05\x00\x00\x00",
            FaultStatus.PROTO_ERROR,
            id="unknown-pdu-type",
        ),
    ],
)
async def test_hostile_peers_get_an_answer_or_a_close(served, payload, expected):
    _, _, port = served
    with trio.fail_after(10):
        received = await raw_exchange(port, payload)
        faults = [p for p in split_pdus(received) if isinstance(p, FaultPdu)]
        if expected is None:
            assert faults == []
        else:
            assert [f.status for f in faults] == [expected]
        await check_still_serving(port)


async def test_fragment_stream_that_never_ends(served):
    _, _, port = served
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(bind_bytes())
            first = RequestPdu(call_id=2, pfc_flags=0x01, stub=b"y" * 4000).encode()
            middle = RequestPdu(call_id=2, pfc_flags=0x00, stub=b"y" * 4000).encode()
            await stream.send_all(first)
            received = b""
            try:
                for _ in range(2000):  # 8 MB at most, beyond the 4 MiB limit
                    await stream.send_all(middle)
            except trio.BrokenResourceError:
                pass
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass
        statuses = [p.status for p in split_pdus(received) if isinstance(p, FaultPdu)]
        # The fault may be lost if the server reset the connection while we still wrote.
        assert statuses in ([FaultStatus.ACCESS_DENIED], [])
        await check_still_serving(port)


async def test_idle_bound_connection_gets_shutdown(served):
    _, _, port = served
    with trio.fail_after(10):
        received = await raw_exchange(port, bind_bytes())
        kinds = [type(p) for p in split_pdus(received)]
        assert kinds[-1] is ShutdownPdu


async def test_peer_that_never_reads_is_dropped(served):
    _, _, port = served
    with trio.fail_after(20):
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        with sock:
            await sock.send(bind_bytes())
            # Ask for large echoes and never read them: the server must give up on us.
            ended = False
            try:
                for i in range(60):
                    with trio.move_on_after(0.2):
                        await sock.send(RequestPdu(call_id=10 + i, stub=b"z" * 60000).encode())
            except (ConnectionResetError, BrokenPipeError):
                ended = True  # already dropped by the server
            await check_still_serving(port)
            # Now drain: the stream must end (EOF or reset) because the server dropped us.
            try:
                for _ in range(100_000):
                    if ended or not await sock.recv(65536):
                        ended = True
                        break
            except ConnectionResetError:
                ended = True
            assert ended


async def test_client_over_memory_stream_and_server_handle_stream():
    service = EchoService()
    server = RpcServer([service.interface()])
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, server_stream)
            async with open_rpc_client(client_stream) as rpc:
                ctx = await rpc.bind(ECHO)
                assert await rpc.call(ctx, OPS_ECHO, b"mem") == b"mem"


async def test_connect_refused_is_a_clear_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with trio.fail_after(10), pytest.raises(ConnectionClosed, match="cannot connect"):
        async with open_tcp_rpc_client("127.0.0.1", port):
            pass


async def test_exceptions_in_the_client_body_propagate(served):
    _, _, port = served
    with trio.fail_after(10), pytest.raises(KeyError, match="boom"):
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            await rpc.bind(ECHO)
            raise KeyError("boom")


async def test_call_after_the_connection_broke_is_connection_closed(served):
    _, _, port = served
    with trio.fail_after(10):
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            ctx = await rpc.bind(ECHO)
            await rpc.stream.aclose()  # the transport goes away under the client
            with pytest.raises(ConnectionClosed):
                await rpc.call(ctx, OPS_ECHO, b"late")


async def test_a_peer_trickling_an_incomplete_pdu_is_dropped(served):
    _, _, port = served
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        dropped = False
        async with stream:
            await stream.send_all(b"\x05")
            try:
                for _ in range(50):  # 10 s of one byte per 0.2 s; receive_timeout is 0.5 s
                    await trio.sleep(0.2)
                    await stream.send_all(b"\x00")
            except trio.BrokenResourceError:
                dropped = True
        assert dropped
        await check_still_serving(port)


async def test_cancelling_a_call_mid_send_ends_the_connection_cleanly():
    """A request cut off mid-send would desynchronise the stream: the client closes it
    and later calls fail with ConnectionClosed instead of hanging."""
    release = trio.Event()

    async def slow_reader(stream):
        await stream.receive_some(65536)  # the bind
        await release.wait()  # then stop reading

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, slow_reader, 0)
            port = listeners[0].socket.getsockname()[1]
            async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
                rpc.core.state = rpc.core.state.BOUND  # no bind_ack from this fake server
                with trio.move_on_after(0.3) as scope:
                    await rpc.call(0, 0, bytes(32 << 20))
                assert scope.cancelled_caught
                with pytest.raises(ConnectionClosed, match="interrupted"):
                    await rpc.call(0, 0, b"next")
            release.set()
            nursery.cancel_scope.cancel()


# -- callers that take turns reading: liveness (found in review) ---------------------------

LIVE = RpcConfig(idle_timeout=60, receive_timeout=60, send_timeout=20)


@pytest.mark.parametrize("inline", [False, True])
async def test_large_calls_queued_behind_a_send_still_get_read(inline: bool):
    """Each caller sends only its own request: one blocked in a send never carries
    another's, so a caller whose request is out can read, and the server, blocked on a
    reply nobody reads, gets going again."""
    service = EchoService()
    server = RpcServer([service.interface(inline=inline)], config=LIVE, name="test")
    client_end, server_end = local_stream_pair(64 * 1024)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_end)
        async with open_rpc_client(client_end, LIVE) as rpc:
            ctx = await rpc.bind(ECHO)
            big = b"x" * (1 << 20)
            got = {}

            async def call(name: str) -> None:
                got[name] = len(await rpc.call(ctx, OPS_ECHO, big))

            with trio.fail_after(10):
                async with trio.open_nursery() as callers:
                    callers.start_soon(call, "X")
                    await trio.lowlevel.checkpoint()  # X holds the send lock, sending
                    callers.start_soon(call, "A")
                    callers.start_soon(call, "B")
            assert got == {"X": 1 << 20, "A": 1 << 20, "B": 1 << 20}
        nursery.cancel_scope.cancel()


async def test_a_failed_send_wakes_the_caller_reading():
    """A send that times out ends the connection: the caller waiting for its reply
    inside receive_some is woken too, not left waiting for a peer that is gone."""
    client_end, _silent_peer = local_stream_pair(64 * 1024)
    failures = {}
    async with open_rpc_client(client_end, RpcConfig(send_timeout=0.5)) as rpc:
        rpc.core.state = ClientState.BOUND  # no server: the peer neither reads nor writes

        async def call(name: str, stub: bytes) -> None:
            try:
                await rpc.call(0, 0, stub)
            except ConnectionClosed as exc:
                failures[name] = exc

        with trio.fail_after(5):
            async with trio.open_nursery() as callers:
                callers.start_soon(call, "reading", b"a")
                await trio.sleep(0.05)  # it now reads, for a reply that never comes
                callers.start_soon(call, "too big to send", b"x" * (1 << 20))
    assert set(failures) == {"reading", "too big to send"}


@pytest.mark.parametrize("inline", [False, True])
async def test_a_slow_but_steady_reader_is_not_dropped(inline: bool):
    """The send timeout bounds each send, not the wait for the send lock: replies that
    together take longer than it to go out do not end a connection that keeps reading."""

    def answer_inline(ctx: CallContext, stub: bytes) -> bytes | None:
        return stub if ctx.opnum == OPS_ECHO else None

    async def handler(ctx: CallContext, stub: bytes) -> bytes:
        return stub if ctx.opnum == OPS_ECHO else b"y" * 150_000

    iface = Interface(ECHO, handler, 2, name="slow", inline=answer_inline if inline else None)
    server = RpcServer([iface], config=RpcConfig(send_timeout=0.5), name="test")

    class SlowReader(trio.abc.Stream):
        """4 KiB every 10 ms: the whole exchange takes longer than the send timeout."""

        def __init__(self, inner: trio.abc.Stream) -> None:
            self.inner = inner

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await self.inner.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await self.inner.wait_send_all_might_not_block()

        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            await trio.sleep(0.01)
            return await self.inner.receive_some(4096)

        async def aclose(self) -> None:
            await self.inner.aclose()

    client_end, server_end = local_stream_pair(4096)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_end)
        async with open_rpc_client(SlowReader(client_end), RpcConfig(send_timeout=30)) as rpc:
            ctx = await rpc.bind(ECHO)
            got = {}

            async def big(i: int) -> None:
                got[i] = len(await rpc.call(ctx, 1, b""))

            async def small() -> None:
                got["small"] = await rpc.call(ctx, OPS_ECHO, b"hi")

            with trio.fail_after(15):
                async with trio.open_nursery() as callers:
                    callers.start_soon(big, 1)
                    callers.start_soon(big, 2)
                    await trio.sleep(0.05)
                    callers.start_soon(small)
            assert got == {1: 150_000, 2: 150_000, "small": b"hi"}
        nursery.cancel_scope.cancel()


class _SplittingStream(trio.abc.Stream):
    """Sends each PDU in two pieces a moment apart once ``split`` is set."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.split = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.split and len(data) > 20:
            await self.inner.send_all(data[:10])
            await trio.sleep(0.05)
            data = data[10:]
        await self.inner.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_receive_timeout_counts_from_the_partial_input_not_the_idle_wait():
    """A request split across reads after a quiet spell longer than receive_timeout (but
    inside idle_timeout) is served: the time before its first byte was idleness."""
    config = RpcConfig(idle_timeout=60, receive_timeout=0.5, send_timeout=5)
    server = RpcServer([EchoService().interface()], config=config, name="test")
    client_end, server_end = local_stream_pair(1 << 16)
    splitting = _SplittingStream(client_end)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, server_end)
            async with open_rpc_client(splitting, config) as rpc:
                ctx = await rpc.bind(ECHO)
                assert await rpc.call(ctx, OPS_ECHO, b"a") == b"a"
                await trio.sleep(1.5)  # three receive timeouts of quiet
                splitting.split = True
                assert await rpc.call(ctx, OPS_ECHO, b"b" * 100) == b"b" * 100
            nursery.cancel_scope.cancel()
