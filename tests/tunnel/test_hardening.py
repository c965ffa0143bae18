"""The tunnel's hardening against floods and smuggling: logon floods (a global queue of
credential checks, refused early, that cached credentials skip), the client address
in the authenticator's calls and in the logs, HTTP/2 rapid reset, Content-Length with
Transfer-Encoding, and autodiscover for a user's own address.

Cores with byte vectors; drivers against a real tunnel on loopback, several client
addresses from 127.0.0.2 up (all of 127/8 is loopback on Linux). Every test is
bounded by ``trio.fail_after``; durations are never asserted."""

from __future__ import annotations

import base64
import contextlib
import logging
from dataclasses import replace
from pathlib import Path

import h2.connection
import h2.errors
import h2.events
import hyperframe.frame
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hostile import REQUEST_HEADERS, H2Raw, read_head
from tunnel_helpers import (
    AUTH,
    FAST,
    PASSWORD,
    USER,
    Backend,
    Tunnel,
    connect,
    read_until_closed,
    start_tunnel,
    still_serving,
)

from tunnel.autodiscover import Site, answer
from tunnel.channel import ChannelError, ServerChannel
from tunnel.h2_glue import ConnectionEnded, H2Glue, RequestReceived
from tunnel.policy import CheckQueue

SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def h2_statuses(c: H2Raw, count: int) -> dict[int, tuple[int, bytes | None]]:
    """(status, Retry-After) of the next ``count`` responses, by stream."""
    out: dict[int, tuple[int, bytes | None]] = {}
    while len(out) < count:
        for ev in await c.events():
            if isinstance(ev, h2.events.ResponseReceived):
                headers = dict(ev.headers)
                out[ev.stream_id] = (int(headers[b":status"]), headers.get(b"retry-after"))
    return out


def open_streams(c: H2Raw, auth: str, count: int, path: str = "/nothing") -> list[int]:
    """Queue ``count`` requests (HEADERS only, not flushed) with ``auth``."""
    sids = []
    for _ in range(count):
        sid = c.conn.get_next_available_stream_id()
        headers = [*REQUEST_HEADERS[:3], (":path", path), ("authorization", auth)]
        c.conn.send_headers(sid, headers, end_stream=True)
        sids.append(sid)
    return sids


async def wait_until(predicate) -> None:  # type: ignore[no-untyped-def]
    while not predicate():  # noqa: ASYNC110 (a counter of the fake authenticator)
        await trio.sleep(0.01)


# -- A. the queue of credential checks (core) -------------------------------------------------


def test_check_queue_caps_running_checks_and_refuses_beyond_its_limits() -> None:
    q = CheckQueue(slots=2, per_key=3, max_waiting=3)
    a = [q.enter("a") for _ in range(3)]
    assert all(t is not None for t in a)
    assert q.enter("a") is None  # per key: 3 in progress (2 running, 1 waiting)
    assert [q.granted(t) for t in a if t is not None] == [True, True, False]
    b = [q.enter("b") for _ in range(2)]
    assert all(t is not None for t in b)
    assert q.running == 2 and q.waiting == 3
    assert q.enter("c") is None  # 3 waiting in all: the queue is full
    # A slot frees: the next key in line ("a", first to wait) gets it, then "b".
    assert a[0] is not None and q.leave(a[0]) == [a[2]]
    assert a[1] is not None and q.leave(a[1]) == [b[0]]
    assert q.enter("c") is not None  # room to wait again


def test_check_queue_grants_round_robin_across_keys() -> None:
    q = CheckQueue(slots=1, per_key=10, max_waiting=20)
    first = q.enter("flood")
    assert first is not None and q.granted(first)
    flood = [q.enter("flood") for _ in range(8)]
    late = q.enter("late")
    assert late is not None and not q.granted(late)
    # The late key waits for one check of the flood, not for its eight.
    order: list[int] = []
    running = first
    while running is not None:
        granted = q.leave(running)
        order += granted
        running = granted[0] if granted else None
    assert order[:2] == [flood[0], late]
    assert q.running == q.waiting == 0 and q.in_progress("flood") == 0


def test_check_queue_forgets_a_waiter_that_gives_up() -> None:
    q = CheckQueue(slots=1, per_key=2, max_waiting=1)
    running, waiting = q.enter("a"), q.enter("a")
    assert running is not None and waiting is not None
    assert q.leave(waiting) == []  # cancelled while waiting: nothing granted
    assert q.waiting == 0 and q.in_progress("a") == 1
    assert q.leave(running) == [] and q.in_progress("a") == 0
    assert q.leave(running) == []  # twice is harmless


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from("abcd"), st.integers(0, 40)), max_size=80),
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(0, 6),
)
def test_check_queue_invariants(
    ops: list[tuple[bool, str, int]], slots: int, per_key: int, max_waiting: int
) -> None:
    """Any sequence of arrivals and departures keeps every limit, never leaves a slot
    idle while a check waits, and grants each ticket at most once."""
    q = CheckQueue(slots, per_key, max_waiting)
    held: list[int] = []
    granted_once: set[int] = set()
    for arrive, key, pick in ops:
        if arrive or not held:
            ticket = q.enter(key)
            if ticket is not None:
                held.append(ticket)
                if q.granted(ticket):
                    granted_once.add(ticket)
        else:
            for ticket in q.leave(held.pop(pick % len(held))):
                assert ticket not in granted_once and ticket in held
                granted_once.add(ticket)
        assert q.running <= slots and q.waiting <= max_waiting
        assert q.running == slots or q.waiting == 0
        assert all(q.in_progress(k) <= per_key for k in "abcd")
        assert q.running + q.waiting == len(held)
        assert sum(q.granted(t) for t in held) == q.running


# -- A and C. logon floods through a real tunnel ----------------------------------------------


class Directory:
    """A fake user directory: records each full check (user, address); checks take
    ``delay`` seconds, or hang until :attr:`release` is set when ``stuck``. Knows
    ``USER``'s password as cached when ``caching``."""

    def __init__(self, *, delay: float = 0.0, stuck: bool = False, caching: bool = False):
        self.delay = delay
        self.stuck = stuck
        self.release = trio.Event()
        self.calls: list[tuple[str, str | None]] = []
        self.running = self.peak = 0
        if caching:
            self.is_cached = lambda user, password: (user, password) == (USER, PASSWORD)

    async def __call__(self, user: str, password: str, address: str | None) -> bool:
        self.calls.append((user, address))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.stuck:
                await self.release.wait()
            await trio.sleep(self.delay)
        finally:
            self.running -= 1
        return (user, password) == (USER, PASSWORD)


async def test_credential_checks_are_capped_across_addresses(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path
) -> None:
    """Four addresses guessing at once run at most max_auth_checks (2) checks at once,
    not max_auth_checks_per_address (4) each; every guess is still checked (the queue
    holds them all) and the authenticator learns each guesser's address."""
    directory = Directory(delay=0.05)
    config = replace(FAST, max_auth_checks=2)
    tunnel = await start_tunnel(nursery, backend, tmp_path, config, authenticate=directory)
    with trio.fail_after(20):

        async def guesser(source: str) -> None:
            async with await connect(tunnel, "h2", source=source) as s:
                c = H2Raw(s)
                open_streams(c, basic(USER, "guess"), 4)
                await c.flush()
                assert {status for status, _ in (await h2_statuses(c, 4)).values()} == {401}

        async with trio.open_nursery() as guessers:
            for source in SOURCES:
                guessers.start_soon(guesser, source)
    assert directory.peak == config.max_auth_checks == 2
    assert len(directory.calls) == 16
    assert {address for _, address in directory.calls} == set(SOURCES)
    await still_serving(tunnel)


async def test_a_flood_past_the_waiting_limit_is_refused_at_once(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path
) -> None:
    """While the checks are stuck, the guesses past max_auth_waiting are answered at
    once (503 + Retry-After, never 401: they were not checked), on HTTP/2 and, in the
    MS-RPCH form, on HTTP/1.1; the rest are answered once the checks finish."""
    directory = Directory(stuck=True)
    config = replace(FAST, max_auth_checks=1, max_auth_waiting=2, head_timeout=30.0)
    tunnel = await start_tunnel(nursery, backend, tmp_path, config, authenticate=directory)
    with trio.fail_after(20):
        async with (
            await connect(tunnel, "h2", source=SOURCES[0]) as s1,
            await connect(tunnel, "h2", source=SOURCES[1]) as s2,
        ):
            c1, c2 = H2Raw(s1), H2Raw(s2)
            open_streams(c1, basic(USER, "guess"), 3)  # 1 running, 2 waiting
            await c1.flush()
            await wait_until(lambda: directory.running == 1)
            sids = open_streams(c2, basic(USER, "guess"), 2)
            await c2.flush()
            refused = await h2_statuses(c2, 2)  # while every check is stuck
            assert refused == {sid: (503, b"1") for sid in sids}
            async with await connect(tunnel, source=SOURCES[2]) as h1:
                head = (
                    "RPC_IN_DATA /rpc/rpcproxy.dll?localhost:135 HTTP/1.1\r\nHost: localhost\r\n"
                    f"Authorization: {basic(USER, 'guess')}\r\nContent-Length: 0\r\n\r\n"
                )
                await h1.send_all(head.encode())
                reply = await read_until_closed(h1)
            assert reply.startswith(b"HTTP/1.0 503 RPC Error: 6bb\r\n")
            assert b"\r\nRetry-After: 1\r\n" in reply
            directory.release.set()
            statuses = await h2_statuses(c1, 3)
            assert {status for status, _ in statuses.values()} == {401}
    assert len(directory.calls) == 3
    await still_serving(tunnel)


async def test_cached_credentials_skip_the_queue(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path
) -> None:
    """A user whose credentials the authenticator has cached gets in while the queue of
    checks is full and stuck (HTTP/2 and HTTP/1.1), without a check of its own."""
    directory = Directory(stuck=True, caching=True)
    config = replace(FAST, max_auth_checks=1, max_auth_waiting=1, head_timeout=30.0)
    tunnel = await start_tunnel(nursery, backend, tmp_path, config, authenticate=directory)
    with trio.fail_after(20):
        async with await connect(tunnel, "h2", source=SOURCES[0]) as flood:
            c = H2Raw(flood)
            open_streams(c, basic(USER, "guess"), 2)  # 1 running, 1 waiting: full
            await c.flush()
            await wait_until(lambda: directory.running == 1)
            async with await connect(tunnel, "h2") as s:
                good = H2Raw(s)
                assert await good.status(await good.open("/nothing")) == 404
                unknown = open_streams(good, basic("bob", "new"), 1)
                await good.flush()
                assert await good.status(unknown[0]) == 503
            async with await connect(tunnel) as s:
                echo = (
                    "RPC_IN_DATA /rpc/rpcproxy.dll?localhost:135 HTTP/1.1\r\nHost: localhost\r\n"
                    f"Authorization: {AUTH}\r\nContent-Length: 4\r\n\r\n"
                )
                await s.send_all(echo.encode() + b"\0" * 4)
                assert (await read_head(s)).startswith(b"HTTP/1.1 200 Success\r\n")
            assert directory.calls == [(USER, SOURCES[0])]  # the flood's only
            directory.release.set()
            assert {status for status, _ in (await h2_statuses(c, 2)).values()} == {401}


@pytest.mark.parametrize("transport", ["h1", "h2"])
async def test_failed_logons_name_the_client_address(
    nursery: trio.Nursery,
    backend: Backend,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    directory = Directory()
    tunnel = await start_tunnel(nursery, backend, tmp_path, authenticate=directory)
    caplog.set_level(logging.INFO, logger="tunnel")
    with trio.fail_after(10):
        if transport == "h2":
            async with await connect(tunnel, "h2", source=SOURCES[1]) as s:
                c = H2Raw(s)
                sids = open_streams(c, basic(USER, "wrong"), 1)
                await c.flush()
                assert await c.status(sids[0]) == 401
        else:
            async with await connect(tunnel, source=SOURCES[1]) as s:
                head = (
                    "RPC_IN_DATA /rpc/rpcproxy.dll?localhost:135 HTTP/1.1\r\nHost: localhost\r\n"
                    f"Authorization: {basic(USER, 'wrong')}\r\nContent-Length: 0\r\n\r\n"
                )
                await s.send_all(head.encode())
                assert (await read_head(s)).startswith(b"HTTP/1.1 401 ")
    assert directory.calls == [(USER, SOURCES[1])]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("tunnel")]
    assert any(f"failed logon of {USER!r} from {SOURCES[1]}" in m for m in logged), logged


# -- B. HTTP/2 rapid reset --------------------------------------------------------------------


def _glue_pair(limit: int) -> tuple[H2Glue, h2.connection.H2Connection]:
    glue = H2Glue(replace(FAST, h2_max_early_resets=limit))
    client = h2.connection.H2Connection()
    client.initiate_connection()
    glue.receive_data(client.data_to_send())
    client.receive_data(glue.data_to_send())
    glue.receive_data(client.data_to_send())  # our SETTINGS ACK
    return glue, client


def _goaway_in(data: bytes) -> int | None:
    """The error code of a GOAWAY frame in ``data`` (a server's frames), if any."""
    at = 0
    while at + 9 <= len(data):
        length, kind = int.from_bytes(data[at : at + 3], "big"), data[at + 3]
        if kind == 0x7:
            return int.from_bytes(data[at + 13 : at + 17], "big")
        at += 9 + length
    return None


def test_rapid_reset_core_closes_with_enhance_your_calm() -> None:
    glue, client = _glue_pair(limit=10)
    glue.data_to_send()
    ended: list[ConnectionEnded] = []
    for i in range(11):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST_HEADERS)
        client.reset_stream(sid)
        events = glue.receive_data(client.data_to_send())
        assert any(isinstance(e, RequestReceived) for e in events) or ended
        ended += [e for e in events if isinstance(e, ConnectionEnded)]
        assert bool(ended) == (i == 10)
    assert ended[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert glue.closed
    assert _goaway_in(glue.data_to_send()) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_streams_reset_after_their_answer_do_not_count() -> None:
    """A client that cancels requests we answered, or cancels some but lets as many
    finish, is never cut off."""
    glue, client = _glue_pair(limit=10)
    for i in range(200):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST_HEADERS)
        if i % 2:  # answered, then reset
            assert glue.receive_data(client.data_to_send())
            glue.respond(sid, 404, body=b"no\n")
            client.receive_data(glue.data_to_send())
        client.reset_stream(sid)
        events = glue.receive_data(client.data_to_send())
        assert not any(isinstance(e, ConnectionEnded) for e in events)
    assert glue.early_resets <= 1


async def test_h2_rapid_reset_flood_gets_goaway_enhance_your_calm(tunnel: Tunnel) -> None:
    """HEADERS + RST_STREAM pairs, built frame by frame, past h2_max_early_resets (100):
    the proxy closes the connection with GOAWAY(ENHANCE_YOUR_CALM) and keeps serving."""
    with trio.fail_after(10):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            await c.flush()  # preface and SETTINGS
            frames = []
            for i in range(FAST.h2_max_early_resets + 50):
                sid = 1 + 2 * i
                block = bytes(c.conn.encoder.encode([*REQUEST_HEADERS, ("authorization", AUTH)]))
                frames.append(hyperframe.frame.HeadersFrame(sid, block, flags=["END_HEADERS"]))
                frames.append(hyperframe.frame.RstStreamFrame(sid, error_code=8))  # CANCEL
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await s.send_all(b"".join(f.serialize() for f in frames))
            assert _goaway_in(await read_until_closed(s)) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        await still_serving(tunnel)


# -- D. Content-Length with Transfer-Encoding -------------------------------------------------

SMUGGLE = (
    b"RPC_IN_DATA /rpc/rpcproxy.dll?localhost:135 HTTP/1.1\r\nHost: localhost\r\n"
    b"Authorization: " + AUTH.encode() + b"\r\n"
    b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\r\n\0\0\0\0\r\n0\r\n\r\n"
)


def test_content_length_with_transfer_encoding_core_gets_400() -> None:
    for cut in (len(SMUGGLE), 1):  # whole, and byte by byte
        ch = ServerChannel(FAST)
        with pytest.raises(ChannelError):
            for at in range(0, len(SMUGGLE), cut):
                ch.receive_data(SMUGGLE[at : at + cut])
        out = ch.data_to_send()
        assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"\r\nConnection: close\r\n" in out


async def test_content_length_with_transfer_encoding_gets_400_and_a_close(
    tunnel: Tunnel,
) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            await s.send_all(SMUGGLE)
            reply = await read_until_closed(s)  # returns: the proxy closed
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert reply.count(b"HTTP/1.1 ") == 1
        await still_serving(tunnel)


# -- E. autodiscover for a user's own address -------------------------------------------------


def test_autodiscover_answers_a_users_own_address_without_a_domain() -> None:
    site = Site(domain="", server_name="mail", url="https://mail:8443/", fingerprint="AB")
    path = "/autodiscover/autodiscover.json?Email="
    assert answer(site, "GET", path + "demo@localhost", b"", user="demo").status == 200
    assert answer(site, "GET", path + "Demo@LOCALHOST", b"", user="demo").status == 200
    body = b"<EMailAddress>demo@localhost</EMailAddress>"
    reply = answer(site, "POST", "/autodiscover/autodiscover.xml", body, user="demo")
    assert reply.status == 200 and b"<EwsUrl>https://mail:8443/</EwsUrl>" in reply.body
    assert answer(site, "GET", path + "bob@localhost", b"", user="demo").status == 404
    assert answer(site, "GET", path + "demo@elsewhere.org", b"", user="demo").status == 404
    assert answer(site, "GET", path + "demo@localhost", b"").status == 404  # no user
    # With a domain, its addresses are served as before, and the user's own still are.
    site = replace(site, domain="example.org")
    assert answer(site, "GET", path + "anyone@example.org", b"", user="demo").status == 200
    assert answer(site, "GET", path + "demo@localhost", b"", user="demo").status == 200


@pytest.mark.parametrize("transport", ["h1", "h2"])
async def test_autodiscover_through_the_tunnel_without_a_domain(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path, transport: str
) -> None:
    tunnel = await start_tunnel(nursery, backend, tmp_path, replace(FAST, domain=""))
    path = f"/autodiscover/autodiscover.json?Email={USER}@localhost"
    with trio.fail_after(10):
        if transport == "h2":
            async with await connect(tunnel, "h2") as s:
                c = H2Raw(s)
                sid = c.conn.get_next_available_stream_id()
                headers = [
                    (":method", "GET"),
                    *REQUEST_HEADERS[1:3],
                    (":path", path),
                    ("authorization", AUTH),
                ]
                c.conn.send_headers(sid, headers, end_stream=True)
                await c.flush()
                assert await c.status(sid) == 200
        else:
            async with await connect(tunnel) as s:
                head = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {AUTH}\r\n\r\n"
                await s.send_all(head.encode())
                assert (await read_head(s)).startswith(b"HTTP/1.1 200 ")


def test_check_queue_keys_group_an_ipv6_network():
    from dcerpc.peers import client_network

    assert client_network("2001:db8:1:2::1") == client_network("2001:db8:1:2:ffff::9")
    assert client_network("2001:db8:1:2::1") != client_network("2001:db8:1:3::1")
    assert client_network("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_network("192.0.2.7") == "192.0.2.7"
    assert client_network("?") == "?"
