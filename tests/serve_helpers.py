"""A real ``serve`` for end-to-end tests: the endpoint mapper, the store and the tunnel
on dynamic loopback ports, SQLite files under the test's temporary directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from mapi_anywhere.config import (
    Config,
    EndpointMapperSection,
    ImapSection,
    OutboundSection,
    Pop3Section,
    RpcAuthSection,
    ServerSection,
    SmtpSection,
    StoreSection,
    SubmissionSection,
    TunnelSection,
)
from tunnel.config import TunnelConfig

#: ``serve`` flags that put every mail listener on a free port (0), so a ``serve``
#: subprocess in a test never takes a fixed default port that another run may hold;
#: ``FREE_PORTS`` adds the tunnel. A new listener of ``serve`` adds its flag here.
FREE_MAIL_PORTS = (
    "--smtp-port", "0", "--submission-port", "0", "--submissions-port", "0",
    "--imap-port", "0", "--imaps-port", "0", "--pop3-port", "0", "--pop3s-port", "0",
)  # fmt: skip
FREE_PORTS = ("--tunnel-port", "0", *FREE_MAIL_PORTS)


async def start_server(
    nursery: trio.Nursery,
    data_dir: Path,
    users: Mapping[str, str],
    *,
    emails: bool = False,
    store: StoreSection | None = None,
    min_auth_level: str = "privacy",
    smtp: SmtpSection | None = None,
    submission: SubmissionSection | None = None,
    outbound: OutboundSection | None = None,
    imap: ImapSection | None = None,
    pop3: Pop3Section | None = None,
) -> Any:
    """Start ``run_server`` in ``nursery`` with ``users`` (name -> password) added;
    ``emails`` gives each one ``name@example.org``; ``store`` is the ``[store]``
    section (default: the built-in one); ``min_auth_level`` is ``[rpc]``'s (tests of
    the unauthenticated logon path itself lower it to "none"); ``smtp`` is the
    ``[smtp]`` section (default: no SMTP listener; ``SmtpSection(port=0)`` starts one
    on a free port, ``running.smtp_port``); ``submission`` likewise for
    ``[submission]`` (``SubmissionSection(port=0, tls_port=0)``); ``outbound`` is
    ``[outbound]`` (default: off, so no test looks up a real domain's MX hosts; give one
    with a smarthost on loopback); ``imap`` and ``pop3`` are ``[imap]`` and ``[pop3]``
    (default: off; ``ImapSection(port=0, tls_port=0)`` starts both listeners on free
    ports, ``running.imap_port`` and ``running.imaps_port``). Returns the running server."""
    from mapi_anywhere.serve import run_server

    config = Config(
        server=ServerSection(data_dir=data_dir),
        endpoint_mapper=EndpointMapperSection(port=0),
        store=store or StoreSection(),
        tunnel=TunnelSection(settings=TunnelConfig(port=0)),
        rpc_auth=RpcAuthSection(min_auth_level=min_auth_level),
        smtp=smtp or SmtpSection(enabled=False),
        submission=submission or SubmissionSection(enabled=False),
        outbound=outbound or OutboundSection(enabled=False),
        imap=imap or ImapSection(enabled=False),
        pop3=pop3 or Pop3Section(enabled=False),
    )
    running = await nursery.start(run_server, config)
    for user, password in users.items():
        email = f"{user}@example.org" if emails else None
        await trio.to_thread.run_sync(
            lambda u=user, p=password, e=email: running.store.add_user(u, p, email=e)
        )
    return running
