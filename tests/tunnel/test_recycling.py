"""Channel recycling of RPC over HTTP v2 end to end ([MS-RPCH] IN_R2, OUT_R2;
``tunnel/recycling.py``): our proxy with real TLS on loopback and channel lifetimes
small enough that one session crosses many IN and OUT recycles.

* Our client: every answer is checked, calls run in series and concurrently, and a
  per-connection counter in the backend proves the backend connection (so the
  DCE/RPC association and any session on it) is the same one throughout; a store
  session keeps working across recycles.
* Raw clients script the wire: the exact PDU sequence of an IN and of an OUT recycle
  (including RPC PDUs racing on both channels), successors with wrong cookies or for
  another target (refused, the VC unharmed), a successor that never gets its
  IN_R2/A5 (dropped, the VC unharmed), and a client that ignores OUT_R2/A2 (its VC
  ends cleanly without overrunning the Content-Length).

Rules as in ``tunnel_helpers.py``: loopback only, port 0, ``trio.fail_after`` on
every test, behaviour asserted, never durations.
"""

from __future__ import annotations

import os
import random
import struct
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
from tunnel_helpers import (
    AUTH,
    ECHO_INTERFACE,
    FAST,
    PASSWORD,
    SERVER_NAME,
    USER,
    Backend,
    Tunnel,
    connect,
    read_until_closed,
    start_tunnel,
)

from dcerpc.client import open_rpc_client
from dcerpc.interface import CallContext, Interface
from dcerpc.pdu import (
    LAST_FRAG,
    BindPdu,
    ContextElement,
    PType,
    RequestPdu,
    ResponsePdu,
    decode_pdu,
)
from dcerpc.server import RpcServer
from dcerpc.syntax import NDR, SyntaxId
from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, Tower, epm_interface, stubs
from tunnel import rts, rts_recycling
from tunnel.config import TunnelConfig
from tunnel.drivers.h1_client import H1TunnelStream
from tunnel.transport import open_tunnel_stream

#: An interface that counts the calls of its transport connection: a recycle that
#: replaced the backend connection would restart the count.
COUNTER = SyntaxId(uuid.UUID("3f6e0c1d-2b4a-4e59-8c7d-6a5b4c3d2e1f"), 1, 0)


async def _count(ctx: CallContext, stub: bytes) -> bytes:
    calls = ctx.connection_state["calls"] = ctx.connection_state.get("calls", 0) + 1
    if ctx.opnum == 1:  # "expand": the count, then N bytes (large OUT transfers)
        size = int.from_bytes(stub[:4], "little")
        return calls.to_bytes(4, "little") + bytes(i & 0xFF for i in range(size))
    return calls.to_bytes(4, "little") + stub  # echo, prefixed with the count


COUNTER_INTERFACE = Interface(COUNTER, _count, 2, name="counter")

#: Lifetimes of 128 KiB (the spec's minimum ChannelLifetime) on both channels.
SMALL = replace(FAST, out_content_length=131072, channel_lifetime=131072)


async def make_backend(nursery: trio.Nursery, *, attached: bool = False) -> Backend:
    db = EndpointDatabase()
    server = RpcServer([epm_interface(db), ECHO_INTERFACE, COUNTER_INTERFACE], name="counting")
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    db.register(EPM_SYNTAX, [Tower.tcp(EPM_SYNTAX, "127.0.0.1", port)], "Endpoint mapper")
    db.register(COUNTER, [Tower.tcp(COUNTER, "127.0.0.1", port)], "Counter")
    return Backend(db, port, server, attached)


@pytest.fixture(params=["tcp", "attached"])
async def backend(nursery: trio.Nursery, request: pytest.FixtureRequest) -> Backend:
    return await make_backend(nursery, attached=request.param == "attached")


def _tunnel_stream(tunnel: Tunnel, config: TunnelConfig = SMALL, server: str = "127.0.0.1"):
    return open_tunnel_stream(
        tunnel.url,
        server,
        tunnel.backend.epm_port,
        username=USER,
        password=PASSWORD,
        http2=False,
        fingerprint=tunnel.info.fingerprint,
        config=config,
    )


def _expanded(size: int) -> bytes:
    return bytes(i & 0xFF for i in range(size))


# -- our client through many recycles -------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 4], ids=["in-series", "concurrent"])
async def test_a_long_session_crosses_many_in_and_out_recycles(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path, workers: int
) -> None:
    tunnel = await start_tunnel(nursery, backend, tmp_path, config=SMALL)
    rnd = random.Random(workers)
    counts: list[int] = []
    with trio.fail_after(60):
        async with _tunnel_stream(tunnel) as stream, open_rpc_client(stream) as rpc:
            assert isinstance(stream, H1TunnelStream)
            counter = await rpc.bind(COUNTER)
            epm = await rpc.bind(EPM_SYNTAX)

            async def worker() -> None:
                for _ in range(48 // workers):
                    payload = os.urandom(rnd.choice([10, 5000, 60000, 200000]))
                    answer = await rpc.call(counter, 0, payload)
                    assert answer[4:] == payload
                    counts.append(int.from_bytes(answer[:4], "little"))
                    size = rnd.choice([100, 70000, 250000])
                    answer = await rpc.call(counter, 1, size.to_bytes(4, "little"))
                    assert answer[4:] == _expanded(size)
                    counts.append(int.from_bytes(answer[:4], "little"))
                    request = stubs.encode_lookup_request(stubs.LookupRequest())
                    reply = stubs.decode_lookup_response(
                        await rpc.call(epm, stubs.OP_EPT_LOOKUP, request)
                    )
                    assert COUNTER in {entry.interface for entry in reply.entries}
                    if not reply.entry_handle.is_null:
                        free = stubs.encode_handle_free_request(reply.entry_handle)
                        await rpc.call(epm, stubs.OP_EPT_LOOKUP_HANDLE_FREE, free)

            async with trio.open_nursery() as workers_nursery:
                for _ in range(workers):
                    workers_nursery.start_soon(worker)
            in_recycles, out_recycles = stream.in_recycles, stream.out_recycles
    # Some 3 MB each way through 128 KiB channels.
    assert in_recycles >= 5 and out_recycles >= 5, (in_recycles, out_recycles)
    # One backend connection served every counted call, each exactly once.
    assert sorted(counts) == list(range(1, len(counts) + 1))


async def test_a_store_session_survives_recycles(nursery: trio.Nursery, tmp_path: Path) -> None:
    from clients.api import logon
    from dcerpc.syntax import MSGPACK
    from endpoint_mapper import map_endpoint_on
    from mapi.rpc.service import STORE_SYNTAX
    from mapi_anywhere.config import (
        Config,
        EndpointMapperSection,
        ImapSection,
        Pop3Section,
        ServerSection,
        SmtpSection,
        SubmissionSection,
        TunnelSection,
    )
    from mapi_anywhere.serve import run_server

    settings = TunnelConfig(port=0, out_content_length=131072)
    config = Config(
        server=ServerSection(data_dir=tmp_path / "data"),
        endpoint_mapper=EndpointMapperSection(port=0),
        smtp=SmtpSection(enabled=False),
        submission=SubmissionSection(enabled=False),
        imap=ImapSection(enabled=False),
        pop3=Pop3Section(enabled=False),
        tunnel=TunnelSection(settings=settings),
    )
    server = await nursery.start(run_server, config)
    await trio.to_thread.run_sync(server.store.add_user, "alice", "correct horse")
    assert server.tunnel is not None
    url = f"https://127.0.0.1:{server.tunnel.port}/"
    client_config = TunnelConfig(channel_lifetime=131072)

    def tunnel_to(port: int):
        return open_tunnel_stream(
            url,
            "127.0.0.1",
            port,
            username="alice",
            password="correct horse",
            http2=False,
            fingerprint=server.tunnel.fingerprint,
            config=client_config,
        )

    attachment = os.urandom(700_000)
    with trio.fail_after(60):
        async with tunnel_to(server.epm_port) as stream, open_rpc_client(stream) as rpc:
            await rpc.bind(EPM_SYNTAX)
            tower = await map_endpoint_on(rpc, STORE_SYNTAX)
        assert tower is not None and tower.port is not None
        async with tunnel_to(tower.port) as stream, open_rpc_client(stream) as rpc:
            assert isinstance(stream, H1TunnelStream)
            session = await logon(
                rpc, await rpc.bind(STORE_SYNTAX, (MSGPACK,)), "alice", "correct horse"
            )
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            msg = await inbox.create_message()
            await msg.set_props({"PR_SUBJECT": "recycled", "PR_MESSAGE_CLASS": "IPM.Note"})
            att = await msg.create_attachment()
            await att.set_props({"PR_ATTACH_METHOD": 1, "PR_ATTACH_LONG_FILENAME": "a.bin"})
            data = await att.open_stream("PR_ATTACH_DATA_BIN", write=True, create=True)
            for start in range(0, len(attachment), 65536):
                await data.write(attachment[start : start + 65536])
            await data.commit()
            await att.save()
            entry_id = await msg.save()
            uploaded = stream.in_recycles

            again = await store.open_message(entry_id)
            assert (await again.get_props(["PR_SUBJECT"]))["PR_SUBJECT"] == "recycled"
            read = await (await again.open_attachment(0)).open_stream("PR_ATTACH_DATA_BIN")
            received = bytearray()
            while chunk := await read.read(100_000):
                received += chunk
            assert bytes(received) == attachment
            downloaded = stream.out_recycles
    assert uploaded >= 3 and downloaded >= 3, (uploaded, downloaded)


# -- raw clients ----------------------------------------------------------------------------


def request(method: str, tunnel: Tunnel, length: int, server: str = "localhost") -> bytes:
    return (
        f"{method} /rpc/rpcproxy.dll?{server}:{tunnel.backend.epm_port} HTTP/1.1\r\n"
        f"Host: localhost\r\nAccept: application/rpc\r\nContent-Length: {length}\r\n"
        f"Authorization: {AUTH}\r\n\r\n"
    ).encode()


class OutReader:
    """Reads an OUT channel: the response head, then PDUs."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.head = b""
        self.body_bytes = 0

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            assert await self._fill(), "the OUT channel closed before its head"
        end = self.buffer.index(b"\r\n\r\n") + 4
        self.head = bytes(self.buffer[:end])
        del self.buffer[:end]
        return self.head

    async def pdu(self) -> bytes:
        while (
            len(self.buffer) < 10 or len(self.buffer) < struct.unpack_from("<H", self.buffer, 8)[0]
        ):
            assert await self._fill(), "the OUT channel closed"
        size = struct.unpack_from("<H", self.buffer, 8)[0]
        pdu = bytes(self.buffer[:size])
        del self.buffer[:size]
        self.body_bytes += size
        return pdu

    async def until(self, kind: rts.Kind, rpc: list[bytes]) -> None:
        """Read up to the RTS PDU ``kind``, collecting RPC PDUs (pings are skipped)."""
        while True:
            pdu = await self.pdu()
            if not rts.is_rts(pdu):
                rpc.append(pdu)
                continue
            got = rts.classify(rts.decode_rts(pdu))
            if got is kind:
                return
            assert got is rts.Kind.PING, f"expected {kind}, got {got}"


@dataclass
class RawVc:
    """A virtual connection driven by hand."""

    tunnel: Tunnel
    out: OutReader
    out_s: trio.SSLStream[trio.SocketStream]
    in_s: trio.SSLStream[trio.SocketStream]
    vc: bytes = b"K" * 16
    in_cookie: bytes = b"I" * 16
    out_cookie: bytes = b"O" * 16

    @classmethod
    async def open(cls, tunnel: Tunnel) -> RawVc:
        out_s, in_s = await connect(tunnel), await connect(tunnel)
        raw = cls(tunnel, OutReader(out_s), out_s, in_s)
        await out_s.send_all(request("RPC_OUT_DATA", tunnel, 76))
        await out_s.send_all(rts.conn_a1(raw.vc, raw.out_cookie, 262144))
        await in_s.send_all(request("RPC_IN_DATA", tunnel, 1 << 30))
        await in_s.send_all(rts.conn_b1(raw.vc, raw.in_cookie, b"a" * 16))
        assert (await raw.out.read_head()).startswith(b"HTTP/1.1 200 Success\r\n")
        await raw.out.until(rts.Kind.CONN_A3, [])
        await raw.out.until(rts.Kind.CONN_C2, [])
        # Bind the counting interface (fragments of at most 4280 bytes each way).
        bind = BindPdu(call_id=1, contexts=(ContextElement(0, COUNTER, (NDR,)),))
        await in_s.send_all(bind.encode())
        ack = decode_pdu(await raw.out.pdu())
        assert ack.ptype is PType.BIND_ACK
        return raw

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.out_s)
        await trio.aclose_forcefully(self.in_s)


def call(call_id: int, opnum: int, stub: bytes) -> bytes:
    return RequestPdu(call_id=call_id, opnum=opnum, alloc_hint=len(stub), stub=stub).encode()


def answers(pdus: list[bytes]) -> dict[int, bytes]:
    """Response stubs by call id, reassembled from fragments in the order received."""
    stubs_by_call: dict[int, bytearray] = {}
    done: dict[int, bytes] = {}
    for raw in pdus:
        pdu = decode_pdu(raw)
        assert isinstance(pdu, ResponsePdu)
        stubs_by_call.setdefault(pdu.call_id, bytearray()).extend(pdu.stub)
        if pdu.pfc_flags & LAST_FRAG:
            done[pdu.call_id] = bytes(stubs_by_call.pop(pdu.call_id))
    return done


async def test_the_wire_sequence_of_an_in_recycle(tunnel: Tunnel) -> None:
    with trio.fail_after(20):
        raw = await RawVc.open(tunnel)
        successor = b"J" * 16
        new_in = await connect(tunnel)
        await new_in.send_all(request("RPC_IN_DATA", tunnel, 1 << 30))
        await new_in.send_all(rts_recycling.in_r2_a1(raw.vc, raw.in_cookie, successor))
        await raw.out.until(rts.Kind.IN_R2_A4, [])
        # An RPC PDU on the successor overtakes the rest of the predecessor: the proxy
        # must not read it before the predecessor's last PDU, IN_R2/A5 (it is plugged).
        await new_in.send_all(call(3, 0, b"on the successor"))
        await raw.in_s.send_all(call(2, 0, b"on the predecessor"))
        got = answers([await raw.out.pdu()])
        assert got == {2: (1).to_bytes(4, "little") + b"on the predecessor"}
        await raw.in_s.send_all(rts_recycling.in_r2_a5(successor))
        got = answers([await raw.out.pdu()])
        assert got == {3: (2).to_bytes(4, "little") + b"on the successor"}
        # The proxy closes the predecessor (without an HTTP answer) and reads on.
        assert await read_until_closed(raw.in_s) == b""
        await new_in.send_all(call(4, 0, b"later"))
        assert answers([await raw.out.pdu()])[4] == (3).to_bytes(4, "little") + b"later"
        await raw.aclose()
        await trio.aclose_forcefully(new_in)


async def test_the_wire_sequence_of_an_out_recycle(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path
) -> None:
    lifetime = 32768
    config = replace(FAST, out_content_length=lifetime, out_recycle_threshold=8192)
    tunnel = await start_tunnel(nursery, backend, tmp_path, config=config)
    size = 40_000  # ten fragments of at most 4280 bytes: more than one channel holds
    with trio.fail_after(20):
        raw = await RawVc.open(tunnel)
        await raw.in_s.send_all(call(2, 1, size.to_bytes(4, "little")))
        before_a2: list[bytes] = []
        await raw.out.until(rts.Kind.OUT_R2_A2, before_a2)
        successor = b"P" * 16
        new_out_s = await connect(tunnel)
        new_out = OutReader(new_out_s)
        await new_out_s.send_all(request("RPC_OUT_DATA", tunnel, 120))
        await new_out_s.send_all(rts_recycling.out_r2_a3(raw.vc, raw.out_cookie, successor, 262144))
        on_predecessor: list[bytes] = []
        await raw.out.until(rts.Kind.OUT_R2_A6, on_predecessor)
        await raw.in_s.send_all(rts_recycling.out_r2_a7(successor))
        await new_out_s.send_all(rts_recycling.out_r2_c1())
        await raw.out.until(rts.Kind.OUT_R2_B3, on_predecessor)
        # Nothing follows OUT_R2/B3 on the predecessor, which stayed within its length.
        assert await read_until_closed(raw.out_s) == b""
        assert raw.out.body_bytes <= lifetime
        head = await new_out.read_head()
        assert head.startswith(b"HTTP/1.1 200 Success\r\n")
        assert f"content-length: {lifetime}\r\n".encode() in head.lower()
        on_successor: list[bytes] = []
        while 2 not in answers([*before_a2, *on_predecessor, *on_successor]):
            on_successor.append(await new_out.pdu())
        assert before_a2 and on_successor  # the reply really spans both channels
        reply = answers([*before_a2, *on_predecessor, *on_successor])[2]
        assert reply == (1).to_bytes(4, "little") + _expanded(size)  # nothing lost or doubled
        await raw.aclose()
        await trio.aclose_forcefully(new_out_s)


async def test_successors_with_wrong_cookies_are_refused_and_the_vc_goes_on(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path
) -> None:
    tunnel = await start_tunnel(nursery, backend, tmp_path, config=SMALL)
    with trio.fail_after(30):
        async with _tunnel_stream(tunnel) as stream, open_rpc_client(stream) as rpc:
            assert isinstance(stream, H1TunnelStream)
            counter = await rpc.bind(COUNTER)
            assert await rpc.call(counter, 0, b"before") == (1).to_bytes(4, "little") + b"before"
            new = os.urandom(16)
            attempts = [
                # The right VC, a predecessor that is not the current IN channel.
                (
                    "RPC_IN_DATA",
                    "localhost",
                    rts_recycling.in_r2_a1(stream.vc_cookie, os.urandom(16), new),
                ),
                # No such VC.
                (
                    "RPC_IN_DATA",
                    "localhost",
                    rts_recycling.in_r2_a1(os.urandom(16), stream.in_cookie, new),
                ),
                # The right VC and predecessor, but for another target (server name).
                (
                    "RPC_IN_DATA",
                    SERVER_NAME,
                    rts_recycling.in_r2_a1(stream.vc_cookie, stream.in_cookie, new),
                ),
                # The same for the OUT channel.
                (
                    "RPC_OUT_DATA",
                    "localhost",
                    rts_recycling.out_r2_a3(stream.vc_cookie, os.urandom(16), new, 262144),
                ),
                (
                    "RPC_OUT_DATA",
                    "localhost",
                    rts_recycling.out_r2_a3(os.urandom(16), stream.out_cookie, new, 262144),
                ),
                (
                    "RPC_OUT_DATA",
                    SERVER_NAME,
                    rts_recycling.out_r2_a3(stream.vc_cookie, stream.out_cookie, new, 262144),
                ),
            ]
            for method, server, first in attempts:
                async with await connect(tunnel) as s:
                    length = 1 << 30 if method == "RPC_IN_DATA" else 120
                    await s.send_all(request(method, tunnel, length, server) + first)
                    answer = await read_until_closed(s)
                assert answer.startswith(b"HTTP/1.0 503 RPC Error: 6c0\r\n"), (method, answer)
            # The VC goes on, its calls counted on the same backend connection, and it
            # still recycles both channels.
            in_before, out_before = stream.in_recycles, stream.out_recycles
            for n in range(2, 10):
                payload = os.urandom(60_000)
                assert await rpc.call(counter, 0, payload) == n.to_bytes(4, "little") + payload
            assert stream.in_recycles > in_before and stream.out_recycles > out_before


async def test_an_in_successor_without_its_a5_is_dropped_and_the_vc_goes_on(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path
) -> None:
    tunnel = await start_tunnel(
        nursery, backend, tmp_path, config=replace(FAST, recycle_timeout=0.5)
    )
    with trio.fail_after(20):
        raw = await RawVc.open(tunnel)
        stale = await connect(tunnel)
        await stale.send_all(request("RPC_IN_DATA", tunnel, 1 << 30))
        await stale.send_all(rts_recycling.in_r2_a1(raw.vc, raw.in_cookie, b"S" * 16))
        await raw.out.until(rts.Kind.IN_R2_A4, [])
        # No IN_R2/A5 comes: the proxy gives up on the successor after recycle_timeout.
        assert await read_until_closed(stale) == b""
        await trio.aclose_forcefully(stale)
        await raw.in_s.send_all(call(2, 0, b"still here"))
        assert answers([await raw.out.pdu()])[2] == (1).to_bytes(4, "little") + b"still here"
        # And a later recycle of the same IN channel succeeds.
        new_in = await connect(tunnel)
        await new_in.send_all(request("RPC_IN_DATA", tunnel, 1 << 30))
        await new_in.send_all(rts_recycling.in_r2_a1(raw.vc, raw.in_cookie, b"T" * 16))
        await raw.out.until(rts.Kind.IN_R2_A4, [])
        await raw.in_s.send_all(rts_recycling.in_r2_a5(b"T" * 16))
        await new_in.send_all(call(3, 0, b"recycled"))
        assert answers([await raw.out.pdu()])[3] == (2).to_bytes(4, "little") + b"recycled"
        await raw.aclose()
        await trio.aclose_forcefully(new_in)


async def test_a_client_that_ignores_out_recycling_gets_a_clean_end(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path
) -> None:
    lifetime = 16384
    config = replace(
        FAST, out_content_length=lifetime, out_recycle_threshold=4096, recycle_timeout=0.5
    )
    tunnel = await start_tunnel(nursery, backend, tmp_path, config=config)
    with trio.fail_after(20):
        raw = await RawVc.open(tunnel)
        await raw.in_s.send_all(call(2, 1, (40_000).to_bytes(4, "little")))
        rpc: list[bytes] = []
        await raw.out.until(rts.Kind.OUT_R2_A2, rpc)
        # We do not open a successor: the proxy sends what still fits, then ends the VC.
        rest = await read_until_closed(raw.out_s)
        raw.out.buffer += rest
        while raw.out.buffer:
            pdu = await raw.out.pdu()
            if not rts.is_rts(pdu):
                rpc.append(pdu)
        assert raw.out.body_bytes <= lifetime
        assert 2 not in answers(rpc)  # the reply could not be completed...
        assert b"".join(decode_pdu(p).stub for p in rpc)  # type: ignore[attr-defined]
        assert await read_until_closed(raw.in_s) == b""  # ...and the whole VC ended
        await raw.aclose()
    with trio.fail_after(20):  # the proxy serves on
        async with (
            _tunnel_stream(tunnel, TunnelConfig()) as stream,
            open_rpc_client(stream) as rpc_client,
        ):
            ctx = await rpc_client.bind(COUNTER)
            assert await rpc_client.call(ctx, 0, b"ok") == (1).to_bytes(4, "little") + b"ok"
