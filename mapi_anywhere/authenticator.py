"""The tunnel's HTTP Basic authenticator, checked against the user directory.

A full check costs a scrypt derivation (memory-hard, on purpose), and every channel
of the tunnel authenticates; so:

- a successful check is remembered for ``ttl`` seconds as an HMAC of the credentials
  under a per-process key (never the password itself); :meth:`is_cached` answers from
  that memory without a check, so the tunnel can let a known-good request past a
  queue of unknown ones, and :meth:`invalidate` forgets a user at once (``passwd`` and
  ``deluser`` on the running server call it);
- checks run on their own :class:`trio.CapacityLimiter` (``checks``, shared with the
  store's logons: by default as many as there are cores), never on the worker threads
  store batches use, so a flood of guesses cannot starve the store, nor the store a
  logon;
- the shared :class:`~mapi.access.throttle.LogonThrottle` is asked first, for the user *and
  the client address*, and told the outcome: a guesser is refused early without a
  check, the account's owner elsewhere is not; :meth:`refuses` lets the tunnel ask
  before it queues the check at all.

A successful check also completes the migration of an account whose password predates
NTLM: the password is at hand, so its NT hash is stored then
(:meth:`~mapi.access.directory.Directory.fill_nt_hash`) and NTLM works for the user
from then on.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable

import trio

from mapi.access.throttle import LogonThrottle
from mapi.model import errors as mapi_errors
from mapi.store import ObjectStore

log = logging.getLogger("mapi_anywhere.auth")


class DirectoryAuthenticator:
    """Checks HTTP Basic credentials of the tunnel against the user directory."""

    def __init__(
        self,
        store: ObjectStore,
        throttle: LogonThrottle,
        checks: trio.CapacityLimiter,
        ttl: float = 60.0,
        max_entries: int = 4096,
        *,
        lookup_nt_hash: Callable[[str, str], bytes | None] | None = None,
    ) -> None:
        self.store = store
        self._lookup_nt_hash = lookup_nt_hash
        self.throttle = throttle
        self.checks = checks
        self.ttl = ttl
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._recent: dict[str, tuple[bytes, float]] = {}

    def _digest(self, user: str, password: str) -> bytes:
        material = user.encode() + b"\x00" + password.encode()
        return hmac.new(self._key, material, hashlib.sha256).digest()

    def is_cached(self, user: str, password: str) -> bool:
        """True when these credentials passed a full check less than ``ttl`` ago."""
        cached = self._recent.get(user)
        if cached is None or cached[1] <= trio.current_time():
            return False
        return hmac.compare_digest(cached[0], self._digest(user, password))

    def refuses(self, user: str, address: str | None) -> bool:
        """True when the throttle holds this user back at this address now: the tunnel
        then answers 401 without queueing a check (a guesser's attempts never wait
        among, or delay, real checks)."""
        wait = self.throttle.delay(user, address, trio.current_time())
        if wait > 0:
            log.info(
                "tunnel logon of %r from %s refused: too many failures (%.0f s left)",
                user, address, wait,
            )  # fmt: skip
        return wait > 0

    def lookup_nt_hash(self, user: str, domain: str) -> bytes | None:
        """The NT hash of ``user`` for the tunnel's NTLM and Negotiate (from memory, on the
        event loop); None when unknown, disabled, or kept no hash yet. Without a lookup
        (a store with no NTLM) the tunnel offers Basic only."""
        if self._lookup_nt_hash is None:
            return None
        return self._lookup_nt_hash(user, domain)

    def ntlm_failed(self, user: str | None, address: str | None) -> None:
        """A failed NTLM handshake on the tunnel counts in the logon throttle, like a
        failed Basic check."""
        self.throttle.failed(user, address, trio.current_time())
        log.info("failed tunnel NTLM logon of %r from %s", user, address)

    def ntlm_succeeded(self, user: str, address: str | None) -> None:
        """A successful NTLM handshake on the tunnel clears the throttle's count."""
        self.throttle.succeeded(user, address, trio.current_time())

    def invalidate(self, user: str) -> None:
        """Forget ``user``'s remembered credentials (password changed, user deleted)."""
        self._recent.pop(user, None)

    async def _migrate(self, username: str, password: str) -> None:
        """Keep the NT hash of an account that has none yet (see the module docstring)."""
        known, digest = self.store.directory.cached_nt_hash(username)
        if not known or digest is not None:
            return
        try:
            filled = await trio.to_thread.run_sync(
                self.store.directory.fill_nt_hash, username, password, limiter=self.checks
            )
        except mapi_errors.MapiError as exc:  # the logon stands; NTLM waits for passwd
            log.warning("could not keep the NT hash of %s: %s", username, exc)
            return
        if filled:
            log.info("kept the NT hash of %s at its tunnel logon: NTLM works for it now", username)

    async def __call__(
        self, user: str, password: str, address: str | None, *, door: str = "tunnel"
    ) -> bool:
        """Check ``user``'s password for a client at ``address``; ``door`` names the
        listener in the log (the tunnel; "submission" for SMTP AUTH)."""
        if self.is_cached(user, password):
            return True
        now = trio.current_time()
        wait = self.throttle.delay(user, address, now)
        if wait > 0:  # too many recent failures: do not even check
            log.warning(
                "%s logon of %r from %s refused: too many failures (%.0f s left)",
                door, user, address, wait,
            )  # fmt: skip
            return False
        try:
            session = await trio.to_thread.run_sync(
                self.store.logon_with_password, user, password, limiter=self.checks
            )
        except mapi_errors.MapiError:
            self.throttle.failed(user, address, trio.current_time())
            log.info("failed %s logon of %r from %s", door, user, address)
            return False
        self.throttle.succeeded(user, address, trio.current_time())
        session.logoff()
        await self._migrate(session.user.username, password)
        if len(self._recent) >= self.max_entries:
            self._recent.clear()
        self._recent[user] = (self._digest(user, password), now + self.ttl)
        return True
