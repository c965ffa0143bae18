"""No user can stall the server: work budgets, cancellation, worker pools, reaping.

Each test runs a real server on loopback with a mailbox that makes a restriction
expensive (an OR of 1,000 RELOP_RE leaves on PR_BODY, within the restriction limits,
over messages with long bodies: minutes of work without a budget), and checks what
other users, other calls and the process itself still get.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import trio
from serve_helpers import start_server

from clients.api import connect
from dcerpc.pdu import BindPdu, ContextElement, RequestPdu
from dcerpc.server import RpcServer
from dcerpc.syntax import MSGPACK
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.rpc.service import OP_EXECUTE, STORE_SYNTAX
from mapi.store import ObjectStore
from mapi_anywhere.config import StoreSection

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
#: Messages in alice's Inbox and the length of each body: enough that the runaway
#: restriction needs far more than any budget used here.
MESSAGES = 40
BODY_CHARS = 4000


def runaway_restriction() -> dict[str, object]:
    """1,000 regular expressions that never match, each scanning every body whole."""
    leaves = [
        {"rt": rs.RES_PROPERTY, "relop": rs.RELOP_RE, "tag": pt.PR_BODY_W, "value": f"q{i}z$"}
        for i in range(1000)
    ]
    return {"rt": rs.RES_OR, "res": leaves}


def fill_inbox(store: ObjectStore, user: str, password: str) -> None:
    """MESSAGES messages with long bodies in ``user``'s Inbox (through the store core)."""
    session = store.logon_with_password(user, password)
    try:
        msgstore = session.open_store()
        inbox = msgstore.open_folder(msgstore.special_folder_id("inbox"))
        for i in range(MESSAGES):
            message = inbox.create_message()
            message.set_props(
                [
                    (pt.PR_SUBJECT_W, f"message {i}"),
                    (pt.PR_BODY_W, "lorem ipsum " * (BODY_CHARS // 12)),
                ]
            )
            message.save_changes()
    finally:
        session.logoff()


async def start(nursery: trio.Nursery, tmp_path: Path, **store: object):  # type: ignore[no-untyped-def]
    """A real server with alice and bob, and alice's Inbox filled; ``store``: keys of
    the ``[store]`` section."""
    settings = StoreSection(demo_user=False, **store)  # type: ignore[arg-type]
    # Raw unauthenticated store connections ([rpc] min_auth_level = "none"): the
    # scheduling is tested here, authentication in tests/test_store_security.py.
    running = await start_server(
        nursery, tmp_path / "data", PASSWORDS, store=settings, min_auth_level="none"
    )
    await trio.to_thread.run_sync(fill_inbox, running.store, "alice", PASSWORDS["alice"])
    return running


def address(running) -> str:  # type: ignore[no-untyped-def]
    return f"ncacn_ip_tcp:127.0.0.1[{running.epm_port}]"


async def runaway(running, user: str = "alice", password: str = "") -> None:  # type: ignore[no-untyped-def]
    """``user``'s runaway query: restrict the Inbox's contents table and read a row."""
    async with connect(address(running), user, password or PASSWORDS[user]) as session:
        store = await session.open_store()
        inbox = await store.open_folder(await store.special_folder("inbox"))
        table = await inbox.contents_table()
        await table.restrict(runaway_restriction())
        await table.query_rows(10)


async def bob_works(running) -> None:  # type: ignore[no-untyped-def]
    """Another user's logon and an ordinary batch."""
    async with connect(address(running), "bob", PASSWORDS["bob"]) as session:
        store = await session.open_store()
        inbox = await store.open_folder(await store.special_folder("inbox"))
        table = await inbox.contents_table()
        assert await table.row_count() == 0


async def test_a_runaway_restriction_is_answered_within_its_budget_while_others_work(
    nursery, tmp_path
):
    running = await start(nursery, tmp_path, batch_seconds=3.0)
    outcome: list[BaseException] = []
    bob_done = trio.Event()

    async def alice() -> None:
        try:
            await runaway(running)
        except errors.MapiError as exc:
            outcome.append(exc)

    with trio.fail_after(60):  # without a budget the query runs for many minutes
        async with trio.open_nursery() as inner:
            inner.start_soon(alice)
            await trio.sleep(0.5)  # alice's query is running
            await bob_works(running)
            bob_done.set()
            assert not outcome, "bob finished while alice's query still ran"
    assert len(outcome) == 1
    assert isinstance(outcome[0], errors.Timeout), outcome[0]
    assert "ran out of time" in str(outcome[0])


async def test_forty_runaway_calls_of_one_user_do_not_take_every_worker(nursery, tmp_path):
    """The issue's pile-up: 40 calls by one user used to hold all 40 of trio's worker
    threads waiting for one mailbox lock, and every other user's logon hung."""
    running = await start(nursery, tmp_path, batch_seconds=3.0)
    finished = 0

    async def one() -> None:
        nonlocal finished
        with contextlib.suppress(errors.MapiError):
            await runaway(running)
        finished += 1

    with trio.fail_after(300):
        async with trio.open_nursery() as inner:
            for _ in range(40):
                inner.start_soon(one)
            await trio.sleep(1.0)
            with trio.fail_after(30):
                await bob_works(running)
            # Four at a time, each a budget long (or a wait for the lock as long):
            # bob was served in the middle of the pile, not after it.
            assert finished < 40
            assert running.store_service.pools.users_waiting() >= 1


async def test_a_closed_connection_stops_its_batch_and_frees_the_mailbox(nursery, tmp_path):
    """Killing the client stops the query (its budget would allow ten minutes)."""
    running = await start(nursery, tmp_path, batch_seconds=600.0)
    with trio.move_on_after(1.0):  # the client goes away in the middle of the query
        await runaway(running)
    with trio.fail_after(30):
        # The same mailbox answers at once: the runaway's thread let go of it.
        async with connect(address(running), "alice", PASSWORDS["alice"]) as session:
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            table = await inbox.contents_table()
            assert await table.row_count() == MESSAGES


async def test_sessions_of_vanished_clients_are_reaped_after_their_grace(nursery, tmp_path):
    running = await start(nursery, tmp_path, detached_grace=1.0)
    service = running.store_service
    with trio.fail_after(30):
        async with connect(address(running), "bob", PASSWORDS["bob"]) as session:
            await session.open_store()
            [info] = service.list_sessions()
            assert (info.user, info.transport, info.connections) == ("bob", "lan", 1)
            # The client vanishes without disconnect: its socket just closes.
            await session.rpc.aclose()
            while service.list_sessions():  # noqa: ASYNC110 - polled: no event to wait on
                await trio.sleep(0.2)


async def test_a_deleted_user_is_refused_at_the_next_call(nursery, tmp_path):
    running = await start(nursery, tmp_path)
    service = running.store_service
    with trio.fail_after(30):
        async with connect(address(running), "bob", PASSWORDS["bob"]) as session:
            store = await session.open_store()
            mailbox = running.store.directory.get_user("bob").mailbox
            await service.delete_user("bob")
            with pytest.raises(errors.LogonFailed):
                await store.special_folder("inbox")
    left = [p.name for p in (tmp_path / "data" / "mailboxes").iterdir()]
    assert not [name for name in left if name.startswith(mailbox)], left


async def test_a_password_change_ends_the_users_sessions(nursery, tmp_path):
    running = await start(nursery, tmp_path)
    service = running.store_service
    with trio.fail_after(30):
        async with connect(address(running), "bob", PASSWORDS["bob"]) as session:
            store = await session.open_store()
            assert await service.set_password("bob", "a new password") == 1
            with pytest.raises(errors.LogonFailed):
                await store.special_folder("inbox")
        async with connect(address(running), "bob", "a new password") as session:
            await session.open_store()


def test_sigterm_stops_the_server_during_a_runaway_query(tmp_path):
    """The process ends cleanly (exit 0, not the shutdown watchdog's hard exit) within
    seconds of SIGTERM, with a query that may run for ten minutes in a worker."""
    data_dir = tmp_path / "data"
    store = ObjectStore(data_dir)
    for user, password in PASSWORDS.items():
        store.add_user(user, password)
    fill_inbox(store, "alice", PASSWORDS["alice"])
    store.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\ndata_dir = "{data_dir}"\n[endpoint_mapper]\nport = 0\n'
        "[store]\ndemo_user = false\nbatch_seconds = 600\n[tunnel]\nenabled = false\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapi_anywhere", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        epm_port = None
        for _ in range(200):
            line = proc.stdout.readline()
            if "endpoint mapper listening" in line:
                epm_port = int(line.rsplit("[", 1)[1].split("]")[0])
            if not line or "ready" in line:
                break
        assert epm_port is not None, "the server did not start"

        async def query_then_stop() -> None:
            class Running:
                pass

            running = Running()
            running.epm_port = epm_port  # type: ignore[attr-defined]
            async with trio.open_nursery() as inner:
                inner.start_soon(runaway, running)
                await trio.sleep(1.5)  # the query is running in a worker thread
                proc.send_signal(signal.SIGTERM)
                inner.cancel_scope.cancel()

        trio.run(query_then_stop)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_sweep_cancelled_midway_still_closes_what_it_removed(nursery, tmp_path):
    """Review finding: a call that ran the periodic sweep and was cancelled (its client
    hung up) removed another user's session from the table without closing it; the
    store kept counting it against that user's session limit for good."""
    running = await start(nursery, tmp_path, detached_grace=0.1)
    service, store = running.store_service, running.store
    with trio.fail_after(30):
        async with connect(address(running), "alice", PASSWORDS["alice"]) as alice:
            await alice.open_store()
            await alice.rpc.aclose()  # alice's client vanishes
        await trio.sleep(0.3)  # past her grace
        [live] = list(service._sessions.values())
        service._last_sweep = -math.inf  # the sweep is due in the next call
        token = trio.lowlevel.current_trio_token()
        real = store.close_idle_mailboxes
        with trio.CancelScope() as scope:

            def hang_up_meanwhile(*args: object) -> int:
                token.run_sync_soon(scope.cancel)
                return real(*args)  # type: ignore[arg-type]

            store.close_idle_mailboxes = hang_up_meanwhile  # type: ignore[method-assign]
            await service._expire_idle()  # what any user's call runs first
        store.close_idle_mailboxes = real  # type: ignore[method-assign]
        assert not service._sessions
        assert live.closed
        assert store._sessions == {}  # alice's place in the session count is free


async def test_a_call_that_comes_with_its_connections_close_does_not_pin_a_session(
    nursery, tmp_path
):
    """Review finding: a request and the end of a tunnel connection in one read ran the
    close callbacks before the call counted its connection: the session was never
    reaped."""
    running = await start(nursery, tmp_path, detached_grace=0.5)
    service = running.store_service
    with trio.fail_after(60):
        async with connect(address(running), "bob", PASSWORDS["bob"]) as bob:
            sid = bob.session_id
            await bob.rpc.aclose()  # bob's client vanishes: the grace starts
        relay = RpcServer([service.interface()])
        delivered: list[bytes] = []

        async def deliver(pdus: list[bytes]) -> None:
            delivered.extend(pdus)

        conn = relay.attach(nursery, deliver, peer=("198.51.100.9", 0))
        bind = BindPdu(
            call_id=1,
            max_xmit_frag=4280,
            max_recv_frag=4280,
            contexts=(ContextElement(0, STORE_SYNTAX, (MSGPACK,)),),
        )
        await conn.receive_data(bind.encode())
        stub = msgpack.packb({"session": sid, "ops": [["open_store", {"out": 1}]]})
        await conn.receive_data(RequestPdu(call_id=2, opnum=OP_EXECUTE, stub=stub).encode())
        with contextlib.suppress(trio.BrokenResourceError):
            await conn.receive_data(b"")  # the tunnel's client hangs up at once
        while service.list_sessions():  # noqa: ASYNC110 - reaped by the housekeeping
            await trio.sleep(0.2)


async def test_a_few_accounts_running_many_batches_leave_threads_to_the_others(nursery, tmp_path):
    """Review finding: the cap was per account only, so a few accounts (8 x 4 of 32
    threads by default) took every thread. Here 4 threads: alice and carol run two
    runaway queries each, and bob, with nothing running, still gets a thread."""
    running = await start(
        nursery, tmp_path, batch_seconds=5.0, batch_threads=4, batch_threads_per_user=4
    )
    await trio.to_thread.run_sync(running.store.add_user, "carol", "carol-password")
    await trio.to_thread.run_sync(fill_inbox, running.store, "carol", "carol-password")
    finished = 0

    async def one(user: str, password: str) -> None:
        nonlocal finished
        with contextlib.suppress(errors.MapiError):
            await runaway(running, user, password)
        finished += 1

    with trio.fail_after(120):
        async with trio.open_nursery() as inner:
            for user, password in [("alice", PASSWORDS["alice"]), ("carol", "carol-password")]:
                for _ in range(2):
                    inner.start_soon(one, user, password)
            await trio.sleep(1.0)  # four runaways asked for the four threads
            await bob_works(running)
            assert finished == 0, "bob waited for a runaway to end"
