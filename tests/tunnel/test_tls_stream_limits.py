"""Limits of the tunnel's TLS stream: an error after good records loses none of them,
and an idle connection keeps little memory whatever it once moved (OpenSSL's memory
BIOs never shrink; see "Memory" in tunnel/drivers/tls_stream.py)."""

from __future__ import annotations

import ctypes
import gc
import os
import ssl
from pathlib import Path

import pytest
import trio
import trio.testing

from tunnel.drivers.tls import client_context, ensure_certificate, server_context
from tunnel.drivers.tls_stream import TLSStream

PIN = "00" * 32  # a pinned client context skips chain checks
N = 40


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = ensure_certificate(tmp_path, ["localhost"])
    return server_context(cert, key), client_context(alpn=["h2"], fingerprint=PIN)


def socket_streams() -> tuple[trio.SocketStream, trio.SocketStream]:
    import socket

    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


async def _raw_client(
    stream: trio.abc.Stream, ctx: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A client SSLObject over memory BIOs, driven by hand (so we choose what it sends)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if out.pending:
                await stream.send_all(out.read())
            inc.write(await stream.receive_some(65536))
    if out.pending:
        await stream.send_all(out.read())
    return obj, inc, out


@pytest.mark.parametrize("then", ["receive", "send"])
@pytest.mark.parametrize("how", ["alert", "bad-record"])
async def test_records_before_a_fatal_error_are_not_lost(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], how: str, then: str
) -> None:
    """A peer's last data and a fatal alert (or a forged record) in one TCP read: the
    data comes back; the next receive says the stream broke (as trio.SSLStream), and so
    does a send made first (an h2 ACK would be), with the error as its cause rather
    than OpenSSL's follow-up EOF."""
    server_ctx, client_ctx = contexts
    a, b = socket_streams()
    server = TLSStream(b, server_ctx, server_side=True)
    result = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)

            async def client() -> None:
                result["c"] = await _raw_client(a, client_ctx)

            nursery.start_soon(client)
        obj, inc, out = result["c"]
        obj.write(b"last words")  # one application data record
        if how == "alert":
            inc.write(b"\x17\x03\x03\x00\x20" + os.urandom(32))  # forged: bad_record_mac
            with pytest.raises(ssl.SSLError):
                obj.read(100)
        else:
            out.write(out.read() + b"\x17\x03\x03\x00\x20" + os.urandom(32))
        await a.send_all(out.read())
        await trio.sleep(0.05)  # all of it in the server's socket buffer
        try:
            assert await server.receive_some(65536) == b"last words"
            with pytest.raises(trio.BrokenResourceError) as caught:
                if then == "receive":
                    await server.receive_some(65536)
                else:
                    await server.send_all(b"ack")
            assert "BAD_RECORD_MAC" in repr(caught.value.__cause__).upper()
        finally:
            await server.aclose()
            await a.aclose()


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def _heap_in_use() -> int:
    """Bytes malloc has handed out (OpenSSL allocates with malloc: tracemalloc does
    not see it)."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33")
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


async def _kept_after(records: int, sctx: ssl.SSLContext, cctx: ssl.SSLContext) -> int:
    """Heap in use once N server TLSStreams each received ``records`` 16 KiB records in
    one go, read them all and went idle."""
    servers, clients = [], []
    for _ in range(N):
        a, b = trio.testing.memory_stream_pair()
        server = TLSStream(b, sctx, server_side=True)  # type: ignore[arg-type]
        box = {}

        async def client(a: trio.abc.Stream = a, box: dict = box) -> None:
            box["c"] = await _raw_client(a, cctx)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client)
        servers.append(server)
        clients.append((a, *box["c"]))
    for a, obj, _inc, out in clients:
        wire = bytearray()
        for _ in range(records):
            obj.write(b"x" * 16384)
            wire += out.read()
        await a.send_all(bytes(wire))
    for server in servers:
        got = 0
        while got < records * 16384:
            got += len(await server.receive_some(16384))
    clients.clear()
    kept = _heap_in_use()
    del servers
    return kept


@pytest.mark.parametrize("records", [15, 64], ids=["one-read", "1MiB"])
async def test_an_idle_connection_keeps_little_of_a_burst(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], records: int
) -> None:
    """A burst received at once (256 KiB transport reads) used to leave ~350 KiB per
    connection for its life: the BIO buffer, and the last read pinned by an empty
    slice of it. 15 records fit one transport read; 64 are 1 MiB."""
    sctx, cctx = contexts
    quiet = await _kept_after(1, sctx, cctx)
    busy = await _kept_after(records, sctx, cctx)
    per_connection = (busy - quiet) / N
    assert per_connection < 160 * 1024, f"{per_connection / 1024:.0f} KiB kept per connection"


async def test_an_empty_send_is_a_checkpoint(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    a, b = socket_streams()
    client = TLSStream(a, client_ctx, server_hostname="localhost")
    server = TLSStream(b, server_ctx, server_side=True)
    async with client, server:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.do_handshake)
                nursery.start_soon(server.do_handshake)
        with trio.testing.assert_checkpoints():
            await client.send_all(b"")
