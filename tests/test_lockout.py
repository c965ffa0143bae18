"""Lockout cannot be weaponised: a third party's wrong passwords hold back the guesser,
not the account's owner (end to end: a real server, its tunnel over TLS, the LAN port).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import ssl
import sys

import pytest
import trio
from serve_helpers import start_server

from clients.api import connect
from mapi.model import errors

PASSWORDS = {"alice": "correct horse"}


async def basic_attempt(tunnel_port: int, source: str, user: str, password: str) -> int:
    """One HTTP/1.1 RPC_IN_DATA request with Basic credentials, from ``source``; the
    status code of the answer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tcp = await trio.open_tcp_stream("127.0.0.1", tunnel_port, local_address=source)
    stream = trio.SSLStream(tcp, context, server_hostname="localhost")
    try:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        await stream.send_all(
            (
                "RPC_IN_DATA /rpc/rpcproxy.dll?localhost:593 HTTP/1.1\r\n"
                "Host: localhost\r\n"
                f"Authorization: Basic {token}\r\n"
                "Content-Length: 1073741824\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            head += chunk
        return int(head.split(b" ", 2)[1])
    finally:
        await trio.aclose_forcefully(stream)


async def test_a_third_party_cannot_lock_the_owner_out(nursery, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server = await start_server(nursery, tmp_path / "data", PASSWORDS)
    tunnel = server.tunnel
    with trio.fail_after(60):
        # Twelve wrong passwords through the tunnel, from an address of its own.
        statuses = [
            await basic_attempt(tunnel.port, "127.0.0.2", "alice", f"guess {i}") for i in range(12)
        ]
        assert set(statuses) == {401}
        # The guesser is held back now, even with the right password...
        assert await basic_attempt(tunnel.port, "127.0.0.2", "alice", "correct horse") == 401
        # ...the owner is not: on the LAN,
        lan = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
        async with connect(lan, "alice", "correct horse") as session:
            await session.open_store()
        # through the tunnel from her own address,
        url = f"https://127.0.0.1:{tunnel.port}/?epm={server.epm_port}"
        async with connect(url, "alice", "correct horse", fingerprint=tunnel.fingerprint) as s:
            await s.open_store()
        # and a guess at her from the LAN still fails as a wrong password does.
        with pytest.raises(errors.LogonFailed):
            async with connect(lan, "alice", "wrong"):
                pass
    # Every failed tunnel logon names the client's address.
    failures = [r.getMessage() for r in caplog.records if "failed tunnel logon" in r.getMessage()]
    assert failures and all("127.0.0.2" in line for line in failures), failures


async def test_the_cli_prints_the_servers_reason_for_a_refused_logon(nursery, tmp_path):
    # The reason travels in the store's logon answer: on a connection without NTLM
    # ([rpc] min_auth_level = "none"). An NTLM refusal is the protocol's bare
    # access-denied fault, which says nothing more (the test below).
    server = await start_server(nursery, tmp_path / "data", PASSWORDS, min_auth_level="none")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
    env.update(
        MAPI_SERVER=f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]",
        MAPI_USER="alice",
        MAPI_PASSWORD="wrong",
        MAPI_AUTH_LEVEL="none",
    )
    lines = []
    with trio.fail_after(120):
        # Five free failures, then delays that double (1 s, 2 s, ...): bounded tries
        # until the throttle answers (a try may come after a short delay has passed).
        while len(lines) < 12 and "too many failed logons" not in "".join(lines):
            result = await trio.run_process(
                [sys.executable, "-m", "clients.cli", "tree"],
                env=env, capture_stderr=True, check=False,
            )  # fmt: skip
            assert result.returncode != 0
            lines.append(result.stderr.decode().strip())
    assert "wrong user name or password" in lines[0], lines
    assert re.search(r"too many failed logons; try again in [1-9]\d* s", lines[-1]), lines


async def test_the_cli_says_what_an_ntlm_refusal_may_mean(nursery, tmp_path):
    server = await start_server(nursery, tmp_path / "data", PASSWORDS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
    env.update(
        MAPI_SERVER=f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]",
        MAPI_USER="alice",
        MAPI_PASSWORD="wrong",
    )
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "clients.cli", "tree"],
            env=env, capture_stderr=True, check=False,
        )  # fmt: skip
    line = result.stderr.decode().strip()
    assert result.returncode != 0
    assert "wrong user name or password" in line and "mapi-anywhere passwd" in line, line


async def test_tunnel_sessions_carry_the_clients_address(nursery, tmp_path):
    """The store sees a tunnel client's own address (it throttles and lists by it), and
    the tunnel can ask, before queueing a check, whether the throttle holds a guesser
    back."""
    server = await start_server(nursery, tmp_path / "data", PASSWORDS)
    tunnel = server.tunnel
    url = f"https://127.0.0.1:{tunnel.port}/?epm={server.epm_port}"
    with trio.fail_after(60):
        async with connect(url, "alice", "correct horse", fingerprint=tunnel.fingerprint) as s:
            await s.open_store()
            [info] = server.store_service.list_sessions()
            assert (info.user, info.transport, info.address) == ("alice", "tunnel", "127.0.0.1")
        for i in range(5):
            assert await basic_attempt(tunnel.port, "127.0.0.3", "alice", f"guess {i}") == 401
        authenticator = server.authenticator
        assert authenticator.refuses("alice", "127.0.0.3")
        assert not authenticator.refuses("alice", "127.0.0.1")
        assert authenticator.throttle is server.store_service.throttle  # one for all paths
