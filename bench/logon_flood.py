"""A real request through the tunnel, before and during a flood of wrong-password logons.

The server is a real ``serve`` (endpoint mapper, object store with the default scrypt
cost, tunnel on a dynamic loopback port) in a child process. The flood is a second
child process: guessers from four loopback addresses (127.0.0.2 .. 127.0.0.5, bound as
the client sockets' source addresses, so the proxy sees four clients), each with
``--connections`` HTTP/1.1 connections that send HTTP Basic attempts with wrong
passwords for the real user, one after the other, reconnecting when the proxy closes.
This process measures; the three share the machine's cores (the guessers' TLS costs
CPU too, as a real flood's would not on the server's machine).

Figures (medians of the samples of each phase, in milliseconds):

- ``latency_idle_ms`` / ``latency_flood_ms``: a real authenticated request of a user
  whose credentials the server checked a moment ago: a new TLS connection, an HTTP/2
  tunnel stream to the endpoint mapper with Basic credentials, a DCE/RPC bind and one
  call (mgmt ``inq_if_ids``), until its reply; in series for ``--seconds`` per phase.
- ``uncached_idle_ms`` / ``uncached_flood_ms``: the same for users the tunnel has not
  checked yet (``--fresh`` users per phase, one request each; their mailboxes exist):
  their password needs a full check, so they take a place among the flood's checks.
- ``flood_attempts_per_s``, and of them ``flood_401_per_s`` (checked or throttled,
  refused), ``flood_503_per_s`` (refused unchecked: too many checks in progress) and
  ``flood_errors_per_s`` (connections that failed).

Every loop is bounded in time; the children are stopped by closing their stdin.
Prints one figure a line (``name value``); ``--docs PATH`` also writes its section of
a benchmarks document (none is written by default).

Usage: ``python bench/logon_flood.py [--seconds 10] [--fresh 5] [--connections 4]
[--docs docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

USER, PASSWORD = "flooded", "the-right-password"
SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
#: Bound on one measured request (a sample that takes longer fails the run).
SAMPLE_TIMEOUT = 60.0


def fresh_user(phase: str, index: int) -> tuple[str, str]:
    return f"fresh-{phase}-{index}", f"fresh-password-{index}"


# -- children -------------------------------------------------------------------------------


def launch(*args: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start this script with ``args`` and read the JSON line it prints once ready."""
    child = subprocess.Popen(
        [sys.executable, __file__, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # bounded: the child exits (EOF) if it cannot start
    if not line:
        child.wait(timeout=30)
        raise RuntimeError(f"{args[0]} did not start (exit {child.returncode})")
    return child, json.loads(line)


def stop(child: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Close the child's stdin (it stops), and read the JSON line it prints last, if any."""
    try:
        out, _ = child.communicate(timeout=60)  # closes stdin first
    except subprocess.TimeoutExpired:
        child.terminate()
        out, _ = child.communicate(timeout=10)
    lines = out.decode().strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def serve(fresh: int, max_auth_checks: int | None) -> None:
    """The server child: ``serve`` with the flooded user and the fresh ones, each of
    whom logged on once already (their mailbox exists: a sample measures the logon, not
    the creation of a mailbox). Prints one JSON line ``{"epm", "tunnel",
    "fingerprint"}`` once listening; runs until stdin closes."""
    import tempfile

    import trio

    from mapi.store import ObjectStore
    from mapi_anywhere.config import (
        Config,
        EndpointMapperSection,
        ImapSection,
        Pop3Section,
        ServerSection,
        SmtpSection,
        StoreSection,
        SubmissionSection,
        TunnelSection,
    )
    from mapi_anywhere.serve import run_server
    from tunnel.config import TunnelConfig

    users = [(USER, PASSWORD)]
    users += [fresh_user(phase, i) for phase in ("idle", "flood") for i in range(fresh)]
    settings = TunnelConfig(port=0)
    if max_auth_checks is not None:
        settings = replace(settings, max_auth_checks=max_auth_checks)

    async def main(data_dir: Path) -> None:
        config = Config(
            server=ServerSection(data_dir=data_dir, log_level="ERROR"),
            endpoint_mapper=EndpointMapperSection(port=0),
            smtp=SmtpSection(enabled=False),  # not measured here; never a fixed port
            submission=SubmissionSection(enabled=False),
            imap=ImapSection(enabled=False),
            pop3=Pop3Section(enabled=False),
            store=StoreSection(demo_user=False),
            tunnel=TunnelSection(settings=settings),
        )
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_server, config)
            assert running.tunnel is not None
            info = {
                "epm": running.epm_port,
                "tunnel": running.tunnel.port,
                "fingerprint": running.tunnel.fingerprint,
            }
            print(json.dumps(info), flush=True)
            await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

    with tempfile.TemporaryDirectory() as tmp:
        store = ObjectStore(Path(tmp))
        for name, password in users:
            store.add_user(name, password)
            store.logon_with_password(name, password).logoff()
        store.close()
        trio.run(main, Path(tmp))


def flood(port: int, fingerprint: str, connections: int, limit: float) -> None:
    """The flood child: guess until stdin closes (at most ``limit`` seconds); prints a
    JSON line once the first answer came, and one with the counts at the end."""
    import trio

    from tunnel.tls import client_context

    counts: dict[str, int] = {"401": 0, "503": 0, "other": 0, "errors": 0}
    ready = trio.Event()
    ctx = client_context(alpn=["http/1.1"], fingerprint=fingerprint)

    def attempt() -> bytes:
        guess = secrets.token_urlsafe(9)
        token = base64.b64encode(f"{USER}:{guess}".encode()).decode()
        return (
            f"RPC_IN_DATA /rpc/rpcproxy.dll?localhost:1 HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Basic {token}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    async def guesser(source: str, stop_at: float) -> None:
        while trio.current_time() < stop_at:
            with trio.move_on_at(stop_at):
                try:
                    tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
                    stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
                    async with stream:
                        await stream.do_handshake()
                        while True:
                            await stream.send_all(attempt())
                            head = b""
                            while b"\r\n\r\n" not in head and len(head) < 65536:
                                chunk = await stream.receive_some(65536)
                                if not chunk:
                                    break
                                head += chunk
                            if b"\r\n\r\n" not in head:
                                break
                            status = head.split(b" ", 2)[1].decode()
                            counts[status if status in counts else "other"] += 1
                            ready.set()
                            if b"\r\nConnection: close\r\n" in head:
                                break
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    counts["errors"] += 1
                    await trio.sleep(0.01)

    async def main() -> None:
        start = trio.current_time()
        stop_at = start + limit
        async with trio.open_nursery() as nursery:
            for source in SOURCES:
                for _ in range(connections):
                    nursery.start_soon(guesser, source, stop_at)
            with trio.move_on_at(stop_at):
                await ready.wait()
            print(json.dumps({"ready": ready.is_set()}), flush=True)
            with trio.move_on_at(stop_at):
                await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - start
        print(json.dumps({"elapsed": elapsed, **counts}), flush=True)

    trio.run(main)


# -- measurements ---------------------------------------------------------------------------


def measure(info: dict[str, Any], users: list[tuple[str, str]], seconds: float) -> list[float]:
    """Latencies (ms) of real requests: in series for ``seconds`` as ``users[0]``, or
    once per user when ``seconds`` is 0."""
    import trio

    from dcerpc.client import open_rpc_client
    from endpoint_mapper.stubs import MGMT_SYNTAX, OP_MGMT_INQ_IF_IDS
    from tunnel.transport import open_tunnel_stream

    async def one(user: str, password: str) -> float:
        start = time.perf_counter()
        with trio.fail_after(SAMPLE_TIMEOUT):
            async with (
                open_tunnel_stream(
                    f"https://127.0.0.1:{info['tunnel']}/",
                    "127.0.0.1",
                    info["epm"],
                    username=user,
                    password=password,
                    http2=True,
                    fingerprint=info["fingerprint"],
                ) as stream,
                open_rpc_client(stream) as rpc,
            ):
                ctx = await rpc.bind(MGMT_SYNTAX)
                await rpc.call(ctx, OP_MGMT_INQ_IF_IDS, b"")
        return (time.perf_counter() - start) * 1000

    async def run() -> list[float]:
        if not seconds:
            return [await one(user, password) for user, password in users]
        samples = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or not samples:
            samples.append(await one(*users[0]))
        return samples

    return trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each phase")
    parser.add_argument("--fresh", type=int, default=5, help="uncached logons sampled per phase")
    parser.add_argument("--connections", type=int, default=4, help="guessing connections each")
    parser.add_argument(
        "--max-auth-checks",
        type=int,
        help="the tunnel's max_auth_checks (default: TunnelConfig's)",
    )
    parser.add_argument("--docs", type=Path, help="write the section of this document")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flood", type=str, help=argparse.SUPPRESS)  # port:fingerprint
    parser.add_argument("--limit", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.fresh, args.max_auth_checks)
        return
    if args.flood:
        port, fingerprint = args.flood.split(":", 1)
        flood(int(port), fingerprint, args.connections, args.limit)
        return

    extra = [] if args.max_auth_checks is None else ["--max-auth-checks", str(args.max_auth_checks)]
    server, info = launch("--serve", "--fresh", str(args.fresh), *extra)
    try:
        measure(info, [(USER, PASSWORD)], 0)  # the first check: USER is cached from now on
        idle = measure(info, [(USER, PASSWORD)], args.seconds)
        first_idle = measure(info, [fresh_user("idle", i) for i in range(args.fresh)], 0)
        # The flood stops by itself after its limit: the phase and some margin.
        limit = 2 * args.seconds + args.fresh * SAMPLE_TIMEOUT + 60
        flooder, ready = launch(
            "--flood",
            f"{info['tunnel']}:{info['fingerprint']}",
            "--connections",
            str(args.connections),
            "--limit",
            str(limit),
        )
        try:
            if not ready.get("ready"):
                raise RuntimeError("the flood got no answer")
            flooded = measure(info, [(USER, PASSWORD)], args.seconds)
            first_flooded = measure(info, [fresh_user("flood", i) for i in range(args.fresh)], 0)
        finally:
            counts = stop(flooder)
    finally:
        stop(server)

    elapsed = float(counts.get("elapsed") or 1.0)
    attempts = sum(int(counts.get(k, 0)) for k in ("401", "503", "other"))

    def ms(samples: list[float]) -> str:
        return f"{statistics.median(samples):.1f}" if samples else "nan"

    figures = [
        ("latency_idle_ms", ms(idle)),
        ("latency_flood_ms", ms(flooded)),
        ("uncached_idle_ms", ms(first_idle)),
        ("uncached_flood_ms", ms(first_flooded)),
        ("flood_attempts_per_s", f"{attempts / elapsed:.1f}"),
        ("flood_401_per_s", f"{int(counts.get('401', 0)) / elapsed:.1f}"),
        ("flood_503_per_s", f"{int(counts.get('503', 0)) / elapsed:.1f}"),
        ("flood_errors_per_s", f"{int(counts.get('errors', 0)) / elapsed:.1f}"),
    ]
    for name, value in figures:
        print(name, value, flush=True)
    if args.docs is not None:
        from rpc_bench import write_section

        lines = [
            f"`python bench/logon_flood.py --seconds {args.seconds:g} --fresh {args.fresh}"
            f" --connections {args.connections}`: medians of {len(idle)} (idle) and"
            f" {len(flooded)} (flood) requests; guessers on {len(SOURCES)} loopback"
            f" addresses, {args.connections} connections each. Server, guessers and this"
            f" client share {os.cpu_count()} cores.",
            "",
            "| figure | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in figures),
        ]
        write_section("Logon flood (bench/logon_flood.py)", lines, args.docs)


if __name__ == "__main__":
    main()
