"""Find the server from an e-mail address: the client side of autodiscover.

``connect("alice@example.org", ...)`` and ``mapi-cli --server alice@example.org`` ask
the mail domain's host where the tunnel is, the way Outlook does ([MS-OXDSCLI]): an
authenticated ``GET /autodiscover/autodiscover.json?Email=<address>`` over TLS to
``https://<domain>/`` and then ``https://autodiscover.<domain>/`` (the first that
answers wins). The answer (:mod:`tunnel.autodiscover`) names the tunnel URL, the port
of the endpoint mapper behind it and the SHA-256 of the tunnel's certificate.

Trust: the autodiscover host is verified like any tunnel (system trust store, or the
``fingerprint`` the user pinned); the certificate fingerprint in its answer is then
pinned for the tunnel itself, since it came over that verified channel. A port may
follow the domain (``demo@localhost:8443``) for servers not on 443 (development); it
is not part of the address sent.

The request is one HTTP/1.1 exchange driven by ``h11``, bounded in time and size.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import h11
import trio

from mapi.model import errors
from tunnel.drivers.client import connect_tls
from tunnel.errors import TunnelError

JSON_PATH = "/autodiscover/autodiscover.json"
#: Largest answer read (the real one is a few hundred bytes).
MAX_ANSWER = 64 * 1024
_ADDRESS = re.compile(
    r"^(?P<local>[^@\s/:\[\]]{1,64})@(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
    r"(?::(?P<port>\d{1,5}))?$"
)


class AutodiscoverError(TunnelError):
    """No autodiscover host answered for the address (or its answer was unusable)."""


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """``local@domain`` with the optional port of the autodiscover host."""

    local: str
    domain: str
    port: int | None = None

    @property
    def address(self) -> str:
        """The e-mail address itself (without the port)."""
        return f"{self.local}@{self.domain}"


def parse_email_address(text: str) -> EmailAddress | None:
    """``user@domain`` or ``user@domain:port`` as an :class:`EmailAddress`; None for
    anything else (an ``ncacn_ip_tcp:`` or ``https://`` address).

    Raises:
        ValueError: the port is out of range.
    """
    match = _ADDRESS.match(text.strip())
    if match is None:
        return None
    port = None if match["port"] is None else int(match["port"])
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"bad port in {text!r}: {port} (1-65535)")
    return EmailAddress(match["local"], match["domain"].lower(), port)


@dataclass(frozen=True, slots=True)
class Discovered:
    """What autodiscover told us: where to connect and what to pin."""

    url: str  #: the tunnel address for :func:`clients.api.connect` (with ``?epm=``)
    fingerprint: str | None
    http2: bool


def hosts_to_ask(email: EmailAddress) -> list[tuple[str, int]]:
    """The autodiscover hosts, in the order they are tried."""
    port = email.port or 443
    return [(email.domain, port), (f"autodiscover.{email.domain}", port)]


def parse_answer(body: bytes) -> Discovered:
    """The tunnel address from an autodiscover JSON document.

    Raises:
        AutodiscoverError: not the document we expect.
    """
    try:
        doc = json.loads(body)
    except ValueError:
        raise AutodiscoverError("the autodiscover answer is not JSON") from None
    url = doc.get("Url") if isinstance(doc, dict) else None
    if not isinstance(url, str) or not url.startswith("https://"):
        raise AutodiscoverError("the autodiscover answer names no https:// tunnel URL")
    split = urllib.parse.urlsplit(url)
    epm = doc.get("EndpointMapperPort")
    query = f"epm={epm}" if isinstance(epm, int) and 0 < epm < 65536 else ""
    address = urllib.parse.urlunsplit(("https", split.netloc, split.path or "/", query, ""))
    pin = doc.get("CertificateFingerprintSha256")
    return Discovered(
        address, pin if isinstance(pin, str) and pin else None, doc.get("Http2") is not False
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


async def _ask(
    host: str, port: int, email: EmailAddress, authorization: str, fingerprint: str | None,
    seconds: float,
) -> tuple[int, bytes]:  # fmt: skip
    """One GET of the JSON document: (HTTP status, body)."""
    stream = await connect_tls(
        host, port, alpn=["http/1.1"], fingerprint=fingerprint, connect_timeout=seconds
    )
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_ANSWER)
    target = f"{JSON_PATH}?Email={urllib.parse.quote(email.address, safe='@')}"
    authority = host if port == 443 else f"{host}:{port}"
    request = h11.Request(
        method="GET",
        target=target,
        headers=[("Host", authority), ("Authorization", authorization),
                 ("Accept", "application/json"), ("Connection", "close")],
    )  # fmt: skip
    status, body = 0, bytearray()
    try:
        with trio.fail_after(seconds):
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            while True:
                event: Any = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(16384))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_ANSWER:
                        raise AutodiscoverError(f"the autodiscover answer of {host} is too large")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, bytes(body)
    except (h11.ProtocolError, trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
        raise AutodiscoverError(f"autodiscover at {host}:{port} failed: {exc}") from exc
    finally:
        await trio.aclose_forcefully(stream)


async def discover(
    email: EmailAddress,
    user: str,
    password: str,
    *,
    fingerprint: str | None = None,
    seconds: float = 30.0,
) -> Discovered:
    """Ask the autodiscover hosts of ``email`` where its tunnel is.

    Args:
        user, password: the Basic credentials (the tunnel's; sent inside TLS only).
        fingerprint: pin the autodiscover host's certificate instead of system trust.
        seconds: bound on connecting to each host and on its answer.

    Raises:
        LogonFailed: the host refused the user name or password.
        AutodiscoverError: no host answered with a document for the address.
    """
    authorization = _basic(user, password)
    failures = []
    for host, port in hosts_to_ask(email):
        try:
            status, body = await _ask(host, port, email, authorization, fingerprint, seconds)
        except TunnelError as exc:
            failures.append(str(exc))
            continue
        if status == 200:
            found = parse_answer(body)
            return Discovered(found.url, fingerprint or found.fingerprint, found.http2)
        if status == 401:
            raise errors.LogonFailed(f"autodiscover at {host} refused the user name or password")
        if status == 404:
            failures.append(f"{host}:{port} does not serve {email.address} (HTTP 404)")
        else:
            failures.append(f"autodiscover at {host}:{port} answered HTTP {status}")
    raise AutodiscoverError(f"no server found for {email.address}: " + "; ".join(failures))
