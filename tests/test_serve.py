"""`serve` end to end: the endpoint mapper on loopback, queried by our client and by
impacket (an independent DCE/RPC implementation): its rpcdump.py code, hept_lookup,
hept_map and the management interface."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import shutil
import signal
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from impacket.dcerpc.v5 import epm, mgmt, transport
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.uuid import bin_to_string, uuidtup_to_bin
from serve_helpers import FREE_PORTS

from dcerpc.errors import RpcFault
from dcerpc.interface import CallContext, Interface
from dcerpc.syntax import SyntaxId
from endpoint_mapper import EPM_SYNTAX, EndpointNotRegistered, lookup, map_endpoint, resolve
from mapi.rpc.service import STORE_SYNTAX
from mapi_anywhere.config import (
    Config,
    EndpointMapperSection,
    ImapSection,
    Pop3Section,
    ServerSection,
    SmtpSection,
    SubmissionSection,
    TunnelSection,
)
from mapi_anywhere.serve import RunningServer, ServiceSpec, run_server
from tunnel.config import TunnelConfig

DEMO = SyntaxId(uuid.UUID("5a9e7c10-0b1d-4d8e-9f63-8a2b4c6d0e11"), 2, 1)


async def _demo_handler(ctx: CallContext, stub: bytes) -> bytes:
    return stub


DEMO_SERVICE = ServiceSpec("demo", [Interface(DEMO, _demo_handler, 1, name="demo")], "Demo service")


@pytest.fixture
async def server(nursery, tmp_path) -> RunningServer:
    config = Config(
        server=ServerSection(data_dir=tmp_path / "data", host="127.0.0.1"),
        endpoint_mapper=EndpointMapperSection(port=0),
        smtp=SmtpSection(enabled=False),
        submission=SubmissionSection(enabled=False),
        imap=ImapSection(enabled=False),
        pop3=Pop3Section(enabled=False),
        tunnel=TunnelSection(settings=TunnelConfig(port=0)),
    )
    return await nursery.start(run_server, config, [DEMO_SERVICE])


def _impacket_dce(port: int, interface):
    dce = _impacket_connection(port)
    dce.bind(interface)
    return dce


async def test_our_client_lists_and_resolves(server):
    with trio.fail_after(10):
        entries = await lookup("127.0.0.1", server.epm_port)
        bindings = {(e.interface, e.tower.string_binding(), e.annotation) for e in entries}
        demo_port = server.service_ports["demo"]
        assert (DEMO, f"ncacn_ip_tcp:127.0.0.1[{demo_port}]", "Demo service") in bindings
        assert (
            EPM_SYNTAX,
            f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]",
            "Endpoint mapper",
        ) in bindings
        assert await resolve(DEMO, "127.0.0.1", server.epm_port) == ("127.0.0.1", demo_port)
        tower = await map_endpoint(DEMO, "127.0.0.1", server.epm_port)
        assert tower is not None and tower.port == demo_port
        with pytest.raises(EndpointNotRegistered):
            await resolve(SyntaxId(uuid.uuid4(), 1), "127.0.0.1", server.epm_port)


def _rpcdump(port: int) -> str:
    """Run impacket's rpcdump.py code (its RPCDump class) against our port."""
    script = shutil.which("rpcdump.py", path=os.path.dirname(sys.executable))
    assert script, "impacket's rpcdump.py is not installed"
    namespace = runpy.run_path(script, run_name="rpcdump")
    dumper_cls = namespace["RPCDump"]
    # rpcdump only knows port 135 for TCP: point that entry at our unprivileged port.
    dumper_cls.KNOWN_PROTOCOLS = {135: {"bindstr": f"ncacn_ip_tcp:%s[{port}]"}}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dumper_cls(port=135).dump("127.0.0.1", "127.0.0.1")
    return out.getvalue()


async def test_impacket_rpcdump_lists_every_interface(server):
    with trio.fail_after(30):
        report = await trio.to_thread.run_sync(_rpcdump, server.epm_port)
    demo_port = server.service_ports["demo"]
    # rpcdump prints one block per interface: UUID, annotation, then its bindings.
    assert f"UUID    : {str(DEMO.uuid).upper()} v2.1 Demo service" in report
    assert f"          ncacn_ip_tcp:127.0.0.1[{demo_port}]" in report
    assert f"UUID    : {str(EPM_SYNTAX.uuid).upper()} v3.0 Endpoint mapper" in report
    assert f"          ncacn_ip_tcp:127.0.0.1[{server.epm_port}]" in report
    assert f"UUID    : {str(STORE_SYNTAX.uuid).upper()} v1.0 mapi-anywhere object store" in report
    assert f"          ncacn_ip_tcp:127.0.0.1[{server.service_ports['store']}]" in report
    # ... and the address book's NSPI and referral interfaces.
    assert "mapi-anywhere address book" in report
    assert report.count("UUID    :") == 5


def _impacket_connection(port: int):
    rpctransport = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
    rpctransport.set_connect_timeout(10)
    dce = rpctransport.get_dce_rpc()
    dce.connect()
    return dce


def _impacket_lookup_and_map(port: int):
    # impacket's helpers bind themselves, once per connection (a second bind is refused).
    dce = _impacket_connection(port)
    entries = epm.hept_lookup(None, dce=dce)
    dce.disconnect()
    dce = _impacket_connection(port)
    demo = uuidtup_to_bin((str(DEMO.uuid), "2.1"))
    mapped = epm.hept_map("127.0.0.1", demo, protocol="ncacn_ip_tcp", dce=dce)
    dce.disconnect()
    dce = _impacket_connection(port)
    try:
        epm.hept_map(
            "127.0.0.1",
            uuidtup_to_bin((str(uuid.uuid4()), "1.0")),
            protocol="ncacn_ip_tcp",
            dce=dce,
        )
        missing = None
    except DCERPCException as exc:
        missing = exc.get_error_code()
    finally:
        dce.disconnect()
    return entries, mapped, missing


async def test_impacket_hept_lookup_and_hept_map(server):
    with trio.fail_after(30):
        entries, mapped, missing = await trio.to_thread.run_sync(
            _impacket_lookup_and_map, server.epm_port
        )
    demo_port = server.service_ports["demo"]
    found = {
        (epm.PrintStringBinding(e["tower"]["Floors"]), e["annotation"].rstrip(b"\x00").decode())
        for e in entries
    }
    assert (f"ncacn_ip_tcp:127.0.0.1[{demo_port}]", "Demo service") in found
    # the endpoint mapper, the store, the address book (NSPI, referral), the demo service
    assert len(entries) == 5
    assert mapped == f"ncacn_ip_tcp:127.0.0.1[{demo_port}]"
    assert missing == 0x16C9A0D6  # EPT_S_NOT_REGISTERED


def _impacket_mgmt(port: int):
    dce = _impacket_dce(port, mgmt.MSRPC_UUID_MGMT)
    try:
        resp = mgmt.hinq_if_ids(dce)
        ids = [
            (
                bin_to_string(item["Data"]["Uuid"]).lower(),
                item["Data"]["VersMajor"],
                item["Data"]["VersMinor"],
            )
            for item in resp["if_id_vector"]["if_id"]
        ]
        # impacket reads only the [out] status of is_server_listening (0 = rpc_s_ok).
        return ids, resp["status"], mgmt.his_server_listening(dce)["status"]
    finally:
        dce.disconnect()


async def test_impacket_mgmt_inq_if_ids_on_a_service_port(server):
    with trio.fail_after(30):
        ids, status, listening = await trio.to_thread.run_sync(
            _impacket_mgmt, server.service_ports["demo"]
        )
    assert ids == [(str(DEMO.uuid), 2, 1), ("afa8bd80-7d8a-11c9-bef4-08002b102989", 1, 0)]
    assert (status, listening) == (0, 0)


def _impacket_bad_opnum(port: int) -> str:
    dce = _impacket_dce(port, epm.MSRPC_UUID_PORTMAP)
    try:
        dce.call(9, b"")
        try:
            dce.recv()
        except DCERPCException as exc:
            return str(exc)  # impacket names the fault status (rpcmap.py matches this text)
        return "no fault"
    finally:
        dce.disconnect()


async def test_impacket_sees_opnum_out_of_range(server):
    with trio.fail_after(30):
        message = await trio.to_thread.run_sync(_impacket_bad_opnum, server.epm_port)
    assert "nca_s_op_rng_error" in message


async def test_unsupported_epm_opnum_answers_cant_perform(server):
    from dcerpc.client import open_tcp_rpc_client

    with trio.fail_after(10):
        async with open_tcp_rpc_client("127.0.0.1", server.epm_port) as rpc:
            ctx = await rpc.bind(EPM_SYNTAX)
            try:
                stub = await rpc.call(ctx, 1, b"\x00" * 12)  # ept_delete
            except RpcFault as fault:  # a fault is an acceptable answer too
                assert fault.status == 0x6F7
            else:
                assert int.from_bytes(stub[-4:], "little") == 0x6D8


# -- the command line ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_help_and_config():
    out = subprocess.run(
        [sys.executable, "-m", "mapi_anywhere", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "serve" in out and "lookup" in out
    toml = subprocess.run(
        [sys.executable, "-m", "mapi_anywhere", "config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    from mapi_anywhere.config import parse_config

    assert parse_config(toml) == Config()


def test_cli_serve_logs_and_stops_cleanly_on_ctrl_c(tmp_path: Path):
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapi_anywhere",
            "serve",
            "--epm-port",
            str(port),
            *FREE_PORTS,
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for _ in range(200):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "ready" in line:
                break
        assert any(
            f"endpoint mapper listening on ncacn_ip_tcp:127.0.0.1[{port}]" in line for line in lines
        )
        lookup_out = subprocess.run(
            [sys.executable, "-m", "mapi_anywhere", "lookup", "127.0.0.1", "-p", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert f"ncacn_ip_tcp:127.0.0.1[{port}]" in lookup_out.stdout
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in rest
    assert "stopped" in rest
    assert (tmp_path / "data").is_dir()


def test_cli_rejects_bad_config(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nlog_levle = 'INFO'\n")
    result = subprocess.run(
        [sys.executable, "-m", "mapi_anywhere", "serve", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "log_levle" in result.stderr


def _port_135_available() -> str | None:
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 135))
    except OSError as exc:
        return f"cannot bind 127.0.0.1:135 ({exc.strerror})"
    return None


def test_unmodified_rpcdump_script_on_port_135(tmp_path: Path):
    """The literal `rpcdump.py 127.0.0.1` run, where this test may bind port 135."""
    reason = _port_135_available()
    if reason:
        pytest.skip(reason)
    script = shutil.which("rpcdump.py", path=os.path.dirname(sys.executable))
    assert script
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapi_anywhere",
            "serve",
            "--epm-port",
            "135",
            *FREE_PORTS,
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for _ in range(200):
            line = proc.stdout.readline()
            if not line or "ready" in line:
                break
        out = subprocess.run(
            [sys.executable, script, "127.0.0.1"], capture_output=True, text=True, timeout=60
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert "ncacn_ip_tcp:127.0.0.1[135]" in out.stdout, out.stdout + out.stderr
    assert "mapi-anywhere object store" in out.stdout
    assert "Received 4 endpoints." in out.stdout + out.stderr  # EPM, store, NSPI, referral
    assert "Protocol failed" not in out.stdout + out.stderr


def test_cli_account_commands(tmp_path: Path):
    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mapi_anywhere", *args, "--data-dir", str(tmp_path)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert (
        cli("adduser", "alice", "--password-stdin", "--email", "a@x", stdin="pw-one\n").returncode
        == 0
    )
    duplicate = cli("adduser", "alice", "--password-stdin", stdin="pw-two\n")
    assert duplicate.returncode == 1 and "MAPI_E_COLLISION" in duplicate.stderr
    assert cli("passwd", "alice", "--password-stdin", stdin="pw-two\n").returncode == 0
    assert "alice" in cli("users").stdout

    from mapi.model.errors import LogonFailed
    from mapi.store import ObjectStore

    store = ObjectStore(tmp_path)
    try:
        store.logon_with_password("alice", "pw-two").logoff()
        with pytest.raises(LogonFailed):
            store.logon_with_password("alice", "pw-one")
    finally:
        store.close()
    assert cli("deluser", "alice").returncode == 0
    missing = cli("deluser", "alice")
    assert missing.returncode == 1 and "MAPI_E_NOT_FOUND" in missing.stderr


# -- the data directory and the demo user's password ---------------------------------------


def _quick_config(data_dir: Path) -> Config:
    return Config(
        server=ServerSection(data_dir=data_dir),
        endpoint_mapper=EndpointMapperSection(port=0),
        smtp=SmtpSection(enabled=False),
        submission=SubmissionSection(enabled=False),
        imap=ImapSection(enabled=False),
        pop3=Pop3Section(enabled=False),
        tunnel=TunnelSection(enabled=False),
    )


async def _start_and_stop(data_dir: Path) -> RunningServer:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_server, _quick_config(data_dir))
            nursery.cancel_scope.cancel()
    return running


async def test_the_data_directory_is_made_private_first(tmp_path: Path, caplog):
    fresh = tmp_path / "new" / "parents" / "data"
    await _start_and_stop(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700

    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    with caplog.at_level(logging.WARNING, logger="mapi_anywhere"):
        await _start_and_stop(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    assert any("had mode 0755: now 0700" in r.getMessage() for r in caplog.records)


async def test_the_demo_password_is_logged_once_and_goes_when_changed(tmp_path: Path, caplog):
    data = tmp_path / "data"
    saved = data / "demo-password.txt"
    with caplog.at_level(logging.INFO, logger="mapi_anywhere"):
        await _start_and_stop(data)
    password = saved.read_text().strip()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert sum(password in r.getMessage() for r in caplog.records) == 1
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="mapi_anywhere"):
        await _start_and_stop(data)  # a later run: where the file is, not what it holds
    assert not any(password in r.getMessage() for r in caplog.records)
    assert any(str(saved) in r.getMessage() for r in caplog.records)
    assert saved.read_text().strip() == password  # written once

    changed = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "mapi_anywhere", "passwd", "demo", "--password-stdin",
             "--data-dir", str(data)],
            input="another-one\n", capture_output=True, text=True, timeout=60,
        )
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert not saved.exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mapi_anywhere"):
        await _start_and_stop(data)
    assert not saved.exists()
    assert not any("demo-password" in r.getMessage() for r in caplog.records)


def test_the_default_data_directory_is_ignored_by_git():
    root = Path(__file__).resolve().parent.parent
    assert "mapi-anywhere-data/" in (root / ".gitignore").read_text().splitlines()


# -- the process: log file, signals, the shutdown watchdog ---------------------------------


def test_log_file_is_private_and_follows_rotation(tmp_path: Path):
    from test_admin_cli import ServeProcess, cli

    data = tmp_path / "data"
    server = ServeProcess(data).start()
    try:
        assert stat.S_IMODE(server.log_file.stat().st_mode) == 0o600
        assert "endpoint mapper listening" in server.log()
        assert "endpoint mapper listening" not in server.stderr()
        rotated = server.log_file.with_suffix(".log.1")
        server.log_file.rename(rotated)  # what logrotate does
        assert cli("sessions", data_dir=data).returncode == 0  # the server logs this
        server.wait_for("control: sessions")
        assert "control: sessions" not in rotated.read_text()
        # SIGHUP (a logrotate postrotate habit) reopens; it does not stop the server.
        server.log_file.rename(rotated.with_suffix(".2"))
        server.signal(signal.SIGHUP)
        server.wait_for("received SIGHUP")
        assert cli("sessions", data_dir=data).returncode == 0
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.stop()
    assert "stopped" in server.log()


def test_sigterm_stops_cleanly(tmp_path: Path):
    from test_admin_cli import ServeProcess

    server = ServeProcess(tmp_path / "data").start()
    try:
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.stop()
    assert "received SIGTERM, shutting down" in server.log()
    assert "stopped" in server.log()
    assert "Traceback" not in server.log() + server.stderr()
    assert not (tmp_path / "data" / "control.sock").exists()


#: ``mapi-anywhere`` whose shutdown hangs in a worker thread that ignores cancellation.
STUCK_SERVE = """\
import sys, threading
import trio
from mapi.rpc.service import StoreService

async def close_never(self):
    await trio.to_thread.run_sync(threading.Event().wait)  # not abandoned on cancel

StoreService.close = close_never
from mapi_anywhere.cli import main
sys.exit(main(sys.argv[1:]))
"""


#: ``mapi-anywhere`` whose start hangs in a worker thread (opening the store).
STUCK_START = """\
import sys, threading
from mapi.store import ObjectStore

def open_never(self, *args, **kwargs):
    threading.Event().wait()

ObjectStore.__init__ = open_never
from mapi_anywhere.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _stuck_server(
    tmp_path: Path, shutdown_timeout: float, script_text: str = STUCK_SERVE, ready: str = "ready"
) -> Any:
    from test_admin_cli import ServeProcess

    script = tmp_path / "stuck_serve.py"
    script.write_text(script_text)
    config = tmp_path / "server.toml"
    config.write_text(f"[server]\nshutdown_timeout = {shutdown_timeout}\n")
    server = ServeProcess(tmp_path / "data", "-c", str(config), argv=[sys.executable, str(script)])
    server.ready = ready
    return server.start()


def test_a_signal_during_a_stuck_start_ends_the_process(tmp_path: Path):
    from mapi_anywhere.serve import HARD_EXIT_STATUS

    server = _stuck_server(tmp_path, 1.0, STUCK_START, ready="starting; Ctrl-C or SIGTERM stops")
    try:
        server.signal(signal.SIGTERM)
        assert server.wait() == HARD_EXIT_STATUS
    finally:
        server.stop()
    assert "ready" not in server.log()
    assert "did not stop within 1 s of the signal; exiting now" in server.log()


def test_watchdog_ends_a_shutdown_stuck_in_a_worker(tmp_path: Path):
    from mapi_anywhere.serve import HARD_EXIT_STATUS

    server = _stuck_server(tmp_path, 1.0)
    try:
        server.signal(signal.SIGTERM)
        assert server.wait() == HARD_EXIT_STATUS
    finally:
        server.stop()
    log = server.log()
    assert "did not stop within 1 s of the signal; exiting now" in log
    assert "stopped" not in log


def test_a_second_ctrl_c_exits_at_once(tmp_path: Path):
    server = _stuck_server(tmp_path, 3600.0)  # the watchdog would wait an hour
    try:
        server.signal(signal.SIGINT)
        server.wait_for("received SIGINT, shutting down")
        server.signal(signal.SIGINT)
        assert server.wait() == 128 + signal.SIGINT
    finally:
        server.stop()
    assert "second SIGINT: exiting now" in server.log()
