"""The front end seen by independent HTTP clients (curl, nghttp) and by our autodiscover
and TLS helpers: statuses, ALPN, the autodiscover documents, the certificate."""

from __future__ import annotations

import json
import shutil
import ssl
import stat
from pathlib import Path

import pytest
import trio
from cryptography import x509
from tunnel_helpers import PASSWORD, USER, Tunnel

from tunnel.autodiscover import Site, answer
from tunnel.tls import (
    certificate_fingerprint,
    ensure_certificate,
    normalize_fingerprint,
    server_context,
)

needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (apt-get install curl)"
)
needs_nghttp = pytest.mark.skipif(
    shutil.which("nghttp") is None,
    reason="nghttp is not installed (apt-get install nghttp2-client)",
)


async def run(*argv: str) -> str:
    with trio.fail_after(20):
        result = await trio.run_process(
            list(argv), capture_stdout=True, capture_stderr=True, check=False
        )
    return result.stdout.decode("utf-8", "replace")


def curl(tunnel: Tunnel, path: str, *extra: str) -> list[str]:
    return [
        "curl",
        "-k",
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_version}",
        *extra,
        f"https://127.0.0.1:{tunnel.info.port}{path}",
    ]


@needs_curl
async def test_curl_http2_statuses(tunnel: Tunnel) -> None:
    rpc = f"/rpc/rpcproxy.dll?localhost:{tunnel.backend.epm_port}"
    out = await run(*curl(tunnel, rpc, "--http2", "-X", "POST"))
    assert out.endswith("401 2")
    out = await run(
        *curl(
            tunnel,
            "/rpc/rpcproxy.dll?10.0.0.1:135",
            "--http2",
            "-X",
            "POST",
            "-u",
            f"{USER}:{PASSWORD}",
        )
    )
    assert out.endswith("403 2")
    out = await run(*curl(tunnel, "/nope", "--http2", "-u", f"{USER}:{PASSWORD}"))
    assert out.endswith("404 2")


@needs_curl
async def test_curl_http11_statuses(tunnel: Tunnel) -> None:
    rpc = "/rpc/rpcproxy.dll?10.0.0.1:135"
    out = await run(*curl(tunnel, rpc, "--http1.1", "-X", "RPC_IN_DATA", "-H", "Content-Length: 0"))
    assert out.endswith("401 1.1")
    out = await run(
        *curl(
            tunnel,
            rpc,
            "--http1.1",
            "-u",
            f"{USER}:{PASSWORD}",
            "-X",
            "RPC_IN_DATA",
            "--data-binary",
            "x" * 100,
        )
    )
    assert out.endswith("503 1")  # the HTTP/1.0 status line impacket expects


@needs_curl
async def test_curl_autodiscover_json(tunnel: Tunnel) -> None:
    path = "/autodiscover/autodiscover.json?Email=bob@example.test"
    assert (await run(*curl(tunnel, path, "--http2"))).endswith("401 2")
    out = await run(*curl(tunnel, path, "--http2", "-u", f"{USER}:{PASSWORD}"))
    body, _, status = out.rpartition("\n")
    assert status == "200 2"
    doc = json.loads(body)
    assert doc["CertificateFingerprintSha256"] == tunnel.info.fingerprint
    assert doc["Url"] == tunnel.info.url and doc["Server"] == "mail.example.test"
    out = await run(
        *curl(
            tunnel,
            "/autodiscover/autodiscover.json?Email=eve@evil.test",
            "-u",
            f"{USER}:{PASSWORD}",
        )
    )
    assert out.endswith("404 2")


@needs_curl
async def test_curl_autodiscover_xml_over_http11(tunnel: Tunnel) -> None:
    body = (
        "<Autodiscover><Request><EMailAddress>bob@example.test</EMailAddress>"
        "</Request></Autodiscover>"
    )
    out = await run(
        *curl(
            tunnel,
            "/autodiscover/autodiscover.xml",
            "--http1.1",
            "-u",
            f"{USER}:{PASSWORD}",
            "--data-binary",
            body,
        )
    )
    doc, _, status = out.rpartition("\n")
    assert status == "200 1.1"
    assert "<Type>EXPR</Type>" in doc and tunnel.info.fingerprint in doc


@needs_nghttp
async def test_nghttp(tunnel: Tunnel) -> None:
    base = f"https://127.0.0.1:{tunnel.info.port}"
    out = await run("nghttp", "-v", f"{base}/autodiscover/autodiscover.json?Email=bob@example.test")
    assert ":status: 401" in out
    assert 'www-authenticate: Basic realm="mapi-anywhere"' in out
    auth = "authorization: Basic YWxpY2U6Y29ycmVjdCBob3JzZQ=="  # alice:correct horse
    out = await run(
        "nghttp", "-v", "-H", auth, f"{base}/autodiscover/autodiscover.json?Email=bob@example.test"
    )
    assert ":status: 200" in out and tunnel.info.fingerprint in out
    out = await run(
        "nghttp", "-v", "-H", auth, "-d", "/dev/null", f"{base}/rpc/rpcproxy.dll?10.0.0.1:135"
    )
    assert ":status: 403" in out


def test_autodiscover_core() -> None:
    site = Site(
        domain="example.test", server_name="mail", url="https://mail:8443/", fingerprint="AB"
    )
    assert (
        answer(site, "GET", "/autodiscover/autodiscover.json?Email=a@EXAMPLE.test", b"").status
        == 200
    )
    assert answer(site, "GET", "/autodiscover/autodiscover.json", b"").status == 404
    assert answer(site, "PUT", "/autodiscover/autodiscover.xml", b"").status == 405
    assert answer(site, "POST", "/autodiscover/autodiscover.xml", b"x" * 20000).status == 413
    evil = b"<EMailAddress>a@example.test<!ENTITY x SYSTEM 'file:///etc/passwd'></EMailAddress>"
    assert answer(site, "POST", "/autodiscover/autodiscover.xml", evil).status == 404
    reply = answer(
        site,
        "POST",
        "/autodiscover/autodiscover.xml",
        b"<EMailAddress>a&lt;@example.test</EMailAddress>",
    )
    assert reply.status == 404


def test_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path, ["mail.example.test", "192.0.2.7"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"mail.example.test", "localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"192.0.2.7", "127.0.0.1"}
    days = (loaded.not_valid_after_utc - loaded.not_valid_before_utc).days
    assert 824 <= days <= 825
    fingerprint = certificate_fingerprint(cert)
    assert len(normalize_fingerprint(fingerprint)) == 32
    assert ensure_certificate(tmp_path, []) == (cert, key)  # kept, not regenerated
    assert certificate_fingerprint(cert) == fingerprint


async def test_tls_is_12_or_newer_and_offers_h2(tunnel: Tunnel, tmp_path: Path) -> None:
    assert (
        server_context(*ensure_certificate(tmp_path, [])).minimum_version is ssl.TLSVersion.TLSv1_2
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with trio.fail_after(10):
        tcp = await trio.open_tcp_stream("127.0.0.1", tunnel.info.port)
        stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() == "h2"
        assert stream.version() in ("TLSv1.2", "TLSv1.3")
        await trio.aclose_forcefully(stream)
