"""NDR codec speed on [MS-OXNSPI]'s largest common reply: a GAL page.

Times ``dcerpc.ndr_types`` encoding and decoding a ``PropertyRowSet_r`` of ``--rows``
rows (50 by default, a GAL page) of 10 properties each, the columns a client asks for
when it browses the address book (display name, SMTP address, legacy DN, entry id,
object and display type, title, department, office, instance key), as the
``NspiQueryRows`` response carries it; and the same page through impacket's nspi.py
for comparison. Each figure is the median of ``--rounds`` timings.

Prints one figure a line and rewrites its section of ``docs/benchmarks.md``.
Usage: ``python bench/ndr_bench.py [--rows 50] [--rounds 50]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rpc_bench import DOCS, write_section  # noqa: E402

from dcerpc.idl import nspi as n  # noqa: E402


def gal_page(count: int) -> list[n.PropertyRow]:
    rows = []
    for i in range(count):
        name = f"User Number {i:06d}"
        dn = f"/o=Example/ou=Exchange/cn=Recipients/cn=user{i}".encode()
        rows.append(
            n.PropertyRow(
                [
                    n.PropertyValue(0x3001001F, name),
                    n.PropertyValue(0x39FE001F, f"user{i:06d}@example.org"),
                    n.PropertyValue(0x3003001E, dn),
                    n.PropertyValue(0x0FFF0102, bytes([0x87, 0, 0, 0]) + bytes(16) + bytes(8)),
                    n.PropertyValue(0x0FFE0003, 6),
                    n.PropertyValue(0x39000003, 0),
                    n.PropertyValue(0x3A17001F, "Engineer"),
                    n.PropertyValue(0x3A18001F, "Research and Development"),
                    n.PropertyValue(0x3A19001F, f"Building 1, room {i % 400}"),
                    n.PropertyValue(0x0FF60102, i.to_bytes(4, "little")),
                ]
            )
        )
    return rows


def median_ms(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--docs", type=Path, default=DOCS, help="document to update")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    stat = n.Stat(current_rec=0x1928, num_pos=args.rows, total_recs=100_000, code_page=0x4E4)
    response = {"pStat": stat, "ppRows": gal_page(args.rows), "result": 0}
    op = n.NspiQueryRows
    data = op.encode_response(response)
    assert op.decode_response(data) == response
    label = f"NspiQueryRows response, {args.rows} rows x 10 properties ({len(data)} bytes)"
    figures = [
        (f"encode {label}, ms", median_ms(lambda: op.encode_response(response), args.rounds)),
        (f"decode {label}, ms", median_ms(lambda: op.decode_response(data), args.rounds)),
    ]
    try:
        from impacket.dcerpc.v5 import nspi as inspi
    except ImportError:  # impacket is a test dependency only
        inspi = None
    if inspi is not None:
        parse = median_ms(lambda: inspi.NspiQueryRowsResponse(data), max(3, args.rounds // 5))
        figures.append(("impacket parse of the same response, ms", parse))
    lines = []
    for text, value in figures:
        line = f"- {text}: {value:.2f}"
        print(line[2:])
        lines.append(line)
    lines += [
        "",
        f"Measured {time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, one process, "
        f"each figure the median of {args.rounds} runs. Target (issue 19): a 50-row GAL page "
        "under 50 ms end to end; the codec's part is the two figures above.",
    ]
    if not args.no_docs:
        write_section("NDR codec on a GAL page (bench/ndr_bench.py)", lines, args.docs)


if __name__ == "__main__":
    main()
