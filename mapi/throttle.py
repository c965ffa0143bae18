"""Brute-force protection for logons: failures slow down further attempts.

Theory of operation
-------------------
Every logon path (the store interface's challenge-response and the tunnel's HTTP
Basic authentication) asks :meth:`LogonThrottle.delay` before checking a password
and reports the outcome with :meth:`failed` or :meth:`succeeded`. Failures are
counted per user name and per client address, separately: after ``free_failures``
failures, each further attempt must wait ``base_delay * 2**(extra failures)``
seconds (capped at ``max_delay``) after the previous failure. An attempt made too
early is refused without checking the password, so guessing costs the attacker
time, while the account's owner is only delayed, never locked out for good (a
permanent lockout would let anyone disable any account). Counters are forgotten
``window`` seconds after the last failure, and on success for that user and address.

The module is pure: time comes in as ``now`` (seconds, any monotonic clock), and the
table is bounded (``max_entries``; the oldest entries go first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float


class LogonThrottle:
    """Per-user and per-address failure counters with exponential delays."""

    def __init__(
        self,
        *,
        free_failures: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        window: float = 3600.0,
        max_entries: int = 100_000,
    ) -> None:
        if free_failures < 0 or base_delay <= 0 or max_delay < base_delay or window <= 0:
            raise ValueError("invalid throttle settings")
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.window = window
        self.max_entries = max_entries
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    @staticmethod
    def _keys(user: str | None, address: str | None) -> list[tuple[str, str]]:
        keys = [] if user is None else [("user", user.strip().lower())]
        if address:
            keys.append(("address", address))
        return keys

    def _wait(self, record: _Record, now: float) -> float:
        if now - record.last_failure > self.window:
            return 0.0
        extra = record.failures - self.free_failures
        if extra < 0:
            return 0.0
        delay = min(self.base_delay * 2.0 ** min(extra, 40), self.max_delay)
        return max(0.0, record.last_failure + delay - now)

    def delay(self, user: str, address: str | None, now: float) -> float:
        """Seconds to wait before this user may try from this address (0: go ahead)."""
        waits = [0.0]
        for key in self._keys(user, address):
            record = self._records.get(key)
            if record is not None:
                waits.append(self._wait(record, now))
        return max(waits)

    def failed(self, user: str | None, address: str | None, now: float) -> None:
        """Count a failed attempt (``user`` None: an answer to no known challenge, which
        counts against the address only)."""
        for key in self._keys(user, address):
            record = self._records.pop(key, None)
            if record is None or now - record.last_failure > self.window:
                record = _Record(0, now)
            record.failures += 1
            record.last_failure = now
            self._records[key] = record  # most recent last
        while len(self._records) > self.max_entries:
            self._records.popitem(last=False)

    def succeeded(self, user: str, address: str | None) -> None:
        """Forget the user's failures, and forgive as many at the address.

        Only as many: the address also counts guesses at other accounts, which a valid
        logon of one's own must not wipe out (or an account holder could reset the
        address's count between guesses).
        """
        (user_key, *address_key) = self._keys(user, address)
        forgiven = self._records.pop(user_key, None)
        if forgiven is None or not address_key:
            return
        record = self._records.get(address_key[0])
        if record is not None:
            record.failures = max(0, record.failures - forgiven.failures)
