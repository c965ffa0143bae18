"""Brute-force protection for logons: throttle the guesser, not the victim.

Theory of operation
-------------------
Every logon path (the store interface's challenge-response and the tunnel's HTTP
Basic authentication) asks :meth:`LogonThrottle.delay` before checking a password
and reports the outcome with :meth:`failed` or :meth:`succeeded`. An attempt made too
early is refused without checking the password. Three counters decide, each with
exponential delays (``base_delay * 2**(failures - free)``, capped) after the last
failure, forgotten ``window`` seconds after it:

``(user, address)``
    The guesser: failures at one account from one client address. ``free_failures``
    free, then up to ``max_delay``. This is the counter that stops a guesser, and it
    touches nobody else: the account's owner at another address is not delayed by it.
``address``
    One address spraying guesses over many accounts: ``address_free_failures`` free
    (more than the pair's, so a few typos of one's own never matter), then up to
    ``max_delay``. An address is never delayed for a failure at another address.
``user``, the softer per-user ceiling
    Many addresses guessing one account (a botnet). ``user_free_failures`` free, then
    at most ``user_max_delay``; and it applies only to addresses *unfamiliar* for the
    user: an address from which the user logged on successfully within
    ``familiar_for`` seconds is never delayed by it. So a third party can make the
    account slower to reach from new places, for a bounded time per attempt, but can
    never lock its owner out of where they work from ([MS-ADFS]'s "smart lockout"
    idea of familiar and unfamiliar locations).

Addresses are counted by the network a client controls: an IPv6 address by its /64
(one subscriber's network: rotating through it gains nothing), an IPv4-mapped IPv6
address as the IPv4 address. ``address`` None is a caller the server cannot place (a
loopback peer: a local tool); it counts as one address of its own for the pair counter
and is never familiar (so local processes share one guesser's counter per user).

Time comes in as ``now`` (seconds, any monotonic clock, the same one for every
caller), and the tables are bounded (``max_entries`` each; the oldest entries go
first). One throttle serves every door of the server: the store interface and the
tunnel call it from the event loop, the mail doors from worker threads, so each public
method holds the throttle's lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from dcerpc.peers import client_network

_NO_ADDRESS = ""


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float


@dataclass(frozen=True, slots=True)
class _Rule:
    free: int
    cap: float


class LogonThrottle:
    """Failure counters per (user, address), per address and per user (softer)."""

    def __init__(
        self,
        *,
        free_failures: int = 5,
        address_free_failures: int = 20,
        user_free_failures: int = 20,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        user_max_delay: float = 30.0,
        window: float = 3600.0,
        familiar_for: float = 30 * 86400.0,
        max_entries: int = 100_000,
    ) -> None:
        if (
            min(free_failures, address_free_failures, user_free_failures) < 0
            or base_delay <= 0
            or max_delay < base_delay
            or user_max_delay < base_delay
            or window <= 0
            or familiar_for < 0
            or max_entries <= 0
        ):
            raise ValueError("invalid throttle settings")
        self.base_delay = base_delay
        self.window = window
        self.familiar_for = familiar_for
        self.max_entries = max_entries
        self._rules = {
            "pair": _Rule(free_failures, max_delay),
            "address": _Rule(address_free_failures, max_delay),
            "user": _Rule(user_free_failures, user_max_delay),
        }
        self._records: OrderedDict[tuple[str, ...], _Record] = OrderedDict()
        #: (user, address) -> time of the last successful logon.
        self._familiar: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.RLock()

    @staticmethod
    def _user(user: str) -> str:
        return user.strip().lower()

    def _keys(self, user: str | None, address: str | None) -> list[tuple[str, ...]]:
        address = client_network(address) if address else None
        keys: list[tuple[str, ...]] = []
        if user is not None:
            name = self._user(user)
            keys.append(("pair", name, address or _NO_ADDRESS))
            keys.append(("user", name))
        if address:
            keys.append(("address", address))
        return keys

    def is_familiar(self, user: str, address: str | None, now: float) -> bool:
        """Has ``user`` logged on from ``address`` within ``familiar_for`` seconds?"""
        if not address:
            return False
        with self._lock:
            seen = self._familiar.get((self._user(user), client_network(address)))
        return seen is not None and now - seen <= self.familiar_for

    def _wait(self, key: tuple[str, ...], now: float) -> float:
        record = self._records.get(key)
        if record is None or now - record.last_failure > self.window:
            return 0.0
        rule = self._rules[key[0]]
        extra = record.failures - rule.free
        if extra < 0:
            return 0.0
        delay = min(self.base_delay * 2.0 ** min(extra, 40), rule.cap)
        return max(0.0, record.last_failure + delay - now)

    def delay(self, user: str, address: str | None, now: float) -> float:
        """Seconds to wait before this user may try from this address (0: go ahead)."""
        with self._lock:
            familiar = self.is_familiar(user, address, now)
            waits = [0.0]
            for key in self._keys(user, address):
                if key[0] == "user" and familiar:
                    continue
                waits.append(self._wait(key, now))
            return max(waits)

    def failed(self, user: str | None, address: str | None, now: float) -> None:
        """Count a failed attempt (``user`` None: an answer to no known challenge, which
        counts against the address only)."""
        with self._lock:
            self._failed(user, address, now)

    def _failed(self, user: str | None, address: str | None, now: float) -> None:
        keys = self._keys(user, address)
        if user is not None:
            pair = self._records.get(keys[0])
            if (
                pair is not None
                and now - pair.last_failure <= self.window
                and pair.failures >= self._rules["pair"].free
            ):
                # The pair's own counter holds this guesser back already: one address
                # moves the per-user ceiling by ``free_failures`` at most per window.
                keys = [key for key in keys if key[0] != "user"]
        for key in keys:
            record = self._records.pop(key, None)
            if record is None or now - record.last_failure > self.window:
                record = _Record(0, now)
            record.failures += 1
            record.last_failure = now
            self._records[key] = record  # most recent last
        while len(self._records) > self.max_entries:
            self._records.popitem(last=False)

    def succeeded(self, user: str, address: str | None, now: float) -> None:
        """Forget the pair's failures, make the address familiar for the user, and
        forgive as many failures at the address and of the user.

        Only as many: the address also counts guesses at other accounts, and the user
        guesses from other addresses, which a valid logon of one's own must not wipe
        out (or an account holder could reset the address's count between guesses).
        """
        with self._lock:
            self._succeeded(user, address, now)

    def _succeeded(self, user: str, address: str | None, now: float) -> None:
        pair, user_key, *address_key = self._keys(user, address)
        forgiven = self._records.pop(pair, None)
        if address:
            familiar = (self._user(user), client_network(address))
            self._familiar.pop(familiar, None)
            self._familiar[familiar] = now
            while len(self._familiar) > self.max_entries:
                self._familiar.popitem(last=False)
        if forgiven is None:
            return
        for key in (user_key, *address_key):
            record = self._records.get(key)
            if record is not None:
                record.failures = max(0, record.failures - forgiven.failures)
