"""Hostile IMAP clients against the trio driver over the real MAPI store (the backends
``serve`` uses, on a SQLite store in a temporary directory), with small driver limits so
the time bounds show within a test.

tests/test_imap_driver.py covers these over the in-memory backend: ``{4294967295}``,
commands before login, a client that never reads, an IDLE that never ends, too many
connections. Here they meet the store, and the cases it lacks are added: the sequence
sets ``1:4294967295`` and ``*:*`` (resolved against the mailbox, never expanded) in
FETCH, STORE, SEARCH, COPY and EXPUNGE, deep parentheses in SEARCH and FETCH, and after
each hostile client another one is still served (while it is still connected, for the
client that never reads and the endless IDLE)."""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from mail_clients import fill, subject
from mail_helpers import LineClient, client_context, server_context

from internet_mail.imap import ImapLimits
from internet_mail.imap.driver import ConnectionGate, DriverLimits, serve_imap
from internet_mail.mime import mime_to_mapi
from internet_mail.store import ImapStoreBackends
from mapi.access.logon import KdfParams
from mapi.objects.delivery import deliver_mime
from mapi.store import ObjectStore

LIMITS = DriverLimits(login_timeout=2.0, idle_limit=1.0, keepalive=0.3, send_timeout=1.0)
CORE = ImapLimits(max_pending_output=64 * 1024)


@dataclass
class Server:
    plain: int
    tls: int
    store: ObjectStore
    gate: ConnectionGate


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Server]:
    store = ObjectStore(tmp_path / "data", kdf=KdfParams(n=16, r=1, p=1))
    await trio.to_thread.run_sync(lambda: store.add_user("bob", "secret", email="bob@x.org"))
    await trio.to_thread.run_sync(fill, store, "bob@x.org", [subject(n) for n in range(5)])
    ctx = await trio.to_thread.run_sync(server_context, tmp_path)
    backends = ImapStoreBackends(store)
    gate = ConnectionGate(LIMITS.max_connections)
    limiter = trio.CapacityLimiter(4)
    ports = []
    for implicit in (False, True):
        listeners = await nursery.start(
            functools.partial(
                serve_imap, lambda peer: backends.new(None), 0, "127.0.0.1", ssl_context=ctx,
                implicit_tls=implicit, driver_limits=LIMITS, gate=gate, limiter=limiter,
                limits=CORE,
            )
        )  # fmt: skip
        ports.append(listeners[0].socket.getsockname()[1])
    yield Server(ports[0], ports[1], store, gate)


async def login(port: int) -> LineClient:
    client = await LineClient.connect(port, tls=True)
    assert (await client.line()).startswith(b"* OK")
    await client.send(b"L LOGIN bob secret\r\n")
    assert (await client.until(b"L "))[-1].startswith(b"L OK")
    await client.send(b"S SELECT INBOX\r\n")
    assert (await client.until(b"S "))[-1].startswith(b"S OK [READ-WRITE]")
    return client


async def still_served(server: Server) -> None:
    """Another client logs in and reads the mailbox."""
    client = await login(server.tls)
    await client.send(b"C FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    lines = await client.until(b"C ")
    assert lines[-1] == b"C OK FETCH completed", lines
    assert b"Subject: message 0" in b"\n".join(lines)
    await client.send(b"Z LOGOUT\r\n")
    await client.closed()
    await client.aclose()


async def until_closed(gate: ConnectionGate, left: int = 0) -> None:
    while gate.active > left:  # noqa: ASYNC110 (a counter of the driver's, not an event)
        await trio.sleep(0.02)


async def ask(client: LineClient, tag: bytes, command: bytes) -> list[bytes]:
    await client.send(tag + b" " + command + b"\r\n")
    return await client.until(tag + b" ")


async def test_huge_sequence_sets_are_resolved_not_expanded(server: Server) -> None:
    with trio.fail_after(30):
        client = await login(server.tls)
        # Message sequence numbers past the mailbox's: BAD (RFC 9051 section 9, seq-number:
        # "SHOULD respond with a tagged BAD"); UIDs and "*" are resolved instead.
        fetched = await ask(client, b"a", b"FETCH 1:4294967295 (UID FLAGS)")
        assert fetched == [b"a BAD invalid sequence number"]
        fetched = await ask(client, b"a2", b"FETCH 1:* (UID FLAGS)")
        assert len(fetched) == 6 and fetched[-1] == b"a2 OK FETCH completed"  # five messages
        fetched = await ask(client, b"b", b"UID FETCH *:* (UID)")
        assert len(fetched) == 2 and fetched[0].startswith(b"* 5 FETCH (UID "), fetched
        assert await ask(client, b"c", b"UID FETCH 1:4294967295 (FLAGS)") == [
            *(b"* %d FETCH (FLAGS () UID %d)" % (n, n) for n in range(1, 6)),
            b"c OK FETCH completed",
        ]
        searched = await ask(client, b"d", b"SEARCH 1:4294967295 UID 1:4294967295")
        assert searched == [b"* SEARCH 1 2 3 4 5", b"d OK SEARCH completed"]
        stored = await ask(client, b"e", b"STORE *:* +FLAGS.SILENT (\\Seen)")
        assert stored == [b"e OK STORE completed"]
        assert (await ask(client, b"f", b"SEARCH UNSEEN"))[0] == b"* SEARCH 1 2 3 4"
        copied = await ask(client, b"g", b"UID COPY 4294967295:* Archive")
        assert copied[-1].startswith(b"g NO [TRYCREATE]"), copied
        assert (await ask(client, b"h", b"CREATE Archive"))[-1].startswith(b"h OK")
        copied = await ask(client, b"i", b"UID COPY 4294967295:* Archive")
        assert copied[-1].startswith(b"i OK [COPYUID"), copied  # "*" is the last uid: 5
        # A number beyond 32 bits, a zero, a range list past the limit: BAD, no work.
        for tag, command in (
            (b"j", b"FETCH 1:4294967296 FLAGS"),
            (b"k", b"FETCH 0:* FLAGS"),
            (b"l", b"FETCH " + b",".join(b"%d" % n for n in range(1, 3000)) + b" FLAGS"),
        ):
            assert (await ask(client, tag, command))[-1].startswith(tag + b" BAD"), command
        expunged = await ask(client, b"m", b"UID EXPUNGE 1:4294967295")
        assert expunged == [b"m OK EXPUNGE completed"]  # nothing was \Deleted
        await client.aclose()
        await still_served(server)


async def test_deep_parentheses_are_refused(server: Server) -> None:
    with trio.fail_after(30):
        client = await login(server.tls)
        deep = b"(" * 5000 + b"ALL" + b")" * 5000
        assert (await ask(client, b"a", b"SEARCH " + deep))[-1].startswith(b"a BAD")
        nots = b"NOT " * 5000 + b"ALL"
        assert (await ask(client, b"b", b"SEARCH " + nots))[-1].startswith(b"b BAD")
        ors = b"OR " * 3000 + b"ALL " * 3001
        assert (await ask(client, b"c", b"SEARCH " + ors.strip()))[-1].startswith(b"c BAD")
        parts = b".".join([b"1"] * 2000)
        assert (await ask(client, b"d", b"FETCH 1 BODY[" + parts + b"]"))[-1].startswith(b"d BAD")
        # Unbalanced: the command ends inside the parentheses.
        assert (await ask(client, b"e", b"FETCH 1 (" * 100))[-1].startswith(b"e BAD")
        # Within the limit, nesting works.
        ok = await ask(client, b"f", b"SEARCH " + b"(" * 10 + b"SUBJECT message" + b")" * 10)
        assert ok == [b"* SEARCH 1 2 3 4 5", b"f OK SEARCH completed"]
        await client.aclose()
        await still_served(server)


async def test_literals_that_lie_and_commands_before_login(server: Server) -> None:
    with trio.fail_after(30):
        client = await LineClient.connect(server.plain)
        assert b"LOGINDISABLED" in await client.line()
        await client.send(
            b'p AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\na LIST "" *\r\nb SELECT INBOX\r\n'
            b"c STATUS INBOX (MESSAGES)\r\nd LOGIN bob secret\r\ne NOOP\r\n"
        )
        answers = await client.until(b"e ")
        assert [line.split(b" ", 2)[:2] for line in answers] == [
            [b"p", b"NO"], [b"a", b"BAD"], [b"b", b"BAD"], [b"c", b"BAD"], [b"d", b"NO"],
            [b"e", b"OK"],
        ]  # fmt: skip
        # A synchronizing literal of 4 GiB is refused before a byte of it is asked for.
        await client.send(b"f LOGIN {4294967295}\r\n")
        assert (await client.line()).startswith(b"f BAD")
        await client.aclose()

        client = await login(server.tls)
        await client.send(b"g APPEND INBOX {4294967295}\r\n")
        assert (await client.line()).startswith(b"g NO [TOOBIG]")
        # A non-synchronizing one is counted and dropped, never stored: LITERAL+ lets
        # the client send it at once; the rest of the line is then judged.
        junk = b"x" * 100_000
        await client.send(b"h SEARCH SUBJECT {%d+}\r\n%s\r\n" % (len(junk), junk))
        assert (await client.until(b"h "))[-1].startswith(b"h BAD")
        assert (await ask(client, b"i", b"NOOP"))[-1] == b"i OK NOOP completed"
        await client.aclose()
        await still_served(server)


async def test_a_client_that_never_reads(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="internet_mail.imap")
    big = [
        b"Subject: big %d\r\nMessage-ID: <big%d@x>\r\n\r\n" % (n, n) + b"y" * 300_000 + b"\r\n"
        for n in range(4)
    ]

    def deliver_big() -> None:
        for raw in big:
            deliver_mime(
                server.store, ["bob@x.org"], raw,
                convert=lambda raw, limits, when: mime_to_mapi(raw, limits=limits, received=when),
            )  # fmt: skip

    await trio.to_thread.run_sync(deliver_big)
    with trio.fail_after(60):
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server.tls))
        tls = trio.SSLStream(trio.SocketStream(sock), client_context(), server_hostname="localhost")
        await tls.do_handshake()
        flood = b"L LOGIN bob secret\r\nS SELECT INBOX\r\n" + b"F FETCH 1:* BODY[]\r\n" * 300
        with trio.move_on_after(3):  # the server stops reading: our send blocks
            await tls.send_all(flood)
        # While it is stuck, another client is served.
        await still_served(server)
        await until_closed(server.gate)  # dropped after send_timeout
        await trio.aclose_forcefully(tls)
    assert "does not read its responses: closed" in caplog.text
    with trio.fail_after(30):
        await still_served(server)


async def test_an_endless_idle_is_capped(server: Server) -> None:
    with trio.fail_after(30):
        idler = await login(server.tls)
        await idler.send(b"I IDLE\r\n")
        assert (await idler.line()).startswith(b"+ ")
        await still_served(server)  # meanwhile
        rest = await idler.closed()
        await idler.aclose()
        assert b"* OK still here\r\n" in rest
        assert rest.endswith(
            b"* BYE IDLE for too long: re-issue IDLE at least every 29 minutes\r\n"
        )
        # A client silent before logging in is logged out too (login_timeout).
        silent = await LineClient.connect(server.plain)
        await silent.line()
        assert await silent.closed() == b"* BYE autologout: idle for too long\r\n"
        await silent.aclose()
        await until_closed(server.gate)
        await still_served(server)
