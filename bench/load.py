"""Load: many concurrent sessions, LAN and tunnel mixed, through a realistic mix of calls.

The server is ``mapi-anywhere serve -c <config>`` in a child process (endpoint mapper,
object store, tunnel on fixed free ports, SQLite in a temporary data directory). The
configuration raises the connection limits that 1,000 sessions from one address would
hit otherwise (see ``server_config``): the tunnel's 64 connections per address and 1,024
in all, 1,024 virtual connections, and the RPC listeners' 1,024 connections each (a
tunnelled session holds one connection to the store listener besides its TLS
connections: 1 on HTTP/2, 2 on HTTP/1.1, as our client opens one TLS connection per
stream). Users (``--sessions / --sessions-per-user`` of them; the store allows 64
sessions per user) are created before the server starts with a cheap scrypt cost, so
that 1,000 logons take seconds; logon is not what is measured.

Clients run in ``--procs`` child processes (trio, one task per session). Session ``i``
goes over direct TCP (``i % 3 == 0``), the HTTP/2 tunnel (1) or the HTTP/1.1 tunnel
(RPC over HTTP v2, 2). Each session logs on, opens its store, Inbox and Drafts, advises
NEW_MAIL and keeps a ``wait_for_events`` long-poll parked (30 s), as a mail client does.
Once every session is logged on, the server's RSS and descriptors are read (idle
figures), then every session runs for ``--seconds`` a closed loop of round trips with an
exponential think time (mean ``--think`` s) between them, drawn from:

- 35% read a table: Inbox contents table, 4 columns, sorted by delivery time, 20 rows;
- 25% read a message: open one seen in a table, get subject, body and size;
- 20% write a message: create in Drafts, set subject and a 1-4 KB body, save;
- 10% send mail: create in Drafts, set properties, add a recipient (a user of another
  session), save and submit, in one batch;
- 10% open a folder: open the Inbox by entry id and read its counts.

Each is one batch (one round trip) on fixed client-chosen handles (a batch that reuses
an ``out`` handle replaces the object, so nothing accumulates). Every operation's
HRESULT is checked: any failure, exception or logon failure counts as an error, with
its reason. Printed (one figure a line) and written to ``docs/reliability.md``:
calls/s, p50/p99 latency, errors, new-mail events received, server RSS and
descriptors with no session, with every session logged on and idle (and the
difference per session), their peak during the run, and CPU use.

Usage: ``python bench/load.py --sessions 100 --seconds 30 [--think 1.0] [--procs 2]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOCS = ROOT / "docs" / "reliability.md"
TRANSPORTS = ("direct", "h2", "h1")
CHEAP_KDF_N = 1 << 10
#: Logons (and their TLS handshakes) in progress at once per client process.
LOGON_CONCURRENCY = 32
#: Bound on starting the server, logging every session on, and stopping.
START_TIMEOUT = 60.0
LOGON_TIMEOUT = 600.0
STOP_TIMEOUT = 120.0
MIX = (
    ("read_table", 35),
    ("read_message", 25),
    ("write_message", 20),
    ("send_mail", 10),
    ("open_folder", 10),
)
# Fixed handles of the per-iteration objects (the API's own handles are 1, 2, 3...).
H_TABLE, H_MESSAGE, H_DRAFT, H_OUTGOING, H_FOLDER = 100, 101, 102, 103, 104


def user_name(index: int) -> str:
    return f"load{index:04d}"


def password_of(user: str) -> str:
    return f"{user}-password"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


# -- the server (child process) -----------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_config(data_dir: Path, epm_port: int, tunnel_port: int, connections: int) -> str:
    """The TOML configuration of the load server (limits raised to ``connections``)."""
    limit = max(1024, connections)
    return f"""\
[server]
data_dir = "{data_dir}"
host = "127.0.0.1"
log_level = "WARNING"

[endpoint_mapper]
port = {epm_port}

[store]
demo_user = false

[tunnel]
port = {tunnel_port}
max_connections = {limit}
max_connections_per_address = {limit}
max_vcs = {limit}
max_vcs_per_user = 256

[rpc]
max_connections = {limit}
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(
    data_dir: Path, sessions: int, per_user: int
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Create the users, write the configuration, start ``serve`` and wait until ready."""
    from mapi.access.logon import KdfParams
    from mapi.store import ObjectStore

    users = math.ceil(sessions / per_user)
    store = ObjectStore(data_dir, kdf=KdfParams(n=CHEAP_KDF_N))
    for i in range(users):
        name = user_name(i)
        store.add_user(name, password_of(name), email=f"{name}@example.org")
    store.close()
    epm_port, tunnel_port = free_port(), free_port()
    # Connections the server accepts at once: ~4 per tunnelled session at the peak
    # (its TLS connections plus the relay's connection to the store), plus slack.
    config = data_dir / "load.toml"
    config.write_text(server_config(data_dir, epm_port, tunnel_port, 4 * sessions + 256))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapi_anywhere", "serve", "-c", str(config), "--log-level", "INFO"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    fingerprint = None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"the server exited (code {proc.wait(10)})")
        match = re.search(r"certificate SHA-256 ([0-9A-F:]+)", line)
        if match:
            fingerprint = match.group(1)
        if "ready" in line:
            break
    else:
        proc.kill()
        raise RuntimeError("the server did not start in time")
    # Keep draining its log so it never blocks on a full pipe.
    import threading

    log_tail: list[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log_tail.append(line)
            del log_tail[:-200]

    threading.Thread(target=drain, daemon=True).start()
    info = {
        "epm": epm_port,
        "tunnel": tunnel_port,
        "fingerprint": fingerprint,
        "users": users,
        "log_tail": log_tail,
    }
    return proc, info


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# -- one client process -------------------------------------------------------------------


def connect_via(transport: str, info: dict[str, Any], user: str) -> Any:
    from clients.api import connect

    if transport == "direct":
        return connect(f"ncacn_ip_tcp:127.0.0.1[{info['epm']}]", user, password_of(user))
    return connect(
        f"https://127.0.0.1:{info['tunnel']}/?epm={info['epm']}",
        user,
        password_of(user),
        fingerprint=info["fingerprint"],
        http2=transport == "h2",
    )


def run_worker(info: dict[str, Any], indices: list[int], seconds: float, think: float) -> None:
    """Log ``indices`` sessions on, say so on stdout, wait for ``go`` on stdin, run the mix,
    print the results as one JSON line, then log off."""
    import contextlib

    import trio

    from clients.api import ResyncRequired, Session
    from mapi.model import proptags as pt
    from mapi.wire import EventType

    rng = random.Random(os.getpid())
    users = info["users"]
    latencies: list[float] = []
    per_op: dict[str, list[float]] = {name: [] for name in [*(n for n, _ in MIX), *TRANSPORTS]}
    errors: Counter[str] = Counter()
    counters = Counter[str]()
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    columns = [pt.PR_ENTRYID, pt.PR_SUBJECT, pt.PR_MESSAGE_DELIVERY_TIME, pt.PR_MESSAGE_SIZE]

    def check(op: str, results: list[list[Any]]) -> list[list[Any]]:
        for hresult, value in results:
            if hresult & 0x80000000:
                raise RuntimeError(f"{op}: HRESULT 0x{hresult:08X} {value}")
        return results

    async def one(session: Session, handles: dict[str, Any], op: str, transport: str) -> None:
        known: list[bytes] = handles["known"]
        if op == "read_message" and not known:
            op = "read_table"
        subject = f"load {session.user} {rng.randrange(1 << 30)}"
        body = "x" * rng.randrange(1024, 4096)
        if op == "read_table":
            ops = [
                ["contents_table", {"h": handles["inbox"], "out": H_TABLE}],
                ["set_columns", {"h": H_TABLE, "tags": columns}],
                ["sort_table", {"h": H_TABLE, "keys": [[pt.PR_MESSAGE_DELIVERY_TIME, True]]}],
                ["query_rows", {"h": H_TABLE, "count": 20}],
            ]
        elif op == "read_message":
            ops = [
                [
                    "open_message",
                    {"h": handles["store"], "out": H_MESSAGE, "eid": rng.choice(known)},
                ],
                [
                    "get_props",
                    {"h": H_MESSAGE, "tags": [pt.PR_SUBJECT, pt.PR_BODY, pt.PR_MESSAGE_SIZE]},
                ],
            ]
        elif op == "write_message":
            ops = [
                ["create_message", {"h": handles["drafts"], "out": H_DRAFT}],
                [
                    "set_props",
                    {"h": H_DRAFT, "props": [[pt.PR_SUBJECT, subject], [pt.PR_BODY, body]]},
                ],
                ["save_changes", {"h": H_DRAFT, "flags": 0}],
            ]
        elif op == "send_mail":
            recipient = f"{user_name(rng.randrange(users))}@example.org"
            row = [
                [pt.PR_DISPLAY_NAME, recipient],
                [pt.PR_EMAIL_ADDRESS, recipient],
                [pt.PR_ADDRTYPE, "SMTP"],
                [pt.PR_RECIPIENT_TYPE, pt.MAPI_TO],
            ]
            ops = [
                ["create_message", {"h": handles["drafts"], "out": H_OUTGOING}],
                [
                    "set_props",
                    {"h": H_OUTGOING, "props": [[pt.PR_SUBJECT, subject], [pt.PR_BODY, body]]},
                ],
                ["modify_recipients", {"h": H_OUTGOING, "rows": [row], "flags": 2}],
                ["save_changes", {"h": H_OUTGOING, "flags": 2}],
                ["submit", {"h": H_OUTGOING}],
            ]
        else:  # open_folder
            ops = [
                [
                    "open_folder",
                    {"h": handles["store"], "out": H_FOLDER, "eid": handles["inbox_eid"]},
                ],
                ["get_props", {"h": H_FOLDER, "tags": [pt.PR_CONTENT_COUNT, pt.PR_DISPLAY_NAME]}],
            ]
        start = time.perf_counter()
        results = await session.execute(ops)
        elapsed = time.perf_counter() - start
        check(op, results)
        if op == "read_table":
            rows = results[-1][1]
            eids = [value for row in rows for tag, value in row if tag == pt.PR_ENTRYID]
            if eids:
                handles["known"] = eids
        if op == "send_mail":
            report = results[-1][1]
            if report.get("undeliverable"):
                raise RuntimeError(f"send_mail: undeliverable {report['undeliverable']}")
        latencies.append(elapsed)
        per_op[op].append(elapsed)
        per_op[transport].append(elapsed)

    async def listen(session: Session) -> None:
        while True:
            try:
                events = await session.wait_for_events(poll_seconds=30)
            except ResyncRequired:
                counters["resyncs"] += 1
                continue
            counters["polls"] += 1
            counters["new_mail"] += sum(1 for e in events if e.name == "new_mail")

    logged_on = trio.Event()
    go = trio.Event()
    remaining = len(indices)
    limiter = trio.Semaphore(LOGON_CONCURRENCY)
    window = {"start": 0.0, "deadline": math.inf}

    async def session_task(index: int, done: trio.Event) -> None:
        nonlocal remaining
        transport = TRANSPORTS[index % 3]
        user = user_name(index % users)
        entered = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with limiter:
                    session = await stack.enter_async_context(connect_via(transport, info, user))
                    store = await session.open_store()
                    inbox_eid = await store.special_folder("inbox")
                    inbox = await store.open_folder(inbox_eid)
                    drafts = await store.open_folder(await store.special_folder("drafts"))
                    await store.advise(EventType.NEW_MAIL)
                handles = {
                    "store": store.handle,
                    "inbox": inbox.handle,
                    "drafts": drafts.handle,
                    "inbox_eid": inbox_eid,
                    "known": [],
                }
                entered = True
                remaining -= 1
                if remaining == 0:
                    logged_on.set()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(listen, session)
                    await go.wait()
                    # Spread the first calls over one think time.
                    await trio.sleep(rng.uniform(0, think))
                    while time.perf_counter() < window["deadline"]:
                        op = rng.choices(names, weights)[0]
                        try:
                            await one(session, handles, op, transport)
                        except Exception as exc:  # every failure is a finding
                            errors[f"{transport} {op}: {type(exc).__name__}: {exc}"[:200]] += 1
                        await trio.sleep(min(rng.expovariate(1 / think), 5 * think))
                    await done.wait()
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            errors[f"{transport} session: {type(exc).__name__}: {exc}"[:200]] += 1
        finally:
            if not entered:
                remaining -= 1
                if remaining == 0:
                    logged_on.set()

    async def main() -> None:
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            start = time.perf_counter()
            for index in indices:
                nursery.start_soon(session_task, index, done)
            with trio.fail_after(LOGON_TIMEOUT):
                await logged_on.wait()
            counters["logon_ms"] = int((time.perf_counter() - start) * 1000)
            print(json.dumps({"logged_on": len(indices)}), flush=True)
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line.startswith("go"):
                raise RuntimeError("no go")
            window["start"] = time.perf_counter()
            window["deadline"] = window["start"] + seconds
            go.set()
            await trio.sleep(seconds + think * 5 + 1)
            result = {
                "latencies": latencies,
                "per_op": per_op,
                "errors": dict(errors),
                "counters": dict(counters),
                "seconds": seconds,
            }
            print(json.dumps(result), flush=True)
            done.set()

    trio.run(main)


# -- the run ------------------------------------------------------------------------------


def write_section(title: str, lines: list[str], path: Path) -> None:
    """Replace (or append) the ``## title`` section of ``path``."""
    text = path.read_text() if path.exists() else "# Reliability\n"
    header = f"## {title}\n"
    body = header + "\n" + "\n".join(lines) + "\n"
    if header in text:
        start = text.index(header)
        end = text.find("\n## ", start + len(header))
        text = text[:start] + body + (text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The next line of a worker's stdout that is a JSON object (bounded in time)."""
    import selectors

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError("a client process did not answer in time")
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a client process exited (code {proc.wait(10)})")
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the mix")
    parser.add_argument("--think", type=float, default=1.0, help="mean think time, seconds")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--sessions-per-user", type=int, default=4, help="at most 64")
    parser.add_argument("--docs", type=Path, default=DOCS, help="document to update")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        run_worker(spec["info"], spec["indices"], args.seconds, args.think)
        return
    if not 1 <= args.sessions_per_user <= 64:
        parser.error("--sessions-per-user must be within 1..64 (the store's limit per user)")
    printed: list[str] = []

    def show(line: str) -> None:
        print(line, flush=True)
        printed.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        server, info = start_server(Path(tmp) / "data", args.sessions, args.sessions_per_user)
        workers: list[subprocess.Popen[str]] = []
        try:
            time.sleep(1.0)
            rss0, fds0 = rss_kib(server.pid), fd_count(server.pid)
            procs = max(1, min(args.procs, args.sessions))
            public = {k: v for k, v in info.items() if k != "log_tail"}
            for p in range(procs):
                spec = {"info": public, "indices": list(range(p, args.sessions, procs))}
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            __file__,
                            "--worker",
                            json.dumps(spec),
                            "--seconds",
                            str(args.seconds),
                            "--think",
                            str(args.think),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            t0 = time.monotonic()
            for worker in workers:
                read_json_line(worker, LOGON_TIMEOUT)
            ramp = time.monotonic() - t0
            time.sleep(3.0)  # let the logon burst settle
            rss_idle, fds_idle = rss_kib(server.pid), fd_count(server.pid)
            cpu0 = cpu_seconds(server.pid)
            worker_cpu0 = sum(cpu_seconds(w.pid) for w in workers)
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            peak_rss, peak_fds = rss_idle, fds_idle
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                time.sleep(0.5)
                peak_rss = max(peak_rss, rss_kib(server.pid))
                peak_fds = max(peak_fds, fd_count(server.pid))
            cpu_server = (cpu_seconds(server.pid) - cpu0) / args.seconds
            cpu_clients = (sum(cpu_seconds(w.pid) for w in workers) - worker_cpu0) / args.seconds
            results = [read_json_line(w, args.seconds + 10 * args.think + 60) for w in workers]
            for worker in workers:
                worker.wait(timeout=STOP_TIMEOUT)
            time.sleep(1.0)
            rss_after, fds_after = rss_kib(server.pid), fd_count(server.pid)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait(timeout=10)
            stop_server(server)

    latencies = [x for r in results for x in r["latencies"]]
    errors: Counter[str] = Counter()
    counters: Counter[str] = Counter()
    per_op: dict[str, list[float]] = {name: [] for name in [*(n for n, _ in MIX), *TRANSPORTS]}
    for r in results:
        errors.update(r["errors"])
        counters.update({k: v for k, v in r["counters"].items() if k != "logon_ms"})
        for name, values in r["per_op"].items():
            per_op[name] += values
    n = args.sessions
    split = ", ".join(
        f"{sum(1 for i in range(n) if i % 3 == k)} {t}" for k, t in enumerate(TRANSPORTS)
    )
    label = f"{n} sessions"
    show(f"{label}: transports: {split}; {info['users']} users; {len(workers)} client processes")
    show(f"{label}: logon of every session (ramp), s: {ramp:.1f}")
    show(f"{label}: calls/s: {len(latencies) / args.seconds:.0f}")
    if latencies:
        show(f"{label}: latency p50 ms: {statistics.median(latencies) * 1000:.1f}")
        show(f"{label}: latency p99 ms: {percentile(latencies, 0.99) * 1000:.1f}")
    for name, values in per_op.items():
        if values:
            show(
                f"{label}: {name}: {len(values)} calls, p50 {statistics.median(values) * 1000:.1f}"
                f" ms, p99 {percentile(values, 0.99) * 1000:.1f} ms"
            )
    show(f"{label}: errors: {sum(errors.values())}")
    for reason, count in errors.most_common(10):
        show(f"{label}: error x{count}: {reason}")
    show(
        f"{label}: new-mail events received: {counters['new_mail']} "
        f"({counters['polls']} long-poll replies, {counters['resyncs']} resyncs)"
    )
    show(f"{label}: server RSS with no session, MiB: {rss0 / 1024:.1f}")
    show(f"{label}: server RSS with every session logged on and idle, MiB: {rss_idle / 1024:.1f}")
    show(f"{label}: server RSS per idle session, KiB: {(rss_idle - rss0) / n:.0f}")
    show(f"{label}: server RSS peak during the mix, MiB: {peak_rss / 1024:.1f}")
    show(f"{label}: server RSS after every session logged off, MiB: {rss_after / 1024:.1f}")
    show(f"{label}: server descriptors with no session: {fds0}")
    show(f"{label}: server descriptors with every session logged on: {fds_idle}")
    show(f"{label}: server descriptors peak during the mix: {peak_fds}")
    show(f"{label}: server descriptors after every session logged off: {fds_after}")
    show(
        f"{label}: CPU during the mix, server {cpu_server * 100:.0f}%, "
        f"clients {cpu_clients * 100:.0f}%"
    )
    if not args.no_docs:
        lines = [f"- {line}" for line in printed]
        lines.append("")
        lines.append(
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, Python "
            f"{sys.version.split()[0]}: `python bench/load.py --sessions {n} --seconds "
            f"{args.seconds:g} --think {args.think:g} --procs {args.procs}`; server and "
            "clients in separate processes on loopback."
        )
        write_section(f"Load: {n} sessions (bench/load.py)", lines, args.docs)


if __name__ == "__main__":
    main()
