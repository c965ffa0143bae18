"""Short smoke runs of bench/tunnel_bench.py and bench/notify_bench.py (the real runs are
scripts of their own): they start their servers, measure over every transport, and
write their section of a benchmarks document."""

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


def _figure(out: str, prefix: str) -> float:
    line = next(line for line in out.splitlines() if line.startswith(prefix))
    return float(line.rsplit(":", 1)[1].split()[0])


def test_tunnel_bench_smoke(tmp_path):
    docs = tmp_path / "benchmarks.md"
    out = _run("tunnel_bench.py", "--seconds", "0.2", "--rounds", "2", "--size-mb", "2", docs=docs)
    for transport in ("direct TCP", "HTTP/2 tunnel", "HTTP/1.1 tunnel"):
        assert (
            _figure(out, f"DCE/RPC null call (mgmt inq_if_ids on the endpoint mapper), {transport}")
            > 0
        )
        assert _figure(out, f"store get_props (4 properties) on an open message, {transport}") > 0
        for way in ("upload", "download"):
            assert _figure(out, f"2 MiB attachment {way} (1024 KiB chunks), {transport}") > 0
    assert _figure(out, "raw TLS loopback (TLSStream) upload") > 0
    assert _figure(out, "raw TCP loopback (trio SocketStream) download") > 0
    cpu = [line for line in out.splitlines() if line.startswith("CPU per MiB, ")]
    assert len(cpu) == 14, out  # 2 ways x (5 transports + raw TLS + raw TCP)
    for line in cpu:
        server, client = (float(part.split()[1]) for part in line.split(": ")[1].split(", "))
        assert server > 0 and client > 0, line
    for way in ("upload", "download"):
        bound = _figure(out, f"attachment {way}, bound for any TLS tunnel on ")
        assert bound > 0
    assert "store get_props, HTTP/2 tunnel / direct TCP:" in out
    for sealed in ("direct TCP sealed (NTLM privacy)", "HTTP/2 tunnel sealed"):
        assert _figure(out, f"store get_props (4 properties) on an open message, {sealed}") > 0
        assert _figure(out, f"2 MiB attachment upload (1024 KiB chunks), {sealed}") > 0
    assert _figure(out, "attachment download, direct TCP: sealed / plain") > 0
    assert "attachment download, HTTP/1.1 tunnel / raw TLS:" in out
    assert "## HTTPS tunnel against direct TCP (bench/tunnel_bench.py)" in docs.read_text()


def test_notify_bench_smoke(tmp_path):
    docs = tmp_path / "benchmarks.md"
    out = _run(
        "notify_bench.py", "--count", "5", "--sessions", "30", "--sessions-per-user", "10",
        "--sessions-per-connection", "8", "--seconds", "0.5", docs=docs,
    )  # fmt: skip
    for transport in ("direct TCP", "HTTP/2 tunnel", "HTTP/1.1 tunnel"):
        assert _figure(out, f"submit() to new-mail event, recipient over {transport}") > 0
    assert _figure(out, "new-mail events delivered to 30 sessions (3 users, 4 direct") > 0
    fan = next(line for line in out.splitlines() if line.startswith("fan-out: "))
    received, _, expected = fan.removeprefix("fan-out: ").split()[:3]
    assert received == expected and int(expected) > 0, fan
    assert " 0 resyncs" in fan
    assert "## New-mail notifications (bench/notify_bench.py)" in docs.read_text()
