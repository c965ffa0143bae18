"""Helpers of the tunnel's NTLM tests: an in-memory directory that speaks NTLM (as the
composition root's authenticator does), raw HTTP/1.1 exchanges on one TLS connection,
and impacket's ncacn_http client with a chosen auth type and HTTP version."""

from __future__ import annotations

import base64
import http.client
from dataclasses import dataclass, field

import trio
from impacket import http as impacket_http
from impacket.dcerpc.v5 import epm, transport
from tunnel_helpers import PASSWORD, USER

from dcerpc.ntlm import NtlmInitiator
from dcerpc.ntlm_crypto import nt_hash
from dcerpc.spnego import SpnegoInitiator


@dataclass
class NtlmDirectory:
    """Basic checks, NT hashes from memory, the throttle's hooks recorded; ``held``
    users are refused by ``refuses`` (the throttle holding them back)."""

    failed: list[tuple[str | None, str | None]] = field(default_factory=list)
    succeeded: list[tuple[str, str | None]] = field(default_factory=list)
    basic: list[str] = field(default_factory=list)
    lookups: list[tuple[str, str]] = field(default_factory=list)
    held: set[str] = field(default_factory=set)

    async def __call__(self, user: str, password: str, address: str | None) -> bool:
        await trio.lowlevel.checkpoint()
        self.basic.append(user)
        return (user, password) == (USER, PASSWORD)

    def refuses(self, user: str, address: str | None) -> bool:
        return user in self.held

    def lookup_nt_hash(self, user: str, domain: str) -> bytes | None:
        self.lookups.append((user, domain))
        return nt_hash(PASSWORD) if user == USER else None

    def ntlm_failed(self, user: str | None, address: str | None) -> None:
        self.failed.append((user, address))

    def ntlm_succeeded(self, user: str, address: str | None) -> None:
        self.succeeded.append((user, address))


# -- raw HTTP/1.1 on one connection -----------------------------------------------------------


@dataclass
class Response:
    status: int
    head: str
    body: bytes

    def headers(self, name: str) -> list[str]:
        out = []
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                out.append(value.strip())
        return out

    def challenge(self, scheme: str) -> bytes:
        for value in self.headers("www-authenticate"):
            name, _, token = value.partition(" ")
            if name == scheme and token:
                return base64.b64decode(token)
        raise AssertionError(f"no {scheme} challenge in {self.head!r}")


class RawConnection:
    """Requests and responses on one stream, read exactly (Content-Length framed)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await trio.aclose_forcefully(self.stream)

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes = b"",
        version: str = "HTTP/1.1",
    ) -> Response:
        if version == "HTTP/1.1":
            headers = {"Host": "localhost", **headers}
        head = f"{method} {path} {version}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        await self.stream.send_all(head.encode("latin-1") + b"\r\n" + body)
        return await self.response()

    async def response(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        end = self.buffer.index(b"\r\n\r\n")
        head = self.buffer[:end].decode("latin-1")
        del self.buffer[: end + 4]
        response = Response(int(head.split(" ", 2)[1]), head, b"")
        length = int((response.headers("content-length") or ["0"])[0])
        while len(self.buffer) < length:
            await self._more()
        response.body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return response

    async def _more(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buffer += chunk

    async def closed(self) -> bool:
        """True when the server closes the connection next (nothing else comes)."""
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            return True
        return not chunk


def ntlm_header(scheme: str, token: bytes) -> dict[str, str]:
    return {"Authorization": f"{scheme} {base64.b64encode(token).decode()}"}


async def ntlm_handshake(
    conn: RawConnection,
    method: str,
    path: str,
    *,
    user: str = USER,
    password: str = PASSWORD,
    domain: str = "",
    scheme: str = "NTLM",
    body: bytes = b"",
    version: str = "HTTP/1.1",
    extra: dict[str, str] | None = None,
) -> Response:
    """NEGOTIATE on a Content-Length 0 request, then AUTHENTICATE on ``method path``
    with ``body``, on the same connection; the second response."""
    ntlm = NtlmInitiator(user, password, domain)
    mech: NtlmInitiator | SpnegoInitiator = ntlm if scheme == "NTLM" else SpnegoInitiator(ntlm)
    base = {"Host": "localhost", **(extra or {})}
    first = await conn.request(
        method, path, {**base, "Content-Length": "0", **ntlm_header(scheme, mech.step())},
        version=version,
    )  # fmt: skip
    assert first.status == 401, first.head
    token = mech.step(first.challenge(scheme))
    headers = {**base, "Content-Length": str(len(body)), **ntlm_header(scheme, token)}
    return await conn.request(method, path, headers, body, version=version)


# -- impacket ---------------------------------------------------------------------------------


def impacket_lookup(
    tunnel_port: int,
    server: str,
    epm_port: int,
    *,
    user: str = USER,
    password: str = PASSWORD,
    domain: str = "",
    auth_type: str = impacket_http.AUTH_AUTO,
    http10: bool = False,
) -> list[str]:
    """impacket's ``hept_lookup`` through our proxy (blocking: run it in a thread).
    ``http10``: impacket's channel requests go out as HTTP/1.0 (with its
    ``Connection: Keep-Alive``), as Samba's RPC over HTTP client sends them."""
    rpctransport = transport.DCERPCTransportFactory(f"ncacn_http:{server}[{epm_port}]")
    rpctransport.set_rpc_proxy_url(f"https://127.0.0.1:{tunnel_port}/rpc/rpcproxy.dll")
    rpctransport.set_credentials(user, password, domain)
    rpctransport.set_auth_type(auth_type)
    rpctransport.set_connect_timeout(10)
    dce = rpctransport.get_dce_rpc()
    conn_class = http.client.HTTPConnection
    saved = (getattr(conn_class, "_http_vsn"), getattr(conn_class, "_http_vsn_str"))  # noqa: B009
    try:
        if http10:
            setattr(conn_class, "_http_vsn", 10)  # noqa: B010
            setattr(conn_class, "_http_vsn_str", "HTTP/1.0")  # noqa: B010
        try:
            dce.connect()
        except Exception:
            # impacket leaves the channels it opened unclosed when the proxy refuses.
            for channel in rpctransport._RPCProxyClient__channels.values():
                channel.close()
            raise
    finally:
        setattr(conn_class, "_http_vsn", saved[0])  # noqa: B010
        setattr(conn_class, "_http_vsn_str", saved[1])  # noqa: B010
    try:
        entries = epm.hept_lookup(None, dce=dce)
        return [epm.PrintStringBinding(e["tower"]["Floors"]) for e in entries]
    finally:
        dce.disconnect()
