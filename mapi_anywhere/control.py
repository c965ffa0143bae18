"""The local control channel: admin commands reach a running ``serve``.

Theory of operation
-------------------
``serve`` listens on a Unix-domain socket in its data directory (``control.sock``,
mode 0600 inside the 0700 data directory, and each connecting process must belong to
the server's OS user or root: ``SO_PEERCRED``). ``mapi-anywhere deluser``, ``passwd``,
``usermod`` and ``sessions`` connect to it when it is there, so the running server ends the
user's sessions, closes the mailbox and forgets cached credentials itself; when
nobody listens they work on the files directly.

The protocol is one JSON object per line (UTF-8, ending in ``\\n``, at most
:data:`MAX_LINE` bytes), request then response, any number per connection:

* request ``{"op": NAME, ...arguments}``; the operations and their (string)
  arguments are :data:`OPERATIONS`;
* response ``{"ok": true, "result": VALUE}`` or ``{"ok": false, "error": TEXT}``.

The codec (:class:`LineBuffer`, ``encode_*``/``parse_*``) is pure: bytes in, values
out, no sockets and no clocks. :func:`serve_control` is its trio driver (socket,
peer check, timeouts, connection limit) and :func:`call` a small blocking client
for the command line.

A socket path is at most 107 bytes. A longer data directory path is reached through
``/proc/self/fd/N/control.sock`` (``N`` a descriptor of the directory), which both
sides compute alike, so the socket stays in the data directory; where that is not
possible either, ``serve`` logs that it runs without a control channel.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import trio

log = logging.getLogger("mapi_anywhere.control")

SOCKET_NAME: Final = "control.sock"
#: Longest line either side accepts (a request or a response), newline included.
MAX_LINE: Final = 1 << 20
#: Longest string argument of a request, in characters.
MAX_ARGUMENT: Final = 4096
#: Operations and the string arguments each one requires (and accepts).
OPERATIONS: Final[dict[str, tuple[str, ...]]] = {
    "ping": (),
    "sessions": (),
    "end_session": ("handle",),
    "end_user_sessions": ("user",),
    "delete_user": ("user",),
    "set_password": ("user", "password"),
    # limit: "" shows it, "default" takes the mailbox's own limit away, else bytes.
    "quota": ("user", "limit"),
    # The directory changed on disk (adduser on the files): reload what is cached.
    "credentials_changed": (),
    # changes: a JSON object of address-book details (usermod).
    "update_user": ("user", "changes"),
}
#: The longest path a ``sockaddr_un`` holds (108 bytes with the final NUL).
MAX_SOCKET_PATH: Final = 107


class ControlProtocolError(ValueError):
    """A line broke the control protocol (too long, not JSON, unknown operation, ...)."""


class ControlError(Exception):
    """The server refused or failed a request; the text says why."""


class NotRunning(Exception):
    """No server listens on the data directory's control socket."""


# -- codec (sans-IO) -----------------------------------------------------------------------


class LineBuffer:
    """Splits a byte stream into lines; refuses a line longer than ``max_line``."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the complete lines (without their newline)."""
        self._buffer += data
        lines: list[bytes] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            if end + 1 > self.max_line:
                raise ControlProtocolError(f"line longer than {self.max_line} bytes")
            lines.append(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
        if len(self._buffer) >= self.max_line:
            raise ControlProtocolError(f"line longer than {self.max_line} bytes")
        return lines

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished line are buffered."""
        return bool(self._buffer)


def _line(value: dict[str, Any]) -> bytes:
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    if len(data) > MAX_LINE:
        raise ControlProtocolError(f"line longer than {MAX_LINE} bytes")
    return data


def _object(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlProtocolError(f"not a JSON line: {exc}") from exc
    if not isinstance(value, dict):
        raise ControlProtocolError("not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    args: dict[str, str]


def encode_request(op: str, **args: str) -> bytes:
    """The line asking for ``op`` with ``args`` (checked as the server checks them)."""
    line = _line({"op": op, **args})
    parse_request(line[:-1])
    return line


def parse_request(line: bytes) -> Request:
    """Decode and check one request line (without its newline)."""
    value = _object(line)
    op = value.pop("op", None)
    if not isinstance(op, str) or op not in OPERATIONS:
        raise ControlProtocolError(f"unknown operation {op!r}")
    expected = OPERATIONS[op]
    if set(value) != set(expected):
        raise ControlProtocolError(f"{op} takes {', '.join(expected) or 'no arguments'}")
    for name, arg in value.items():
        if not isinstance(arg, str) or len(arg) > MAX_ARGUMENT:
            raise ControlProtocolError(
                f"{op}: {name} must be a string of at most {MAX_ARGUMENT} characters"
            )
    return Request(op, value)


def encode_result(result: Any) -> bytes:
    return _line({"ok": True, "result": result})


def encode_error(message: str) -> bytes:
    return _line({"ok": False, "error": message})


def parse_response(line: bytes) -> Any:
    """The result of a response line; raises :class:`ControlError` for an error answer."""
    value = _object(line)
    if value.get("ok") is True and set(value) == {"ok", "result"}:
        return value["result"]
    if value.get("ok") is False and isinstance(value.get("error"), str):
        raise ControlError(value["error"])
    raise ControlProtocolError("malformed response")


# -- where the socket is -------------------------------------------------------------------


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """A ``sockaddr_un`` path that names ``path``, even past the 107-byte limit."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    # Through a descriptor of the directory: the kernel resolves /proc/self/fd/N.
    try:
        fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    except (OSError, AttributeError) as exc:
        raise OSError(errno.ENAMETOOLONG, f"socket path too long: {path}") from exc
    try:
        short = f"/proc/self/fd/{fd}/{path.name}"
        if not os.path.isdir(f"/proc/self/fd/{fd}") or len(short) > MAX_SOCKET_PATH:
            raise OSError(errno.ENAMETOOLONG, f"socket path too long: {path}")
        yield short
    finally:
        os.close(fd)


def _peer_uid(sock: Any) -> int | None:
    """The peer's user id (Linux ``SO_PEERCRED``); None where it cannot be asked."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# -- the client (blocking, for the command line) ---------------------------------------------


def call(data_dir: Path, op: str, *, timeout: float = 330.0, **args: str) -> Any:
    """Send one request to the server on ``data_dir``; return its result.

    Raises :class:`NotRunning` when no server listens there, :class:`ControlError`
    when it answers with an error, ``OSError``/``TimeoutError`` on a broken exchange
    (``timeout`` bounds each wait; the default outlasts the server's own bound on a
    request, so a slow ``deluser`` gets the server's answer).
    """
    request = encode_request(op, **args)
    path = socket_path(data_dir)
    if not path.is_socket():
        raise NotRunning(f"no server is running on {data_dir} (no {SOCKET_NAME})")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        try:
            with _address(path) as address:
                sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise NotRunning(f"no server is running on {data_dir} (stale {SOCKET_NAME})") from exc
        sock.sendall(request)
        lines = LineBuffer()
        while True:
            data = sock.recv(65536)
            if not data:
                raise ControlError("the server closed the control connection")
            got = lines.feed(data)
            if got:
                return parse_response(got[0])


# -- the server's trio driver ----------------------------------------------------------------


class Admin(Protocol):
    """What the control channel does in the running server (``serve`` provides it)."""

    async def sessions(self) -> list[dict[str, Any]]: ...

    async def end_session(self, handle: str) -> bool: ...

    async def end_user_sessions(self, user: str) -> int: ...

    async def delete_user(self, user: str) -> dict[str, Any]: ...

    async def set_password(self, user: str, password: str) -> int: ...

    async def quota(self, user: str, limit: str) -> dict[str, Any]: ...

    async def credentials_changed(self) -> None: ...

    async def update_user(self, user: str, changes: str) -> dict[str, Any]: ...


class ServerError(Exception):
    """Raised by an :class:`Admin` method: its text is the error sent to the client."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlLimits:
    #: Connections served at once; more are answered with an error and closed.
    max_connections: int = 8
    #: Seconds a client may take to send a whole request line.
    read_timeout: float = 30.0
    #: Seconds a request may run.
    request_timeout: float = 300.0


async def _dispatch(admin: Admin, request: Request) -> Any:
    a = request.args
    if request.op == "ping":
        return "pong"
    if request.op == "sessions":
        return await admin.sessions()
    if request.op == "end_session":
        return await admin.end_session(a["handle"])
    if request.op == "end_user_sessions":
        return await admin.end_user_sessions(a["user"])
    if request.op == "delete_user":
        return await admin.delete_user(a["user"])
    if request.op == "quota":
        return await admin.quota(a["user"], a["limit"])
    if request.op == "credentials_changed":
        return await admin.credentials_changed()
    if request.op == "update_user":
        return await admin.update_user(a["user"], a["changes"])
    return await admin.set_password(a["user"], a["password"])


async def _answer(admin: Admin, line: bytes, limits: ControlLimits) -> bytes:
    try:
        request = parse_request(line)
    except ControlProtocolError as exc:
        return encode_error(str(exc))
    target = request.args.get("user", request.args.get("handle", ""))
    log.info("control: %s %s", request.op, target)
    try:
        with trio.fail_after(limits.request_timeout):
            return encode_result(await _dispatch(admin, request))
    except ServerError as exc:
        return encode_error(str(exc))
    except trio.TooSlowError:
        return encode_error(f"{request.op} did not finish within {limits.request_timeout} s")
    except Exception:
        log.exception("control: %s failed", request.op)
        return encode_error(f"{request.op} failed (see the server's log)")


async def _serve_connection(
    stream: trio.SocketStream, admin: Admin, limiter: trio.CapacityLimiter, limits: ControlLimits
) -> None:
    async with stream:
        uid = _peer_uid(stream.socket)
        if uid is not None and uid not in (os.geteuid(), 0):
            log.warning("control: refused a connection from uid %d", uid)
            return
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await stream.send_all(encode_error("too many control connections"))
            return
        try:
            lines = LineBuffer()
            while True:
                with trio.move_on_after(limits.read_timeout) as idle:
                    data = await stream.receive_some(65536)
                if idle.cancelled_caught or not data:
                    return
                try:
                    got = lines.feed(data)
                except ControlProtocolError as exc:
                    await stream.send_all(encode_error(str(exc)))
                    return
                for line in got:
                    await stream.send_all(await _answer(admin, line, limits))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            limiter.release()


def _claim(path: Path) -> None:
    """Remove a stale socket file at ``path``; refuse when a server answers on it."""
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_socket():
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        probe.settimeout(5.0)
        try:
            with _address(path) as address:
                probe.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # left by a server that did not stop cleanly
            return
    raise AlreadyRunning(f"another server is running on {path.parent} (it answers on {path})")


class AlreadyRunning(OSError):
    """Another ``serve`` already answers on this data directory's control socket."""


async def serve_control(
    data_dir: Path,
    admin: Admin,
    limits: ControlLimits = ControlLimits(),
    *,
    task_status: trio.TaskStatus[Path | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket of ``data_dir`` until cancelled.

    Reports its path through ``task_status`` (None when no socket could be made there:
    logged, and the server runs on without one). Raises :class:`AlreadyRunning` when
    another server answers on it.
    """
    path = socket_path(data_dir)
    await trio.to_thread.run_sync(_claim, path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _address(path) as address:
            await sock.bind(address)
        os.chmod(path, 0o600)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        log.warning("no control channel (%s): admin commands will not reach this server", exc)
        task_status.started(None)
        await trio.sleep_forever()
        return
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        log.info(
            "control channel on %s (a path past %d bytes: reached through /proc/self/fd)",
            path,
            MAX_SOCKET_PATH,
        )
    else:
        log.info("control channel on %s", path)
    limiter = trio.CapacityLimiter(limits.max_connections)
    try:
        async with trio.open_nursery() as nursery:
            listener = trio.SocketListener(sock)
            task_status.started(path)

            async def handler(stream: trio.SocketStream) -> None:
                await _serve_connection(stream, admin, limiter, limits)

            await trio.serve_listeners(handler, [listener], handler_nursery=nursery)
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()
