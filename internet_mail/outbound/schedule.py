"""When to try a queued message again, sans-IO: given ``now`` and the envelope.

Each recipient has its own clock: a temporary failure (4xx, a lost connection) moves
its next try ``initial * factor ** (attempts - 1)`` seconds on, capped at ``maximum``;
a permanent one (5xx) fails it; a recipient still pending ``expiry`` seconds after the
message was queued fails with 4.4.7 and the last reply it got. A positive reply after
the data makes it done.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from internet_mail.outbound.state import DONE, FAILED, PENDING, Envelope, RecipientState


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    initial: float = 300.0
    maximum: float = 4 * 3600.0
    factor: float = 2.0
    #: Seconds after queuing when a recipient still pending fails (RFC 5321 4.5.4.1).
    expiry: float = 5 * 86400.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed try."""
        exponent = min(max(attempts - 1, 0), 64)
        return float(min(self.maximum, self.initial * self.factor**exponent))


@dataclass(frozen=True, slots=True)
class Result:
    """What one try said about one recipient."""

    code: int
    text: str
    enhanced: str = ""
    remote_mta: str = ""


def due(envelope: Envelope, now: float) -> list[RecipientState]:
    """The pending recipients whose time has come."""
    return [r for r in envelope.pending() if r.next_try <= now]


def next_wakeup(envelopes: Iterable[Envelope]) -> float | None:
    """The earliest next try of any pending recipient (None: nothing pending)."""
    times = [r.next_try for e in envelopes for r in e.pending()]
    return min(times) if times else None


def _status(result: Result) -> str:
    if result.enhanced:
        return result.enhanced
    return f"{str(result.code)[0]}.0.0"


def record(
    envelope: Envelope, results: dict[str, Result], now: float, policy: RetryPolicy
) -> list[RecipientState]:
    """Apply one try's ``results`` (keyed by address); returns the recipients that
    failed now (their reports are due)."""
    failed = []
    for rcpt in envelope.recipients:
        result = results.get(rcpt.address)
        if result is None or rcpt.status != PENDING:
            continue
        rcpt.reply = f"{result.code} {result.text}".strip()[:2048]
        rcpt.remote_mta = result.remote_mta
        if 200 <= result.code < 300:
            rcpt.status = DONE
            continue
        rcpt.attempts += 1
        rcpt.dsn_status = _status(result)
        if result.code >= 500:
            rcpt.status = FAILED
            rcpt.next_try = now  # when it failed: the report's date
            failed.append(rcpt)
        else:
            rcpt.next_try = now + policy.delay(rcpt.attempts)
    return failed + expire(envelope, now, policy)


def expire(envelope: Envelope, now: float, policy: RetryPolicy) -> list[RecipientState]:
    """Fail the pending recipients whose message has been queued too long."""
    if now < envelope.created + policy.expiry:
        return []
    out = []
    for rcpt in envelope.pending():
        rcpt.status = FAILED
        rcpt.next_try = now
        rcpt.dsn_status = "4.4.7"
        rcpt.reply = f"delivery expired; last reply: {rcpt.reply or 'none'}"[:2048]
        out.append(rcpt)
    return out


__all__ = ["Result", "RetryPolicy", "due", "expire", "next_wakeup", "record"]
