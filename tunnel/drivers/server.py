"""The tunnel's front end: a TLS listener whose ALPN result picks the HTTP handler.

``serve_tunnel`` listens on ``config.port``, does the TLS handshake under a timeout,
and runs one handler per connection inside ``trio.serve_listeners``' nursery:
:mod:`tunnel.drivers.h2_server` when ALPN chose ``h2``, :mod:`tunnel.drivers.h1_server`
otherwise (``http/1.1`` or no ALPN, as impacket sends). Per-connection errors are
logged and end that connection only. :class:`ProxyContext` is what the handlers
share: configuration, allow list, authenticator, quotas and the MS-RPCH VC table.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import trio

from tunnel.autodiscover import Site
from tunnel.config import TunnelConfig
from tunnel.drivers.backend import LocalService
from tunnel.drivers.context import ProxyContext, TunnelInfo, peer_address
from tunnel.drivers.h1_server import serve_h1
from tunnel.drivers.h2_server import serve_h2
from tunnel.drivers.tls import certificate_fingerprint, ensure_certificate, server_context
from tunnel.drivers.tls_stream import TLSStream
from tunnel.policy import AllowList, Authenticator

log = logging.getLogger("tunnel")


async def _handle(ctx: ProxyContext, ssl_ctx: ssl.SSLContext, tcp: trio.SocketStream) -> None:
    cfg = ctx.config
    address = peer_address(tcp)
    if ctx.connections >= cfg.max_connections or not ctx.address_quota.acquire(address):
        log.warning("connection limit reached, refusing %s", address)
        await trio.aclose_forcefully(tcp)
        return
    ctx.connections += 1
    stream = TLSStream(tcp, ssl_ctx, server_side=True)
    try:
        with trio.fail_after(cfg.handshake_timeout):
            await stream.do_handshake()
        if stream.selected_alpn_protocol() == "h2":
            await serve_h2(ctx, stream, address)
        else:
            await serve_h1(ctx, stream, address)
    except trio.TooSlowError:
        log.info("%s: TLS handshake timed out", address)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("%s: connection broke: %r", address, exc)
    except Exception:
        log.exception("%s: unexpected error", address)
    finally:
        ctx.connections -= 1
        ctx.address_quota.release(address)
        await trio.aclose_forcefully(stream)


async def serve_tunnel(
    config: TunnelConfig,
    *,
    allowed_targets: AllowList | Callable[[], Iterable[tuple[str, int]]],
    authenticate: Authenticator,
    data_dir: Path,
    epm_port: int = 0,
    local_services: Mapping[int, LocalService] | None = None,
    task_status: trio.TaskStatus[TunnelInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTPS tunnel until cancelled.

    Args:
        config: listener, certificate, timeouts and limits.
        allowed_targets: the (server, port) targets channels may reach and the backend
            address they lead to (see :meth:`AllowList.for_database`), or a callable
            returning the allowed (server, port) pairs (they lead to 127.0.0.1).
        authenticate: async ``(user, password, address) -> bool``; the user directory
            (``address``: the client's IP address, None when unknown). When it also has
            a cheap ``is_cached(user, password) -> bool``
            (:class:`~tunnel.policy.CachingAuthenticator`), credentials it vouches for
            skip the queue of credential checks. When it also has
            ``lookup_nt_hash(user, domain)``, ``ntlm_failed(user, address)`` and
            ``ntlm_succeeded(user, address)`` (:class:`~tunnel.http_auth.NtlmDirectory`),
            HTTP/1.1 connections may authenticate with NTLM and Negotiate as
            ``config.auth_schemes`` allows; its ``refuses(user, address)`` is asked
            before a Basic check and before an NT hash is looked up.
        data_dir: where a self-signed certificate is kept when none is configured.
        epm_port: the endpoint mapper's port, announced by autodiscover.
        local_services: the services this process serves, by port: those targets are
            attached in memory (:class:`~tunnel.drivers.backend.AttachedBackend`)
            instead of reached over loopback TCP.
        task_status: receives a :class:`TunnelInfo` (port, fingerprint) once listening.
    """
    cert, key = await trio.to_thread.run_sync(
        ensure_certificate, data_dir, config.server_names, config.cert_file, config.key_file
    )
    fingerprint = certificate_fingerprint(cert)
    ssl_ctx = server_context(cert, key)
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    for listener in listeners:
        listener.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = int(listeners[0].socket.getsockname()[1])
    url = (
        config.advertised_url if config.port else config.advertised_url.replace(":0/", f":{port}/")
    )
    names = config.server_names or (config.host,)
    site = Site(
        domain=config.domain,
        server_name=names[0],
        url=url,
        fingerprint=fingerprint,
        epm_port=epm_port,
        names=(*config.server_names, config.host, "localhost", "127.0.0.1"),
        mail=config.mail,
    )
    allow = (
        allowed_targets
        if isinstance(allowed_targets, AllowList)
        else AllowList.from_pairs(allowed_targets)
    )
    ctx = ProxyContext(config, allow, authenticate, site, local_services)
    info = TunnelInfo(config.host, port, fingerprint, cert, url, listeners)
    log.info(
        "tunnel listening on https://%s:%d/ (certificate SHA-256 %s)",
        config.host,
        port,
        fingerprint,
    )

    async def handler(tcp: trio.SocketStream) -> None:
        await _handle(ctx, ssl_ctx, tcp)

    async with trio.open_nursery() as nursery:
        ctx.nursery = nursery
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(info)
