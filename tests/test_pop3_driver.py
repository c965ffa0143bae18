"""The POP3 trio driver on real loopback sockets over the in-memory backend: Python's
poplib over STLS and implicit TLS, curl pop3s://, UIDL across sessions, the maildrop
lock released however a connection ends (reset, timeout, a client that never reads,
serve stopping), too many connections, and logons refused in clear."""

from __future__ import annotations

import functools
import logging
import poplib
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from mail_helpers import LineClient, client_context, server_context

from internet_mail.pop3 import Pop3Limits
from internet_mail.pop3.driver import ConnectionGate, DriverLimits, serve_pop3
from internet_mail.pop3.testing import MemoryBackend, MemoryStore

MESSAGE = (
    b"From: Fred Foobar <foobar@example.org>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: afternoon meeting\r\n"
    b"\r\n"
    b"Hello Alice,\r\n.leading dot\r\nsee you at 3:30.\r\n"
)


class Backend(MemoryBackend):
    """The in-memory backend with the password check the driver needs."""

    closed = 0

    def authenticate(self, user: str, password: str) -> str | None:
        if password == "boom":
            raise OSError("the directory is down")
        return "alice" if (user, password) == ("alice", "secret") else None

    def close(self) -> None:
        Backend.closed += 1


@dataclass
class Server:
    plain: int
    tls: int
    store: MemoryStore
    gate: ConnectionGate
    scope: trio.CancelScope


async def start(
    nursery: trio.Nursery, tmp_path: Path, *, limits: DriverLimits | None = None,
    core: Pop3Limits | None = None,
) -> Server:  # fmt: skip
    ctx = await trio.to_thread.run_sync(server_context, tmp_path)
    store = MemoryStore()
    store.add("alice", MESSAGE)
    store.add("alice", MESSAGE.replace(b"afternoon", b"evening"))
    limits = limits or DriverLimits(send_timeout=5)
    gate = ConnectionGate(limits.max_connections)
    limiter = trio.CapacityLimiter(1)  # the in-memory store takes no lock

    async def run(task_status: trio.TaskStatus[tuple[list[int], trio.CancelScope]]) -> None:
        async with trio.open_nursery() as inner:  # cancelled: serve stops
            ports = []
            for implicit in (False, True):
                listeners = await inner.start(
                    functools.partial(
                        serve_pop3, lambda peer: Backend(store), 0, "127.0.0.1",
                        ssl_context=ctx, implicit_tls=implicit, driver_limits=limits, gate=gate,
                        limiter=limiter, limits=core,
                    )
                )  # fmt: skip
                ports.append(listeners[0].socket.getsockname()[1])
            task_status.started((ports, inner.cancel_scope))

    ports, scope = await nursery.start(run)
    return Server(ports[0], ports[1], store, gate, scope)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Server]:
    yield await start(nursery, tmp_path)


async def until_idle(gate: ConnectionGate) -> None:
    """Until the server has closed every connection (callers bound it in time)."""
    while gate.active:  # noqa: ASYNC110 (a counter of the driver's, not an event)
        await trio.sleep(0.02)


async def logged_on(port: int) -> LineClient:
    client = await LineClient.connect(port, tls=True)
    assert (await client.line()).startswith(b"+OK")
    await client.send(b"USER alice\r\nPASS secret\r\n")
    assert (await client.line()).startswith(b"+OK")
    assert (await client.line()).startswith(b"+OK")
    return client


def poplib_sessions(plain: int, tls: int) -> list[object]:
    seen: list[object] = []
    pop = poplib.POP3("127.0.0.1", plain, timeout=20)
    try:
        assert "STLS" in pop.capa() and "USER" not in pop.capa()
        try:
            pop.user("alice")
        except poplib.error_proto as exc:
            seen.append(str(exc))
        pop.stls(client_context())
        assert "USER" in pop.capa()
        pop.user("alice")
        pop.pass_("secret")
        seen.append(pop.stat())
        seen.append(pop.uidl()[1])
        seen.append(pop.retr(1)[1])
        seen.append(pop.top(2, 0)[1])
        pop.dele(1)
        pop.quit()
    finally:
        pop.close()
    pop = poplib.POP3_SSL("127.0.0.1", tls, context=client_context(), timeout=20)
    try:
        pop.user("alice")
        pop.pass_("secret")
        seen.append(pop.stat())
        seen.append(pop.uidl()[1])
        pop.quit()
    finally:
        pop.close()
    return seen


async def test_poplib_over_stls_then_implicit_tls(server: Server) -> None:
    with trio.fail_after(30):
        seen = await trio.to_thread.run_sync(poplib_sessions, server.plain, server.tls)
        await until_idle(server.gate)
    assert "needs TLS" in str(seen[0])
    assert seen[1] == (2, 2 * len(MESSAGE) - 2)
    uids = seen[2]
    assert uids == [b"1 m000001", b"2 m000002"]
    assert seen[3] == MESSAGE.rstrip(b"\r\n").split(b"\r\n")  # poplib un-stuffs the dot
    assert b"Subject: evening meeting" in seen[4]  # type: ignore[operator]
    assert seen[5] == (1, len(MESSAGE) - 2)  # DELE applied at QUIT
    assert seen[6] == [b"1 m000002"]  # the id did not move with the message number
    assert list(server.store.maildrops["alice"]) == ["m000002"]
    assert not server.store.locked


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_pop3s_lists_and_downloads(server: Server) -> None:
    def curl(url: str, *extra: str) -> bytes:
        command = ["curl", "-sS", "-k", "--max-time", "20", "-u", "alice:secret", *extra, url]
        return subprocess.run(command, capture_output=True, check=True, timeout=30).stdout

    with trio.fail_after(60):
        listing = await trio.to_thread.run_sync(curl, f"pop3s://127.0.0.1:{server.tls}/")
        first = await trio.to_thread.run_sync(curl, f"pop3s://127.0.0.1:{server.tls}/1")
        stls = await trio.to_thread.run_sync(
            curl, f"pop3://127.0.0.1:{server.plain}/2", "--ssl-reqd"
        )
    size = len(MESSAGE) - 2  # the second message's subject is two octets shorter
    assert listing.split(b"\r\n")[:2] == [b"1 %d" % len(MESSAGE), b"2 %d" % size]
    assert first == MESSAGE
    assert b"Subject: evening meeting" in stls


async def test_the_lock_is_released_when_the_connection_is_reset(server: Server) -> None:
    with trio.fail_after(20):
        first = await logged_on(server.tls)
        assert server.store.locked == {"alice"}
        second = await LineClient.connect(server.tls, tls=True)
        await second.line()
        await second.send(b"USER alice\r\nPASS secret\r\n")
        await second.line()
        assert await second.line() == b"-ERR [IN-USE] maildrop already locked"
        await first.send(b"DELE 1\r\n")
        assert (await first.line()).startswith(b"+OK")
        # A reset: the first client vanishes without QUIT.
        raw = first.stream.transport_stream  # type: ignore[attr-defined]
        raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(raw)
        while server.store.locked:  # noqa: ASYNC110
            await trio.sleep(0.02)
        await second.send(b"USER alice\r\nPASS secret\r\n")
        assert (await second.line()).startswith(b"+OK")
        assert (await second.line()).startswith(b"+OK")
        await second.send(b"STAT\r\n")
        assert await second.line() == b"+OK 2 %d" % (2 * len(MESSAGE) - 2)  # no deletion
        await second.aclose()


async def test_the_lock_is_released_when_serve_stops(server: Server) -> None:
    with trio.fail_after(20):
        client = await logged_on(server.tls)
        assert server.store.locked == {"alice"}
        closed = Backend.closed
        server.scope.cancel()
        assert await client.closed() == b""
        while server.store.locked or Backend.closed == closed:  # noqa: ASYNC110
            await trio.sleep(0.02)
        await client.aclose()


async def test_logon_refused_in_clear_and_timeouts(nursery, tmp_path) -> None:
    server = await start(nursery, tmp_path, limits=DriverLimits(login_timeout=1.0))
    with trio.fail_after(20):
        client = await LineClient.connect(server.plain)
        assert (await client.line()).startswith(b"+OK")
        await client.send(b"USER alice\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nSTAT\r\n")
        assert (await client.line()).startswith(b"-ERR [AUTH]")
        assert (await client.line()).startswith(b"-ERR [AUTH]")
        assert await client.line() == b"-ERR command not valid in this state"
        assert await client.closed() == b""  # silent: autologout, no UPDATE
        await client.aclose()


async def test_a_failing_password_check_is_temporary(server: Server) -> None:
    with trio.fail_after(20):
        client = await LineClient.connect(server.tls, tls=True)
        await client.line()
        await client.send(b"USER alice\r\nPASS boom\r\nUSER alice\r\nPASS wrong\r\n")
        assert (await client.line()).startswith(b"+OK")
        assert (await client.line()).startswith(b"-ERR [SYS/TEMP]")
        assert (await client.line()).startswith(b"+OK")
        assert await client.line() == b"-ERR [AUTH] invalid credentials"
        await client.aclose()


async def test_too_many_connections(nursery, tmp_path) -> None:
    server = await start(nursery, tmp_path, limits=DriverLimits(max_connections=1))
    with trio.fail_after(20):
        first = await logged_on(server.tls)
        second = await LineClient.connect(server.plain)
        assert await second.closed() == b"-ERR [SYS/TEMP] too many connections, try later\r\n"
        await first.send(b"QUIT\r\n")
        assert (await first.line()).startswith(b"+OK")
        for client in (first, second):
            await client.aclose()


async def test_a_client_that_never_reads_is_dropped_and_unlocked(nursery, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="internet_mail.pop3")
    server = await start(
        nursery, tmp_path, limits=DriverLimits(send_timeout=1.0),
        core=Pop3Limits(max_pending_output=64 * 1024),
    )  # fmt: skip
    server.store.add("alice", b"Subject: big\r\n\r\n" + b"x" * 300_000 + b"\r\n")
    with trio.fail_after(30):
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server.tls))
        tls = trio.SSLStream(trio.SocketStream(sock), client_context(), server_hostname="localhost")
        await tls.do_handshake()
        with trio.move_on_after(5):
            await tls.send_all(b"USER alice\r\nPASS secret\r\n" + b"RETR 3\r\n" * 2000)
        await until_idle(server.gate)
        await trio.aclose_forcefully(tls)
    assert not server.store.locked
    assert "too slow" in caplog.text
    assert len(server.store.maildrops["alice"]) == 3


def test_driver_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        DriverLimits(max_connections=0)
    with pytest.raises(ValueError):
        DriverLimits(idle_timeout=-1)


async def test_implicit_tls_needs_a_context() -> None:
    with pytest.raises(ValueError):
        await serve_pop3(lambda peer: Backend(MemoryStore()), 0, "127.0.0.1", implicit_tls=True)
