"""New-mail notifications on loopback: submit-to-event latency and fan-out rate.

The server is a real ``serve`` (endpoint mapper, object store, tunnel on a dynamic
port; SQLite in a temporary data directory) in a child process, started by
:func:`tunnel_bench.run_bench_server`; this process is the client. The users are
created before the server starts with a cheap scrypt cost (n = 2**10), so that 1,000
logons do not take minutes; logon is not what is measured here.

Latency (``--count`` submissions after a few warm-up ones, for each transport): a
sender on the LAN prepares a message to the recipient (one batch: create, set
properties, add the recipient, save), then the clock starts and it calls
``submit(message)``. The recipient, on the LAN (direct TCP), through the HTTP/2
tunnel or through the HTTP/1.1 tunnel (RPC over HTTP v2), has advised NEW_MAIL on its
store and sits in ``Session.wait_for_events()``; the clock stops when its long-poll
returns the new-mail event. One submission at a time; median and p99 in ms. Sender
and recipient run in this one process, so they share a clock.

Fan-out (``--sessions`` subscribed sessions, 1,000 by default, over direct TCP): the
sessions belong to ``ceil(sessions / --sessions-per-user)`` users (the store allows 64
sessions per user) and share connections, ``--sessions-per-connection`` each (one RPC
connection carries concurrent calls; the server runs at most 32 at once per
connection). Each session advises NEW_MAIL on its store and loops on
``wait_for_events``. For ``--seconds``, ``--senders`` LAN sessions each submit, one
after the other, messages addressed to every one of those users, so each submission
is one delivery per user and one new-mail event per session. The rate is the events
the sessions received divided by the time from the first submission to the last
event (after the senders stop, the events still in flight are awaited, bounded).
Also printed: deliveries/s, long-poll replies/s (a reply can carry several events),
and the CPU each process used over the run.

Prints one figure a line and rewrites its section of ``docs/benchmarks.md``.
Usage: ``python bench/notify_bench.py [--count 200] [--sessions 1000] [--seconds 10]``;
``--profile-server FILE`` writes the server's cProfile statistics (main thread) there.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rpc_bench import DOCS, write_section  # noqa: E402
from tunnel_bench import (  # noqa: E402
    TRANSPORTS,
    connect_via,
    launch_server,
    run_bench_server,
    stop_server,
)

SENDER, RECIPIENT = "sender", "rcpt"
FAN_PREFIX = "fan"
WARMUP = 5
#: Bound on waiting for one new-mail event in the latency run.
EVENT_TIMEOUT = 30.0
#: Bound on waiting for the fan-out's last events once the senders have stopped.
DRAIN_TIMEOUT = 120.0
CHEAP_KDF_N = 1 << 10


def password_of(user: str) -> str:
    return f"{user}-password"


def fan_users(count: int) -> list[str]:
    return [f"{FAN_PREFIX}{i:04d}" for i in range(count)]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def prepare(session: Any, drafts: Any, recipients: list[str], subject: str) -> Any:
    """A saved message to ``recipients`` in ``drafts``, in one round trip."""
    from mapi.model import proptags as pt

    async with session.batch() as batch:
        msg = batch.add(drafts.create_message())
        batch.add(msg.set_props({"PR_SUBJECT": subject, "PR_BODY": "hello"}))
        batch.add(
            msg.modify_recipients(
                [
                    {
                        "PR_DISPLAY_NAME": user,
                        "PR_EMAIL_ADDRESS": f"{user}@example.org",
                        "PR_ADDRTYPE": "SMTP",
                        "PR_RECIPIENT_TYPE": pt.MAPI_TO,
                    }
                    for user in recipients
                ]
            )
        )
        batch.add(msg.save())
    return msg


async def open_drafts(session: Any) -> Any:
    store = await session.open_store()
    return await store.open_folder(await store.special_folder("drafts"))


# -- latency ----------------------------------------------------------------------------------


def bench_latency(transport: str, info: dict[str, Any], count: int) -> list[float]:
    """Seconds from ``submit()`` to the recipient's new-mail event, ``count`` times."""
    import trio

    from mapi.wire import EventType

    async def run() -> list[float]:
        arrivals_in, arrivals = trio.open_memory_channel[float](1000)
        latencies: list[float] = []

        async def listen(session: Any) -> None:
            while True:
                for event in await session.wait_for_events(poll_seconds=10):
                    if event.name == "new_mail":
                        arrivals_in.send_nowait(time.perf_counter())

        async with (
            connect_via("direct", info, SENDER, password_of(SENDER)) as sender,
            connect_via(transport, info, RECIPIENT, password_of(RECIPIENT)) as recipient,
            trio.open_nursery() as nursery,
        ):
            store = await recipient.open_store()
            await store.advise(EventType.NEW_MAIL)
            nursery.start_soon(listen, recipient)
            drafts = await open_drafts(sender)
            for i in range(WARMUP + count):
                msg = await prepare(sender, drafts, [RECIPIENT], f"latency {i}")
                start = time.perf_counter()
                result = await msg.submit()
                with trio.fail_after(EVENT_TIMEOUT):
                    arrived = await arrivals.receive()
                if result["delivered"] != 1:
                    raise RuntimeError(f"submit delivered {result['delivered']} messages")
                if i >= WARMUP:
                    latencies.append(arrived - start)
                await msg.release()
            nursery.cancel_scope.cancel()
        return latencies

    return trio.run(run)


# -- fan-out ----------------------------------------------------------------------------------


def bench_fanout(
    info: dict[str, Any],
    server_pid: int,
    sessions: int,
    per_user: int,
    per_connection: int,
    seconds: float,
    senders: int,
) -> dict[str, float]:
    """Subscribe ``sessions`` sessions, deliver to all of them for ``seconds``; figures."""
    import trio

    from clients.api import ResyncRequired, Session, logon
    from dcerpc.client import open_tcp_rpc_client
    from dcerpc.syntax import MSGPACK
    from mapi.rpc.service import STORE_SYNTAX
    from mapi.wire import EventType

    users = fan_users(math.ceil(sessions / per_user))
    owners = [users[i % len(users)] for i in range(sessions)]
    connections = math.ceil(sessions / per_connection)

    async def run() -> dict[str, float]:
        received = 0
        replies = 0
        resyncs = 0
        last_event = 0.0
        subscribed = 0
        all_subscribed = trio.Event()
        drained = trio.Event()
        target = math.inf  # events to wait for, once the senders have stopped

        async def subscriber(session: Session) -> None:
            nonlocal received, replies, resyncs, last_event, subscribed
            async with session.batch() as batch:
                store = batch.add(session.open_store())
                batch.add(store.advise(EventType.NEW_MAIL))
            subscribed += 1
            if subscribed == sessions:
                all_subscribed.set()
            while True:
                try:
                    events = await session.wait_for_events(poll_seconds=30)
                except ResyncRequired:
                    resyncs += 1
                    continue
                new = sum(1 for event in events if event.name == "new_mail")
                if new:
                    received += new
                    replies += 1
                    last_event = time.monotonic()
                    if received >= target:
                        drained.set()

        async def connection(index: int) -> None:
            mine = owners[index * per_connection : (index + 1) * per_connection]
            async with open_tcp_rpc_client("127.0.0.1", info["store"]) as rpc:
                context_id = await rpc.bind(STORE_SYNTAX, (MSGPACK,))
                async with trio.open_nursery() as inner:
                    for user in mine:
                        session = await logon(rpc, context_id, user, password_of(user))
                        inner.start_soon(subscriber, session)
                    await trio.sleep_forever()

        submitted = 0
        go = trio.Event()
        deadline = math.inf

        async def sender(index: int) -> None:
            nonlocal submitted
            async with connect_via("direct", info, SENDER, password_of(SENDER)) as session:
                drafts = await open_drafts(session)
                await go.wait()
                round_ = 0
                while round_ == 0 or time.monotonic() < deadline:
                    msg = await prepare(session, drafts, users, f"fan-out {index}.{round_}")
                    result = await msg.submit()
                    await msg.release()
                    if result["delivered"] != len(users):
                        raise RuntimeError(f"delivered {result['delivered']} of {len(users)}")
                    submitted += 1
                    round_ += 1

        with trio.fail_after(600 + seconds + DRAIN_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for index in range(connections):
                    nursery.start_soon(connection, index)
                await all_subscribed.wait()
                async with trio.open_nursery() as sending:
                    for index in range(senders):
                        sending.start_soon(sender, index)
                    await trio.sleep(1.0)  # the senders log on
                    cpu_server, cpu_client = cpu_seconds(server_pid), own_cpu_seconds()
                    start = time.monotonic()
                    deadline = start + seconds
                    go.set()
                expected = submitted * sessions
                target = expected
                if received >= target:
                    drained.set()
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await drained.wait()
                end = last_event if received >= expected else time.monotonic()
                elapsed = end - start
                cpu_server = cpu_seconds(server_pid) - cpu_server
                cpu_client = own_cpu_seconds() - cpu_client
                nursery.cancel_scope.cancel()
        return {
            "users": len(users),
            "connections": connections,
            "submitted": submitted,
            "expected": expected,
            "received": received,
            "resyncs": resyncs,
            "elapsed": elapsed,
            "events_per_s": received / elapsed,
            "deliveries_per_s": submitted * len(users) / elapsed,
            "replies_per_s": replies / elapsed,
            "events_per_reply": received / max(replies, 1),
            "cpu_server": cpu_server / elapsed,
            "cpu_client": cpu_client / elapsed,
        }

    return trio.run(run)


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200, help="timed submissions per transport")
    parser.add_argument("--sessions", type=int, default=1000, help="subscribed sessions")
    parser.add_argument("--sessions-per-user", type=int, default=50, help="at most 64")
    parser.add_argument("--sessions-per-connection", type=int, default=25, help="at most 31")
    parser.add_argument("--senders", type=int, default=2, help="concurrent senders (fan-out)")
    parser.add_argument("--seconds", type=float, default=10.0, help="fan-out sending time")
    parser.add_argument("--docs", type=Path, default=DOCS, help="document to update")
    parser.add_argument("--profile-server", type=Path, help="write the server's cProfile here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.sessions_per_user <= 64:
        parser.error("--sessions-per-user must be within 1..64 (the store's limit per user)")
    if not 1 <= args.sessions_per_connection <= 31:
        parser.error("--sessions-per-connection must be within 1..31 (32 calls per connection)")
    users = [SENDER, RECIPIENT, *fan_users(math.ceil(args.sessions / args.sessions_per_user))]
    if args.serve:
        accounts = [(user, password_of(user)) for user in users]
        run_bench_server(
            accounts, kdf_n=CHEAP_KDF_N, profile=args.profile_server, min_auth_level="none"
        )
        return

    serve_args = ["--sessions", str(args.sessions)]
    serve_args += ["--sessions-per-user", str(args.sessions_per_user)]
    if args.profile_server:
        serve_args += ["--profile-server", str(args.profile_server)]
    server, info = launch_server(__file__, *serve_args)
    printed: list[str] = []

    def show(line: str) -> None:
        print(line, flush=True)
        printed.append(line)

    try:
        for transport, name in TRANSPORTS.items():
            latencies = bench_latency(transport, info, args.count)
            show(
                f"submit() to new-mail event, recipient over {name}, median ms: "
                f"{statistics.median(latencies) * 1000:.1f}"
            )
            show(
                f"submit() to new-mail event, recipient over {name}, p99 ms: "
                f"{percentile(latencies, 0.99) * 1000:.1f}"
            )
        fan = bench_fanout(
            info,
            server.pid,
            args.sessions,
            args.sessions_per_user,
            args.sessions_per_connection,
            args.seconds,
            args.senders,
        )
    finally:
        stop_server(server)
    where = (
        f"{args.sessions} sessions ({fan['users']:.0f} users, {fan['connections']:.0f} "
        "direct TCP connections)"
    )
    show(f"new-mail events delivered to {where}, events/s: {fan['events_per_s']:.0f}")
    show(
        f"messages delivered into subscribed mailboxes, deliveries/s: {fan['deliveries_per_s']:.1f}"
    )
    show(
        f"long-poll replies carrying events, replies/s: {fan['replies_per_s']:.0f} "
        f"({fan['events_per_reply']:.1f} events per reply)"
    )
    show(
        f"fan-out: {fan['received']:.0f} of {fan['expected']:.0f} events in "
        f"{fan['elapsed']:.1f} s, {fan['resyncs']:.0f} resyncs; CPU use, server process "
        f"{fan['cpu_server'] * 100:.0f}%, client process {fan['cpu_client'] * 100:.0f}%"
    )
    lines = [f"- {line}" for line in printed]
    lines.append("")
    lines.append(
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}; client and server in separate processes on loopback. "
        f"Latency: {args.count} submissions per transport, one at a time, sender on the LAN. "
        f"Fan-out: each session advised NEW_MAIL on its store and long-polls; "
        f"{args.sessions_per_connection} sessions share each connection; {args.senders} "
        f"senders on the LAN submit, for {args.seconds:g} s, messages addressed to every "
        "subscribed user (one delivery per user, one event per session)."
    )
    write_section("New-mail notifications (bench/notify_bench.py)", lines, args.docs)


if __name__ == "__main__":
    main()
