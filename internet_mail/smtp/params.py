"""Command arguments beyond the path: ``MAIL`` parameters (RFC 5321 4.1.2 esmtp-param)
and ``AUTH`` responses (RFC 4954 4, RFC 4616).

Pure functions; each refusal is a :class:`~internet_mail.smtp.addresses.PathError`
carrying the reply, so the core sends it as it is.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from internet_mail.smtp.addresses import PathError


@dataclass(frozen=True, slots=True)
class MailParams:
    """What ``MAIL FROM`` asked for."""

    body: str = "7BIT"
    smtputf8: bool = False
    size: int | None = None


def parse_mail_params(text: str, *, esmtp: bool, max_size: int) -> MailParams:
    """Parse ``SIZE=``, ``BODY=``, ``SMTPUTF8`` and ``AUTH=`` (ignored, RFC 4954 5).

    Raises:
        PathError: 555 5.5.4 unknown parameter or parameters after ``HELO``; 501 5.5.4 a
            bad value or a repeat; 552 5.3.4 a declared size over ``max_size``.
    """
    tokens = text.split()
    if tokens and not esmtp:
        raise PathError(555, "5.5.4", "MAIL parameters need EHLO")
    body, smtputf8, size = "7BIT", False, None
    seen: set[str] = set()
    for token in tokens:
        key, eq, value = token.partition("=")
        key = key.upper()
        if key in seen:
            raise PathError(501, "5.5.4", f"Duplicate parameter {key}")
        seen.add(key)
        if key == "SIZE" and eq and value.isdigit() and value.isascii() and len(value) < 20:
            size = int(value)
            if size > max_size:
                raise PathError(552, "5.3.4", "Message size exceeds fixed maximum")
        elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
            body = value.upper()
        elif key == "SMTPUTF8" and not eq:
            smtputf8 = True
        elif key == "AUTH" and eq:
            pass  # the original submitter (RFC 4954 5); we do not pass it on
        elif key in ("SIZE", "BODY", "SMTPUTF8"):
            raise PathError(501, "5.5.4", f"Bad value for parameter {key}")
        else:
            raise PathError(555, "5.5.4", f"Unsupported parameter {key}")
    return MailParams(body=body, smtputf8=smtputf8, size=size)


def decode_auth_response(text: str) -> str:
    """One ``AUTH`` response line: base64 of UTF-8 (``=`` is empty), ``*`` cancels.

    Raises:
        PathError: 501 5.0.0 cancelled; 501 5.5.2 bad base64 or UTF-8.
    """
    if text == "*":
        raise PathError(501, "5.0.0", "Authentication cancelled")
    try:
        decoded = b"" if text == "=" else binascii.a2b_base64(text, strict_mode=True)
        return decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        raise PathError(501, "5.5.2", "Invalid base64 data") from None


def parse_plain(value: str) -> tuple[str, str]:
    """RFC 4616 ``authzid NUL authcid NUL passwd`` -> (user, password). An authorization
    identity other than the user is not supported.

    Raises:
        PathError: 535 5.7.8, as for bad credentials (nothing is revealed).
    """
    fields = value.split("\x00")
    if len(fields) != 3 or not fields[1] or fields[0] not in ("", fields[1]):
        raise PathError(535, "5.7.8", "Authentication credentials invalid")
    return fields[1], fields[2]
