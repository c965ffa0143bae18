"""TLS helpers of the tunnel (certificates, fingerprints, contexts); implemented in
:mod:`tunnel.drivers.tls` because they use :mod:`ssl`."""

from __future__ import annotations

from tunnel.drivers.tls import (
    CertificateMismatch,
    certificate_fingerprint,
    check_pinned,
    client_context,
    create_self_signed,
    ensure_certificate,
    normalize_fingerprint,
    server_context,
)

__all__ = [
    "CertificateMismatch",
    "certificate_fingerprint",
    "check_pinned",
    "client_context",
    "create_self_signed",
    "ensure_certificate",
    "normalize_fingerprint",
    "server_context",
]
