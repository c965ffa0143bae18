"""A short smoke run of bench/ndr_bench.py: it measures and writes its section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ndr_bench_smoke(tmp_path):
    docs = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ndr_bench.py"),
            "--rounds",
            "2",
            "--docs",
            str(docs),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for label in (
        "encode NspiQueryRows response, 50 rows",
        "decode NspiQueryRows response, 50 rows",
    ):
        line = next(line for line in result.stdout.splitlines() if line.startswith(label))
        assert float(line.rsplit(":", 1)[1]) > 0
    assert "## NDR codec on a GAL page (bench/ndr_bench.py)" in docs.read_text()
