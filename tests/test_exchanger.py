"""impacket's ``exchanger.py`` (a tool no one here wrote) against our address book
through our HTTPS tunnel: HTTP/1.1, NTLM at the proxy (and at packet privacy inside),
and with ``-basic``.

``exchanger.py`` builds ``ncacn_http:<rpc-hostname>[6004,RpcProxy=<target>:443]``: the
proxy's port is fixed at 443 in the tool, so the tunnel listens on 443 of the loopback
address 127.0.0.3 (root only; skipped with the reason otherwise, or when that port is
taken). With NTLM no ``-rpc-hostname`` is given: the tool takes the NetBIOS name from
the proxy's NTLM CHALLENGE, and the proxy leads ``<that name>:6004`` to NSPI. With
``-basic`` the tool needs a name (impacket refuses Basic without one): ``localhost``.

Each run is a subprocess with a time-out. What it shows, checked against the directory:
``nspi list-tables -count`` lists the GAL and All Users with their counts; ``nspi
dump-tables -name "Global Address List" -lookup-type FULL`` dumps every visible user
with display name, SMTP address, legacy DN, title, department, office, phone, company,
account and object GUID (the hidden one absent); ``nspi guid-known -guid <GUID>`` finds
the user with that object GUID.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from mapi.addressbook.gal import legacy_dn
from mapi_anywhere.config import (
    Config,
    EndpointMapperSection,
    ImapSection,
    Pop3Section,
    RpcAuthSection,
    ServerSection,
    SmtpSection,
    StoreSection,
    SubmissionSection,
    TunnelSection,
)
from tunnel.config import TunnelConfig

HOST = "127.0.0.3"
EXCHANGER = Path(sys.executable).parent / "exchanger.py"
USERS = {"alice": "pw-alice-1", "bob": "pw-bob-1", "carol": "pw-carol-1", "hidden": "pw-h-1"}
DETAILS: dict[str, dict[str, Any]] = {
    "alice": {
        "display_name": "Alice Archer",
        "title": "Engineer",
        "department": "R&D",
        "office": "A-1",
        "phone": "+1 555 0101",
        "company": "Example Ltd",
    },
    "bob": {"display_name": "Bob Builder", "office": "B-12"},
    "carol": {"display_name": "Carol Cole"},
    "hidden": {"display_name": "Hidden Harry", "hidden": True},
}


def _port_443_free() -> str | None:
    """Why the test cannot run here, or None."""
    if os.geteuid() != 0:
        return "exchanger.py fixes the proxy port at 443: needs root to listen there"
    if not EXCHANGER.exists():
        return f"impacket's exchanger.py is not installed ({EXCHANGER})"
    with socket.socket() as s:
        # As the listener will (trio sets it): connections of an earlier run in
        # TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, 443))
        except OSError as exc:
            return f"cannot listen on {HOST}:443: {exc}"
    return None


@pytest.fixture
async def server(nursery, tmp_path):
    reason = _port_443_free()
    if reason:
        pytest.skip(reason)
    from mapi_anywhere.serve import run_server

    config = Config(
        server=ServerSection(data_dir=tmp_path / "data"),
        endpoint_mapper=EndpointMapperSection(port=0),
        smtp=SmtpSection(enabled=False),
        submission=SubmissionSection(enabled=False),
        imap=ImapSection(enabled=False),
        pop3=Pop3Section(enabled=False),
        store=StoreSection(demo_user=False),
        tunnel=TunnelSection(settings=TunnelConfig(host=HOST, port=443)),
        rpc_auth=RpcAuthSection(min_auth_level="privacy"),
    )
    running = await nursery.start(run_server, config)
    directory = running.store.directory
    for user, password in USERS.items():
        await trio.to_thread.run_sync(
            lambda u=user, p=password: running.store.add_user(u, p, email=f"{u}@example.org")
        )
        await trio.to_thread.run_sync(lambda u=user: directory.update_user(u, **DETAILS[u]))
    await running.gal.refresh()
    return running


def _exchanger(*args: str, basic: bool = False) -> str:
    options = ["-basic", "-rpc-hostname", "localhost"] if basic else []
    result = subprocess.run(
        [sys.executable, str(EXCHANGER), *options, f"alice:{USERS['alice']}@{HOST}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Protocol failed" not in out and "Traceback" not in out, out
    return out


async def _run(*args: str, basic: bool = False) -> str:
    with trio.fail_after(150):
        return await trio.to_thread.run_sync(lambda: _exchanger(*args, basic=basic))


@pytest.mark.parametrize("basic", [False, True], ids=["ntlm", "basic"])
async def test_exchanger_through_the_tunnel(server, basic):
    users = await trio.to_thread.run_sync(server.store.directory.list_users)
    visible = [u for u in users if not u.hidden and not u.disabled]

    tables = await _run("nspi", "list-tables", "-count", basic=basic)
    # exchanger.py calls container 0 "Default Global Address List" whatever its name.
    assert f"Default Global Address List\nTotalRecs: {len(visible)}\n" in tables, tables
    assert f"All Users\nTotalRecs: {len(visible)}\n" in tables, tables

    dump = await _run(
        "nspi", "dump-tables", "-name", "Global Address List", "-lookup-type", "FULL",
        basic=basic,
    )  # fmt: skip
    for user in visible:
        assert user.display_name in dump, dump
        assert f"{user.username}@example.org" in dump
        assert legacy_dn("mapi-anywhere", user.username) in dump
        assert str(uuid.UUID(hex=user.user_id)) in dump
    assert "Hidden Harry" not in dump
    for value in DETAILS["alice"].values():
        assert str(value) in dump, value

    bob = next(u for u in visible if u.username == "bob")
    guid = str(uuid.UUID(hex=bob.user_id))
    found = await _run("nspi", "guid-known", "-guid", guid, basic=basic)
    # The tool's default (minimal) columns: account, address, object GUID.
    assert "mailNickname: bob\n" in found, found
    assert "mail: bob@example.org\n" in found
    assert f"objectGUID: {guid}\n" in found
    assert "alice" not in found
