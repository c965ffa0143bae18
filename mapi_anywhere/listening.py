"""What every listener of ``serve`` shares: how it names the server, how it reports a
port it cannot take, and the TLS context of the mail listeners.

The composition root (:mod:`mapi_anywhere.serve`) and the modules that start one kind
of door each (:mod:`mapi_anywhere.smtp_service`, ...) use these, so a listener that
cannot start says the same one line whichever door it is.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from dcerpc.ntlm import ServerNames
from mapi_anywhere.config import Config
from tunnel.drivers.tls import ensure_certificate


class StartupError(Exception):
    """``serve`` cannot start; the text says why in one line, and what to change."""


def port_of(listeners: list[trio.SocketListener]) -> int:
    """The port the first of ``listeners`` took (the one asked for, or the free one)."""
    return int(listeners[0].socket.getsockname()[1])


def server_names() -> ServerNames:
    """How NTLM CHALLENGE messages name this server: after the host's name."""
    fqdn = socket.gethostname() or "mapiserver"
    short = fqdn.split(".", 1)[0]
    netbios = "".join(c for c in short.upper() if c.isalnum() or c in "-_")[:15]
    dns_domain = fqdn.split(".", 1)[1] if "." in fqdn else ""
    return ServerNames(
        netbios_computer=netbios or "MAPISERVER",
        netbios_domain="WORKGROUP",
        dns_computer=fqdn.lower(),
        dns_domain=dns_domain.lower(),
    )


def listen_error(
    exc: OSError, what: str, host: str, port: int, key: str, flag: str
) -> StartupError:
    """One line for a listener that could not start: what, where, and what to change."""
    change = f"change {key} in the configuration file or use {flag}"
    where = f"{host or '*'}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"port {port} is already in use ({where}, {what}); {change}")
    if exc.errno == errno.EACCES:
        return StartupError(
            f"no permission to listen on port {port} ({where}, {what}): ports below 1024 "
            f"need CAP_NET_BIND_SERVICE (see docs/operating.md); or {change}"
        )
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return StartupError(
            f"cannot listen on {where} ({what}): {host!r} is not an address of this machine "
            f"({exc.strerror or exc}); change [server] host or use --host"
        )
    return StartupError(f"the {what} cannot start: {exc}")


_T = TypeVar("_T")


async def listening(
    start: Callable[[], Awaitable[_T]], what: str, host: str, port: int, key: str, flag: str
) -> _T:
    """Run ``start`` (a ``nursery.start`` of a listener); an OSError becomes the
    :class:`StartupError` of :func:`listen_error`."""
    try:
        return await start()
    except OSError as exc:
        raise listen_error(exc, what, host, port, key, flag) from exc


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The mail listeners' TLS (STARTTLS and implicit TLS): 1.2 or later, serve's
    certificate (the tunnel's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


async def mail_tls_context(config: Config, host: str) -> ssl.SSLContext:
    """The TLS context of a mail listener on ``host``: the tunnel's certificate (made
    on first use, in a worker thread: key generation and file I/O block)."""
    settings = config.tunnel.settings
    cert, key = await trio.to_thread.run_sync(
        ensure_certificate, config.server.data_dir, settings.server_names or (host,),
        settings.cert_file, settings.key_file,
    )  # fmt: skip
    return await trio.to_thread.run_sync(tls_server_context, cert, key)


__all__ = [
    "StartupError", "listen_error", "listening", "mail_tls_context", "port_of", "server_names",
    "tls_server_context",
]  # fmt: skip
