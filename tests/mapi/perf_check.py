"""Manual performance check of contents tables on a 100,000-message folder (not a test).

Run: ``.venv/bin/python tests/mapi/perf_check.py [count]``. Builds a folder in a temp
directory (rows inserted in one transaction through the mailbox connection, bypassing
per-message saves for speed), then prints the three timings the design asks for.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mapi import proptags as pt
from mapi import restrictions as rs
from mapi.logon import KdfParams
from mapi.properties import pack_props
from mapi.store import ObjectStore

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ObjectStore(Path(tmp), kdf=KdfParams(n=16, r=1, p=1))
        store.add_user("perf", "pw")
        ms = store.logon_with_password("perf", "pw").open_store()
        inbox = ms.open_folder(ms.get_receive_folder())
        db = ms.context.db
        rng = random.Random(1)
        start = time.perf_counter()
        with db.transaction() as conn:
            blob = pack_props({pt.PR_IMPORTANCE: 1, pt.PR_SENDER_NAME_W: "Sender"})
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
        print(f"built {count} messages in {time.perf_counter() - start:.1f} s")

        table = inbox.contents_table()
        table.set_columns([pt.PR_ENTRYID, pt.PR_SUBJECT_W, pt.PR_MESSAGE_DELIVERY_TIME])
        t0 = time.perf_counter()
        table.sort_table([(pt.PR_MESSAGE_DELIVERY_TIME, True)])
        rows = table.query_rows(50)
        t1 = time.perf_counter()
        assert len(rows) == 50 and table.uses_sql
        print(f"open sorted by delivery time + first 50 rows: {(t1 - t0) * 1000:.1f} ms")

        t0 = time.perf_counter()
        table.seek_row(0, count // 2)
        rows = table.query_rows(50)
        t1 = time.perf_counter()
        assert len(rows) == 50
        print(f"seek to the middle + 50 rows:                 {(t1 - t0) * 1000:.1f} ms")

        t0 = time.perf_counter()
        table.restrict(rs.Content(rs.FL_SUBSTRING | rs.FL_IGNORECASE, pt.PR_SUBJECT_W, "ECHO golf"))
        total = table.get_row_count()
        rows = table.query_rows(50)
        t1 = time.perf_counter()
        print(f"subject substring restriction ({total} hits):  {(t1 - t0) * 1000:.1f} ms")
        store.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
