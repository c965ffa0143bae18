"""``mapi-cli share`` and ``mapi-cli permissions`` end to end: a real server on loopback
(in process, two users), the CLI run as a subprocess exactly as a user runs it, and the
other user's view checked through the client library. Nothing asserts durations."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio
from serve_helpers import start_server

from clients.api import connect
from mapi.model import errors

PASSWORDS = {"alice": "correct horse", "bob": "battery staple"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(nursery, tmp_path / "data", PASSWORDS, emails=True)


def address(server) -> str:
    return f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"


async def cli(server, user: str, *args: str) -> tuple[int, str, str]:
    """Run ``mapi-cli`` as ``user``; (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
    env.update(MAPI_SERVER=address(server), MAPI_USER=user, MAPI_PASSWORD=PASSWORDS[user])
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "clients.cli", *args],
            cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_share_list_and_revoke(server) -> None:
    status, out, err = await cli(server, "alice", "share", "inbox", "bob", "reviewer")
    assert status == 0, err
    assert out.strip() == "inbox: bob is reviewer (rights 0x401)"
    status, out, err = await cli(server, "alice", "permissions", "inbox")
    assert status == 0, err
    assert out.split() == ["MEMBER", "ROLE", "RIGHTS", "bob", "reviewer", "0x401"]
    # Bob now opens Alice's store and reads her Inbox; her other folders stay closed.
    with trio.fail_after(30):
        async with connect(address(server), "bob", PASSWORDS["bob"]) as bob:
            store = await bob.open_store("alice")
            inbox = await store.open_folder(await store.special_folder("inbox"))
            assert [row async for row in inbox.contents(["PR_SUBJECT"])] == []
            with pytest.raises(errors.NoAccess):
                await store.open_folder(await store.special_folder("sent"))
    # By e-mail address, JSON output, then "none" takes it back.
    status, out, err = await cli(
        server, "alice", "--json", "share", "inbox", "bob@example.org", "editor"
    )
    assert status == 0, err
    assert json.loads(out)["rights"] == 0x47B
    status, out, err = await cli(server, "alice", "--json", "permissions", "inbox")
    [member] = json.loads(out)["members"]
    assert (member["member"], member["role"], member["rights"]) == ("bob", "editor", 0x47B)
    status, out, err = await cli(server, "alice", "share", "inbox", "bob", "none")
    assert status == 0, err
    assert out.strip() == "inbox: bob has no access any more"
    status, out, err = await cli(server, "alice", "permissions", "inbox")
    assert out.strip() == "inbox: not shared"
    with trio.fail_after(30):
        async with connect(address(server), "bob", PASSWORDS["bob"]) as bob:
            with pytest.raises(errors.NoAccess):
                await bob.open_store("alice")


async def test_share_refuses_unknown_users_and_roles(server) -> None:
    status, out, err = await cli(server, "alice", "share", "inbox", "mallory", "reviewer")
    assert status == 1
    assert "MAPI_E_NOT_FOUND" in err and "no user 'mallory'" in err
    status, out, err = await cli(server, "alice", "share", "inbox", "bob", "boss")
    assert status == 2
    assert "unknown role 'boss'" in err and "reviewer" in err
    status, out, err = await cli(server, "alice", "permissions", "inbox")
    assert out.strip() == "inbox: not shared"


async def test_open_store_over_rpc_does_not_enumerate_users(server) -> None:
    """An unknown user and a user who shares nothing answer alike on the wire."""
    answers = []
    with trio.fail_after(30):
        async with connect(address(server), "alice", PASSWORDS["alice"]) as alice:
            await alice.open_store()  # her mailbox exists: its (empty) ACL is read
        async with connect(address(server), "bob", PASSWORDS["bob"]) as bob:
            for owner in ("alice", "nobody"):
                with pytest.raises(errors.MapiError) as caught:
                    await bob.open_store(owner)
                answers.append((caught.value.hresult, str(caught.value)))
    assert answers[0] == answers[1]
    assert answers[0][0] == errors.Hresult.MAPI_E_NO_ACCESS
