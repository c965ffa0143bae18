"""Small-call rates on loopback, client and server in separate processes.

Prints one figure a line and rewrites its section of ``docs/benchmarks.md``:

- bare trio TCP echo round trips/s (100-byte messages): the ceiling for any RPC on
  this machine and interpreter;
- our DCE/RPC runtime: calls/s of a null call (100-byte stub) over ncacn_ip_tcp,
  unauthenticated and sealed (NTLM at packet privacy: every PDU signed and encrypted);
- grpcio (asyncio) unary calls/s with a similar payload, when grpcio is installed;
- the object store: ``get_props`` (four properties) on an open message, calls/s, over
  direct TCP against a real ``serve`` (SQLite in a temporary data directory) at
  ``[rpc] min_auth_level = "none"``: unauthenticated, and sealed (NTLM at privacy, the
  LAN default), in the same run; the sealed/plain ratio (target: at least 0.6).

Usage: ``python bench/rpc_bench.py [--seconds 3] [--rounds 5]``: each figure is the median of
its rounds, run in alternating order. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAYLOAD = b"x" * 100
BENCH_PASSWORD = "bench-password"
NULL_IFACE = uuid.UUID("0b0b0b0b-1111-4222-8333-444455556666")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- servers (run in a child process) ----------------------------------------------------


def serve_echo(port: int) -> None:
    import trio

    async def handler(stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    trio.run(trio.serve_tcp, handler, port)


def serve_rpc(port: int) -> None:
    import trio

    from dcerpc.interface import CallContext, Interface
    from dcerpc.server import RpcServer
    from dcerpc.syntax import MSGPACK, NDR, SyntaxId

    async def handler(ctx: CallContext, stub: bytes) -> bytes:
        return stub

    def answer_at_once(ctx: CallContext, stub: bytes) -> bytes:
        return stub  # a call that never waits: answered by the reading task

    from dcerpc.auth_context import ServerSecurity
    from dcerpc.ntlm_crypto import nt_hash

    iface = Interface(
        SyntaxId(NULL_IFACE, 1),
        handler,
        1,
        transfer_syntaxes=(NDR, MSGPACK),
        inline=answer_at_once,
    )
    digest = nt_hash(BENCH_PASSWORD)
    security = ServerSecurity(
        lookup_nt_hash=lambda user, domain: digest if user == "bench" else None
    )
    trio.run(RpcServer([iface], security=security).serve_tcp, port)


def serve_grpc(port: int) -> None:
    import asyncio

    import grpc  # type: ignore[import-not-found]

    async def echo(request: bytes, context: object) -> bytes:
        return request

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def serve_store(port: int) -> None:
    import tempfile
    from pathlib import Path

    import trio

    from mapi_anywhere.config import (
        Config,
        EndpointMapperSection,
        ImapSection,
        Pop3Section,
        RpcAuthSection,
        ServerSection,
        SmtpSection,
        StoreSection,
        SubmissionSection,
        TunnelSection,
    )
    from mapi_anywhere.serve import run_server

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            config = Config(
                server=ServerSection(data_dir=Path(tmp)),
                endpoint_mapper=EndpointMapperSection(port=port),
                smtp=SmtpSection(enabled=False),  # not measured here; never a fixed port
                submission=SubmissionSection(enabled=False),
                imap=ImapSection(enabled=False),
                pop3=Pop3Section(enabled=False),
                store=StoreSection(demo_user=False),
                tunnel=TunnelSection(enabled=False),
                # Both figures from one policy: unauthenticated calls admitted, and the
                # sealed client asks for privacy itself.
                rpc_auth=RpcAuthSection(min_auth_level="none"),
            )
            async with trio.open_nursery() as nursery:
                running = await nursery.start(run_server, config)
                await trio.to_thread.run_sync(running.store.add_user, "bench", BENCH_PASSWORD)
                await trio.sleep_forever()

    trio.run(main)


SERVERS = {
    "echo": serve_echo,
    "rpc": serve_rpc,
    "rpc_sealed": serve_rpc,
    "grpc": serve_grpc,
    "getprops": serve_store,
    "getprops_sealed": serve_store,
}


# -- clients -----------------------------------------------------------------------------


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def bench_echo(port: int, seconds: float) -> float:
    import trio

    async def run() -> float:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        count = 0
        start = time.perf_counter()
        async with stream:
            while time.perf_counter() - start < seconds:
                await stream.send_all(PAYLOAD)
                got = 0
                while got < len(PAYLOAD):
                    got += len(await stream.receive_some(65536))
                count += 1
        return count / (time.perf_counter() - start)

    return trio.run(run)


def bench_rpc(port: int, seconds: float, sealed: bool = False) -> float:
    import trio

    from clients.api import client_auth
    from dcerpc.client import open_tcp_rpc_client
    from dcerpc.syntax import SyntaxId

    auth = client_auth("bench", BENCH_PASSWORD, "privacy") if sealed else None

    async def run() -> float:
        async with open_tcp_rpc_client("127.0.0.1", port, auth=auth) as rpc:
            ctx = await rpc.bind(SyntaxId(NULL_IFACE, 1))
            count = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                await rpc.call(ctx, 0, PAYLOAD)
                count += 1
            return count / (time.perf_counter() - start)

    return trio.run(run)


def bench_grpc(port: int, seconds: float) -> float:
    import asyncio

    import grpc

    async def run() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/bench.Echo/Echo")
            await call(PAYLOAD)
            count = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                await call(PAYLOAD)
                count += 1
            return count / (time.perf_counter() - start)

    return asyncio.run(run())


def bench_getprops(port: int, seconds: float, sealed: bool = False) -> float:
    import trio

    from clients.api import connect

    tags = ["PR_SUBJECT", "PR_MESSAGE_SIZE", "PR_MESSAGE_FLAGS", "PR_MESSAGE_DELIVERY_TIME"]

    async def run() -> float:
        address = f"ncacn_ip_tcp:127.0.0.1[{port}]"
        for _ in range(100):  # the user is created just after the port opens
            try:
                level = "privacy" if sealed else "none"
                session_cm = connect(address, "bench", BENCH_PASSWORD, auth_level=level)
                session = await session_cm.__aenter__()
                break
            except Exception:
                await trio.sleep(0.1)
        else:
            raise RuntimeError("cannot log on to the benchmark server")
        try:
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            msg = await inbox.create_message()
            await msg.set_props({"PR_SUBJECT": "x" * 100, "PR_MESSAGE_DELIVERY_TIME": 1})
            eid = await msg.save()
            msg = await store.open_message(eid)
            count = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                await msg.get_props(tags)
                count += 1
            return count / (time.perf_counter() - start)
        finally:
            await session_cm.__aexit__(None, None, None)

    return trio.run(run)


CLIENTS: dict[str, Callable[[int, float], float]] = {
    "echo": bench_echo,
    "rpc": bench_rpc,
    "rpc_sealed": functools.partial(bench_rpc, sealed=True),
    "grpc": bench_grpc,
    "getprops": bench_getprops,
    "getprops_sealed": functools.partial(bench_getprops, sealed=True),
}


def measure(kind: str, seconds: float) -> float | None:
    if kind == "grpc":
        try:
            import grpc  # noqa: F401
        except ImportError:
            print("grpcio not installed: pip install grpcio (skipping the gRPC figure)")
            return None
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port)], env=env
    )
    try:
        wait_for_port(port)
        CLIENTS[kind](port, min(0.5, seconds))  # warm up
        return CLIENTS[kind](port, seconds)
    finally:
        server.terminate()
        server.wait(timeout=10)


DOCS = ROOT / "docs" / "benchmarks.md"


def write_section(title: str, lines: list[str], path: Path = DOCS) -> None:
    """Replace (or append) the ``## title`` section of the benchmarks document."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures from `bench/`.\n"
    header = f"## {title}\n"
    body = header + "\n" + "\n".join(lines) + "\n"
    if header in text:
        start = text.index(header)
        end = text.find("\n## ", start + len(header))
        text = text[:start] + body + (text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating rounds; each figure is the median of its rounds (this machine's "
        "figures swing by about 10%% from run to run)",
    )
    parser.add_argument("--docs", type=Path, default=DOCS, help="document to update")
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve](args.port)
        return
    kinds = ("echo", "rpc", "rpc_sealed", "grpc", "getprops", "getprops_sealed")
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_no in range(args.rounds):
        # Alternate the order, so that a slow spell of the machine is shared out.
        for kind in kinds if round_no % 2 == 0 else kinds[::-1]:
            value = measure(kind, args.seconds)
            if value is not None:
                samples[kind].append(value)
    results = {
        kind: statistics.median(values) if values else None for kind, values in samples.items()
    }
    lines = []
    names = {
        "echo": "bare trio TCP echo, 100-byte round trips/s",
        "rpc": "DCE/RPC null call (100-byte stub) over ncacn_ip_tcp, calls/s",
        "rpc_sealed": "DCE/RPC null call (100-byte stub), sealed (NTLM privacy), calls/s",
        "grpc": "grpcio asyncio unary call (100 bytes), calls/s",
        "getprops": "store get_props (4 properties) on an open message, direct TCP, calls/s",
        "getprops_sealed": "store get_props (4 properties), direct TCP, sealed (NTLM "
        "privacy), calls/s",
    }
    for kind, value in results.items():
        if value is not None:
            line = f"{names[kind]}: {value:.0f}"
            print(line)
            lines.append(f"- {line}")
    for kind in ("rpc", "getprops"):
        if results["echo"] and results[kind]:
            ratio = results[kind] / results["echo"]  # type: ignore[operator]
            line = f"{names[kind].split(',')[0]} / bare echo: {ratio:.2f}"
            print(line)
            lines.append(f"- {line}")
    for plain, sealed in (("rpc", "rpc_sealed"), ("getprops", "getprops_sealed")):
        if results[plain] and results[sealed]:
            ratio = results[sealed] / results[plain]  # type: ignore[operator]
            target = " (target: at least 0.6)" if plain == "getprops" else ""
            line = f"{names[plain].split(',')[0]}: sealed / plain: {ratio:.2f}{target}"
            print(line)
            lines.append(f"- {line}")
    lines.append("")
    lines.append(
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, one client connection, calls in series, "
        f"each figure the median of {args.rounds} alternating runs of {args.seconds:g} s."
    )
    write_section("Small calls on loopback (bench/rpc_bench.py)", lines, args.docs)


if __name__ == "__main__":
    main()
