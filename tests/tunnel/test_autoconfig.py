"""Mail client autoconfiguration: Thunderbird's config-v1.1.xml (the sans-IO document,
then served by a real tunnel over HTTP/1.1 and HTTP/2 without credentials), and the
IMAP/POP3/SMTP entries the autodiscover answers gain when mail listeners run."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import ssl
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from tunnel_helpers import FAST, PASSWORD, SERVER_NAME, USER, Tunnel, make_backend, start_tunnel

from tunnel.autoconfig import (
    AUTOCONFIG_HOST_PATH,
    MAX_BODY,
    WELL_KNOWN_PATH,
    answer,
    client_config,
    is_autoconfig_path,
)
from tunnel.autodiscover import Site
from tunnel.autodiscover import answer as autodiscover_answer
from tunnel.config import (
    MailEndpoint,
    MailEndpoints,
    MailSecurity,
    TunnelConfig,
    mail_endpoints,
)

MAIL = MailEndpoints(
    imap=mail_endpoints(1143, 1993),
    pop3=mail_endpoints(1110, 1995),
    submission=mail_endpoints(1587, 1465),
)
SITE = Site(
    domain="example.test",
    server_name="mail.example.test",
    url="https://mail.example.test:8443/",
    fingerprint="AB",
    mail=MAIL,
)
ADDRESSES = ["alice@example.test", "nobody-at-all@example.test", "x@elsewhere.invalid", ""]


def servers(doc: bytes) -> list[tuple[str, str, str, int, str, str, str]]:
    """(element, type, hostname, port, socketType, username, authentication) of each
    server entry of a clientConfig document, in document order."""
    root = ET.fromstring(doc)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    (provider,) = root.findall("emailProvider")
    out = []
    for el in provider:
        if el.tag not in ("incomingServer", "outgoingServer"):
            continue
        out.append(
            (
                el.tag,
                el.get("type", ""),
                el.findtext("hostname", ""),
                int(el.findtext("port", "0")),
                el.findtext("socketType", ""),
                el.findtext("username", ""),
                el.findtext("authentication", ""),
            )
        )
    return out


# -- the document (sans-IO) -------------------------------------------------------------------


def test_document_lists_every_listener_implicit_tls_first() -> None:
    reply = answer(SITE, "GET", WELL_KNOWN_PATH + "?emailaddress=alice%40example.test", b"")
    assert reply.status == 200 and reply.content_type.startswith("text/xml")
    root = ET.fromstring(reply.body)
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "example.test"
    assert [d.text for d in provider.findall("domain")] == ["example.test", "mail.example.test"]
    assert provider.findtext("displayShortName") == "example.test"
    host, user, auth = "mail.example.test", "%EMAILADDRESS%", "password-cleartext"
    assert servers(reply.body) == [
        ("incomingServer", "imap", host, 1993, "SSL", user, auth),
        ("incomingServer", "imap", host, 1143, "STARTTLS", user, auth),
        ("incomingServer", "pop3", host, 1995, "SSL", user, auth),
        ("incomingServer", "pop3", host, 1110, "STARTTLS", user, auth),
        ("outgoingServer", "smtp", host, 1465, "SSL", user, auth),
        ("outgoingServer", "smtp", host, 1587, "STARTTLS", user, auth),
    ]


def test_both_paths_any_case_any_query_same_document() -> None:
    base = answer(SITE, "GET", WELL_KNOWN_PATH, b"")
    assert base.status == 200
    for path in (WELL_KNOWN_PATH, AUTOCONFIG_HOST_PATH, AUTOCONFIG_HOST_PATH.upper()):
        for address in ADDRESSES:
            reply = answer(SITE, "GET", f"{path}?emailaddress={quote(address)}", b"")
            assert reply == base, (path, address)


@given(st.text(max_size=300))
def test_the_query_never_changes_the_answer(query: str) -> None:
    """Whatever the client asks about (an existing user, an unknown one, garbage), the
    answer is the same bytes: it tells nothing about who has an account."""
    base = answer(SITE, "GET", AUTOCONFIG_HOST_PATH, b"")
    assert answer(SITE, "GET", f"{AUTOCONFIG_HOST_PATH}?{query}", b"") == base


# Characters XML 1.0 can carry (no C0 controls but tab/newline, no surrogates).
XML_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=60,
)


@given(XML_TEXT, XML_TEXT)
def test_names_are_escaped(server_name: str, domain: str) -> None:
    site = replace(SITE, server_name=server_name, domain=domain)
    doc = client_config(site)
    assert doc is not None
    root = ET.fromstring(doc)  # well-formed whatever the names hold
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == domain.lower()
    assert {h.text for h in root.iter("hostname")} == {server_name}


def test_no_document_without_a_listener_to_read_mail() -> None:
    for mail in (None, MailEndpoints(), MailEndpoints(submission=mail_endpoints(1587, None))):
        reply = answer(replace(SITE, mail=mail), "GET", WELL_KNOWN_PATH, b"")
        assert reply.status == 404
    pop_only = replace(SITE, mail=MailEndpoints(pop3=mail_endpoints(None, 1995)))
    assert servers(answer(pop_only, "GET", WELL_KNOWN_PATH, b"").body) == [
        ("incomingServer", "pop3", "mail.example.test", 1995, "SSL", "%EMAILADDRESS%",
         "password-cleartext"),
    ]  # fmt: skip


def test_methods_paths_and_body_limit() -> None:
    assert answer(SITE, "POST", WELL_KNOWN_PATH, b"").status == 405
    assert answer(SITE, "HEAD", WELL_KNOWN_PATH, b"").status == 405
    assert answer(SITE, "GET", WELL_KNOWN_PATH, b"x" * (MAX_BODY + 1)).status == 413
    assert answer(SITE, "GET", "/mail/config-v1.2.xml", b"").status == 404
    assert is_autoconfig_path("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a")
    assert not is_autoconfig_path("/autodiscover/autodiscover.xml")
    assert not is_autoconfig_path("/rpc/rpcproxy.dll?mail/config-v1.1.xml")


def test_endpoint_values_are_checked() -> None:
    with pytest.raises(ValueError):
        MailEndpoint(0, MailSecurity.IMPLICIT)
    with pytest.raises(ValueError):
        MailEndpoint(65536, MailSecurity.STARTTLS)
    assert mail_endpoints(None, None) == ()
    assert mail_endpoints(143, None) == (MailEndpoint(143, MailSecurity.STARTTLS),)
    with pytest.raises(ValueError, match="not a setting"):
        TunnelConfig(mail=Path("imap"))  # type: ignore[arg-type]


# -- autodiscover names the mail listeners ------------------------------------------------


def test_autodiscover_xml_has_imap_pop3_smtp_protocols() -> None:
    body = b"<EMailAddress>alice@example.test</EMailAddress>"
    reply = autodiscover_answer(SITE, "POST", "/autodiscover/autodiscover.xml", body, user="alice")
    assert reply.status == 200
    ns = {"r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    root = ET.fromstring(reply.body)
    protocols = {
        p.findtext("r:Type", "", ns): p for p in root.iterfind(".//r:Account/r:Protocol", ns)
    }
    assert set(protocols) == {"EXPR", "IMAP", "POP3", "SMTP"}
    for kind, port in (("IMAP", 1993), ("POP3", 1995), ("SMTP", 1465)):
        p = protocols[kind]
        assert p.findtext("r:Server", "", ns) == "mail.example.test"
        assert p.findtext("r:Port", "", ns) == str(port)
        assert p.findtext("r:LoginName", "", ns) == "alice"
        assert p.findtext("r:SSL", "", ns) == "on"
        assert p.findtext("r:Encryption", "", ns) == "SSL"
        assert p.findtext("r:AuthRequired", "", ns) == "on"
    starttls_only = replace(SITE, mail=MailEndpoints(imap=mail_endpoints(143, None)))
    reply = autodiscover_answer(
        starttls_only, "POST", "/autodiscover/autodiscover.xml", body, user="alice"
    )
    assert b"<Encryption>TLS</Encryption>" in reply.body and b"<Type>POP3</Type>" not in reply.body
    plain = autodiscover_answer(
        replace(SITE, mail=None), "POST", "/autodiscover/autodiscover.xml", body, user="alice"
    )
    assert b"<Type>IMAP</Type>" not in plain.body and b"<Type>EXPR</Type>" in plain.body


def test_autodiscover_json_lists_mail_servers() -> None:
    path = "/autodiscover/autodiscover.json?Email=alice@example.test"
    doc = json.loads(autodiscover_answer(SITE, "GET", path, b"", user="alice").body)
    host = "mail.example.test"
    assert doc["MailServers"] == {
        "imap": [
            {"host": host, "port": 1993, "socketType": "SSL"},
            {"host": host, "port": 1143, "socketType": "STARTTLS"},
        ],
        "pop3": [
            {"host": host, "port": 1995, "socketType": "SSL"},
            {"host": host, "port": 1110, "socketType": "STARTTLS"},
        ],
        "smtp": [
            {"host": host, "port": 1465, "socketType": "SSL"},
            {"host": host, "port": 1587, "socketType": "STARTTLS"},
        ],
    }
    plain = json.loads(autodiscover_answer(replace(SITE, mail=None), "GET", path, b"").body)
    assert "MailServers" not in plain


# -- served by a real tunnel ------------------------------------------------------------------


def https(port: int, requests: list[tuple[str, str, dict[str, str]]]) -> list[Any]:
    """Send ``requests`` (method, path, headers) on one HTTP/1.1 keep-alive connection
    with Python's http.client; returns (status, headers, body) of each."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the tunnel's certificate is self-signed
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    out = []
    try:
        for method, path, headers in requests:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            out.append((response.status, dict(response.getheaders()), response.read()))
    finally:
        conn.close()
    return out


async def fetch(port: int, *requests: tuple[str, str, dict[str, str]]) -> list[Any]:
    with trio.fail_after(20):
        return await trio.to_thread.run_sync(https, port, list(requests))


@pytest.fixture
async def mail_tunnel(nursery: trio.Nursery, tmp_path: Path) -> Tunnel:
    backend = await make_backend(nursery)
    return await start_tunnel(nursery, backend, tmp_path / "data", replace(FAST, mail=MAIL))


async def test_served_over_http11_without_credentials(mail_tunnel: Tunnel) -> None:
    port = mail_tunnel.info.port
    answers = await fetch(
        port,
        *[("GET", f"{WELL_KNOWN_PATH}?emailaddress={quote(a)}", {}) for a in ADDRESSES],
        ("GET", f"{AUTOCONFIG_HOST_PATH}?emailaddress=alice%40example.test", {}),
        ("POST", WELL_KNOWN_PATH, {"Content-Length": "0"}),
    )
    *documents, refused = answers
    expected = client_config(replace(SITE, domain="example.test", server_name=SERVER_NAME))
    for status, headers, body in documents:
        assert status == 200 and headers["Content-Type"].startswith("text/xml")
        assert body == expected  # one connection, the same bytes whoever is asked about
    assert refused[0] == 405 and refused[1]["Allow"] == "GET"
    # The RPC paths still want credentials.
    [(status, headers, _)] = await fetch(port, ("RPC_IN_DATA", "/rpc/rpcproxy.dll", {}))
    assert status == 401 and "WWW-Authenticate" in headers


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_served_over_http2_without_credentials(mail_tunnel: Tunnel) -> None:
    url = f"https://127.0.0.1:{mail_tunnel.info.port}{WELL_KNOWN_PATH}?emailaddress=a%40b.c"
    argv = ["curl", "-k", "-s", "--http2", "-o", "-", "-w", "\n%{http_code} %{http_version}", url]
    with trio.fail_after(20):
        result = await trio.run_process(argv, capture_stdout=True, check=False)
    body, _, status = result.stdout.rpartition(b"\n")
    assert status == b"200 2"
    [(_, _, over_h1)] = await fetch(mail_tunnel.info.port, ("GET", WELL_KNOWN_PATH, {}))
    assert body == over_h1


async def test_not_served_without_mail_listeners(nursery: trio.Nursery, tmp_path: Path) -> None:
    backend = await make_backend(nursery)
    tunnel = await start_tunnel(nursery, backend, tmp_path / "data")
    [(status, _, body)] = await fetch(tunnel.info.port, ("GET", WELL_KNOWN_PATH, {}))
    assert status == 404 and b"clientConfig" not in body


async def test_autodiscover_through_the_tunnel_names_imap(mail_tunnel: Tunnel) -> None:
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path = "/autodiscover/autodiscover.json?Email=alice@example.test"
    [(status, _, body)] = await fetch(mail_tunnel.info.port, ("GET", path, {"Authorization": auth}))
    assert status == 200
    imap = json.loads(body)["MailServers"]["imap"]
    assert imap[0] == {"host": SERVER_NAME, "port": 1993, "socketType": "SSL"}
