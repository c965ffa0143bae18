"""DKIM signing of outbound mail (RFC 6376) with dkimpy, and the server's key.

A driver by the import rule: dkimpy imports dnspython, which imports ``socket`` (for
verification lookups we never make here). :func:`load_or_create_key` makes an RSA 2048
key on first use, ``<data_dir>/dkim/<selector>.pem`` (mode 0600, PKCS#1 PEM);
:func:`txt_record` is the DNS TXT record to publish at
``<selector>._domainkey.<domain>``; :func:`sign` prepends a ``DKIM-Signature`` field
(relaxed/relaxed, rsa-sha256) over the usual header fields and the body.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: The header fields signed (each once, when present; RFC 6376 5.4.1's recommendations).
SIGNED_HEADERS = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"in-reply-to",
    b"references", b"mime-version", b"content-type", b"content-transfer-encoding",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DkimKey:
    selector: str
    domain: str
    private_pem: bytes

    def public_der(self) -> bytes:
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        return key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def key_path(data_dir: Path, selector: str) -> Path:
    if not selector or not all(c.isalnum() or c in "-_" for c in selector):
        raise ValueError(f"bad DKIM selector {selector!r}")
    return data_dir / "dkim" / f"{selector}.pem"


def load_or_create_key(data_dir: Path, selector: str, domain: str) -> DkimKey:
    """The key of ``selector``, made (RSA 2048, mode 0600) when there is none."""
    path = key_path(data_dir, selector)
    if not path.is_file():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    return DkimKey(selector, domain, path.read_bytes())


def txt_record(key: DkimKey) -> str:
    """The TXT record's value (``v=DKIM1; k=rsa; p=...``)."""
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(key.public_der()).decode("ascii")


def record_name(key: DkimKey) -> str:
    return f"{key.selector}._domainkey.{key.domain}"


def sign(data: bytes, key: DkimKey) -> bytes:
    """``data`` (CRLF line ends) with a DKIM-Signature field in front."""
    present = {
        line.split(b":", 1)[0].strip().lower()
        for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if b":" in line and not line[:1].isspace()
    }
    headers = [h for h in SIGNED_HEADERS if h in present] or [b"from"]
    signature = dkim.sign(
        data, key.selector.encode("ascii"), key.domain.encode("idna"), key.private_pem,
        canonicalize=(b"relaxed", b"relaxed"), include_headers=headers,
    )  # fmt: skip
    return bytes(signature) + data


__all__ = [
    "DkimKey", "key_path", "load_or_create_key", "record_name", "sign", "txt_record",
]  # fmt: skip
