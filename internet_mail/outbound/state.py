"""The envelope of a queued message and its file format, sans-IO.

Theory of operation
-------------------
A queued message is two files in the queue directory: ``<id>.eml`` (the message bytes,
never changed) and ``<id>.json`` (this envelope: the reverse path, when it was queued,
and one :class:`RecipientState` per forward path). The envelope file is the commit
point: it is written last on enqueue and removed first when the message leaves the
queue, so an ``.eml`` without its envelope is an enqueue that never returned.

A recipient is ``pending`` (to try at ``next_try``), ``done`` (a peer took it: 250
after DATA) or ``failed`` (a 5xx, or still failing at expiry); ``reported`` says that
the failure's delivery status notification has been made. :func:`decode` is a hostile
input reader (a damaged file): it checks every field and its size and raises
:class:`EnvelopeError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Final

PENDING: Final = "pending"
DONE: Final = "done"
FAILED: Final = "failed"
_STATUSES: Final = frozenset({PENDING, DONE, FAILED})

#: Bounds on an envelope file (and so on what enqueue accepts).
MAX_ENVELOPE_BYTES: Final = 4 << 20
MAX_RECIPIENTS: Final = 1000
MAX_ADDRESS: Final = 512
MAX_REPLY: Final = 2048

#: Queue ids: file-name safe, never a path.
ID_PATTERN: Final = re.compile(r"[0-9a-z][0-9a-z-]{0,63}")

_VERSION: Final = 1
#: Times (seconds since the epoch) beyond this are no times of ours (the year 5138).
_MAX_TIME: Final = 1e11


class EnvelopeError(ValueError):
    """An envelope file (or an enqueue request) is malformed or beyond the limits."""


@dataclass(slots=True)
class RecipientState:
    """One forward path and how far its delivery got."""

    address: str
    status: str = PENDING
    attempts: int = 0
    #: When to try next (seconds since the epoch), for ``pending``.
    next_try: float = 0.0
    #: The last reply about it (``"550 5.1.1 no such user"``), or why it failed.
    reply: str = ""
    #: The RFC 3463 status for the report (``"5.1.1"``), for ``failed``.
    dsn_status: str = ""
    #: The peer that gave ``reply`` (host name), for the report.
    remote_mta: str = ""
    #: The failure has been reported to the sender (or needs no report).
    reported: bool = False


@dataclass(slots=True)
class Envelope:
    """A queued message's envelope (the bytes are in ``<id>.eml``)."""

    id: str
    #: The reverse path, ``""`` for the null sender ``<>`` (a report: never reported on).
    sender: str
    created: float
    recipients: list[RecipientState] = field(default_factory=list)

    def pending(self) -> list[RecipientState]:
        return [r for r in self.recipients if r.status == PENDING]

    def finished(self) -> bool:
        """Nothing left to deliver or report: the message may leave the queue."""
        return all(r.status == DONE or (r.status == FAILED and r.reported) for r in self.recipients)


def check_address(address: str) -> str:
    """``address`` if it may stand in an envelope: bounded, no control characters or
    angle brackets, and text that UTF-8 can carry (a damaged file's JSON may hold lone
    surrogates, which the SMTP client could not send)."""
    if (
        len(address) > MAX_ADDRESS
        or any(c in address for c in "<>\x7f")
        or any(ord(c) < 0x20 or 0xD800 <= ord(c) < 0xE000 for c in address)
    ):
        raise EnvelopeError(f"unusable envelope address {address[:40]!r}")
    return address


def new_envelope(qid: str, sender: str, recipients: list[str], now: float) -> Envelope:
    """The envelope of a message queued at ``now``; every recipient is due at once."""
    if not ID_PATTERN.fullmatch(qid):
        raise EnvelopeError("bad queue id")
    if not recipients:
        raise EnvelopeError("no recipients")
    if len(recipients) > MAX_RECIPIENTS:
        raise EnvelopeError("too many recipients")
    check_address(sender)
    seen: dict[str, RecipientState] = {}
    for address in recipients:
        if not check_address(address):
            raise EnvelopeError("empty recipient address")
        seen.setdefault(address.lower(), RecipientState(address, next_try=now))
    return Envelope(qid, sender, now, list(seen.values()))


def encode(envelope: Envelope) -> bytes:
    doc = {
        "version": _VERSION,
        "id": envelope.id,
        "sender": envelope.sender,
        "created": envelope.created,
        "recipients": [
            {
                "address": r.address, "status": r.status, "attempts": r.attempts,
                "next_try": r.next_try, "reply": r.reply[:MAX_REPLY],
                "dsn_status": r.dsn_status, "remote_mta": r.remote_mta[:MAX_ADDRESS],
                "reported": r.reported,
            }
            for r in envelope.recipients
        ],
    }  # fmt: skip
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _field(obj: dict[str, object], name: str, kind: type, limit: int = MAX_ADDRESS) -> object:
    value = obj.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise EnvelopeError(f"envelope field {name!r} is out of range") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EnvelopeError(f"envelope field {name!r} is missing or not {kind.__name__}")
    # Times and counts the runner computes with: finite, not negative, bounded (NaN made
    # the runner's sleep raise; a huge count is no count of ours).
    if isinstance(value, float) and not 0.0 <= value < _MAX_TIME:
        raise EnvelopeError(f"envelope field {name!r} is out of range")
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < 1 << 31:
        raise EnvelopeError(f"envelope field {name!r} is out of range")
    if isinstance(value, str) and len(value) > limit:
        raise EnvelopeError(f"envelope field {name!r} is too long")
    return value


def decode(data: bytes) -> Envelope:
    """Read an envelope file.

    Raises:
        EnvelopeError: not an envelope of ours, or beyond the limits.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("envelope file too large")
    try:
        doc = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeError(f"envelope is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        raise EnvelopeError("not an envelope of this version")
    qid = str(_field(doc, "id", str))
    if not ID_PATTERN.fullmatch(qid):
        raise EnvelopeError("bad queue id")
    rows = doc.get("recipients")
    if not isinstance(rows, list) or not rows or len(rows) > MAX_RECIPIENTS:
        raise EnvelopeError("bad recipient list")
    recipients = []
    for row in rows:
        if not isinstance(row, dict):
            raise EnvelopeError("bad recipient entry")
        status = str(_field(row, "status", str))
        if status not in _STATUSES:
            raise EnvelopeError(f"unknown recipient status {status[:20]!r}")
        attempts = _field(row, "attempts", int)
        next_try = _field(row, "next_try", float)
        reported = _field(row, "reported", bool)
        assert isinstance(attempts, int) and isinstance(next_try, float)
        assert isinstance(reported, bool)
        recipients.append(
            RecipientState(
                check_address(str(_field(row, "address", str))), status, attempts, next_try,
                str(_field(row, "reply", str, MAX_REPLY)), str(_field(row, "dsn_status", str)),
                str(_field(row, "remote_mta", str)), reported,
            )
        )  # fmt: skip
    created = _field(doc, "created", float)
    assert isinstance(created, float)
    return Envelope(qid, check_address(str(_field(doc, "sender", str))), created, recipients)


__all__ = [
    "DONE", "FAILED", "ID_PATTERN", "PENDING", "Envelope", "EnvelopeError", "RecipientState",
    "check_address", "decode", "encode", "new_envelope",
]  # fmt: skip
