"""TLS for the tunnel: the server context (with a self-signed certificate made on first
run) and the client context (system trust or a pinned SHA-256 fingerprint).

Server side: the certificate and key come from the configured paths; otherwise
``tunnel-cert.pem`` / ``tunnel-key.pem`` in the data directory are used, created on
first run with ``cryptography`` (EC P-256, SAN = the configured server names plus
``localhost`` and ``127.0.0.1``, valid 825 days, the key file mode 0600). TLS 1.2 is
the minimum; ALPN offers ``h2`` then ``http/1.1`` (the ALPN result picks the HTTP
handler, DESIGN.md "tunnel").

Client side: with no pin, the system trust store and host name checks apply. With a
pin the chain is not checked by the library; instead :func:`check_pinned` compares the
SHA-256 of the peer's DER certificate with the pin right after the handshake and the
caller aborts on a mismatch. There is never a fallback to clear text.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_NAME = "tunnel-cert.pem"
KEY_NAME = "tunnel-key.pem"
VALIDITY_DAYS = 825
ALPN_PROTOCOLS = ["h2", "http/1.1"]


class CertificateMismatch(ssl.SSLError):
    """The server's certificate does not have the pinned fingerprint."""


def format_fingerprint(digest: bytes) -> str:
    """``AB:CD:...`` for a digest."""
    return ":".join(f"{b:02X}" for b in digest)


def normalize_fingerprint(text: str) -> bytes:
    """A pinned fingerprint (``AB:CD:..``, ``abcd..``, optional ``sha256:`` prefix) as bytes.

    Raises:
        ValueError: not 32 hex bytes.
    """
    cleaned = text.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    digest = bytes.fromhex(cleaned)
    if len(digest) != 32:
        raise ValueError("a SHA-256 fingerprint is 32 bytes")
    return digest


def der_fingerprint(der: bytes) -> str:
    return format_fingerprint(hashlib.sha256(der).digest())


def certificate_fingerprint(path: Path) -> str:
    """SHA-256 fingerprint (``AB:CD:...``) of the first certificate in a PEM file."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return format_fingerprint(cert.fingerprint(hashes.SHA256()))


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in [*names, "localhost", "127.0.0.1"]:
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def create_self_signed(cert_path: Path, key_path: Path, names: Iterable[str]) -> None:
    """Write a new self-signed certificate and its key (mode 0600)."""
    names = list(names)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "localhost")]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(
    data_dir: Path,
    names: Iterable[str],
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> tuple[Path, Path]:
    """The certificate and key to serve: the configured ones, or the self-signed pair
    in ``data_dir`` (created when missing)."""
    if cert_file is not None and key_file is not None:
        return cert_file, key_file
    cert_path, key_path = data_dir / CERT_NAME, data_dir / KEY_NAME
    if not (cert_path.exists() and key_path.exists()):
        create_self_signed(cert_path, key_path, names)
    return cert_path, key_path


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2+, the certificate, ALPN ``h2`` and ``http/1.1``."""
    # Built directly, not with ssl.create_default_context: a library may replace that
    # process-wide (impacket's examples do, with an unverifying, SECLEVEL=0 one).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    # RFC 7540 9.2.2: h2 needs no renegotiation and no compression.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def client_context(
    *, alpn: list[str], fingerprint: str | None = None, cafile: Path | None = None
) -> ssl.SSLContext:
    """A client context. With ``fingerprint`` the chain is not verified by OpenSSL: call
    :func:`check_pinned` after the handshake. Otherwise system trust (or ``cafile``)."""
    # PROTOCOL_TLS_CLIENT verifies the chain and the host name unless told otherwise.
    # Not ssl.create_default_context: a library may replace that process-wide with one
    # that verifies nothing (impacket's examples do), and we must never follow it.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if fingerprint is not None:
        normalize_fingerprint(fingerprint)  # refuse a malformed pin before connecting
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
    else:
        ctx.load_default_certs()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(alpn)
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # as the server: TLSStream never renegotiates
    return ctx


class _HasPeerCert(Protocol):
    def getpeercert(self, binary_form: bool = ...) -> Any: ...


def check_pinned(ssl_object: _HasPeerCert, fingerprint: str) -> None:
    """Compare the peer certificate with the pin.

    Raises:
        CertificateMismatch: no certificate, or another one.
    """
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise CertificateMismatch("the server sent no certificate")
    expected = normalize_fingerprint(fingerprint)
    if not hmac.compare_digest(hashlib.sha256(der).digest(), expected):
        raise CertificateMismatch(
            f"server certificate {der_fingerprint(der)} does not match the pinned fingerprint"
        )
