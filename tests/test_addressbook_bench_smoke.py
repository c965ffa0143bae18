"""A short smoke run of bench/nspi_bench.py: it measures and writes its section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_nspi_bench_smoke(tmp_path):
    docs = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "nspi_bench.py"), "--entries", "2000",
         "--rounds", "2", "--docs", str(docs)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for label in ("NspiQueryRows", "NspiSeekEntries", "NspiResolveNamesW"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(label))
        assert float(line.rsplit(":", 1)[1]) > 0
    assert "## Address book on a 100,000-entry GAL (bench/nspi_bench.py)" in docs.read_text()
