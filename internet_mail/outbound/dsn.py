"""Delivery status notifications (RFC 3464, RFC 6522), sans-IO: a failed delivery's
report as MIME bytes.

:func:`build_dsn` writes a ``multipart/report; report-type=delivery-status`` message
to the original's reverse path: a human-readable part, the ``message/delivery-status``
part (per-message fields, then one block per failed recipient with its
``Final-Recipient``, ``Action: failed``, ``Status``, ``Remote-MTA`` and
``Diagnostic-Code``) and the original's header (``text/rfc822-headers``, bounded).
Nothing is random and the date is given, so the same failure gives the same bytes (a
report made again after a crash is recognised as the same message). Never build one
for the null reverse path: a report is not reported on (RFC 5321 4.5.5); the caller
checks :func:`wants_report`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final

from internet_mail.outbound.state import RecipientState

NDR_CLASS: Final = "REPORT.IPM.Note.NDR"
#: The most of the original's header quoted in a report.
MAX_QUOTED_HEADER: Final = 32 * 1024
_SUBJECT: Final = re.compile(rb"(?im)^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)")
_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f]")


def wants_report(sender: str) -> bool:
    """False for the null reverse path ``<>`` (and the daemon's own address)."""
    return bool(sender) and not sender.lower().startswith("mailer-daemon@")


def _clean(text: str, limit: int = 900) -> str:
    return _UNSAFE.sub(" ", text)[:limit]


def original_header(data: bytes) -> bytes:
    """The header block of ``data`` (bounded), CRLF line ends."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data[: end if end >= 0 else len(data)][:MAX_QUOTED_HEADER]
    head = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return head.replace(b"\n", b"\r\n") + b"\r\n"


def original_subject(data: bytes) -> str:
    match = _SUBJECT.search(original_header(data))
    if not match:
        return ""
    raw = re.sub(rb"\r?\n[ \t]+", b" ", match.group(1)).strip()
    return _clean(raw.decode("ascii", "replace"), 200)


def _date(when: float) -> str:
    return format_datetime(datetime.fromtimestamp(when, UTC))


def build_dsn(
    *, reporting_mta: str, sender: str, queue_id: str, arrival: float, when: float,
    failed: Sequence[RecipientState], original: bytes,
) -> bytes:  # fmt: skip
    """The report for ``failed`` (see the module docstring); ``when`` is its date."""
    mta = _clean(reporting_mta, 255) or "localhost"
    subject = original_subject(original)
    per_recipient = []
    human = []
    for rcpt in failed:
        status = (
            rcpt.dsn_status
            if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", rcpt.dsn_status)
            else "5.0.0"
        )
        if status.startswith("2"):
            status = "5.0.0"
        block = [
            f"Final-Recipient: rfc822; {_clean(rcpt.address, 512)}",
            "Action: failed",
            f"Status: {status}",
        ]
        if rcpt.remote_mta:
            block.append(f"Remote-MTA: dns; {_clean(rcpt.remote_mta, 255)}")
        if rcpt.reply:
            block.append(f"Diagnostic-Code: smtp; {_clean(rcpt.reply)}")
        block.append(f"Last-Attempt-Date: {_date(when)}")
        per_recipient.append("\r\n".join(block) + "\r\n")
        human.append(f"<{_clean(rcpt.address, 512)}>: {_clean(rcpt.reply) or status}")
    status_part = (
        f"Reporting-MTA: dns; {mta}\r\nX-Queue-ID: {queue_id}\r\n"
        f"Arrival-Date: {_date(arrival)}\r\n\r\n" + "\r\n".join(per_recipient)
    )
    text = (
        "This is the mail system at host " + mta + ".\r\n\r\n"
        "Your message could not be delivered to one or more recipients. It is\r\n"
        "attached below (its header).\r\n\r\n" + "\r\n".join(human) + "\r\n"
    )
    quoted = original_header(original)
    digest = hashlib.sha256(
        "\0".join([queue_id, *(r.address for r in failed)]).encode("utf-8", "replace")
    ).hexdigest()
    boundary = "=_dsn_" + digest[:32]
    message_id = f"<dsn.{digest[:24]}.{queue_id}@{mta}>"
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>\r\n"
        f"To: <{_clean(sender, 512)}>\r\n"
        f"Subject: Undeliverable: {subject}\r\n"
        f"Date: {_date(when)}\r\n"
        f"Message-ID: {message_id}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f' boundary="{boundary}"\r\n'
        "\r\n"
    )
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{status_part}\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n"
    return (head + body).encode("utf-8", "replace") + quoted + tail.encode("ascii")


__all__ = ["NDR_CLASS", "build_dsn", "original_header", "original_subject", "wants_report"]
