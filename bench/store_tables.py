"""Contents-table speed on a large folder, client and server in separate processes.

The server process builds a folder of ``--count`` messages (100,000 by default; rows
inserted in one transaction straight into the mailbox database, since 100,000
individual saves would only measure fsync), then serves it. The client, over direct
TCP, times three round trips, each one batch:

- open the contents table sorted by delivery time (newest first) and read 50 rows;
- seek to the middle and read 50 rows;
- restrict to a case-insensitive subject substring, count the hits, read 50 rows.

Prints one figure a line and rewrites its section of ``docs/benchmarks.md``.
Usage: ``python bench/store_tables.py [--count 100000]``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rpc_bench import DOCS, free_port, wait_for_port, write_section  # noqa: E402

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima"]  # fmt: skip
USER, PASSWORD = "bench", "bench-password"


def build_folder(data_dir: Path, count: int) -> None:
    """Create the user and fill its Inbox with ``count`` messages."""
    from mapi.model import proptags as pt
    from mapi.model.properties import pack_props
    from mapi.store import ObjectStore

    store = ObjectStore(data_dir)
    store.add_user(USER, PASSWORD)
    msg_store = store.logon_with_password(USER, PASSWORD).open_store()
    inbox = msg_store.open_folder(msg_store.get_receive_folder())
    rng = random.Random(1)
    blob = pack_props({pt.PR_IMPORTANCE: 1, pt.PR_SENDER_NAME_W: "Sender"})
    with msg_store.context.db.transaction() as conn:
        conn.executemany(
            "INSERT INTO messages(folder_id, delivery_time, subject, size, flags,"
            " message_class, created, modified, change_num, has_attach, props)"
            " VALUES (?, ?, ?, ?, ?, 'IPM.Note', 0, 0, 1, 0, ?)",
            (
                (inbox.folder_id, 133_000_000_000_000_000 + rng.randrange(10**15),
                 " ".join(rng.choices(WORDS, k=4)) + f" #{i}", rng.randrange(1000, 90000),
                 rng.choice((0, 1)), blob)
                for i in range(count)
            ),
        )  # fmt: skip
    store.close()


def serve(port: int, count: int) -> None:
    import trio

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

    with tempfile.TemporaryDirectory() as tmp:
        build_folder(Path(tmp), count)
        config = Config(
            server=ServerSection(data_dir=Path(tmp)),
            endpoint_mapper=EndpointMapperSection(port=port),
            smtp=SmtpSection(enabled=False),  # not measured here; never a fixed port
            submission=SubmissionSection(enabled=False),
            imap=ImapSection(enabled=False),
            pop3=Pop3Section(enabled=False),
            store=StoreSection(demo_user=False),
            tunnel=TunnelSection(enabled=False),
        )
        trio.run(run_server, config)


def measure(port: int, count: int) -> dict[str, float]:
    import trio

    from clients.api import connect

    columns = ["PR_ENTRYID", "PR_SUBJECT", "PR_MESSAGE_DELIVERY_TIME", "PR_MESSAGE_SIZE"]

    async def run() -> dict[str, float]:
        async with connect(f"ncacn_ip_tcp:127.0.0.1[{port}]", USER, PASSWORD) as session:
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            out: dict[str, float] = {}

            start = time.perf_counter()
            async with session.batch() as batch:
                table = batch.add(inbox.contents_table())
                batch.add(table.set_columns(columns))
                batch.add(table.sort([("PR_MESSAGE_DELIVERY_TIME", True)]))
                first = batch.add(table.query_rows(50))
            out["open sorted + first 50 rows"] = time.perf_counter() - start
            assert len(first.result) == 50

            start = time.perf_counter()
            async with session.batch() as batch:
                batch.add(table.seek(0, count // 2))
                middle = batch.add(table.query_rows(50))
            out["seek to the middle + 50 rows"] = time.perf_counter() - start
            assert len(middle.result) == 50

            start = time.perf_counter()
            async with session.batch() as batch:
                batch.add(
                    table.restrict(
                        {"rt": 3, "fuzzy": 0x10001, "tag": "PR_SUBJECT", "value": "ECHO golf"}
                    )
                )
                hits = batch.add(table.row_count())
                batch.add(table.seek(0, 0))
                batch.add(table.query_rows(50))
            out[f"subject substring restriction ({hits.result} hits) + 50 rows"] = (
                time.perf_counter() - start
            )
            return out

    return trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000, help="messages in the folder")
    parser.add_argument("--docs", type=Path, default=DOCS, help="document to update")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.count)
        return
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port), "--count", str(args.count)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=300)
        figures = measure(port, args.count)
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = []
    for name, seconds in figures.items():
        line = f"{name}, {args.count} messages: {seconds * 1000:.1f} ms"
        print(line)
        lines.append(f"- {line}")
    lines.append("")
    lines.append(
        f"Measured {time.strftime('%Y-%m-%d')}, client and server in separate processes on "
        "loopback, each figure one round trip (one batch). Targets (issue 3): each 50-row "
        "page under 50 ms, the substring restriction under 1 s."
    )
    write_section("Contents tables on a large folder (bench/store_tables.py)", lines, args.docs)


if __name__ == "__main__":
    main()
