"""What the IMAP and POP3 driver tests share: a server certificate on loopback and a
line-oriented trio client for the conversations the stdlib clients cannot hold (IDLE,
pipelining, a client that never reads, bytes straight after STARTTLS)."""

from __future__ import annotations

import ssl
from pathlib import Path

import trio

from tunnel.drivers.tls import create_self_signed


def server_context(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for ``localhost``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        create_self_signed(cert, key, ["localhost", "127.0.0.1"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context() -> ssl.SSLContext:
    """A client context that takes the test server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class LineClient:
    """A client that reads CRLF lines and writes bytes, over TCP or TLS."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, port: int, *, tls: bool = False) -> LineClient:
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        if tls:
            stream = trio.SSLStream(stream, client_context(), server_hostname="localhost")
            await stream.do_handshake()
        return cls(stream)

    async def starttls(self) -> None:
        assert not self.buf, "bytes after the STARTTLS answer came in clear"
        tls = trio.SSLStream(self.stream, client_context(), server_hostname="localhost")
        await tls.do_handshake()
        self.stream = tls

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def line(self) -> bytes:
        """The next line without CRLF; b"" at end of input (after what was buffered)."""
        while b"\r\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                self.eof = True
                out = bytes(self.buf)
                self.buf.clear()
                return out
            self.buf += data
        end = self.buf.index(b"\r\n")
        out = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return out

    async def until(self, prefix: bytes) -> list[bytes]:
        """Lines up to and including the first that starts with ``prefix``."""
        lines = []
        while True:
            line = await self.line()
            lines.append(line)
            assert not self.eof, f"connection closed before {prefix!r}: {lines}"
            if line.startswith(prefix):
                return lines

    async def closed(self) -> bytes:
        """Everything until the server closes the connection."""
        out = bytes(self.buf)
        self.buf.clear()
        try:
            while data := await self.stream.receive_some(65536):
                out += data
        except trio.BrokenResourceError:
            pass
        return out

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
