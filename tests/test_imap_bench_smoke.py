"""A short smoke run of bench/imap_bench.py (the real run is the script): the same
small mailbox in our serve and in Dovecot, SELECT, FETCH, UID SEARCH and an mbsync
sync on each, the figures printed and the section written. No timing is asserted."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.dovecot_harness import dovecot_available

ROOT = Path(__file__).resolve().parent.parent
AVAILABLE, REASON = dovecot_available()
if AVAILABLE and shutil.which("mbsync") is None:
    AVAILABLE, REASON = False, "mbsync is not installed (Debian: isync)"


@pytest.mark.skipif(not AVAILABLE, reason=REASON)
def test_imap_bench_smoke(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other (bench/other.py)\n\n- kept\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "imap_bench.py"), "--quick", "--docs", str(docs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for label in ("imap_select_ms", "imap_fetch_ms", "imap_fetch_msgs_per_s", "imap_search_ms",
                  "mbsync_full_sync_s"):  # fmt: skip
        line = next(line for line in lines if line.startswith(label + " "))
        values = dict(part.split("=") for part in line.split()[1:])
        assert set(values) == {"ours", "dovecot"}, line
        assert all(float(v) > 0 for v in values.values()), line
    for measure in ("select", "fetch", "search", "mbsync"):
        line = next(line for line in lines if line.startswith(f"rate ours/dovecot {measure}="))
        assert float(line.split("=", 1)[1]) > 0
    # Both sides found the same messages (the bench checks the counts of SELECT,
    # FETCH and mbsync itself and fails otherwise).
    hits = next(line for line in lines if line.startswith("search_hits "))
    assert hits == "search_hits ours=3 dovecot=3"
    text = docs.read_text()
    assert "## IMAP reading, side by side with Dovecot (bench/imap_bench.py)" in text
    assert "imap_fetch_msgs_per_s ours=" in text
    assert "- kept" in text
