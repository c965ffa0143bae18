"""The IMAP door of ``serve``: STARTTLS (143) and implicit TLS (993) listeners.

Both run :func:`internet_mail.imap.driver.serve_imap` over the store-backed backends
(:class:`internet_mail.store.ImapStoreBackends`, one per connection), with serve's TLS
certificate (the tunnel's) and serve's logon throttle, so a password guesser is slowed
down here as on every other door. The two listeners share one connection limit and one
pool of worker threads (every call into the core runs in one: the store blocks).
"""

from __future__ import annotations

import functools
import logging

import trio

from internet_mail.imap.driver import ConnectionGate, DriverLimits, serve_imap
from internet_mail.store import ImapStoreBackends
from mapi.access.throttle import LogonThrottle
from mapi.store import ObjectStore
from mapi_anywhere.config import Config
from mapi_anywhere.listening import listening, mail_tls_context, port_of

log = logging.getLogger("mapi_anywhere.imap")

#: Worker threads for the IMAP connections' store work at once (both listeners).
IMAP_THREADS = 16


async def start_imap(
    nursery: trio.Nursery, config: Config, store: ObjectStore, throttle: LogonThrottle | None
) -> tuple[int, int]:
    """Start the IMAP listeners (STARTTLS and implicit TLS); returns their ports."""
    section = config.imap
    ctx = await mail_tls_context(config, section.host)
    # The throttle's clock is trio's, as for the other doors' logons (the worker
    # threads read it: SystemClock.current_time is a plain function of perf_counter).
    backends = ImapStoreBackends(
        store, throttle=throttle, clock=trio.lowlevel.current_clock().current_time
    )
    limits = DriverLimits(max_connections=section.max_connections)
    gate = ConnectionGate(section.max_connections)
    limiter = trio.CapacityLimiter(IMAP_THREADS)
    ports = []
    for implicit, port, key, flag in (
        (False, section.port, "[imap] port", "--imap-port"),
        (True, section.tls_port, "[imap] tls_port", "--imaps-port"),
    ):
        listeners = await listening(
            functools.partial(
                nursery.start,
                functools.partial(
                    serve_imap, lambda peer: backends.new(_address(peer)), port, section.host,
                    ssl_context=ctx, implicit_tls=implicit, driver_limits=limits, gate=gate,
                    limiter=limiter,
                ),
            ),
            f"IMAP listener ({'implicit TLS' if implicit else 'STARTTLS'})", section.host, port,
            key, f"{flag} (or --no-imap)",
        )  # fmt: skip
        ports.append(port_of(listeners))
    log.info("IMAP listening on %s:%d (STARTTLS) and %d (TLS)", section.host, *ports)
    return ports[0], ports[1]


def _address(peer: str) -> str | None:
    """The client's address for the throttle (None: the driver could not tell)."""
    return None if peer == "unknown" else peer


__all__ = ["IMAP_THREADS", "start_imap"]
