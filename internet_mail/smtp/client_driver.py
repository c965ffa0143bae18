"""The trio driver of the SMTP client core: connect, TLS, timeouts, MX lookup.

Theory of operation. :func:`send_message` opens a TCP connection (bounded by
``connect_timeout``), wraps it in TLS first for implicit TLS, and runs one
:class:`~internet_mail.smtp.client.SmtpClient`: it sends what the core queues, waits for
each reply within the RFC 5321 4.5.3.2 timeout of the core's stage (the message itself
goes out in blocks, each within :data:`~internet_mail.smtp.client.BODY_BLOCK_TIMEOUT`),
and runs the handshake when the core asks for STARTTLS. When the outcome comes it
awaits ``on_result(outcome)`` *before* it sends ``QUIT`` (the queue records a 250
durably first), then says goodbye within a short timeout and closes.

A connection that cannot be made raises :class:`ConnectFailed` (the caller tries the
next host); one lost, timed out or spoken to in nonsense later gives a temporary
outcome for every recipient still open (the core's ``failure``).

:func:`resolve_mx` finds the hosts of a domain (dnspython, in a worker thread): its MX
records by preference, the domain itself when it has none (RFC 5321 5.1: the implicit
MX, whose A/AAAA records ``trio.open_tcp_stream`` then resolves), and a permanent
failure for a domain that does not exist or publishes a null MX (RFC 7505).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.exception
import dns.resolver
import trio

from internet_mail.smtp.client import (
    BODY_BLOCK_TIMEOUT,
    TIMEOUTS,
    ClientOptions,
    ClientProtocolError,
    Finished,
    NeedData,
    SmtpClient,
    Stage,
    StartTls,
    Transaction,
    local_reply,
)

log = logging.getLogger("internet_mail.smtp.client")

_READ = 65536
_BLOCK = 65536


class ConnectFailed(Exception):
    """No SMTP connection to this host (refused, unreachable, timed out, TLS failed)."""


class NoRoute(Exception):
    """The domain has no mail hosts; ``permanent`` when it never will (no such domain,
    null MX), else a temporary DNS failure."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLimits:
    connect_timeout: float = 60.0
    handshake_timeout: float = 60.0
    #: Multiplies the RFC 5321 stage timeouts (tests shrink them).
    timeout_scale: float = 1.0


async def _send(stream: trio.abc.Stream, data: bytes, seconds: float) -> None:
    for start in range(0, len(data), _BLOCK):
        with trio.fail_after(seconds):
            await stream.send_all(data[start : start + _BLOCK])


async def send_message(
    host: str, port: int, options: ClientOptions, transaction: Transaction,
    on_result: Callable[[Finished], Awaitable[None]], *,
    ssl_context: ssl.SSLContext | None = None, limits: ClientLimits = ClientLimits(),
) -> Finished:  # fmt: skip
    """Deliver ``transaction`` to ``host``:``port``; ``on_result`` gets the outcome
    before QUIT is sent. Returns the outcome.

    Raises:
        ConnectFailed: no connection (or no TLS for implicit TLS) to this host.
    """
    scale = limits.timeout_scale
    try:
        with trio.fail_after(limits.connect_timeout):
            tcp: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as exc:
        raise ConnectFailed(f"{host}:{port}: {exc or 'connect timed out'}") from None
    stream = tcp
    client = SmtpClient(options, transaction)
    try:  # the connection is closed however this ends (cancelled too)
        try:
            if options.tls == "implicit":
                stream = await _handshake(tcp, host, ssl_context, limits.handshake_timeout)
            outcome = await _dialogue(client, stream, host, ssl_context, limits, scale)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            outcome = client.failure(local_reply(451, "4.4.2", f"connection to {host} lost: {exc}"))
        except trio.TooSlowError:
            what = client.stage.value
            outcome = client.failure(local_reply(451, "4.4.2", f"{host} timed out ({what})"))
        except ClientProtocolError as exc:
            outcome = client.failure(local_reply(451, "4.5.0", f"{host}: protocol error: {exc}"))
        else:
            await on_result(outcome)  # before QUIT, which the core queued just now
            with trio.move_on_after(TIMEOUTS[Stage.QUIT] * scale):
                try:
                    await stream.send_all(client.data_to_send())
                    await stream.receive_some(_READ)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
                    pass
            return outcome
    finally:
        await trio.aclose_forcefully(stream)
    await on_result(outcome)
    return outcome


async def _handshake(
    tcp: trio.abc.Stream, host: str, ctx: ssl.SSLContext | None, seconds: float
) -> trio.SSLStream[trio.abc.Stream]:
    context = ctx if ctx is not None else ssl.create_default_context()
    stream = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=False)
    try:
        with trio.fail_after(seconds):
            await stream.do_handshake()
    except (ssl.SSLError, trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
        raise ConnectFailed(f"{host}: TLS handshake failed: {exc}") from None
    return stream


async def _dialogue(
    client: SmtpClient, stream: trio.abc.Stream, host: str, ctx: ssl.SSLContext | None,
    limits: ClientLimits, scale: float,
) -> Finished:  # fmt: skip
    while True:
        out = client.data_to_send()
        if out:
            block = BODY_BLOCK_TIMEOUT if client.stage is Stage.BODY else TIMEOUTS[client.stage]
            await _send(stream, out, block * scale)
        event = client.next_event()
        if isinstance(event, Finished):
            return event
        if isinstance(event, StartTls):
            try:
                stream = await _handshake(stream, host, ctx, limits.handshake_timeout)
            except ConnectFailed as exc:
                # Failed TLS is no verdict on the addresses: try later (or elsewhere).
                raise ClientProtocolError(str(exc)) from None
            client.tls_started()
            continue
        assert isinstance(event, NeedData)
        with trio.fail_after(TIMEOUTS[client.stage] * scale):
            data = await stream.receive_some(_READ)
        client.receive_data(bytes(data))


def _lookup_mx(domain: str) -> list[str]:
    resolver = dns.resolver.Resolver()
    resolver.lifetime = 30.0
    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise NoRoute(f"{domain}: no such domain", permanent=True) from None
    except dns.resolver.NoAnswer:
        return [domain]  # RFC 5321 5.1: the implicit MX (A/AAAA of the domain)
    except (dns.exception.DNSException, OSError) as exc:
        raise NoRoute(f"{domain}: DNS lookup failed: {exc}", permanent=False) from None
    records = sorted(answer, key=lambda r: r.preference)
    hosts = [str(r.exchange).rstrip(".") for r in records]
    if hosts in ([""], []) or (len(hosts) == 1 and hosts[0] == ""):
        raise NoRoute(f"{domain}: accepts no mail (null MX)", permanent=True)
    return [h for h in hosts if h]


async def resolve_mx(domain: str) -> list[str]:
    """The mail hosts of ``domain``, best first (see the module docstring).

    Raises:
        NoRoute: no hosts (permanently or for now).
    """
    return await trio.to_thread.run_sync(_lookup_mx, domain, abandon_on_cancel=True)


__all__ = ["ClientLimits", "ConnectFailed", "NoRoute", "resolve_mx", "send_message"]
