"""The control channel: its sans-IO codec (byte vectors, hypothesis) and its trio driver
on real Unix-domain sockets (mode, stale sockets, a second server, long paths, limits)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from mapi_anywhere import control
from mapi_anywhere.control import (
    MAX_LINE,
    AlreadyRunning,
    ControlError,
    ControlProtocolError,
    LineBuffer,
    NotRunning,
    ServerError,
    encode_error,
    encode_request,
    encode_result,
    parse_request,
    parse_response,
    serve_control,
)

# -- codec ---------------------------------------------------------------------------------


def test_line_buffer_splits_lines_across_feeds():
    lines = LineBuffer()
    assert lines.feed(b'{"op":"pi') == []
    assert lines.pending
    assert lines.feed(b'ng"}\n{"op":"sessions"}\n{"o') == [b'{"op":"ping"}', b'{"op":"sessions"}']
    assert lines.feed(b'p":"ping"}\n') == [b'{"op":"ping"}']
    assert not lines.pending


def test_line_buffer_refuses_a_line_past_the_limit():
    lines = LineBuffer(max_line=16)
    with pytest.raises(ControlProtocolError):
        lines.feed(b"x" * 16)  # no newline yet, and already too long
    lines = LineBuffer(max_line=16)
    with pytest.raises(ControlProtocolError):
        lines.feed(b"x" * 20 + b"\n")
    assert LineBuffer(max_line=16).feed(b"x" * 15 + b"\n") == [b"x" * 15]


def test_request_vectors():
    assert encode_request("ping") == b'{"op":"ping"}\n'
    assert encode_request("end_session", handle="ab12") == b'{"op":"end_session","handle":"ab12"}\n'
    request = parse_request(b'{"op":"set_password","user":"alice","password":"p\\u00e9"}')
    assert (request.op, request.args) == ("set_password", {"user": "alice", "password": "p\u00e9"})


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"op":"format_disk"}',
        b'{"op":1}',
        b'{"handle":"x"}',
        b'{"op":"end_session"}',  # missing argument
        b'{"op":"ping","extra":"x"}',  # unexpected argument
        b'{"op":"delete_user","user":7}',
        b'{"op":"delete_user","user":"' + b"a" * (control.MAX_ARGUMENT + 1) + b'"}',
    ],
)
def test_bad_requests_are_protocol_errors(line: bytes):
    with pytest.raises(ControlProtocolError):
        parse_request(line)


def test_encode_request_checks_what_the_server_checks():
    with pytest.raises(ControlProtocolError):
        encode_request("delete_user")


def test_response_vectors():
    assert encode_result([1, "a"]) == b'{"ok":true,"result":[1,"a"]}\n'
    assert parse_response(encode_result({"n": 2})[:-1]) == {"n": 2}
    assert parse_response(encode_result(None)[:-1]) is None
    with pytest.raises(ControlError, match="MAPI_E_NOT_FOUND"):
        parse_response(encode_error("MAPI_E_NOT_FOUND: no user 'x'")[:-1])
    for bad in (b'{"ok":true}', b'{"ok":false}', b'{"ok":"yes","result":1}', b"1"):
        with pytest.raises(ControlProtocolError):
            parse_response(bad)


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_any_bytes_give_requests_or_protocol_errors(chunks: list[bytes]):
    lines = LineBuffer(max_line=256)
    for chunk in chunks:
        try:
            got = lines.feed(chunk)
        except ControlProtocolError:
            return
        for line in got:
            assert len(line) < 256
            try:
                request = parse_request(line)
            except ControlProtocolError:
                continue
            assert request.op in control.OPERATIONS


@given(
    st.sampled_from(sorted(control.OPERATIONS)),
    st.text(max_size=50),
)
def test_requests_round_trip(op: str, text: str):
    args = dict.fromkeys(control.OPERATIONS[op], text)
    line = encode_request(op, **args)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert parse_request(line[:-1]) == control.Request(op, args)


# -- driver --------------------------------------------------------------------------------


class FakeAdmin:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def sessions(self) -> list[dict[str, Any]]:
        self.calls.append(("sessions", ()))
        return [{"handle": "h1", "user": "alice"}]

    async def end_session(self, handle: str) -> bool:
        self.calls.append(("end_session", (handle,)))
        return handle == "h1"

    async def end_user_sessions(self, user: str) -> int:
        self.calls.append(("end_user_sessions", (user,)))
        return 3

    async def delete_user(self, user: str) -> dict[str, Any]:
        self.calls.append(("delete_user", (user,)))
        if user != "alice":
            raise ServerError(f"MAPI_E_NOT_FOUND: no user {user!r}")
        return {"username": user}

    async def set_password(self, user: str, password: str) -> int:
        self.calls.append(("set_password", (user, password)))
        raise RuntimeError("boom")  # an unexpected failure: logged, answered in one line


def _call(data_dir: Path, op: str, **args: str) -> Any:
    return control.call(data_dir, op, timeout=30, **args)


async def test_requests_reach_the_admin_and_the_socket_is_private(tmp_path: Path, nursery):
    admin = FakeAdmin()
    path = await nursery.start(serve_control, tmp_path, admin)
    assert path == tmp_path / "control.sock"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with trio.fail_after(30):
        assert await trio.to_thread.run_sync(_call, tmp_path, "ping") == "pong"
        assert await trio.to_thread.run_sync(_call, tmp_path, "sessions") == [
            {"handle": "h1", "user": "alice"}
        ]
        assert await trio.to_thread.run_sync(lambda: _call(tmp_path, "end_session", handle="h1"))
        assert not await trio.to_thread.run_sync(
            lambda: _call(tmp_path, "end_session", handle="zz")
        )
        assert await trio.to_thread.run_sync(
            lambda: _call(tmp_path, "delete_user", user="alice")
        ) == {"username": "alice"}
        with pytest.raises(ControlError, match="MAPI_E_NOT_FOUND"):
            await trio.to_thread.run_sync(lambda: _call(tmp_path, "delete_user", user="bob"))
        with pytest.raises(ControlError, match="see the server's log"):
            await trio.to_thread.run_sync(
                lambda: _call(tmp_path, "set_password", user="a", password="b")
            )
    assert ("end_session", ("zz",)) in admin.calls


async def test_several_requests_on_one_connection_and_bad_lines(tmp_path: Path, nursery):
    await nursery.start(serve_control, tmp_path, FakeAdmin())
    with trio.fail_after(30):
        stream = await trio.open_unix_socket(str(tmp_path / "control.sock"))
        async with stream:
            await stream.send_all(
                b'{"op":"ping"}\nnonsense\n{"op":"end_user_sessions","user":"x"}\n'
            )
            lines = LineBuffer()
            got: list[bytes] = []
            while len(got) < 3:
                got += lines.feed(await stream.receive_some(65536))
            assert parse_response(got[0]) == "pong"
            with pytest.raises(ControlError, match="not a JSON line"):
                parse_response(got[1])
            assert parse_response(got[2]) == 3
            # A line past the limit: one error answer, then the server hangs up.
            await stream.send_all(b"x" * (MAX_LINE + 10))
            rest = b""
            while chunk := await stream.receive_some(65536):
                rest += chunk
            with pytest.raises(ControlError, match="longer than"):
                parse_response(rest.rstrip(b"\n"))


async def test_no_server_no_socket_and_a_stale_socket(tmp_path: Path, nursery):
    with pytest.raises(NotRunning):
        _call(tmp_path, "ping")
    # A socket file left by a server that was killed: nobody listens on it.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()
    with pytest.raises(NotRunning):
        _call(tmp_path, "ping")
    # A new server takes the place over.
    await nursery.start(serve_control, tmp_path, FakeAdmin())
    with trio.fail_after(30):
        assert await trio.to_thread.run_sync(_call, tmp_path, "ping") == "pong"


async def test_a_second_server_on_the_same_directory_is_refused(tmp_path: Path, nursery):
    await nursery.start(serve_control, tmp_path, FakeAdmin())
    with trio.fail_after(30), pytest.raises(AlreadyRunning):
        await serve_control(tmp_path, FakeAdmin())  # raises before it reports started
    with trio.fail_after(30):
        assert await trio.to_thread.run_sync(_call, tmp_path, "ping") == "pong"


async def test_the_socket_goes_when_the_server_stops(tmp_path: Path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, tmp_path, FakeAdmin())
            assert (tmp_path / "control.sock").is_socket()
            nursery.cancel_scope.cancel()
    assert not (tmp_path / "control.sock").exists()


async def test_a_data_directory_past_the_socket_path_limit(tmp_path: Path, nursery):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(os.fsencode(deep / "control.sock")) > control.MAX_SOCKET_PATH
    path = await nursery.start(serve_control, deep, FakeAdmin())
    assert path == deep / "control.sock" and path.is_socket()
    with trio.fail_after(30):
        assert await trio.to_thread.run_sync(_call, deep, "ping") == "pong"


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="needs root to setuid")
async def test_another_os_user_is_refused(nursery):
    """File mode keeps other users out; with the mode opened up, the SO_PEERCRED check
    still answers them nothing."""
    base = Path(tempfile.mkdtemp(prefix="ctl-"))
    try:
        os.chmod(base, 0o755)
        path = await nursery.start(serve_control, base, FakeAdmin())

        def as_nobody() -> str:
            pid = os.fork()
            if pid == 0:  # child: become nobody, try the socket
                code = 3
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    probe.settimeout(10)
                    try:
                        probe.connect(str(path))
                    except PermissionError:
                        code = 1
                    else:
                        try:
                            probe.sendall(b'{"op":"ping"}\n')
                            code = 2 if probe.recv(100) == b"" else 0
                        except (BrokenPipeError, ConnectionResetError):
                            code = 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            return {1: "no permission", 2: "closed unanswered", 0: "answered"}.get(
                os.waitstatus_to_exitcode(status), "error"
            )

        with trio.fail_after(30):
            assert await trio.to_thread.run_sync(as_nobody) == "no permission"
            os.chmod(path, 0o666)
            assert await trio.to_thread.run_sync(as_nobody) == "closed unanswered"
    finally:
        shutil.rmtree(base, ignore_errors=True)
