"""A short smoke run of bench/mime_bench.py (the real run is the script): it converts a
message with attachments each way, prints its figures and writes its section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mime_bench_smoke(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other (bench/other.py)\n\n- kept\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mime_bench.py"), "--mb", "0.5", "--rounds", "1",
         "--docs", str(docs)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for label in ("MIME -> MAPI (mime_to_mapi)", "MAPI -> MIME (mapi_to_mime)"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(label))
        assert float(line.rsplit(":", 1)[1]) > 0
    text = docs.read_text()
    assert "## MIME conversion (bench/mime_bench.py)" in text
    assert "- kept" in text
