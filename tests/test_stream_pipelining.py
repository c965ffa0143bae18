"""Pipelined stream calls in the client library against a real server: write-behind and
read-ahead give the bytes, positions and errors that calls in turn give, on the LAN and
through both tunnels, and the calls do overlap (counted at the client's DCE/RPC
connection: requests sent whose answer has not arrived yet)."""

from __future__ import annotations

import random
import weakref
from typing import Any

import pytest
import trio
from serve_helpers import start_server

from clients.api import Attachment, Message, Session, Stream, connect
from dcerpc.client_connection import ClientConnection
from dcerpc.events import FaultReceived, ResponseReceived
from mapi.model import errors
from mapi.storage.db import blob_dir_of

PASSWORD = "pipelines"
CHUNK = 64 * 1024


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(nursery, tmp_path / "data", {"carol": PASSWORD})


class Outstanding:
    """The most requests one client connection had out at once (sent, their answer not
    received yet) since :meth:`reset`: a sans-IO count, whatever the transport."""

    def __init__(self) -> None:
        self.most = 0
        self._out: weakref.WeakKeyDictionary[ClientConnection, set[int]] = (
            weakref.WeakKeyDictionary()
        )

    def reset(self) -> None:
        self.most = 0

    def sent(self, core: ClientConnection, call_id: int) -> None:
        out = self._out.setdefault(core, set())
        out.add(call_id)
        self.most = max(self.most, len(out))

    def answered(self, core: ClientConnection, call_ids: list[int]) -> None:
        self._out.get(core, set()).difference_update(call_ids)


@pytest.fixture
def outstanding(monkeypatch: pytest.MonkeyPatch) -> Outstanding:
    """Counts the requests of every client connection of the test (all of this process)."""
    count = Outstanding()
    request, receive, orphan = (
        ClientConnection.request,
        ClientConnection.receive_data,
        ClientConnection.orphan,
    )

    def counted_request(self: ClientConnection, *args: Any, **kwargs: Any) -> int:
        call_id = request(self, *args, **kwargs)
        count.sent(self, call_id)
        return call_id

    def counted_receive(self: ClientConnection, data: bytes | bytearray) -> list[Any]:
        events = receive(self, data)
        answers = (ResponseReceived, FaultReceived)
        count.answered(self, [e.call_id for e in events if isinstance(e, answers)])
        return events

    def counted_orphan(self: ClientConnection, call_id: int) -> None:
        orphan(self, call_id)
        count.answered(self, [call_id])

    monkeypatch.setattr(ClientConnection, "request", counted_request)
    monkeypatch.setattr(ClientConnection, "receive_data", counted_receive)
    monkeypatch.setattr(ClientConnection, "orphan", counted_orphan)
    return count


def assert_overlap(most: int, window: int, what: str) -> None:
    """Pipelined calls overlap, up to the window and no further; without pipelining
    (a window of 1) each call waits for its answer."""
    if window == 1:
        assert most == 1, f"{what}: {most} requests out at once with a window of 1"
    else:
        assert 2 <= most <= window, f"{what}: {most} requests out at once (window {window})"


def open_session(server, transport: str):
    if transport == "lan":
        return connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "carol", PASSWORD)
    tunnel = server.tunnel
    url = f"https://127.0.0.1:{tunnel.port}/?epm={server.epm_port}"
    return connect(url, "carol", PASSWORD, fingerprint=tunnel.fingerprint, http2=transport == "h2")


async def new_attachment(session: Session) -> tuple[Message, Attachment, Stream]:
    store = await session.open_store()
    inbox = await store.open_folder(await store.special_folder("inbox"))
    async with session.batch() as batch:
        msg = batch.add(inbox.create_message())
        attach = batch.add(msg.create_attachment())
        stream = batch.add(attach.open_stream("PR_ATTACH_DATA_BIN", write=True, create=True))
    return msg, attach, stream


async def save_and_reopen(
    session: Session, msg: Message, attach: Attachment, stream: Stream
) -> Stream:
    """Commit and save what ``stream`` wrote; the saved attachment's data, read-only."""
    await stream.commit()
    await stream.release()
    await attach.save()
    eid = await msg.save()
    saved = await (await session.open_store()).open_message(eid)
    async with session.batch() as batch:
        reader: Stream = batch.add(
            batch.add(saved.open_attachment(0)).open_stream("PR_ATTACH_DATA_BIN")
        )
    return reader


async def read_to_end(stream: Stream, size: int) -> bytes:
    out = b""
    for _ in range(10_000):
        block = await stream.read(size)
        if not block:
            return out
        out += block
    raise AssertionError("the stream never ended")


@pytest.mark.parametrize(("transport", "window"), [("lan", 1), ("lan", 4), ("h2", 4), ("h1", 3)])
async def test_pipelined_writes_and_reads_give_what_calls_in_turn_give(
    server, outstanding, transport, window
):
    rng = random.Random(window)
    pieces = [rng.randbytes(rng.choice([1, 1000, CHUNK, CHUNK + 7, 200_000])) for _ in range(30)]
    data = b"".join(pieces)
    with trio.fail_after(60):
        async with open_session(server, transport) as session:
            msg, attach, stream = await new_attachment(session)
            stream.window = window
            outstanding.reset()
            for piece in pieces:
                assert await stream.write(piece) == len(piece)
            assert await stream.seek(0, 1) == len(data)  # from the position: ours
            assert_overlap(outstanding.most, window, "writes")
            assert await stream.size() == len(data)
            await stream.seek(0)
            outstanding.reset()
            assert await read_to_end(stream, 100_000) == data
            reader = await save_and_reopen(session, msg, attach, stream)
            reader.window = window
            assert await read_to_end(reader, CHUNK) == data
            assert_overlap(outstanding.most, window, "reads")
            # Reads of changing sizes, and a seek in between, after reads ahead.
            await reader.seek(10)
            assert await reader.read(5) == data[10:15]
            assert await reader.read(CHUNK) == data[15 : 15 + CHUNK]
            assert await reader.read(CHUNK) == data[15 + CHUNK : 15 + 2 * CHUNK]
            await reader.seek(-3, 2)
            assert await reader.read(CHUNK) == data[-3:]


async def test_batches_and_edits_see_the_pipelined_calls(server):
    with trio.fail_after(60):
        async with open_session(server, "lan") as session:
            _msg, _attach, stream = await new_attachment(session)
            for _ in range(8):
                await stream.write(b"a" * CHUNK)
            # A batch runs at the server's position: it is brought to ours first.
            async with session.batch() as batch:
                write = batch.add(stream.write(b"b" * 10))
                where = batch.add(stream.seek(0, 1))
            assert write.result == 10 and where.result == 8 * CHUNK + 10
            assert await stream.write(b"c") == 1  # and ours follows the batch
            await stream.seek(0)
            assert await stream.read(CHUNK) == b"a" * CHUNK  # reads ahead start here
            await stream.write(b"X" * 3)  # an edit drops them: the next read sees it
            assert await stream.read(4) == b"a" * 4
            await stream.seek(CHUNK)
            assert await stream.read(4) == b"XXXa"
            await stream.set_size(CHUNK + 2)
            await stream.seek(CHUNK)
            assert await stream.read(CHUNK) == b"XX"
            assert await stream.size() == CHUNK + 2
            await stream.seek(8 * CHUNK - 1)
            assert await stream.read(100) == b""


async def test_a_failed_write_behind_is_raised_by_the_next_calls(server):
    with trio.fail_after(60):
        async with open_session(server, "lan") as session:
            msg, attach, stream = await new_attachment(session)
            await stream.write(b"x" * 1000)
            readonly = await save_and_reopen(session, msg, attach, stream)
            assert await readonly.write(b"y") == 1  # sent in the background: no answer yet
            with pytest.raises(errors.NoAccess):
                await readonly.commit()
            with pytest.raises(errors.NoAccess):  # sticky: the content is unknown now
                await readonly.read(10)
            await readonly.release()  # releasing always works
            # Without pipelining, the call itself raises.
            stream = (await new_attachment(session))[2]
            stream.window = 1
            with pytest.raises(errors.InvalidParameter):  # above the per-call limit
                await stream.write(b"z" * (2 << 20))
            assert await stream.write(b"z") == 1
            assert await stream.size() == 1


async def test_nothing_of_a_released_upload_stays_in_the_mailbox(server):
    def rows() -> tuple[int, int]:
        store = server.store
        db = store.mailbox_db(store.directory.get_user("carol"))
        with db.reading() as conn:
            streams = conn.execute("SELECT count(*) FROM streams").fetchone()[0]
        blobs = blob_dir_of(db.path)
        files = len(list(blobs.iterdir())) if blobs.exists() else 0
        return files, int(streams)

    with trio.fail_after(60):
        async with open_session(server, "lan") as session:
            msg, attach, stream = await new_attachment(session)
            for _ in range(10):
                await stream.write(b"s" * CHUNK)
            await stream.commit()
            await attach.save()
            eid = await msg.save()
            # An upload abandoned without a save: its rows go when it is released.
            abandoned_msg, abandoned_attach, other = await new_attachment(session)
            for _ in range(5):
                await other.write(b"t" * CHUNK)
            await other.release()
            await abandoned_attach.release()
            await abandoned_msg.release()
            assert await trio.to_thread.run_sync(rows) == (1, 2)  # the saved value: one file
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            await inbox.delete_messages([eid], hard=True)
        # The session's end released the writer's objects: nothing is left.
        assert await trio.to_thread.run_sync(rows) == (0, 0)


@pytest.mark.parametrize("transport", ["h1", "h2"])
async def test_megabyte_writes_and_reads_ahead_through_the_tunnels(server, transport):
    # Pipelined megabyte calls keep the proxy's queues full both ways: it must go on
    # reading the client's flow-control acknowledgements while it holds requests back.
    data = random.Random(7).randbytes(1 << 20)
    rounds = 24
    with trio.fail_after(120):
        async with open_session(server, transport) as session:
            msg, attach, stream = await new_attachment(session)
            for _ in range(rounds):
                await stream.write(data)
            reader = await save_and_reopen(session, msg, attach, stream)
            for _ in range(rounds):
                assert await reader.read(len(data)) == data
            assert await reader.read(len(data)) == b""
