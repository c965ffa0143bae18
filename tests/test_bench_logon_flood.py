"""A short smoke run of bench/logon_flood.py (the real run is a script of its own): it
starts its server and its flood, measures, prints its figures and writes its section
of a benchmarks document when asked. Figures are checked for presence, never timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    "latency_idle_ms",
    "latency_flood_ms",
    "uncached_idle_ms",
    "uncached_flood_ms",
    "flood_attempts_per_s",
    "flood_401_per_s",
    "flood_503_per_s",
    "flood_errors_per_s",
)


def test_logon_flood_smoke(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "logon_flood.py"),
            *("--seconds", "1", "--fresh", "1", "--connections", "1", "--docs", str(docs)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    printed = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    for name in FIGURES:
        assert float(printed[name]) >= 0, name
    assert float(printed["flood_attempts_per_s"]) > 0  # the flood was answered
    text = docs.read_text()
    assert "## Logon flood (bench/logon_flood.py)" in text
    assert "| latency_flood_ms |" in text
