"""Autodiscover: tell a client where the tunnel is and which certificate to pin.

Theory of operation
-------------------
Outlook finds its server with ``POST /autodiscover/autodiscover.xml`` ([MS-OXDSCLI]
2.2.3/2.2.4): the request body names an ``<EMailAddress>``; the answer lists
protocols. We answer with an ``EXPR`` protocol entry (Outlook Anywhere) carrying the
server name, the tunnel URL, ``Basic`` as the authentication package, and add our own
``<CertPrincipalName>``-like ``<CertFingerprint>`` element with the SHA-256 of our
certificate so our client can pin it. A JSON variant answers
``GET /autodiscover/autodiscover.json?Email=<address>`` (shaped like Exchange's
``autodiscover.json``: ``Protocol`` + ``Url``, plus our fields).

When ``serve`` runs mail listeners (:class:`~tunnel.config.MailEndpoints`), the XML
answer also has one ``IMAP``, ``POP3`` and ``SMTP`` protocol entry each ([MS-OXDSCLI]
2.2.4.1.1.2.3: ``Server``, ``Port``, ``LoginName``, ``SSL``, ``Encryption`` = ``SSL``
for implicit TLS or ``TLS`` for STARTTLS, ``AuthRequired``), naming the preferred
endpoint of each, and the JSON answer a ``MailServers`` object listing them all (the
host, port and ``socketType`` of :mod:`tunnel.autoconfig`). ``LoginName`` is the
authenticated user's name: the mail listeners take it, or the e-mail address.

Decision: **authentication is required** (as on Exchange): the document is served
only to a client that passed the same Basic check as the tunnel, so it discloses
nothing to anonymous scanners. A client must therefore know the tunnel host first
(the mail domain's host) and trust it for that first request (pinning on first use).

Which addresses get a document: any address in the configured domain, and the
authenticated user's own addresses, ``<user>@<one of our names>`` (the configured
domain, the server names, ``localhost``): so ``demo@localhost`` is answered for
``demo`` even when no domain is configured (the default). Others get 404. (The tunnel
cannot read the user directory's address, a layer above it; a user whose directory
address is in another domain needs that domain configured.) Request
bodies are small and parsed with a bounded regular expression, never an XML parser
(no entity expansion, no external entities).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import (
    escape,  # XML text and attributes alike; the stdlib sax helpers load urllib and socket
)
from urllib.parse import parse_qs

from tunnel.config import MailEndpoint, MailEndpoints, MailSecurity

XML_PATH = "/autodiscover/autodiscover.xml"
JSON_PATH = "/autodiscover/autodiscover.json"
MAX_BODY = 16384
_EMAIL_XML = re.compile(rb"<EMailAddress>\s*([^<\s]{1,320})\s*</EMailAddress>", re.IGNORECASE)
_EMAIL_RE = re.compile(r"^[^@\s<>&\"']{1,64}@([A-Za-z0-9.\-]{1,253})$")
RESPONSE_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, content type and body."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Site:
    """What autodiscover announces."""

    domain: str
    server_name: str
    url: str
    fingerprint: str
    #: Port of the endpoint mapper behind the tunnel (a client's first target).
    epm_port: int = 0
    #: Names this server answers to besides ``domain`` (server names, ``localhost``):
    #: a user's own address may be in any of them.
    names: tuple[str, ...] = ("localhost",)
    #: The mail listeners to announce (None: none run).
    mail: MailEndpoints | None = None

    def serves(self, address: str, user: str | None) -> bool:
        """Whether ``address`` gets a document: in our domain, or ``user``'s own."""
        domain = _email_domain(address)
        if domain is None:
            return False
        if self.domain and domain == self.domain.lower():
            return True
        if user is None:
            return False
        local = address.rpartition("@")[0]
        ours = {n.lower() for n in (*self.names, self.domain) if n}
        return local.lower() == user.lower() and domain in ours


def is_autodiscover_path(path: str) -> bool:
    return path.partition("?")[0].lower() in (XML_PATH, JSON_PATH)


def _not_found(message: str) -> Reply:
    return Reply(404, "text/plain; charset=utf-8", message.encode() + b"\n")


def _email_domain(address: str) -> str | None:
    match = _EMAIL_RE.match(address)
    return match.group(1).lower() if match else None


def answer(site: Site, method: str, path: str, body: bytes, *, user: str | None = None) -> Reply:
    """The answer to an autodiscover request, authenticated as ``user``."""
    base, _, query = path.partition("?")
    base = base.lower()
    if len(body) > MAX_BODY:
        return Reply(413, "text/plain; charset=utf-8", b"request body too large\n")
    if base == JSON_PATH:
        if method not in ("GET", "POST"):
            return Reply(405, "text/plain; charset=utf-8", b"method not allowed\n")
        values = parse_qs(query, max_num_fields=8).get("Email") or parse_qs(
            query, max_num_fields=8
        ).get("email")
        address = values[0] if values else ""
        return _json(site, address, user)
    if base == XML_PATH:
        if method == "GET":
            address = parse_qs(query, max_num_fields=8).get("Email", [""])[0]
        elif method == "POST":
            match = _EMAIL_XML.search(body)
            address = match.group(1).decode("utf-8", "replace") if match else ""
        else:
            return Reply(405, "text/plain; charset=utf-8", b"method not allowed\n")
        return _xml(site, address, user)
    return _not_found("no such document")


def _json(site: Site, address: str, user: str | None) -> Reply:
    if not site.serves(address, user):
        return _not_found("address not served here")
    doc = {
        "Protocol": "RpcHttp",
        "Url": site.url,
        "EmailAddress": address,
        "Server": site.server_name,
        "RpcProxyPath": "/rpc/rpcproxy.dll",
        "AuthPackage": "Basic",
        "CertificateFingerprintSha256": site.fingerprint,
        "EndpointMapperPort": site.epm_port,
        "Http2": True,
    }
    if site.mail is not None:
        doc["MailServers"] = {
            kind: [
                {"host": site.server_name, "port": e.port, "socketType": e.security.value}
                for e in endpoints
            ]
            for kind, endpoints in _mail_kinds(site.mail)
        }
    return Reply(200, "application/json", json.dumps(doc).encode())


def _xml(site: Site, address: str, user: str | None) -> Reply:
    if not site.serves(address, user):
        return _not_found("address not served here")
    e = escape
    body = f"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="{RESPONSE_SCHEMA}">
    <User>
      <AutoDiscoverSMTPAddress>{e(address)}</AutoDiscoverSMTPAddress>
    </User>
    <Account>
      <AccountType>email</AccountType>
      <Action>settings</Action>
      <Protocol>
        <Type>EXPR</Type>
        <Server>{e(site.server_name)}</Server>
        <ServerExclusiveConnect>On</ServerExclusiveConnect>
        <SSL>On</SSL>
        <AuthPackage>Basic</AuthPackage>
        <EwsUrl>{e(site.url)}</EwsUrl>
        <RpcProxyUrl>{e(site.url.rstrip("/"))}/rpc/rpcproxy.dll</RpcProxyUrl>
        <CertFingerprint algorithm="sha256">{e(site.fingerprint)}</CertFingerprint>
        <EndpointMapperPort>{site.epm_port}</EndpointMapperPort>
      </Protocol>
{_mail_protocols(site, user or address)}    </Account>
  </Response>
</Autodiscover>
"""
    return Reply(200, "text/xml; charset=utf-8", body.encode())


def _mail_kinds(mail: MailEndpoints) -> list[tuple[str, tuple[MailEndpoint, ...]]]:
    return [("imap", mail.imap), ("pop3", mail.pop3), ("smtp", mail.submission)]


def _mail_protocols(site: Site, login: str) -> str:
    """The ``<Protocol>`` entries of the mail listeners, the preferred one of each."""
    if site.mail is None:
        return ""
    e = escape
    out = []
    for kind, endpoints in _mail_kinds(site.mail):
        if not endpoints:
            continue
        best = endpoints[0]
        encryption = "SSL" if best.security is MailSecurity.IMPLICIT else "TLS"
        out.append(f"""      <Protocol>
        <Type>{kind.upper()}</Type>
        <Server>{e(site.server_name)}</Server>
        <Port>{best.port}</Port>
        <LoginName>{e(login)}</LoginName>
        <DomainRequired>off</DomainRequired>
        <SPA>off</SPA>
        <SSL>on</SSL>
        <Encryption>{encryption}</Encryption>
        <AuthRequired>on</AuthRequired>
      </Protocol>
""")
    return "".join(out)
