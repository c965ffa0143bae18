"""Admin commands against a running server, end to end: a real ``mapi-anywhere serve``
child process, the real command line, real LAN clients; and the commands' one-line
answers to user errors (no traceback)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from serve_helpers import FREE_MAIL_PORTS, FREE_PORTS, start_server

from clients.api import Session, connect
from mapi.model import errors
from mapi_anywhere import control

#: Upper bound of every wait on a child process (a bound, never an assertion).
WAIT = 60.0


def cli(
    *args: str, data_dir: Path | None = None, stdin: str | None = "", timeout: float = WAIT
) -> subprocess.CompletedProcess[str]:
    """``mapi-anywhere ARGS [--data-dir DATA_DIR]``; stdin None: no standard input."""
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "mapi_anywhere", *args, *extra],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (and no traceback anywhere)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


class ServeProcess:
    """``mapi-anywhere serve`` as a child process, logging to a file the test reads."""

    def __init__(self, data_dir: Path, *extra: str, argv: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_file = data_dir.parent / f"{data_dir.name}.log"
        self.stderr_file = data_dir.parent / f"{data_dir.name}.stderr"
        command = argv or [sys.executable, "-m", "mapi_anywhere"]
        self.argv = [
            *command,
            "serve",
            "--epm-port",
            "0",
            *FREE_PORTS,
            "--data-dir",
            str(data_dir),
            "--log-file",
            str(self.log_file),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.offset = 0
        #: The log line start() waits for.
        self.ready = "ready; press Ctrl-C"

    def start(self) -> ServeProcess:
        self.offset = len(self.log())  # a restart appends to the same log
        with open(self.stderr_file, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=err, stderr=err)
        self.wait_for(self.ready)
        return self

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def wait_for(self, text: str) -> str:
        """Poll the log until ``text`` is in it; fail if the process ends first."""
        assert self.proc is not None
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            log = self.log()[self.offset :]
            if text in log:
                return log
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the log:\n{self.log()}{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_file.read_text(encoding="utf-8", errors="replace")

    @property
    def epm_port(self) -> int:
        marker = "endpoint mapper listening on ncacn_ip_tcp:127.0.0.1["
        line = next(line for line in self.log()[self.offset :].splitlines() if marker in line)
        return int(line.split(marker)[1].split("]")[0])

    @property
    def address(self) -> str:
        return f"ncacn_ip_tcp:127.0.0.1[{self.epm_port}]"

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=WAIT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT)


@contextlib.contextmanager
def serving(data_dir: Path, *extra: str) -> Iterator[ServeProcess]:
    server = ServeProcess(data_dir, *extra)
    try:
        yield server.start()
    finally:
        server.stop()


async def run_cli(*args: str, data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: cli(*args, data_dir=data_dir, stdin=stdin))


@contextlib.asynccontextmanager
async def logged_on(address: str, user: str, password: str) -> AsyncIterator[Session]:
    """A LAN session; its closing tolerates a session the server already ended."""
    with contextlib.suppress(errors.MapiError):
        async with connect(address, user, password) as session:
            yield session


async def assert_session_ended(session: Session) -> None:
    with pytest.raises(errors.MapiError):
        await session.open_store()


# -- through the running server ------------------------------------------------------------


async def test_sessions_lists_and_ends_live_sessions(tmp_path: Path):
    data = tmp_path / "data"
    with serving(data) as server:
        assert "(no sessions)" in (await run_cli("sessions", data_dir=data)).stdout
        added = await run_cli("adduser", "alice", "--password-stdin", data_dir=data, stdin="pw1\n")
        assert added.returncode == 0, added.stderr
        with trio.fail_after(WAIT):
            async with (
                logged_on(server.address, "alice", "pw1") as first,
                logged_on(server.address, "alice", "pw1") as second,
            ):
                await first.open_store()
                table = await run_cli("sessions", data_dir=data)
                assert table.returncode == 0, table.stderr
                header, *rows = table.stdout.splitlines()
                assert header.split() == ["HANDLE", "USER", "ADDRESS", "TRANSPORT", "AGE", "IDLE"]
                assert len(rows) == 2
                assert all(row.split()[1:4] == ["alice", "127.0.0.1", "lan"] for row in rows)
                listed = json.loads((await run_cli("sessions", "--json", data_dir=data)).stdout)
                handles = [row["handle"] for row in listed]
                assert sorted(handles) == sorted(row.split()[0] for row in rows)
                # The secret session id is not what is shown.
                assert first.session_id.hex() not in table.stdout

                ended = await run_cli("sessions", "--end", handles[0], data_dir=data)
                assert ended.returncode == 0 and handles[0] in ended.stdout, ended.stderr
                again = await run_cli("sessions", "--end", handles[0], data_dir=data)
                assert "no session" in one_line_error(again)
                assert [row["handle"] for row in json.loads(
                    (await run_cli("sessions", "--json", data_dir=data)).stdout
                )] == handles[1:]  # fmt: skip
                await assert_session_ended(first)  # oldest first: the first logon

                by_user = await run_cli("sessions", "--end-user", "alice", data_dir=data)
                assert "ended 1 session(s) of alice" in by_user.stdout, by_user.stderr
                await assert_session_ended(second)


async def test_passwd_reaches_the_running_server(tmp_path: Path):
    data = tmp_path / "data"
    with serving(data) as server:
        await run_cli("adduser", "alice", "--password-stdin", data_dir=data, stdin="old-pw\n")
        with trio.fail_after(WAIT):
            async with logged_on(server.address, "alice", "old-pw") as session:
                await session.open_store()
                changed = await run_cli(
                    "passwd", "alice", "--password-stdin", data_dir=data, stdin="new-pw\n"
                )
                assert changed.returncode == 0, changed.stderr
                assert "(1 session(s) ended)" in changed.stdout
                await assert_session_ended(session)  # opened with the old password
            with pytest.raises(errors.LogonFailed):
                async with connect(server.address, "alice", "old-pw"):
                    pass
            async with logged_on(server.address, "alice", "new-pw") as session:
                await session.open_store()
        assert "password of alice changed" in server.log()


async def test_deluser_reaches_the_running_server(tmp_path: Path):
    data = tmp_path / "data"
    with serving(data) as server:
        await run_cli("adduser", "alice", "--password-stdin", data_dir=data, stdin="pw\n")
        with trio.fail_after(WAIT):
            async with logged_on(server.address, "alice", "pw") as session:
                store = await session.open_store()
                inbox = await store.open_folder(await store.special_folder("inbox"))
                message = await inbox.create_message()
                await message.set_props({"PR_SUBJECT": "keep me?"})
                await message.save()
                mailboxes = data / "mailboxes"
                assert any(mailboxes.iterdir())
                deleted = await run_cli("deluser", "alice", data_dir=data)
                assert deleted.returncode == 0, deleted.stderr
                assert "its sessions ended" in deleted.stdout
                await assert_session_ended(session)
            # The server closed the mailbox before its files went.
            assert not [p for p in mailboxes.iterdir() if p.name.endswith(".sqlite3")]
            assert "alice" not in (await run_cli("users", data_dir=data)).stdout
            with pytest.raises(errors.LogonFailed):
                async with connect(server.address, "alice", "pw"):
                    pass
            missing = await run_cli("deluser", "alice", data_dir=data)
            assert "MAPI_E_NOT_FOUND" in one_line_error(missing)
            # The server serves on.
            demo_password = (data / "demo-password.txt").read_text().strip()
            async with logged_on(server.address, "demo", demo_password) as session:
                await session.open_store()


async def test_passwd_demo_through_the_server_removes_the_saved_password(tmp_path: Path):
    data = tmp_path / "data"
    secret = "new-demo-secret-7"
    with serving(data) as server:
        saved = data / "demo-password.txt"
        first_run = server.log()
        assert "created user demo, password: " + saved.read_text().strip() in first_run
        changed = await run_cli(
            "passwd", "demo", "--password-stdin", data_dir=data, stdin=secret + "\n"
        )
        assert changed.returncode == 0, changed.stderr
        assert not saved.exists()
        server.stop()
    restarted = ServeProcess(data)
    try:
        log = restarted.start().wait_for("ready")
    finally:
        restarted.stop()
    assert "ready" in log and not saved.exists()
    assert secret not in server.log() and "password:" not in log


async def test_the_tunnel_forgets_credentials_at_once(tmp_path: Path, nursery):
    """passwd and deluser through the control socket drop the tunnel's cached check."""
    running = await start_server(nursery, tmp_path / "data", {"alice": "pw", "bob": "pw"})
    auth = running.authenticator
    with trio.fail_after(WAIT):
        for user in ("alice", "bob"):
            assert await auth(user, "pw", "127.0.0.1")
            assert auth.is_cached(user, "pw")
        await trio.to_thread.run_sync(
            lambda: control.call(running.control_socket.parent, "set_password", user="alice",
                                 password="pw2")
        )  # fmt: skip
        assert not auth.is_cached("alice", "pw")
        assert not await auth("alice", "pw", "127.0.0.1")
        assert await auth("alice", "pw2", "127.0.0.1")
        await trio.to_thread.run_sync(
            lambda: control.call(running.control_socket.parent, "delete_user", user="bob")
        )
        assert not auth.is_cached("bob", "pw")
        assert not await auth("bob", "pw", "127.0.0.1")


# -- without a server ----------------------------------------------------------------------


def test_sessions_without_a_server_says_so(tmp_path: Path):
    data = tmp_path / "data"
    assert cli("adduser", "alice", "--password-stdin", data_dir=data, stdin="pw\n").returncode == 0
    assert "no server is running" in one_line_error(cli("sessions", data_dir=data))


def test_a_killed_server_leaves_a_stale_socket_that_nothing_trusts(tmp_path: Path):
    data = tmp_path / "data"
    server = ServeProcess(data).start()
    try:
        assert server.proc is not None
        server.proc.kill()  # SIGKILL: no cleanup, control.sock stays
        server.wait()
    finally:
        server.stop()
    assert (data / "control.sock").is_socket()
    assert "no server is running" in one_line_error(cli("sessions", data_dir=data))
    # passwd falls back to the files.
    changed = cli("passwd", "demo", "--password-stdin", data_dir=data, stdin="pw9\n")
    assert changed.returncode == 0, changed.stderr
    assert "password of demo changed" in changed.stdout
    assert not (data / "demo-password.txt").exists()
    # A new server takes the socket over.
    with serving(data):
        assert "(no sessions)" in cli("sessions", data_dir=data).stdout


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path: Path):
    data = tmp_path / "data"
    with serving(data):
        second = cli(
            "serve",
            "--epm-port",
            "0",
            *FREE_PORTS,
            data_dir=data,
        )
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        assert "another mapi-anywhere serve is running on data directory" in second.stderr


# -- one line, not a traceback -------------------------------------------------------------


def test_a_port_in_use_is_one_line_naming_port_and_key(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli(
            "serve",
            "--epm-port",
            str(port),
            *FREE_PORTS,
            data_dir=tmp_path / "d",
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr
        errors_logged = [line for line in result.stderr.splitlines() if "ERROR" in line]
        assert len(errors_logged) == 1
        assert f"port {port} is already in use" in errors_logged[0]
        assert "[endpoint_mapper] port" in errors_logged[0] and "--epm-port" in errors_logged[0]

        tunnel = cli(
            "serve",
            "--epm-port",
            "0",
            "--tunnel-port",
            str(port),
            *FREE_MAIL_PORTS,
            data_dir=tmp_path / "d",
        )
        assert tunnel.returncode == 1 and "Traceback" not in tunnel.stderr
        assert f"port {port} is already in use" in tunnel.stderr
        assert "[tunnel] port" in tunnel.stderr


def test_adduser_and_passwd_without_a_terminal(tmp_path: Path):
    data = tmp_path / "data"
    assert "--password-stdin" in one_line_error(cli("adduser", "bob", data_dir=data, stdin=None))
    assert not data.exists()
    added = cli("adduser", "bob", "--password-stdin", data_dir=data, stdin="pw\n")
    assert added.returncode == 0, added.stderr
    assert "--password-stdin" in one_line_error(cli("passwd", "bob", data_dir=data, stdin=None))
    assert "empty password" in one_line_error(
        cli("passwd", "bob", "--password-stdin", data_dir=data, stdin="")
    )


@pytest.mark.parametrize(
    "command",
    [["users"], ["passwd", "x", "--password-stdin"], ["deluser", "x"], ["sessions"]],
)
def test_a_missing_data_directory_is_not_created(tmp_path: Path, command: list[str]):
    missing = tmp_path / "nope"
    line = one_line_error(cli(*command, data_dir=missing, stdin="pw\n"))
    assert "does not exist" in line and str(missing) in line
    assert not missing.exists()
    if command != ["sessions"]:
        missing.mkdir()  # there, but empty: still no store is created
        assert "holds no store" in one_line_error(cli(*command, data_dir=missing, stdin="pw\n"))
        assert not any(missing.iterdir())


def test_bad_configuration_files_and_values(tmp_path: Path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[server]\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[server]\nshutdown_timeout = -1\n")
    for args in (
        ["serve", "-c", str(binary)],
        ["serve", "-c", str(tmp_path)],  # a directory
        ["serve", "-c", str(tmp_path / "absent.toml")],
        ["serve", "-c", str(unknown)],
        ["users", "-c", str(binary)],
        ["serve", "--epm-port", "70000"],
        ["serve", "--epm-port", "0", "--log-file", str(tmp_path / "no" / "such" / "dir.log")],
    ):
        result = cli(*args, data_dir=tmp_path / "data")
        line = one_line_error(result)
        assert result.returncode == 2, (args, line)
