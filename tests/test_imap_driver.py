"""The IMAP trio driver on real loopback sockets over the in-memory backend: Python's
imaplib over STARTTLS and implicit TLS, curl imaps://, IDLE woken by another
connection's change, and the hostile cases (a lying literal, commands before login,
a client that never reads, too many connections, an IDLE that never ends, bytes
injected after STARTTLS)."""

from __future__ import annotations

import contextlib
import functools
import imaplib
import logging
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from mail_helpers import LineClient, client_context, server_context

from internet_mail.imap import ImapLimits, ImapSession
from internet_mail.imap.driver import ConnectionGate, DriverLimits, serve_imap
from internet_mail.imap.testing import MemoryBackend

MESSAGE = (
    b"From: Fred Foobar <foobar@example.org>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: afternoon meeting\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"Hello Alice, do you think we can meet at 3:30 tomorrow?\r\n"
)


@dataclass
class Server:
    plain: int
    tls: int
    root: MemoryBackend
    gate: ConnectionGate


async def start(
    nursery: trio.Nursery, tmp_path: Path, *, limits: DriverLimits | None = None,
    core: ImapLimits | None = None,
) -> Server:  # fmt: skip
    ctx = await trio.to_thread.run_sync(server_context, tmp_path)
    root = MemoryBackend()
    root.append("INBOX", MESSAGE, frozenset(), None)
    limits = limits or DriverLimits(send_timeout=5)
    gate = ConnectionGate(limits.max_connections)
    # One thread: MemoryBackend connections share their mailboxes without a lock.
    limiter = trio.CapacityLimiter(1)
    ports = []
    for implicit in (False, True):
        listeners = await nursery.start(
            functools.partial(
                serve_imap, lambda peer: root.connect(), 0, "127.0.0.1", ssl_context=ctx,
                implicit_tls=implicit, driver_limits=limits, gate=gate, limiter=limiter,
                limits=core,
            )
        )  # fmt: skip
        ports.append(listeners[0].socket.getsockname()[1])
    return Server(ports[0], ports[1], root, gate)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Server]:
    yield await start(nursery, tmp_path)


async def until_idle(gate: ConnectionGate) -> None:
    """Until the server has closed every connection (callers bound it in time)."""
    while gate.active:  # noqa: ASYNC110 (a counter of the driver's, not an event)
        await trio.sleep(0.02)


async def login(port: int, *, select: bool = True) -> LineClient:
    client = await LineClient.connect(port, tls=True)
    assert (await client.line()).startswith(b"* OK [CAPABILITY IMAP4rev2")
    await client.send(b"L LOGIN alice secret\r\n")
    assert (await client.until(b"L "))[-1].startswith(b"L OK")
    if select:
        await client.send(b"S SELECT INBOX\r\n")
        assert (await client.until(b"S "))[-1].startswith(b"S OK [READ-WRITE]")
    return client


def imaplib_session(plain: int, tls: int) -> list[object]:
    """What an imaplib client sees over STARTTLS, then over implicit TLS."""
    seen: list[object] = []

    def keep(answer: tuple[str, list[object]]) -> None:  # imaplib reuses its lists
        seen.append((answer[0], list(answer[1])))

    with imaplib.IMAP4("127.0.0.1", plain, timeout=20) as imap:
        assert "LOGINDISABLED" in imap.capabilities
        try:
            imap.login("alice", "secret")
        except imaplib.IMAP4.error as exc:
            seen.append(str(exc))
        imap.starttls(client_context())
        assert "AUTH=PLAIN" in imap.capabilities
        imap.login("alice", "secret")
        keep(imap.select("INBOX"))
        keep(imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
        keep(imap.search(None, "SUBJECT", "meeting"))
        keep(imap.store("1", "+FLAGS", "(\\Seen)"))
        keep(imap.append("INBOX", "(\\Flagged)", None, MESSAGE))
        keep(imap.uid("SEARCH", "FLAGGED"))
        imap.logout()
    with imaplib.IMAP4_SSL("127.0.0.1", tls, ssl_context=client_context(), timeout=20) as imap:
        imap.login("alice", "secret")
        keep(imap.status("INBOX", "(MESSAGES UNSEEN)"))
        imap.logout()
    return seen


async def test_imaplib_over_starttls_and_implicit_tls(server: Server) -> None:
    with trio.fail_after(30):
        seen = await trio.to_thread.run_sync(imaplib_session, server.plain, server.tls)
    assert "PRIVACYREQUIRED" in str(seen[0])  # LOGIN refused in clear
    assert seen[1] == ("OK", [b"1"])
    status, fetched = seen[2]  # type: ignore[misc]
    assert status == "OK" and b"Subject: afternoon meeting" in fetched[0][1]
    assert seen[3] == ("OK", [b"1"])
    assert seen[4] == ("OK", [b"1 (FLAGS (\\Seen))"])
    assert seen[5][0] == "OK"  # type: ignore[index]
    assert seen[6] == ("OK", [b"2"])
    assert seen[7] == ("OK", [b"INBOX (MESSAGES 2 UNSEEN 1)"])
    with trio.fail_after(10):
        await until_idle(server.gate)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_imaps_lists_fetches_and_searches(server: Server) -> None:
    def curl(url: str, *extra: str) -> str:
        done = subprocess.run(
            ["curl", "-sS", "-k", "--max-time", "20", "-u", "alice:secret", *extra, url],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        return done.stdout.decode()

    base = f"imaps://127.0.0.1:{server.tls}"
    with trio.fail_after(60):
        listing = await trio.to_thread.run_sync(curl, base + "/")
        body = await trio.to_thread.run_sync(curl, base + "/INBOX;UID=1")
        found = await trio.to_thread.run_sync(curl, base + "/INBOX?SUBJECT%20meeting")
        starttls = await trio.to_thread.run_sync(
            curl, f"imap://127.0.0.1:{server.plain}/INBOX;UID=1", "--ssl-reqd"
        )
    assert '"/" INBOX\r\n' in listing and '\\Trash) "/" Trash' in listing
    assert body.replace("\r\n", "\n") == MESSAGE.decode().replace("\r\n", "\n")
    assert found.strip() == "* SEARCH 1"
    assert starttls == body


async def test_idle_sees_a_message_appended_by_another_connection(server: Server) -> None:
    with trio.fail_after(20):
        idler = await login(server.tls)
        await idler.send(b"I IDLE\r\n")
        assert (await idler.line()).startswith(b"+ ")
        other = await login(server.tls)
        await other.send(b"A APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
        assert (await other.until(b"A "))[-1].startswith(b"A OK [APPENDUID")
        assert await idler.line() == b"* 2 EXISTS"
        await other.send(b"F STORE 1 +FLAGS (\\Flagged)\r\n")
        await other.until(b"F OK")
        assert await idler.line() == b"* 1 FETCH (FLAGS (\\Flagged))"
        await idler.send(b"DONE\r\n")
        assert await idler.line() == b"I OK IDLE terminated"
        # Out of IDLE the subscription is gone: a change shows at the next command.
        await other.send(b"G STORE 2 +FLAGS (\\Seen)\r\n")
        await other.until(b"G OK")
        await idler.send(b"N NOOP\r\n")
        assert await idler.until(b"N ") == [b"* 2 FETCH (FLAGS (\\Seen))", b"N OK NOOP completed"]
        assert server.root.connect().boxes is server.root.boxes
        assert not server.root._shared.watchers
        await idler.aclose()
        await other.aclose()


async def test_an_idle_without_done_is_ended_by_the_cap(nursery, tmp_path) -> None:
    server = await start(
        nursery, tmp_path, limits=DriverLimits(idle_limit=1.0, keepalive=0.2, send_timeout=5)
    )
    with trio.fail_after(20):
        idler = await login(server.tls)
        await idler.send(b"I IDLE\r\n")
        assert (await idler.line()).startswith(b"+ ")
        rest = await idler.closed()
        await idler.aclose()
    assert b"* OK still here\r\n" in rest
    assert rest.endswith(b"* BYE IDLE for too long: re-issue IDLE at least every 29 minutes\r\n")
    await until_idle(server.gate)
    assert not server.root._shared.watchers  # unsubscribed when the connection ended


async def test_commands_before_login(nursery, tmp_path) -> None:
    server = await start(nursery, tmp_path, limits=DriverLimits(login_timeout=1.0))
    with trio.fail_after(20):
        client = await LineClient.connect(server.plain)
        greeting = await client.line()
        assert b"STARTTLS" in greeting and b"LOGINDISABLED" in greeting
        await client.send(b"a SELECT INBOX\r\nb LOGIN alice secret\r\nc FETCH 1 BODY[]\r\n")
        assert await client.until(b"c ") == [
            b"a BAD SELECT not allowed now",
            b"b NO [PRIVACYREQUIRED] LOGIN needs TLS",
            b"c BAD FETCH not allowed now",
        ]
        # A client that says nothing more before logging in is logged out.
        assert await client.closed() == b"* BYE autologout: idle for too long\r\n"
        await client.aclose()


async def test_a_literal_that_lies_about_its_size(server: Server) -> None:
    with trio.fail_after(20):
        client = await login(server.tls, select=False)
        await client.send(b"a APPEND INBOX {4294967295}\r\n")
        assert (await client.line()).startswith(b"a NO [TOOBIG]")
        await client.send(b"b LOGIN {4294967295}\r\n")
        assert (await client.line()).startswith(b"b BAD")
        await client.send(b"c NOOP\r\n")
        assert await client.line() == b"c OK NOOP completed"
        await client.aclose()


async def test_bytes_after_starttls_are_dropped(server: Server) -> None:
    with trio.fail_after(20):
        client = await LineClient.connect(server.plain)
        await client.line()
        # Injected in clear behind STARTTLS: must not run, nor be answered under TLS.
        await client.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
        assert await client.line() == b"a OK Begin TLS negotiation now"
        await client.starttls()
        await client.send(b"c NOOP\r\n")
        assert await client.line() == b"c OK NOOP completed"
        await client.aclose()


async def test_too_many_connections_get_bye(nursery, tmp_path) -> None:
    server = await start(nursery, tmp_path, limits=DriverLimits(max_connections=1))
    with trio.fail_after(20):
        first = await login(server.tls)
        second = await LineClient.connect(server.plain)
        assert await second.closed() == b"* BYE [UNAVAILABLE] too many connections\r\n"
        third = await LineClient.connect(server.tls, tls=True)
        assert await third.closed() == b"* BYE [UNAVAILABLE] too many connections\r\n"
        await first.send(b"L LOGOUT\r\n")
        assert await first.closed() == b"* BYE logging out\r\nL OK LOGOUT completed\r\n"
        for client in (first, second, third):
            await client.aclose()
        await until_idle(server.gate)
        again = await login(server.tls)
        await again.aclose()


async def test_a_client_that_never_reads_is_dropped(nursery, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="internet_mail.imap")
    core = ImapLimits(max_pending_output=64 * 1024)
    server = await start(nursery, tmp_path, limits=DriverLimits(send_timeout=1.0), core=core)
    big = b"Subject: big\r\n\r\n" + b"x" * 200_000 + b"\r\n"
    box = server.root.boxes["INBOX"]
    for _ in range(5):
        server.root.append("INBOX", big, frozenset(), None)
    assert len(box.messages) == 6
    with trio.fail_after(30):
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server.tls))
        tls = trio.SSLStream(trio.SocketStream(sock), client_context(), server_hostname="localhost")
        await tls.do_handshake()
        pipelined = b"L LOGIN alice secret\r\nS SELECT INBOX\r\n" + b"F FETCH 1:* BODY[]\r\n" * 500
        # The server stops reading once its answers wait; our send may block: bound it.
        with trio.move_on_after(5):
            await tls.send_all(pipelined)
        await until_idle(server.gate)  # dropped after send_timeout
        await trio.aclose_forcefully(tls)
    assert "does not read its responses: closed" in caplog.text


@pytest.mark.parametrize("implicit", [True, False])
async def test_tls_handshake_failure_keeps_serving(server: Server, implicit: bool) -> None:
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", server.tls if implicit else server.plain)
        if not implicit:
            await stream.receive_some(4096)
            await stream.send_all(b"a STARTTLS\r\n")
            await stream.receive_some(4096)
        await stream.send_all(b"this is not a TLS client hello\r\n" * 4)
        with contextlib.suppress(trio.BrokenResourceError):  # a reset or an EOF
            while await stream.receive_some(4096):
                pass
        await stream.aclose()
        client = await login(server.tls)
        await client.aclose()


def test_driver_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        DriverLimits(max_connections=0)
    with pytest.raises(ValueError):
        DriverLimits(idle_limit=0)


async def test_implicit_tls_needs_a_context() -> None:
    with pytest.raises(ValueError):
        await serve_imap(lambda peer: MemoryBackend(), 0, "127.0.0.1", implicit_tls=True)


def test_pipelined_commands_wait_while_output_is_pending() -> None:
    """The core runs the commands of one read one by one, and none while more than
    ``max_pending_output`` bytes wait: the answers are those of the commands sent one
    at a time, in order, and what is queued stays near the limit."""
    core = ImapLimits(max_pending_output=4096)
    big = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"

    def session() -> ImapSession:
        backend = MemoryBackend()
        for _ in range(3):
            backend.append("INBOX", big, frozenset(), None)
        s = ImapSession(backend, core, tls=True)
        s.receive_data(b"L LOGIN alice secret\r\nS SELECT INBOX\r\n")
        s.data_to_send()
        return s

    commands = [b"F%d FETCH 1:* BODY.PEEK[]\r\n" % i for i in range(20)]
    one_by_one = session()
    expected = b""
    for command in commands:
        one_by_one.receive_data(command)
        expected += one_by_one.data_to_send()
    piped = session()
    got = b""
    piped.receive_data(b"".join(commands))
    rounds = 0
    while True:
        out = piped.data_to_send()
        assert len(out) < core.max_pending_output + 3 * len(big) + 1024
        got += out
        if piped.wants_read:
            break
        piped.resume()
        rounds += 1
    assert got == expected
    assert rounds >= 10
