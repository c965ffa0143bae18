"""MIME <-> MAPI conversion speed (internet_mail.mime): a large message with attachments, each way.

The message: a plain and an HTML body, an inline image and attachments, about ``--mb``
megabytes of attachment data in all (deterministic pseudo-random bytes, so base 64 has
its real cost), rendered once to MIME. Then, each figure the median of ``--rounds`` runs
in this process:

- MIME -> MAPI: ``mime_to_mapi`` on the rendered bytes;
- MAPI -> MIME: ``mapi_to_mime`` on the converted message.

Prints one figure a line (MB/s of the MIME message's size) and rewrites its section of
``docs/benchmarks.md``. Target (issue 20): a 10 MB message each way.

Usage: ``python bench/mime_bench.py [--mb 10] [--rounds 5] [--docs docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpc_bench import write_section  # noqa: E402

from internet_mail.mime import (  # noqa: E402
    ATT_MHTML_REF,
    ConvertedAttachment,
    ConvertedMessage,
    mapi_to_mime,
    mime_to_mapi,
)
from mapi.model import proptags as pt  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
TITLE = "MIME conversion (bench/mime_bench.py)"


def build(megabytes: float) -> ConvertedMessage:
    """A message with bodies and attachments of about ``megabytes`` MB of data."""
    rng = random.Random(0)
    total = int(megabytes * 1_000_000)
    sizes = [total // 2, total // 4, total // 8, total - total // 2 - total // 4 - total // 8]
    attachments = [
        ConvertedAttachment(
            props={
                pt.PR_ATTACH_METHOD: pt.ATTACH_BY_VALUE,
                pt.PR_ATTACH_MIME_TAG_W: "image/png",
                pt.PR_ATTACH_CONTENT_ID_W: "logo@example.com",
                pt.PR_ATTACH_FLAGS: ATT_MHTML_REF,
                pt.PR_ATTACH_DATA_BIN: rng.randbytes(20_000),
            }
        )
    ]
    for i, size in enumerate(sizes):
        attachments.append(
            ConvertedAttachment(
                props={
                    pt.PR_ATTACH_METHOD: pt.ATTACH_BY_VALUE,
                    pt.PR_ATTACH_MIME_TAG_W: "application/octet-stream",
                    pt.PR_ATTACH_LONG_FILENAME_W: f"Anlage {i} \u2013 Übersicht.bin",
                    pt.PR_ATTACH_DATA_BIN: rng.randbytes(size),
                }
            )
        )
    text = "Grüße aus Köln. " * 4000
    return ConvertedMessage(
        props={
            pt.PR_MESSAGE_CLASS_W: "IPM.Note",
            pt.PR_SUBJECT_W: "Quarterly report with all the data",
            pt.PR_SENT_REPRESENTING_NAME_W: "Alice Example",
            pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W: "alice@example.org",
            pt.PR_CLIENT_SUBMIT_TIME: 134_405_928_000_000_000,
            pt.PR_INTERNET_MESSAGE_ID_W: "<bench-1@example.org>",
            pt.PR_BODY_W: text,
            pt.PR_HTML: f"<p>{text}<img src='cid:logo@example.com'></p>".encode(),
            pt.PR_INTERNET_CPID: 65001,
        },
        recipients=[
            {
                pt.PR_DISPLAY_NAME_W: f"User {i}",
                pt.PR_EMAIL_ADDRESS_W: f"user{i}@example.org",
                pt.PR_RECIPIENT_TYPE: pt.MAPI_TO,
            }
            for i in range(20)
        ],
        attachments=attachments,
    )


def measure(megabytes: float, rounds: int) -> tuple[int, float, float]:
    """(MIME size in bytes, MIME->MAPI MB/s, MAPI->MIME MB/s), medians of ``rounds``."""
    message = build(megabytes)
    raw = mapi_to_mime(message)
    converted = mime_to_mapi(raw)
    assert len(converted.attachments) == len(message.attachments)
    reading, writing = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        converted = mime_to_mapi(raw)
        reading.append(time.perf_counter() - began)
        began = time.perf_counter()
        again = mapi_to_mime(converted)
        writing.append(time.perf_counter() - began)
        assert again == raw
    size_mb = len(raw) / 1_000_000
    return len(raw), size_mb / statistics.median(reading), size_mb / statistics.median(writing)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=10.0, help="attachment data, MB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--docs", type=Path, default=DOCS, help="document to update")
    args = parser.parse_args()
    size, read_rate, write_rate = measure(args.mb, args.rounds)
    label = f"{size / 1_000_000:.1f} MB message with 5 attachments"
    figures = [
        f"MIME -> MAPI (mime_to_mapi), {label}, MB/s: {read_rate:.1f}",
        f"MAPI -> MIME (mapi_to_mime), {label}, MB/s: {write_rate:.1f}",
    ]
    for line in figures:
        print(line, flush=True)
    write_section(
        TITLE,
        [
            *(f"- {line}" for line in figures),
            "",
            f"Measured {time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, one "
            f"process, each figure the median of {args.rounds} runs; MB/s of the MIME "
            f"message's size ({args.mb:g} MB of attachment data, base 64 on the wire, a plain "
            "and an HTML body, 20 recipients). Target (issue 20): conversion of a 10 MB "
            "message with attachments each way.",
        ],
        args.docs,
    )


if __name__ == "__main__":
    main()
