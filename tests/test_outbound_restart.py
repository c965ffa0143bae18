"""A queued outbound message survives kill -9 of ``serve`` and is delivered once.

``mapi-anywhere serve`` runs as a child process (a temporary ``--config`` whose
``[outbound]`` section points at a smarthost on loopback, short retries) on a fresh data
directory. The demo user submits a message to an external address through our MAPI
client while the smarthost is down: it waits in ``<data_dir>/queue/``. The server is
killed with SIGKILL, the sink (aiosmtpd, ``tests/outbound_sink.py``) started, and the
server started again on the same data directory: the sink receives the message exactly
once (a few more retry periods pass to be sure no second copy comes), with a DKIM
signature that verifies against the TXT record ``mapi-anywhere dkim`` prints.

The other crash window, after the peer's 250 and before QUIT, is covered in process by
``tests/internet_mail/test_outbound_runner.py`` (``test_ack_is_durable_before_quit``).
"""

from __future__ import annotations

import email
import functools
import os
import re
import signal
import subprocess
import sys
import time
from email import policy
from pathlib import Path

import dkim
import trio
from outbound_sink import SinkHandler, free_port, start_sink
from serve_helpers import FREE_PORTS

from clients.api import connect
from internet_mail.outbound import schedule, state
from internet_mail.outbound.queue import OutboundQueue
from internet_mail.outbound.runner import OutboundSettings, Smarthost, run_outbound
from internet_mail.smtp.client_driver import ClientLimits

ROOT = Path(__file__).resolve().parent.parent
#: Seconds between tries while the sink is down (the config's retry_initial/retry_max).
RETRY = 0.5
RETRY_MAX = 1.0


def _config(path: Path, sink_port: int) -> Path:
    path.write_text(
        "[outbound]\n"
        'smarthost = "127.0.0.1"\n'
        f"smarthost_port = {sink_port}\n"
        'smarthost_tls = "none"\n'
        f"retry_initial = {RETRY}\n"
        f"retry_max = {RETRY_MAX}\n"
        'hostname = "mail.example.org"\n'
    )
    return path


class Serve:
    """``mapi-anywhere serve`` in a child process, logging to a file."""

    def __init__(self, config: Path, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.epm_port = free_port()
        self.log_path = data_dir.parent / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) and wait for "ready" (bounded)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mapi_anywhere", "serve",
                    "--config", str(self.config), "--data-dir", str(self.data_dir),
                    "--epm-port", str(self.epm_port), *FREE_PORTS,
                    "--log-level", "INFO",
                ],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if re.search(r"\bready\b", self.log()[offset:]):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the server did not start:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """A clean stop (SIGINT), bounded; kill -9 when it does not stop."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def address(self) -> str:
        return f"ncacn_ip_tcp:127.0.0.1[{self.epm_port}]"


def _queued(data_dir: Path) -> list[str]:
    """The ids of the envelopes in the queue directory."""
    queue = data_dir / "queue"
    return sorted(p.stem for p in queue.glob("*.json")) if queue.is_dir() else []


def _dkim_record(config: Path, data_dir: Path) -> tuple[str, bytes]:
    """(name, value) of the TXT record ``mapi-anywhere dkim`` prints."""
    out = subprocess.run(
        [sys.executable, "-m", "mapi_anywhere", "dkim", "-c", str(config),
         "--data-dir", str(data_dir)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    match = re.fullmatch(r"(\S+)\. IN TXT \( (.*) \)\n", out.stdout)
    assert match, out.stdout
    value = "".join(re.findall(r'"([^"]*)"', match.group(2)))
    return match.group(1), value.encode("ascii")


async def _submit(address: str, password: str, to: str, subject: str) -> None:
    async with connect(address, "demo", password) as session:
        store = await session.open_store()
        drafts = await store.open_folder(await store.special_folder("drafts"))
        msg = await drafts.create_message()
        await msg.set_props({"PR_SUBJECT": subject, "PR_BODY": "Queued across a crash.\r\n"})
        await msg.add_recipient("Friend", to)
        await msg.save()
        result = await msg.submit()
        assert result["undeliverable"] == []


async def test_queued_mail_survives_kill_9_and_is_delivered_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    sink_port = free_port()  # nothing listens there until the sink starts
    config = _config(tmp_path / "server.toml", sink_port)
    serve = Serve(config, data_dir)
    handler = SinkHandler()
    sink = None
    try:
        await trio.to_thread.run_sync(serve.start)
        password = (data_dir / "demo-password.txt").read_text().strip()
        with trio.fail_after(60):
            await _submit(serve.address, password, "friend@remote.example", "Across a crash")
        # submit() returned: the message is queued durably (fsynced) ...
        [qid] = _queued(data_dir)
        assert (data_dir / "queue" / f"{qid}.eml").is_file()

        # ... and the runner has failed to reach the sink at least once (still queued).
        def tried() -> bool:
            text = (data_dir / "queue" / f"{qid}.json").read_text()
            return '"attempts":0' not in text

        with trio.fail_after(30):
            while not tried():  # noqa: ASYNC110 - the child process writes the file
                await trio.sleep(0.05)
        await trio.to_thread.run_sync(serve.kill)
        assert serve.proc is not None and serve.proc.returncode == -signal.SIGKILL
        assert _queued(data_dir) == [qid]

        sink = start_sink(sink_port, handler)
        await trio.to_thread.run_sync(serve.start)
        with trio.fail_after(60):
            while not (handler.messages and not _queued(data_dir)):  # noqa: ASYNC110 - sink thread
                await trio.sleep(0.05)
        # Several retry periods more: no second copy comes.
        await trio.sleep(4 * RETRY_MAX)
        await trio.to_thread.run_sync(serve.stop)
    finally:
        if sink is not None:
            sink.stop()
        await trio.to_thread.run_sync(serve.kill)
    assert len(handler.messages) == 1, serve.log()[-3000:]
    [got] = handler.messages
    assert got.sender == "demo@localhost" and got.recipients == ["friend@remote.example"]
    parsed = email.message_from_bytes(got.data, policy=policy.default)
    assert parsed["Subject"] == "Across a crash"
    body = parsed.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Queued across a crash."
    name, record = await trio.to_thread.run_sync(_dkim_record, config, data_dir)
    looked_up: list[bytes] = []

    def dns(qname: bytes, timeout: int = 5) -> bytes:
        looked_up.append(qname)
        return record

    assert dkim.verify(got.data, dnsfunc=dns)
    assert looked_up == [f"{name}.".encode()]
    assert _queued(data_dir) == []


# -- the crash after the peer's 250, before QUIT (in process) --------------------------------


class StallingSink:
    """A minimal SMTP peer on loopback: takes one message, answers 250 to it, and never
    answers QUIT; at QUIT it reads the queue's envelope (what a crash would leave)."""

    def __init__(self, queue_dir: Path) -> None:
        self.queue_dir = queue_dir
        self.messages: list[bytes] = []
        #: The envelope file's text when QUIT arrived.
        self.envelope_at_quit: str | None = None
        self.quit_seen = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""

        async def line() -> bytes:
            nonlocal buffer
            while b"\r\n" not in buffer:
                data = await stream.receive_some(4096)
                if not data:
                    raise EOFError
                buffer += data
            out, buffer = buffer.split(b"\r\n", 1)
            return out

        try:
            await stream.send_all(b"220 stall.test ESMTP\r\n")
            while True:
                command = (await line()).upper()
                if command.startswith(b"EHLO"):
                    await stream.send_all(b"250 stall.test\r\n")
                elif command.startswith((b"MAIL", b"RCPT")):
                    await stream.send_all(b"250 2.1.0 OK\r\n")
                elif command == b"DATA":
                    await stream.send_all(b"354 go on\r\n")
                    lines = []
                    while (text := await line()) != b".":
                        lines.append(text)
                    self.messages.append(b"\r\n".join(lines))
                    await stream.send_all(b"250 2.0.0 taken\r\n")
                elif command == b"QUIT":
                    [env] = self.queue_dir.glob("*.json")
                    self.envelope_at_quit = env.read_text()
                    self.quit_seen.set()
                    await trio.sleep_forever()  # the server never says 221
                else:
                    await stream.send_all(b"502 5.5.1 no\r\n")
        except (EOFError, trio.BrokenResourceError):
            pass


async def test_ack_is_durable_before_quit(tmp_path: Path) -> None:
    """The runner records the peer's 250 (fsynced) before it sends QUIT; cancelled there
    (the process dies), a new runner on the same queue sends nothing again."""
    message = b"From: a@local.test\r\nTo: x@remote.test\r\nSubject: once\r\n\r\nbody\r\n"
    queue_dir = tmp_path / "queue"
    stalling = StallingSink(queue_dir)

    async def no_report(sender: str, data: bytes) -> None:
        raise AssertionError("no report expected")

    def settings(port: int) -> OutboundSettings:
        return OutboundSettings(
            hostname="mail.local.test",
            smarthost=Smarthost(host="127.0.0.1", port=port, tls="none"),
            policy=schedule.RetryPolicy(initial=0.2, maximum=0.5),
            limits=ClientLimits(connect_timeout=5),  # QUIT's own 30 s: never reached here
        )

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(
                functools.partial(trio.serve_tcp, stalling.handle, 0, host="127.0.0.1")
            )
            port = listener.socket.getsockname()[1]
            queue = OutboundQueue(queue_dir)
            qid = queue.enqueue("a@local.test", ["x@remote.test"], message)
            await nursery.start(
                lambda task_status: run_outbound(
                    queue, settings(port), report_local=no_report, is_local=lambda a: True,
                    task_status=task_status,
                )
            )  # fmt: skip
            await stalling.quit_seen.wait()
            nursery.cancel_scope.cancel()  # the crash: between the 250 and the 221
    assert len(stalling.messages) == 1 and stalling.messages[0].endswith(b"body")
    assert stalling.envelope_at_quit is not None
    [rcpt] = state.decode(stalling.envelope_at_quit.encode()).recipients
    assert rcpt.status == state.DONE and rcpt.reply == "250 2.0.0 taken"

    # Restarted on the same queue, with a sink that would take it again: nothing is sent,
    # and the finished message leaves the queue.
    handler = SinkHandler()
    sink_port = free_port()
    sink = start_sink(sink_port, handler)
    queue = OutboundQueue(queue_dir)
    assert [e.id for e in queue.load()] == [qid]
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: run_outbound(
                        queue, settings(sink_port), report_local=no_report,
                        is_local=lambda a: True, task_status=task_status,
                    )
                )  # fmt: skip
                while queue.load():  # noqa: ASYNC110 - files the runner's threads write
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    finally:
        sink.stop()
    assert handler.messages == []
