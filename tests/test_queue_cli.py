"""``mapi-anywhere queue``: the outbound queue listed from its files, read-only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from internet_mail.outbound import state
from internet_mail.outbound.queue import OutboundQueue
from mapi_anywhere.cli import main

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = b"From: a@local.test\r\nSubject: hello\r\n\r\nbody\r\n"


def _fill(data_dir: Path) -> tuple[str, str]:
    """Two queued messages: one tried and refused for now, one report from <>."""
    queue = OutboundQueue(data_dir / "queue", clock=lambda: 1_700_000_000.0)
    first = queue.enqueue("alice@local.test", ["friend@remote.test", "gone@remote.test"], MESSAGE)
    report = queue.enqueue_as("ndr-" + "a" * 40, "", ["bob@remote.test"], MESSAGE * 2)
    [env, _] = queue.load()
    env.recipients[0].attempts = 2
    env.recipients[0].next_try = 4_000_000_000.0
    env.recipients[0].reply = "451 4.4.1 mx.remote.test:25: Connection refused"
    env.recipients[1].status = state.FAILED
    env.recipients[1].reply = "550 5.1.1 no such user"
    queue.save(env)
    return first, report


def test_lists_messages_and_recipients(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, report = _fill(tmp_path)
    assert main(["queue", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{first}  from alice@local.test  {len(MESSAGE)} bytes  queued ")
    assert out[1].startswith("  friend@remote.test  pending  tries 2  next try ")
    assert out[1].endswith("  last: 451 4.4.1 mx.remote.test:25: Connection refused")
    assert out[2] == "  gone@remote.test  failed  tries 0  last: 550 5.1.1 no such user"
    assert out[3].startswith(f"{report}  from <>  {2 * len(MESSAGE)} bytes")
    assert out[4] == "  bob@remote.test  pending  tries 0  next try now"
    assert out[5] == "2 message(s), 2 recipient(s) pending"


def test_json_and_read_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = _fill(tmp_path)
    queue_dir = tmp_path / "queue"
    (queue_dir / "zzz.json").write_text("{not an envelope")
    (queue_dir / "tmp" / "leftover.eml").write_bytes(b"x")
    before = sorted(p.relative_to(queue_dir) for p in queue_dir.rglob("*"))
    assert main(["queue", "--data-dir", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [one, two] = doc["messages"]
    assert one["id"] == first and one["sender"] == "alice@local.test"
    assert one["size"] == len(MESSAGE) and one["queued"] == 1_700_000_000.0
    assert one["recipients"][0] == {
        "address": "friend@remote.test", "status": "pending", "attempts": 2,
        "next_try": 4_000_000_000.0,
        "last_reply": "451 4.4.1 mx.remote.test:25: Connection refused", "remote_mta": "",
    }  # fmt: skip
    assert one["recipients"][1]["next_try"] is None
    assert two["sender"] == ""
    [bad] = doc["unreadable"]
    assert bad["file"] == "zzz.json" and "not JSON" in bad["error"]
    # Nothing moved or cleared: that is the running server's business.
    assert sorted(p.relative_to(queue_dir) for p in queue_dir.rglob("*")) == before


def test_empty_queue_and_missing_data_dir(tmp_path: Path) -> None:
    """Through the real command line: an empty (or never made) queue, a data directory
    that does not exist (one line on stderr, status 1)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mapi_anywhere", "queue", *args], cwd=ROOT,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    empty = run("--data-dir", str(tmp_path))
    assert empty.returncode == 0 and empty.stdout == "the outbound queue is empty\n"
    missing = run("--data-dir", str(tmp_path / "nope"))
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("mapi-anywhere: queue: data directory ")
