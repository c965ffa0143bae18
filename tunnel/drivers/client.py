"""The tunnel client transport: a byte stream to an RPC server through the HTTPS proxy.

``async with open_tunnel_stream(url, server, port, username=..., password=...) as s``
yields a ``trio.abc.Stream`` (half-closeable over HTTP/2) carrying the raw DCE/RPC byte stream, so
``dcerpc.client.open_rpc_client(s)`` works unchanged. With ``http2=True`` (default)
it is one HTTP/2 stream (:mod:`tunnel.drivers.h2_client`); otherwise the two MS-RPCH
channels of RPC over HTTP v2 (:mod:`tunnel.drivers.h1_client`). TLS is mandatory:
system trust, or a pinned SHA-256 ``fingerprint`` checked right after the handshake.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio

from tunnel.config import TunnelConfig
from tunnel.drivers.tls import check_pinned, client_context
from tunnel.drivers.tls_stream import TLSStream
from tunnel.errors import TunnelError
from tunnel.policy import RPC_PATHS, basic_authorization

USER_AGENT = "mapi-anywhere-tunnel/0.1"


def _split_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("the tunnel URL must be https:// (no clear text)")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    path = parts.path.rstrip("/")
    if path.lower() not in RPC_PATHS:
        path = path + RPC_PATHS[0]
    return parts.hostname, parts.port or 443, path


async def connect_tls(
    host: str,
    port: int,
    *,
    alpn: list[str],
    fingerprint: str | None,
    connect_timeout: float,
) -> TLSStream:
    """TCP + TLS to the proxy, with the pin checked.

    Raises:
        TunnelError: cannot connect, handshake failure or a certificate mismatch.
    """
    ctx = client_context(alpn=alpn, fingerprint=fingerprint)
    try:
        with trio.fail_after(connect_timeout):
            tcp = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as exc:
        raise TunnelError(f"cannot connect to {host}:{port}: {exc}") from exc
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = TLSStream(tcp, ctx, server_hostname=host)
    try:
        with trio.fail_after(connect_timeout):
            await stream.do_handshake()
        if fingerprint is not None:
            check_pinned(stream, fingerprint)
    except (ssl.SSLError, trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
        await trio.aclose_forcefully(stream)
        raise TunnelError(f"TLS with {host}:{port} failed: {exc}") from exc
    return stream


@asynccontextmanager
async def open_tunnel_stream(
    url: str,
    server: str,
    port: int,
    *,
    username: str,
    password: str,
    http2: bool = True,
    fingerprint: str | None = None,
    config: TunnelConfig | None = None,
    connect_timeout: float = 30.0,
) -> AsyncIterator[trio.abc.Stream]:
    """Open a tunnel to ``server:port`` through the proxy at ``url``.

    Args:
        url: ``https://host[:port]/`` of the proxy (a path is kept if it is the RPC path).
        server, port: the RPC target, as allowed by the proxy's allow list.
        username, password: Basic credentials (sent inside TLS only).
        http2: one HTTP/2 stream (True) or the MS-RPCH HTTP/1.1 channel pair (False).
        fingerprint: pin the proxy certificate's SHA-256 instead of system trust.
        config: limits and windows (defaults are fine).
        connect_timeout: bound on connecting and on the tunnel handshake.

    Raises:
        TunnelError: refused (``status``/``rpc_error`` say why) or unreachable.
    """
    cfg = config or TunnelConfig()
    host, proxy_port, path = _split_url(url)
    target_path = f"{path}?{server}:{port}"
    authorization = basic_authorization(username, password)
    authority = host if proxy_port == 443 else f"{host}:{proxy_port}"
    if http2:
        from tunnel.drivers.h2_client import h2_tunnel

        tls = await connect_tls(
            host, proxy_port, alpn=["h2"], fingerprint=fingerprint, connect_timeout=connect_timeout
        )
        if tls.selected_alpn_protocol() != "h2":
            await trio.aclose_forcefully(tls)
            raise TunnelError("the proxy did not negotiate HTTP/2")
        headers = [
            ("authorization", authorization),
            ("content-type", "application/rpc"),
            ("user-agent", USER_AGENT),
        ]
        async with h2_tunnel(tls, cfg, authority, target_path, headers, connect_timeout) as stream:
            yield stream
    else:
        from tunnel.drivers.h1_client import h1_tunnel

        async def connect() -> TLSStream:
            return await connect_tls(
                host,
                proxy_port,
                alpn=["http/1.1"],
                fingerprint=fingerprint,
                connect_timeout=connect_timeout,
            )

        async with h1_tunnel(
            connect, cfg, authority, target_path, authorization, connect_timeout
        ) as h1_stream:
            yield h1_stream
