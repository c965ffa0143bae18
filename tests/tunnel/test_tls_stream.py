"""The tunnel's TLS stream (tunnel/drivers/tls_stream.py) against trio's SSLStream, an
independent wrapper of the same OpenSSL, over real socket pairs."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tunnel.drivers.tls import client_context, ensure_certificate, server_context
from tunnel.drivers.tls_stream import TLSStream

PIN = "00" * 32  # a pinned client context skips chain checks; the pin itself is not checked


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = ensure_certificate(tmp_path, ["localhost"])
    return server_context(cert, key), client_context(alpn=["h2", "http/1.1"], fingerprint=PIN)


def socket_streams() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


async def handshake(*streams: trio.abc.Stream) -> None:
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(stream.do_handshake)  # type: ignore[attr-defined]


async def our_pair(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> tuple[TLSStream, TLSStream]:
    """Our stream on both ends of a socket pair, handshaken."""
    server_ctx, client_ctx = contexts
    a, b = socket_streams()
    client = TLSStream(a, client_ctx, server_hostname="localhost")
    server = TLSStream(b, server_ctx, server_side=True)
    with trio.fail_after(10):
        await handshake(client, server)
    return client, server


@pytest.fixture(params=["ours-client", "ours-server", "both"])
async def pair(
    request: pytest.FixtureRequest, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> AsyncIterator[tuple[trio.abc.Stream, trio.abc.Stream]]:
    """(client, server) with our stream on one side or both, handshaken."""
    server_ctx, client_ctx = contexts
    a, b = socket_streams()
    client: trio.abc.Stream
    server: trio.abc.Stream
    if request.param in ("ours-client", "both"):
        client = TLSStream(a, client_ctx, server_hostname="localhost")
    else:
        client = trio.SSLStream(a, client_ctx, server_hostname="localhost", https_compatible=True)
    if request.param in ("ours-server", "both"):
        server = TLSStream(b, server_ctx, server_side=True)
    else:
        server = trio.SSLStream(b, server_ctx, server_side=True, https_compatible=True)
    with trio.fail_after(10):
        await handshake(client, server)
    yield client, server
    await trio.aclose_forcefully(client)
    await trio.aclose_forcefully(server)


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await stream.receive_some(65536)
        assert chunk, "EOF before the data"
        got += chunk
    return bytes(got)


async def test_alpn_and_small_messages_both_ways(pair) -> None:
    client, server = pair
    assert client.selected_alpn_protocol() == server.selected_alpn_protocol() == "h2"
    with trio.fail_after(10):
        for i in range(50):
            message = f"call {i}".encode() * (i + 1)
            await client.send_all(message)
            assert await receive_exactly(server, len(message)) == message
            await server.send_all(message[::-1])
            assert await receive_exactly(client, len(message)) == message[::-1]


async def test_full_duplex_bulk_does_not_deadlock(pair) -> None:
    """Both ends send 8 MiB at once while reading: a send never waits for a receive."""
    client, server = pair
    size = 8 << 20
    up = bytes(range(256)) * (size // 256)
    down = up[::-1]
    results: dict[str, bytes] = {}

    async def send(stream: trio.abc.Stream, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(data), 300_000):
            await stream.send_all(view[start : start + 300_000])

    async def receive(name: str, stream: trio.abc.Stream) -> None:
        results[name] = await receive_exactly(stream, size)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, client, up)
            nursery.start_soon(send, server, down)
            nursery.start_soon(receive, "server", server)
            nursery.start_soon(receive, "client", client)
    assert results["server"] == up
    assert results["client"] == down


async def test_eof_with_and_without_close_notify(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    for polite in (True, False):
        a, b = socket_streams()
        ours = TLSStream(a, client_ctx, server_hostname="localhost")
        # trio's SSLStream sends close_notify on aclose unless https_compatible.
        peer = trio.SSLStream(b, server_ctx, server_side=True, https_compatible=not polite)
        with trio.fail_after(10):
            await handshake(peer, ours)
            await peer.send_all(b"last words")
            await peer.aclose()
            assert await receive_exactly(ours, 10) == b"last words"
            assert await ours.receive_some() == b""
            assert await ours.receive_some() == b""  # and it stays at EOF
        await ours.aclose()


async def test_failed_handshake_breaks_both_ends(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = contexts
    # impacket's examples replace ssl.create_default_context process-wide with one that
    # verifies nothing; our contexts must not follow it.
    from impacket.examples import monkeypatch_ssl_create_default_context

    monkeypatch_ssl_create_default_context()
    strict = client_context(alpn=["h2"])  # system trust: our self-signed certificate fails
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    a, b = socket_streams()
    client = TLSStream(a, strict, server_hostname="localhost")
    server = TLSStream(b, server_ctx, server_side=True)
    failures: list[BaseException] = []

    async def shake(stream: TLSStream) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            failures.append(exc)
            await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shake, client)
            nursery.start_soon(shake, server)
    assert len(failures) == 2
    assert isinstance(failures[0].__cause__, ssl.SSLError | ConnectionResetError)
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")


async def test_a_cancelled_send_breaks_the_stream(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Records made and not sent are lost to the TLS sequence: later sends must fail
    rather than send records the peer cannot decrypt."""
    client, server = await our_pair(contexts)
    with trio.move_on_after(0.2) as scope:
        await client.send_all(b"x" * (32 << 20))  # the server never reads
    assert scope.cancelled_caught
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"more")
    await client.aclose()
    await server.aclose()


async def test_two_receivers_are_refused(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client, server = await our_pair(contexts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await client.receive_some()
        nursery.cancel_scope.cancel()
    await client.aclose()
    await server.aclose()


async def test_a_cancelled_receive_loses_nothing(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Cancelled before it reads, or while only buffered data remains: the data is all
    there for the next receive."""
    client, server = await our_pair(contexts)
    with trio.fail_after(10):
        await client.send_all(b"A" * 100)
        await client.send_all(b"B" * 100)
        first = await server.receive_some(1)  # the rest stays decrypted in the buffer
        with trio.CancelScope() as scope:
            scope.cancel()
            await server.receive_some(1000)
        assert scope.cancelled_caught
        rest = await receive_exactly(server, 199)
    assert first + rest == b"A" * 100 + b"B" * 100
    await client.aclose()
    await server.aclose()


async def test_tls_1_2(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path, ["localhost"])
    server_ctx = server_context(cert, key)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    a, b = socket_streams()
    client = TLSStream(a, client_context(alpn=["http/1.1"], fingerprint=PIN))
    server = TLSStream(b, server_ctx, server_side=True)
    with trio.fail_after(10):
        await handshake(client, server)
        assert client._ssl.version() == "TLSv1.2"
        await client.send_all(b"ping")
        assert await receive_exactly(server, 4) == b"ping"
    await client.aclose()
    await server.aclose()


async def test_one_receive_takes_every_whole_record_in_hand(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Records already received come back together, up to ``max_bytes``; a record cut
    by the read waits for the next call; close_notify after them is still an EOF."""
    client, server = await our_pair(contexts)
    data = bytes(range(256)) * 160  # 40 KiB: three records
    async with client, server:
        await _whole_records(client, server, data)


async def _whole_records(client: TLSStream, server: TLSStream, data: bytes) -> None:
    with trio.fail_after(10):
        await client.send_all(data)
        await client.send_all(b"tail")
        got = await server.receive_some(65536)
        assert len(got) > 16384  # more than one record in one call
        assert (data + b"tail").startswith(got)
        rest = await receive_exactly(server, len(data) + 4 - len(got))
        assert got + rest == data + b"tail"
        await client.send_all(b"x" * 30000)
        small = await server.receive_some(20000)
        assert len(small) <= 20000  # never more than asked for
        assert small + await receive_exactly(server, 30000 - len(small)) == b"x" * 30000
