"""Recording loopback traffic with dumpcap, for the tests that hand it to tshark."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio


async def capture_on_loopback(
    pcap: Path, ports: list[int], traffic: Callable[[], Awaitable[None]]
) -> None:
    """Run ``traffic()`` while dumpcap records ``ports`` on ``lo`` into ``pcap``."""
    capture_filter = " or ".join(f"tcp port {p}" for p in ports)
    dumpcap = await trio.lowlevel.open_process(
        ["dumpcap", "-q", "-i", "lo", "-f", capture_filter, "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert dumpcap.stderr is not None
        with trio.fail_after(20):
            banner = await dumpcap.stderr.receive_some(4096)
        if b"Capturing on" not in banner:
            pytest.skip(f"dumpcap cannot capture here: {banner.decode(errors='replace')}")
        await trio.sleep(1)  # the filter is attached a moment after the banner
        with trio.fail_after(60):
            await traffic()
        await trio.sleep(0.5)
    finally:
        dumpcap.send_signal(signal.SIGINT)
        with trio.move_on_after(20):
            await dumpcap.wait()
        if dumpcap.returncode is None:
            dumpcap.kill()
