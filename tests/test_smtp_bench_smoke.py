"""A short smoke run of bench/smtp_bench.py (the real run is the script): our SMTP
listener and Dovecot's LMTP each take a few deliveries, the figures are printed and the
section is written. No timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.dovecot_harness import dovecot_available

ROOT = Path(__file__).resolve().parent.parent
AVAILABLE, REASON = dovecot_available()


@pytest.mark.skipif(not AVAILABLE, reason=REASON)
def test_smtp_bench_smoke(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other (bench/other.py)\n\n- kept\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "smtp_bench.py"), "--quick", "--docs", str(docs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    labels = (
        "smtp_deliveries_per_s ours=",
        "lmtp_deliveries_per_s dovecot=",
        "lmtp_deliveries_per_s dovecot_fsync_always=",
        "ratio ours/dovecot=",
    )
    for label in labels:
        line = next(line for line in lines if line.startswith(label))
        assert float(line.split("=", 1)[1]) > 0
    text = docs.read_text()
    assert "## SMTP delivery, side by side with Dovecot's LMTP (bench/smtp_bench.py)" in text
    assert "- kept" in text
