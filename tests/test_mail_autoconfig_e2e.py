"""Mail client autoconfiguration end to end: a real ``serve`` (in-process, every listener
on a free loopback port) answers Thunderbird's config-v1.1.xml over HTTPS without
credentials, with the ports its IMAP, POP3 and submission listeners really have; a
mail program that follows the document (Python's imaplib, poplib and smtplib, each
server entry with its socketType and ``%EMAILADDRESS%`` as the user name) logs on."""

from __future__ import annotations

import base64
import http.client
import imaplib
import poplib
import smtplib
import ssl
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import quote

import pytest
import trio
from serve_helpers import start_server

from mapi_anywhere.config import ImapSection, Pop3Section, SubmissionSection

PASSWORDS = {"alice": "alice-password"}
WELL_KNOWN = "/.well-known/autoconfig/mail/config-v1.1.xml"


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Any) -> Any:
    return await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True,
        submission=SubmissionSection(port=0, tls_port=0),
        imap=ImapSection(port=0, tls_port=0),
        pop3=Pop3Section(port=0, tls_port=0),
    )  # fmt: skip


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # serve's certificate is self-signed
    return ctx


def get(port: int, paths: list[str], headers: dict[str, str] | None = None) -> list[Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=_tls())
    try:
        out = []
        for path in paths:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            out.append((response.status, response.read()))
        return out
    finally:
        conn.close()


async def fetch(port: int, *paths: str, headers: dict[str, str] | None = None) -> list[Any]:
    with trio.fail_after(20):
        return await trio.to_thread.run_sync(get, port, list(paths), headers)


def entries(doc: bytes) -> list[dict[str, Any]]:
    provider = ET.fromstring(doc).find("emailProvider")
    assert provider is not None
    return [
        {
            "kind": el.get("type"),
            "host": el.findtext("hostname"),
            "port": int(el.findtext("port", "0")),
            "socket": el.findtext("socketType"),
            "user": el.findtext("username"),
            "auth": el.findtext("authentication"),
        }
        for el in provider
        if el.tag in ("incomingServer", "outgoingServer")
    ]


def log_on(entry: dict[str, Any], user: str, password: str) -> None:
    """Log on as a mail program set up from ``entry`` would."""
    host, port, implicit = entry["host"], entry["port"], entry["socket"] == "SSL"
    if entry["kind"] == "imap":
        imap = (
            imaplib.IMAP4_SSL(host, port, ssl_context=_tls(), timeout=10)
            if implicit
            else imaplib.IMAP4(host, port, timeout=10)
        )
        if not implicit:
            imap.starttls(_tls())
        assert imap.login(user, password)[0] == "OK"
        imap.logout()
    elif entry["kind"] == "pop3":
        pop = (
            poplib.POP3_SSL(host, port, context=_tls(), timeout=10)
            if implicit
            else poplib.POP3(host, port, timeout=10)
        )
        if not implicit:
            pop.stls(_tls())
        pop.user(user)
        assert pop.pass_(password).startswith(b"+OK")
        pop.quit()
    else:
        smtp = (
            smtplib.SMTP_SSL(host, port, context=_tls(), timeout=10)
            if implicit
            else smtplib.SMTP(host, port, timeout=10)
        )
        with smtp:
            smtp.ehlo("laptop.example.org")
            if not implicit:
                smtp.starttls(context=_tls())
                smtp.ehlo("laptop.example.org")
            assert smtp.login(user, password)[0] == 235


async def test_autoconfig_names_the_running_listeners(server: Any) -> None:
    asked = ["alice@example.org", "nobody@example.org", "x@elsewhere.invalid"]
    answers = await fetch(
        server.tunnel.port,
        *[f"{WELL_KNOWN}?emailaddress={quote(a)}" for a in asked],
        f"/mail/config-v1.1.xml?emailaddress={quote(asked[0])}",
    )
    assert {status for status, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1  # a known user or not: same bytes
    found = entries(answers[0][1])
    assert [(e["kind"], e["socket"], e["port"]) for e in found] == [
        ("imap", "SSL", server.imaps_port),
        ("imap", "STARTTLS", server.imap_port),
        ("pop3", "SSL", server.pop3s_port),
        ("pop3", "STARTTLS", server.pop3_port),
        ("smtp", "SSL", server.submissions_port),
        ("smtp", "STARTTLS", server.submission_port),
    ]
    assert {e["host"] for e in found} == {"127.0.0.1"}  # [tunnel] host: no server_names
    assert {(e["user"], e["auth"]) for e in found} == {("%EMAILADDRESS%", "password-cleartext")}
    with trio.fail_after(60):
        for entry in found:
            await trio.to_thread.run_sync(log_on, entry, "alice@example.org", PASSWORDS["alice"])


async def test_autodiscover_names_the_running_imap_listener(server: Any) -> None:
    auth = "Basic " + base64.b64encode(b"alice:" + PASSWORDS["alice"].encode()).decode()
    # Without [tunnel] domain, a user is answered for login@one of the server names.
    path = "/autodiscover/autodiscover.xml?Email=alice@localhost"
    [(status, body)] = await fetch(server.tunnel.port, path, headers={"Authorization": auth})
    assert status == 200
    ns = {"r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    protocols = {
        p.findtext("r:Type", "", ns): (p.findtext("r:Server", "", ns), p.findtext("r:Port", "", ns))
        for p in ET.fromstring(body).iterfind(".//r:Protocol", ns)
    }
    assert protocols["IMAP"] == ("127.0.0.1", str(server.imaps_port))
    assert protocols["POP3"] == ("127.0.0.1", str(server.pop3s_port))
    assert protocols["SMTP"] == ("127.0.0.1", str(server.submissions_port))


async def test_no_document_without_mail_listeners(nursery: trio.Nursery, tmp_path: Any) -> None:
    running = await start_server(nursery, tmp_path / "data", PASSWORDS)
    [(status, body)] = await fetch(running.tunnel.port, WELL_KNOWN)
    assert status == 404 and b"clientConfig" not in body
