"""Short smoke runs of the benchmark scripts (the real runs are scripts of their own):
they start their servers, measure, and write their section of a benchmarks document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str, docs: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--docs", str(docs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_rpc_bench_smoke(tmp_path):
    docs = tmp_path / "benchmarks.md"
    out = _run("rpc_bench.py", "--seconds", "0.3", "--rounds", "1", docs=docs)
    for label in ("bare trio TCP echo", "DCE/RPC null call", "store get_props"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert float(line.rsplit(":", 1)[1]) > 0
    assert "## Small calls on loopback" in docs.read_text()


def test_store_tables_smoke(tmp_path):
    docs = tmp_path / "benchmarks.md"
    out = _run("store_tables.py", "--count", "500", docs=docs)
    assert "open sorted + first 50 rows, 500 messages" in out
    assert "hits) + 50 rows" in out
    assert "## Contents tables on a large folder" in docs.read_text()
