"""The firewall demo (demos/firewall/run.py) end to end, where network namespaces can be
made: root, `ip` (iproute2) and `nft` (nftables). Elsewhere the tests say why they skip.

The demo builds outside / firewall / inside namespaces, runs the server inside and shows
that direct RPC works with the firewall open, is refused when only HTTPS is let through,
and that the tunnel (HTTP/2 and HTTP/1.1) and its notifications still work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demos" / "firewall" / "run.py"
#: The whole demo takes a few seconds; this bounds a hang anywhere in it.
RUN_TIMEOUT = 180
CHECKS = ["0", "1a", "1b", "2a", "2b", "2c", "3a", "3b", "4a", "4b"]


def _demo(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), "--ascii", "--python", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _namespaces() -> list[str]:
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    )
    return [name for name in listing.stdout.split() if name.startswith("mapifw-")]


@pytest.fixture(scope="module")
def can_run() -> None:
    """Skip, with the demo's own reason, where it cannot build namespaces."""
    if sys.platform != "linux":
        pytest.skip("the firewall demo needs Linux network namespaces")
    if os.geteuid() != 0:
        pytest.skip("the firewall demo needs root (network namespaces, nftables)")
    check = _demo("--check", timeout=60)
    if check.returncode == 3:
        pytest.skip(check.stderr.strip().removeprefix("run.py: "))
    assert check.returncode == 0, check.stdout + check.stderr


def test_help_runs_anywhere() -> None:
    done = _demo("--help", timeout=30)
    assert done.returncode == 0
    assert "network namespaces" in done.stdout and "--block" in done.stdout


@pytest.mark.parametrize("block", ["reject", "drop"])
def test_demo_end_to_end(can_run: None, block: str) -> None:
    done = _demo("--block", block, "--client-timeout", "3")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for key in CHECKS:
        assert f"OK   [{key}]" in out, f"check {key} missing\n{out}"
    assert "FAIL" not in out, out

    step1 = out[out.index("Step 1/4") : out.index("Step 2/4")]
    assert "6d617069-616e-7977-6865-726501000000 v1.0  ncacn_ip_tcp:10.251.1.2[" in step1
    assert "Inbox" in step1

    step2 = out[out.index("Step 2/4") : out.index("Step 3/4")]
    assert "policy drop" in step2 and "tcp dport 443" in step2
    assert "Inbox" not in step2
    if block == "reject":
        # Refused at once, with the client's own message.
        assert step2.count("mapi-cli: server unreachable at ncacn_ip_tcp:10.251.1.2[") == 2
    else:
        assert step2.count("mapi-cli: timed out after 3.0 s") == 2

    step3 = out[out.index("Step 3/4") : out.index("Step 4/4")]
    assert step3.count("Inbox") >= 2 and "--http1" in step3

    step4 = out[out.index("Step 4/4") : out.index("Summary")]
    assert "subscribed to new-mail events of bob (tunnel, HTTP/2)" in step4
    assert "subscribed to new-mail events of bob (tunnel, RPC over HTTP v2 on HTTP/1.1)" in step4
    assert "event new_mail" in step4 and "from alice@example.org" in step4
    assert step4.count("delivered 1, undeliverable none") == 2

    assert "OK   nothing left behind" in out
    assert _namespaces() == []


def test_interrupted_run_cleans_up(can_run: None, tmp_path: Path) -> None:
    """SIGTERM in the middle of step 2: every namespace and process is gone afterwards."""
    log = tmp_path / "demo.out"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(DEMO), "--ascii", "--python", sys.executable],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "Step 2/4" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.05)
            assert "Step 2/4" in log.read_text()
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    out = log.read_text()
    assert status == 130, out
    assert "interrupted (SIGTERM); cleaning up" in out
    assert "OK   nothing left behind" in out
    assert _namespaces() == []
    assert _demo_processes() == [], "a process of the demo is still running"


def _demo_processes() -> list[str]:
    """Command lines of running processes that use the demo's work directory."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(a.decode(errors="replace") for a in args)
        if "/mapifw-demo-" in text:
            found.append(text)
    return found
