"""The client's address-book API (:mod:`clients.addressbook`) and ``mapi-cli resolve``,
``gal`` and ``send --to NAME`` end to end: a real ``serve`` on loopback with users that
have display names and details, reached on the LAN (endpoint mapper, then NTLM at
privacy) and through the HTTPS tunnel (endpoint mapper behind it, the tunnel's auth
level). Every test is bounded by ``fail_after``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from clients.api import (
    AddressBook,
    Entry,
    TooManyMatches,
    address_book_for,
    connect,
    open_address_book,
)
from mapi.model import errors
from tests.serve_helpers import start_server

ROOT = Path(__file__).resolve().parent.parent
USERS = {
    "alice": "pw-alice-1",
    "bob": "pw-bob-1",
    "bobby": "pw-bobby-1",
    "carol": "pw-carol-1",
    "hidden": "pw-hidden-1",
}
DETAILS: dict[str, dict[str, Any]] = {
    "alice": {"display_name": "Alice Archer", "title": "Engineer", "department": "R&D"},
    "bob": {"display_name": "Bob Builder", "office": "B-12", "phone": "+1 555 0100"},
    "bobby": {"display_name": "Bobby Tables", "company": "Example Ltd"},
    "carol": {"display_name": "Carol Cole"},
    "hidden": {"display_name": "Hidden Harry", "hidden": True},
}


@pytest.fixture
async def server(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "data", USERS, emails=True)
    directory = running.store.directory
    for user, fields in DETAILS.items():
        await trio.to_thread.run_sync(lambda u=user, f=fields: directory.update_user(u, **f))
    await running.gal.refresh()
    return running


def lan(server: Any) -> str:
    return f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"


async def expected_names(server: Any) -> list[str]:
    users = await trio.to_thread.run_sync(server.store.directory.list_users)
    return sorted(
        (u.display_name for u in users if not u.hidden and not u.disabled), key=str.casefold
    )


async def exercise(book: AddressBook, server: Any) -> None:
    names = await expected_names(server)
    # Paging: every visible user once, in display-name order, hidden ones absent.
    page = await book.gal_page(0, 2)
    assert page.total == len(names) and [e.display_name for e in page.entries] == names[:2]
    page2 = await book.gal_page(2, 2)
    assert [e.display_name for e in page2.entries] == names[2:4]
    assert all(e.mid >= 0x1000 for e in page.entries + page2.entries)
    assert [e.display_name async for e in book.gal(page_rows=2)] == names
    assert (await book.gal_page(len(names) + 5, 3)).entries == []
    # Search: a display-name prefix, any case; ANR.
    found = await book.search("bo")
    assert [e.display_name for e in found] == ["Bob Builder", "Bobby Tables"]
    assert [e.display_name for e in await book.search("carol@example.org", anr=True)] == [
        "Carol Cole"
    ]
    assert await book.search("harry") == []
    with pytest.raises(TooManyMatches):
        await book.search("", limit=1)
    # Resolution: resolved, ambiguous (with candidates), unknown.
    res = await book.resolve(["carol", "Bob", "bo", "nobody", "Hidden Harry"])
    assert [r.status for r in res] == ["resolved", "resolved", "ambiguous", "unknown", "unknown"]
    carol = res[0].entry
    assert carol is not None and carol.smtp_address == "carol@example.org"
    assert [c.display_name for c in res[2].candidates] == ["Bob Builder", "Bobby Tables"]
    # Details: by entry, by MId, by DN.
    bob = next(e for e in found if e.account == "bob")
    got = await book.details(bob)
    assert (got.display_name, got.smtp_address, got.office, got.phone) == (
        "Bob Builder", "bob@example.org", "B-12", "+1 555 0100"
    )  # fmt: skip
    assert got.title is None and got.dn is not None and got.dn.endswith("/cn=bob")
    alice = await book.details(next(e for e in page.entries if e.account == "alice").mid)
    assert (alice.title, alice.department) == ("Engineer", "R&D")
    assert (await book.details(got.dn)).account == "bob"
    with pytest.raises(errors.NotFound):
        await book.details("/o=nowhere/cn=nobody")


async def test_address_book_on_the_lan(server):
    with trio.fail_after(60):
        async with open_address_book(lan(server), "alice", USERS["alice"]) as book:
            assert book.rpc.core is not None
            await exercise(book, server)
        assert server.addressbook.bind_count == 0  # unbound on exit


async def test_address_book_through_the_tunnel(server):
    tunnel = server.tunnel
    url = f"https://127.0.0.1:{tunnel.port}/?epm={server.epm_port}"
    with trio.fail_after(60):
        async with open_address_book(
            url, "alice", USERS["alice"], fingerprint=tunnel.fingerprint
        ) as book:
            await exercise(book, server)
        # At privacy through the tunnel too, when asked.
        async with open_address_book(
            url, "bob", USERS["bob"], fingerprint=tunnel.fingerprint, auth_level="privacy"
        ) as book:
            assert (await book.resolve(["alice"]))[0].status == "resolved"


async def test_from_a_session_and_wrong_password(server):
    with trio.fail_after(60):
        async with (
            connect(lan(server), "carol", USERS["carol"]) as session,
            address_book_for(session) as book,
        ):
            [res] = await book.resolve(["alice@example.org"])
            assert isinstance(res.entry, Entry) and res.entry.account == "alice"
        with pytest.raises(errors.LogonFailed):
            async with open_address_book(lan(server), "alice", "wrong"):
                pass


# -- mapi-cli resolve, gal, send --to NAME (subprocesses, as a user runs them) ---------


async def cli(server: Any, *args: str, user: str = "alice", via: str = "lan") -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
    env["MAPI_PASSWORD"] = USERS[user]
    if via == "lan":
        where = ["--server", lan(server)]
    else:
        tunnel = server.tunnel
        url = f"https://127.0.0.1:{tunnel.port}/?epm={server.epm_port}"
        where = ["--server", url, "--fingerprint", tunnel.fingerprint]
    command = [sys.executable, "-m", "clients.cli", *where, "--user", user, *args]
    with trio.fail_after(60):
        result = await trio.run_process(
            command, cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result


@pytest.mark.parametrize("via", ["lan", "tunnel"])
async def test_cli_resolve_and_gal(server, via):
    result = await cli(server, "resolve", "carol", "bo", "nobody", via=via)
    assert result.returncode == 1  # not every name resolved to one entry
    lines = result.stdout.decode().splitlines()
    assert lines == [
        "'carol': Carol Cole <carol@example.org>",
        "'bo': ambiguous: Bob Builder <bob@example.org>, Bobby Tables <bobby@example.org>",
        "'nobody': unknown",
    ]
    result = await cli(server, "resolve", "alice@example.org", via=via)
    assert result.returncode == 0
    assert result.stdout.decode().strip() == "'alice@example.org': Alice Archer <alice@example.org>"

    result = await cli(server, "gal", via=via)
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert text.splitlines()[0].split()[:2] == ["NAME", "ADDRESS"]
    assert "Engineer" in text and "Hidden Harry" not in text
    result = await cli(server, "gal", "--json", via=via)
    data = json.loads(result.stdout)
    names = [e["display_name"] for e in data["entries"]]
    assert names == await expected_names(server) and data["total"] == len(names)
    result = await cli(server, "gal", "--search", "BO", "--json", via=via)
    data = json.loads(result.stdout)
    assert [e["account"] for e in data["entries"]] == ["bob", "bobby"]
    result = await cli(server, "gal", "--limit", "2", "--offset", "1", "--json", via=via)
    assert [e["display_name"] for e in json.loads(result.stdout)["entries"]] == names[1:3]


async def test_cli_help():
    for command in ("resolve", "gal"):
        result = await trio.run_process(
            [sys.executable, "-m", "clients.cli", command, "--help"],
            cwd=ROOT,
            capture_stdout=True,
            check=False,
        )
        assert result.returncode == 0
        assert f"usage: mapi-cli {command}".encode() in result.stdout
    assert b"--search" in result.stdout


async def test_cli_send_to_names(server):
    result = await cli(
        server, "send", "outbox", "--subject", "hello", "--to", "bo", "--cc", "nobody",
        "--to", "carol@example.org",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        "mapi-cli: 'bo': ambiguous: Bob Builder <bob@example.org>, "
        "Bobby Tables <bobby@example.org>",
        "mapi-cli: 'nobody': unknown",
    ]
    result = await cli(server, "send", "outbox", "--subject", "hello", "--to", "Bob Builder",
                       "--cc", "carol", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["delivered"] == 2
    result = await cli(server, "create", "drafts", "--subject", "draft", "--to", "carol",
                       "--json", via="tunnel")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    # Bob's Inbox has the message, addressed with his display name and SMTP address.
    listing = await cli(server, "ls", "inbox", "--json", "--columns",
                        "PR_SUBJECT,PR_DISPLAY_TO", user="bob")  # fmt: skip
    assert listing.returncode == 0, listing.stderr.decode()
    assert "Bob Builder" in listing.stdout.decode() and "hello" in listing.stdout.decode()
