"""Password logons of the mail doors, throttled like every other logon of the server.

Theory of operation
-------------------
:class:`Logons` checks a user name (login name or e-mail address) and password with
:meth:`mapi.store.ObjectStore.logon_with_password` and returns the
:class:`~mapi.store.Session`. With a :class:`~mapi.access.throttle.LogonThrottle` (the
one ``serve`` shares with the store interface and the tunnel), an attempt the throttle
holds back is refused without checking the password, and each outcome is reported to
it, by user and client address. The throttle is pure and single-threaded; the mail
doors call from worker threads, so its calls are made under one lock here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mapi.access.throttle import LogonThrottle
from mapi.model import errors
from mapi.store import ObjectStore, Session


class Logons:
    """Throttled password checks against the store's directory (thread-safe)."""

    def __init__(
        self,
        store: ObjectStore,
        throttle: LogonThrottle | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.throttle = throttle
        self.clock = clock
        self._lock = threading.Lock()

    def login_name(self, user: str) -> str:
        """The login name of ``user`` (a login name or an e-mail address)."""
        record = self.store.directory.find_by_address(user)
        return user if record is None else record.username

    def logon(self, user: str, password: str, address: str | None = None) -> Session | None:
        """A session of ``user`` when the password is right and the throttle lets the
        attempt through; None otherwise (never says which)."""
        throttle = self.throttle
        if throttle is not None:
            with self._lock:
                if throttle.delay(user, address, self.clock()) > 0:
                    return None
        try:
            session = self.store.logon_with_password(self.login_name(user), password)
        except errors.LogonFailed:
            session = None
        except errors.MapiError:
            return None  # a session limit, a store failure: not the client's guess
        if throttle is not None:
            with self._lock:
                if session is None:
                    throttle.failed(user, address, self.clock())
                else:
                    throttle.succeeded(user, address, self.clock())
        return session


__all__ = ["Logons"]
