"""Hostile input to the tunnel's NTLM/Negotiate: malformed and truncated tokens, a
handshake that stalls, an AUTHENTICATE on another connection than its NEGOTIATE (or
replayed), an anonymous logon, huge headers. Each is answered with 401/400/431 or a
clean close, and the server keeps serving (real TLS connections on loopback)."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from ntlm_helpers import NtlmDirectory, RawConnection, ntlm_handshake, ntlm_header
from tunnel_helpers import (
    FAST,
    PASSWORD,
    USER,
    Backend,
    Tunnel,
    connect,
    start_tunnel,
    still_serving,
)

from dcerpc.ntlm import NegotiateMessage, NtlmInitiator
from dcerpc.spnego import SpnegoInitiator
from tunnel.http_auth import MAX_HANDSHAKES

ECHO_PATH = "/rpc/rpcproxy.dll?localhost:593"
pytestmark = pytest.mark.parametrize("backend", ["tcp"], indirect=True)


@pytest.fixture
def directory() -> NtlmDirectory:
    return NtlmDirectory()


@pytest.fixture
async def ntlm_tunnel(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path, directory: NtlmDirectory
) -> Tunnel:
    # A long idle timeout: a stalled handshake must be dropped by head_timeout (1 s).
    config = replace(FAST, idle_timeout=60.0)
    return await start_tunnel(nursery, backend, tmp_path / "data", config, authenticate=directory)


@pytest.fixture
async def opened() -> AsyncIterator[list[RawConnection]]:
    conns: list[RawConnection] = []
    yield conns
    for conn in conns:
        await trio.aclose_forcefully(conn.stream)


async def _raw(tunnel: Tunnel, opened: list[RawConnection]) -> RawConnection:
    conn = RawConnection(await connect(tunnel))
    opened.append(conn)
    return conn


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


NEGOTIATE = NtlmInitiator(USER, PASSWORD).step()
MALFORMED = [
    "NTLM",
    "NTLM ",
    "NTLM !!!not-base64!!!",
    "NTLM " + _b64(b"NTLMSSP\x00"),
    "NTLM " + _b64(NEGOTIATE[:12]),
    "NTLM " + _b64(b"NTLMSSP\x00\x03\x00\x00\x00" + b"\xff" * 60),
    "NTLM " + _b64(b"NTLMSSP\x00\x03\x00\x00\x00" + struct.pack("<HHI", 0xFFFF, 0xFFFF, 8) * 8),
    "NTLM " + _b64(b"not ntlm at all"),
    "NTLM " + _b64(NEGOTIATE) + "=",
    "Negotiate " + _b64(b"\x60\x84\xff\xff\xff\xff"),
    "Negotiate " + _b64(b"\xa1\x03\x30\x01\x00"),
    "Negotiate " + _b64(b"\x60" + bytes(300)),
    "Negotiate " + _b64(SpnegoInitiator(NtlmInitiator(USER, PASSWORD)).step()[:-7]),
    "NTLM " + "A" * 12000,
    "Kerberos abc",
    "Basic " + _b64(b"\\:" + PASSWORD.encode()),
    "Basic " + _b64(b"DOMAIN\\:x"),
    "\x00NTLM abc",
]


async def test_malformed_tokens_get_401_and_the_connection_goes_on(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory, opened: list[RawConnection]
) -> None:
    with trio.fail_after(30):
        conn = await _raw(ntlm_tunnel, opened)
        for value in MALFORMED:
            headers = {"Host": "x", "Content-Length": "0", "Authorization": value}
            try:
                reply = await conn.request("RPC_IN_DATA", ECHO_PATH, headers)
            except EOFError:  # a clean close is a fine answer too: start again
                conn = await _raw(ntlm_tunnel, opened)
                continue
            assert reply.status in (400, 401), (value, reply.head)
            if reply.status == 400:  # h11 refused the head: answered, then closed
                assert await conn.closed()
                conn = await _raw(ntlm_tunnel, opened)
        # A truncated AUTHENTICATE in a real handshake: 401, counted for no one.
        first = await conn.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", NEGOTIATE)}
        )
        assert first.status == 401
        token = NtlmInitiator(USER, PASSWORD).step()
        ntlm = NtlmInitiator(USER, PASSWORD)
        ntlm.step()
        token = ntlm.step(first.challenge("NTLM"))
        bad = await conn.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", token[:70])}
        )
        assert bad.status == 401
        # The same connection still authenticates afterwards.
        reply = await ntlm_handshake(conn, "RPC_IN_DATA", ECHO_PATH)
        assert reply.status == 200
    assert directory.succeeded == [(USER, "127.0.0.1")]
    await still_serving(ntlm_tunnel)


async def test_a_stalled_handshake_is_dropped(
    ntlm_tunnel: Tunnel, opened: list[RawConnection]
) -> None:
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        first = await conn.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", NEGOTIATE)}
        )
        assert first.status == 401 and first.challenge("NTLM")
        # Nothing more: the proxy closes well before the 60 s idle timeout.
        with trio.fail_after(10):
            assert await conn.closed()
        # Half a head after the challenge: dropped too.
        conn = await _raw(ntlm_tunnel, opened)
        first = await conn.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", NEGOTIATE)}
        )
        await conn.stream.send_all(b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nAuthoriz")
        with trio.fail_after(10):
            assert await conn.closed()
    await still_serving(ntlm_tunnel)


async def test_authenticate_on_another_connection_is_refused(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory, opened: list[RawConnection]
) -> None:
    with trio.fail_after(20):
        a = await _raw(ntlm_tunnel, opened)
        b = await _raw(ntlm_tunnel, opened)
        ntlm = NtlmInitiator(USER, PASSWORD)
        first = await a.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", ntlm.step())}
        )
        token = ntlm.step(first.challenge("NTLM"))
        # B never sent a NEGOTIATE: refused without a check.
        moved = await b.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", token)}
        )
        assert moved.status == 401
        assert directory.lookups == []
        # B's own NEGOTIATE, then A's AUTHENTICATE (another challenge): a failed logon.
        own = await b.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", NEGOTIATE)}
        )
        assert own.status == 401
        replay = await b.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", token)}
        )
        assert replay.status == 401
        assert directory.failed == [(USER, "127.0.0.1")]
        # A's own handshake is intact: its AUTHENTICATE still answers its challenge.
        done = await a.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", token)}
        )
        assert done.status == 200
        # Replayed once more on A: the handshake is over; no new one was started.
        again = await a.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", token)}
        )
        assert again.status == 401
    assert directory.succeeded == [(USER, "127.0.0.1")]


async def test_anonymous_and_unknown_users_are_refused(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory, opened: list[RawConnection]
) -> None:
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        for user, password in (("", ""), ("mallory", "x"), (USER, "wrong")):
            ntlm = NtlmInitiator(user, password)
            first = await conn.request(
                "RPC_IN_DATA", ECHO_PATH,
                {"Content-Length": "0", **ntlm_header("NTLM", ntlm.step())},
            )  # fmt: skip
            token = ntlm.step(first.challenge("NTLM"))
            reply = await conn.request(
                "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", token)}
            )
            assert reply.status == 401, user
            assert 'Basic realm="mapi-anywhere"' in reply.headers("www-authenticate")
    assert directory.succeeded == []
    assert directory.failed == [("mallory", "127.0.0.1"), (USER, "127.0.0.1")]


async def test_huge_headers_are_431_and_closed(
    ntlm_tunnel: Tunnel, opened: list[RawConnection]
) -> None:
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        # Past max_header_bytes, sent in pieces: 431 and closed.
        huge = ("NTLM " + "A" * (4 * FAST.max_header_bytes)).encode()
        await conn.stream.send_all(
            b"RPC_IN_DATA " + ECHO_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            + b"Content-Length: 0\r\nAuthorization: " + huge[:1000]
        )  # fmt: skip
        try:
            for start in range(1000, len(huge), 8192):
                await conn.stream.send_all(huge[start : start + 8192])
                await trio.sleep(0.01)
        except trio.BrokenResourceError:
            pass
        try:
            reply = await conn.response()
        except (trio.BrokenResourceError, EOFError):
            pass  # closed (reset: we sent past what it read) before we read its 431
        else:
            assert reply.status == 431
            assert await conn.closed()
        # A token too long for NTLM but inside the head limit: 401, connection kept.
        conn = await _raw(ntlm_tunnel, opened)
        big = "NTLM " + "A" * (FAST.max_header_bytes - 200)
        reply = await conn.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", "Authorization": big}
        )
        assert reply.status == 401
        # Many mid-size Authorization headers in one head: folded, still bounded.
        conn = await _raw(ntlm_tunnel, opened)
        many = "".join(f"Authorization: NTLM {_b64(NEGOTIATE)}\r\n" for _ in range(20)).encode()
        await conn.stream.send_all(
            b"RPC_IN_DATA " + ECHO_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            + many + b"\r\n"
        )  # fmt: skip
        reply = await conn.response()
        assert reply.status == 401
    await still_serving(ntlm_tunnel)


async def test_negotiate_message_with_huge_names_is_refused(
    ntlm_tunnel: Tunnel, opened: list[RawConnection]
) -> None:
    """A NEGOTIATE whose fields point past the message: 401, nothing allocated."""
    raw = bytearray(NegotiateMessage(0x1 | 0x200 | 0x80000).encode())
    raw[16:24] = struct.pack("<HHI", 0xFFFF, 0xFFFF, 0xFFFFFF)
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        reply = await conn.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0", **ntlm_header("NTLM", bytes(raw))}
        )
        assert reply.status == 401


async def test_restarting_the_handshake_for_ever_closes_the_connection(
    ntlm_tunnel: Tunnel, opened: list[RawConnection]
) -> None:
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        headers = {"Content-Length": "0", **ntlm_header("NTLM", NEGOTIATE)}
        statuses = []
        for _ in range(MAX_HANDSHAKES + 1):
            statuses.append((await conn.request("RPC_IN_DATA", ECHO_PATH, headers)).status)
        assert statuses == [401] * (MAX_HANDSHAKES + 1)
        assert await conn.closed()
    await still_serving(ntlm_tunnel)
