"""The POP3 door of ``serve``: STLS (110) and implicit TLS (995) listeners.

Both run :func:`internet_mail.pop3.driver.serve_pop3` over the store-backed backends
(:class:`internet_mail.store.Pop3StoreBackends`, one per connection), with serve's TLS
certificate (the tunnel's) and serve's logon throttle, so a password guesser is slowed
down here as on every other door. The two listeners share one connection limit and one
pool of worker threads (every call into the core runs in one: the store blocks).
"""

from __future__ import annotations

import functools
import logging

import trio

from internet_mail.pop3.driver import ConnectionGate, DriverLimits, serve_pop3
from internet_mail.store import Pop3StoreBackends
from mapi.access.throttle import LogonThrottle
from mapi.store import ObjectStore
from mapi_anywhere.config import Config
from mapi_anywhere.listening import listening, mail_tls_context, port_of

log = logging.getLogger("mapi_anywhere.pop3")

#: Worker threads for the POP3 connections' store work at once (both listeners).
POP3_THREADS = 8


async def start_pop3(
    nursery: trio.Nursery, config: Config, store: ObjectStore, throttle: LogonThrottle | None
) -> tuple[int, int]:
    """Start the POP3 listeners (STLS and implicit TLS); returns their ports."""
    section = config.pop3
    ctx = await mail_tls_context(config, section.host)
    # The throttle's clock is trio's, as for the other doors' logons (the worker
    # threads read it: SystemClock.current_time is a plain function of perf_counter).
    backends = Pop3StoreBackends(
        store, throttle=throttle, clock=trio.lowlevel.current_clock().current_time
    )
    limits = DriverLimits(max_connections=section.max_connections)
    gate = ConnectionGate(section.max_connections)
    limiter = trio.CapacityLimiter(POP3_THREADS)
    ports = []
    for implicit, port, key, flag in (
        (False, section.port, "[pop3] port", "--pop3-port"),
        (True, section.tls_port, "[pop3] tls_port", "--pop3s-port"),
    ):
        listeners = await listening(
            functools.partial(
                nursery.start,
                functools.partial(
                    serve_pop3, lambda peer: backends.new(_address(peer)), port, section.host,
                    ssl_context=ctx, implicit_tls=implicit, driver_limits=limits, gate=gate,
                    limiter=limiter,
                ),
            ),
            f"POP3 listener ({'implicit TLS' if implicit else 'STLS'})", section.host, port,
            key, f"{flag} (or --no-pop3)",
        )  # fmt: skip
        ports.append(port_of(listeners))
    log.info("POP3 listening on %s:%d (STLS) and %d (TLS)", section.host, *ports)
    return ports[0], ports[1]


def _address(peer: str) -> str | None:
    """The client's address for the throttle (None: the driver could not tell)."""
    return None if peer == "unknown" else peer


__all__ = ["POP3_THREADS", "start_pop3"]
