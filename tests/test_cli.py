"""``mapi-cli`` end to end: a real server process on loopback (``python -m mapi_anywhere
serve`` on a free port, a temporary data directory), and the CLI run as subprocesses
exactly as a user runs it, with the password in ``MAPI_PASSWORD``. Every subprocess has
a timeout; nothing asserts durations. The pure helpers (``--where`` parsing, FILETIME
conversion, folder paths, selectors) get direct unit tests at the end."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serve_helpers import FREE_PORTS

from clients import cli_format as fmt
from clients.cli_folders import split_path
from clients.cli_messages import parse_selector
from mapi.model import proptags as pt
from mapi.model import restrictions as rs

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60


@dataclass
class Server:
    address: str
    password: str
    tunnel_url: str | None = None
    fingerprint: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
        env.update(MAPI_SERVER=self.address, MAPI_USER="demo", MAPI_PASSWORD=self.password)
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, on a port the OS picks; its log goes to a file."""
    base = tmp_path_factory.mktemp("cli-server")
    log_path = base / "server.log"
    command = [
        sys.executable,
        "-m",
        "mapi_anywhere",
        "serve",
        "--epm-port",
        "0",
        *FREE_PORTS,
    ]
    # Mail for other domains goes to a smarthost on loopback where nothing listens: the
    # queue keeps it, and no test ever looks up a real domain's MX hosts.
    config = base / "serve.toml"
    config.write_text(
        '[outbound]\nsmarthost = "127.0.0.1"\nsmarthost_port = 9\nsmarthost_tls = "none"\n'
    )
    command += ["--config", str(config), "--data-dir", str(base / "data")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        port = None
        while time.monotonic() < deadline and proc.poll() is None:
            text = log_path.read_text(errors="replace")
            found = re.search(r"endpoint mapper listening on ncacn_ip_tcp:[^\[]+\[(\d+)\]", text)
            if found and "ready" in text:
                port = int(found[1])
                break
            time.sleep(0.05)
        assert port is not None, "server did not start:\n" + log_path.read_text()
        password = (base / "data" / "demo-password.txt").read_text().strip()
        tunnel = re.search(
            r"tunnel listening on (https://\S+) \(certificate SHA-256 ([0-9A-F:]+)", text
        )
        yield Server(
            f"ncacn_ip_tcp:127.0.0.1[{port}]",
            password,
            tunnel_url=f"{tunnel[1]}?epm={port}" if tunnel else None,
            fingerprint=tunnel[2] if tunnel else None,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def cli(
    server: Server | None, *args: str, env: dict[str, str] | None = None, input: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m clients.cli ARGS`` (bytes in and out, stdin not a terminal)."""
    if env is None:
        env = server.env() if server is not None else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=ROOT,
        env=env,
        input=input,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def ok(server: Server, *args: str) -> str:
    """Run a command that must succeed; returns its stdout as text."""
    result = cli(server, *args)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result.stdout.decode()


def as_json(server: Server, *args: str) -> dict[str, object]:
    data = json.loads(ok(server, "--json", *args))
    assert isinstance(data, dict)
    return data


def test_help_and_usage_errors(server: Server) -> None:
    result = cli(None, "--help")
    assert result.returncode == 0
    assert b"examples:" in result.stdout and b"mapi-cli ls" in result.stdout
    for command in ("ls", "get", "create", "mv"):
        sub = cli(None, command, "--help")
        assert sub.returncode == 0, command
        assert b"usage: mapi-cli " + command.encode() in sub.stdout
    assert cli(None).returncode == 2  # no command
    assert cli(None, "frobnicate").returncode == 2
    bad_selector = cli(server, "show", "inbox", "not-a-selector")
    assert bad_selector.returncode == 2
    assert b"bad message selector" in bad_selector.stderr
    bad_where = cli(server, "ls", "inbox", "--where", "PR_SUBJECT")
    assert bad_where.returncode == 2 and b"--where" in bad_where.stderr
    bad_prop = cli(server, "ls", "inbox", "--columns", "PR_NO_SUCH_THING")
    assert bad_prop.returncode == 2 and b"unknown property" in bad_prop.stderr
    bad_address = cli(server, "--server", "tcp://nowhere", "tree")
    assert bad_address.returncode == 2 and b"ncacn_ip_tcp" in bad_address.stderr


def test_connection_and_logon_failures(server: Server, tmp_path: Path) -> None:
    wrong = cli(server, "tree", env=server.env(MAPI_PASSWORD="not the password"))
    assert wrong.returncode == 1
    assert b"MAPI_E_LOGON_FAILED" in wrong.stderr and b"wrong user name or password" in wrong.stderr
    assert b"Traceback" not in wrong.stderr

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = cli(server, "--server", f"ncacn_ip_tcp:127.0.0.1[{closed_port}]", "tree")
    assert unreachable.returncode == 1
    assert b"server unreachable" in unreachable.stderr and b"Traceback" not in unreachable.stderr

    env = server.env()
    del env["MAPI_PASSWORD"]
    no_password = cli(server, "tree", env=env)
    assert no_password.returncode == 2 and b"MAPI_PASSWORD" in no_password.stderr
    secret = tmp_path / "password"
    secret.write_text(server.password + "\n")
    assert cli(server, "--password-file", str(secret), "tree", env=env).returncode == 0

    missing = cli(server, "ls", "No Such Folder")
    assert missing.returncode == 1
    assert b"MAPI_E_NOT_FOUND" in missing.stderr and b"No Such Folder" in missing.stderr
    as_json_error = cli(server, "--json", "ls", "inbox/No Such Folder")
    assert as_json_error.returncode == 1
    assert json.loads(as_json_error.stdout)["error"]["code"] == "MAPI_E_NOT_FOUND"


def test_through_the_https_tunnel(server: Server) -> None:
    """The same commands work with an ``https://`` address (HTTP/2 and HTTP/1.1)."""
    assert server.tunnel_url is not None and server.fingerprint is not None, (
        "the server did not start its HTTPS tunnel"
    )
    via = ["--server", server.tunnel_url, "--fingerprint", server.fingerprint]
    assert "created Inbox/Tunnelled" in ok(server, *via, "mkdir", "-p", "Inbox/Tunnelled")
    entry_id = ok(server, *via, "--http1", "create", "Inbox/Tunnelled", "--subject", "via h1")
    listing = as_json(server, *via, "ls", "Inbox/Tunnelled")
    assert [m["entry_id"] for m in listing["messages"]] == [entry_id.strip()]  # type: ignore[union-attr,index]
    wrong = cli(server, *via, "tree", env=server.env(MAPI_PASSWORD="wrong"))
    assert wrong.returncode == 1 and b"MAPI_E_LOGON_FAILED" in wrong.stderr
    unpinned = cli(server, "--server", server.tunnel_url, "tree")  # self-signed: refused
    assert unpinned.returncode == 1 and b"--fingerprint" in unpinned.stderr
    assert b"Traceback" not in unpinned.stderr


def test_folders_mkdir_tree_rename_rmdir(server: Server) -> None:
    assert "created Inbox/Fold/A/B" in ok(server, "mkdir", "-p", "Inbox/Fold/A/B")
    ok(server, "mkdir", "-p", "Inbox/Fold/A/B")  # -p: existing folders are fine
    collision = cli(server, "mkdir", "Inbox/Fold")
    assert collision.returncode == 1 and b"MAPI_E_COLLISION" in collision.stderr
    no_parent = cli(server, "mkdir", "Inbox/Nope/Child")
    assert no_parent.returncode == 1 and b"MAPI_E_NOT_FOUND" in no_parent.stderr
    ok(server, "mkdir", "inbox/Fold/Other")  # by role, lower case
    ok(server, "mkdir", "/Archive Fold")  # literal path at the top

    tree = as_json(server, "tree")
    paths = {f["path"]: f for f in tree["folders"]}  # type: ignore[union-attr,index]
    assert {"Inbox/Fold", "Inbox/Fold/A", "Inbox/Fold/A/B", "Inbox/Fold/Other"} <= set(paths)
    assert "Archive Fold" in paths and paths["Inbox"]["role"] == "inbox"
    assert paths["Inbox/Fold/A/B"]["depth"] == 4  # Inbox is 1
    text = ok(server, "tree")
    assert re.search(r"^Inbox\s+\d+\s+\d+\s+inbox$", text, re.M)
    assert re.search(r"^      B\s+0\s+0$", text, re.M)  # indented two spaces per level
    sub = as_json(server, "tree", "Inbox/Fold")
    assert {f["path"] for f in sub["folders"]} == {  # type: ignore[union-attr,index]
        "Inbox/Fold/A",
        "Inbox/Fold/A/B",
        "Inbox/Fold/Other",
    }

    assert "-> Renamed" in ok(server, "rename", "Inbox/Fold/Other", "Renamed")
    ok(server, "ls", "Inbox/Fold/Renamed")
    not_empty = cli(server, "rmdir", "Inbox/Fold/A")
    assert not_empty.returncode == 1 and b"MAPI_E_HAS_FOLDERS" in not_empty.stderr
    assert "Deleted Items" in ok(server, "rmdir", "-r", "Inbox/Fold/A")
    assert "A" in {f["name"] for f in as_json(server, "tree", "deleted")["folders"]}  # type: ignore[union-attr,index]
    ok(server, "rmdir", "--hard", "Inbox/Fold/Renamed")
    gone = cli(server, "ls", "Inbox/Fold/Renamed")
    assert gone.returncode == 1 and b"MAPI_E_NOT_FOUND" in gone.stderr
    special = cli(server, "rmdir", "inbox")
    assert special.returncode in (1, 2) and b"Traceback" not in special.stderr


def test_create_show_get_put_round_trip(server: Server, tmp_path: Path) -> None:
    big = tmp_path / "report.bin"
    big.write_bytes(os.urandom(300_000) + bytes(range(256)) * 100)  # > 200 KB, > 1 chunk
    notes = tmp_path / "notes.txt"
    notes.write_text("first line\nsecond line\n")
    body = tmp_path / "body.txt"
    body.write_text("Hello Bob,\n\nsee the attached report. \u00e9\u20ac\U0001f600\n")
    ok(server, "mkdir", "-p", "Inbox/Trip")

    created = cli(
        server, "--progress", "create", "Inbox/Trip", "--subject", "Quarterly report",
        "--body-file", str(body), "--to", "Bob <bob@example.org>", "--cc", "carol@example.org",
        "--attach", str(big), "--attach", str(notes),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr.decode()
    entry_id = created.stdout.decode().strip()
    assert re.fullmatch(r"[0-9a-f]{32,}", entry_id)
    assert b"100%" in created.stderr and b"report.bin" in created.stderr  # the progress bar

    listing = ok(server, "ls", "Inbox/Trip")
    assert re.search(r"^1\s+\S+\s+demo\s+Quarterly report\s", listing, re.M)
    assert "attach" in listing
    data = as_json(server, "ls", "Inbox/Trip", "--columns", "PR_SUBJECT,PR_HASATTACH")
    (row,) = data["messages"]  # type: ignore[misc]
    assert row == {
        "index": 1,
        "entry_id": entry_id,
        "PR_SUBJECT": "Quarterly report",
        "PR_HASATTACH": True,
    }
    assert entry_id in ok(server, "ls", "Inbox/Trip", "--ids")

    shown = ok(server, "show", "Inbox/Trip", "1")
    assert "Subject:  Quarterly report" in shown
    assert "To:       Bob <bob@example.org>" in shown and "carol@example.org" in shown
    assert "From:     demo" in shown and "Date:" in shown
    assert body.read_text().strip() in shown
    assert "#0  report.bin" in shown and "#1  notes.txt" in shown
    detail = as_json(server, "show", "Inbox/Trip", entry_id)
    assert detail["subject"] == "Quarterly report"
    assert detail["body"] == body.read_text()
    assert detail["to"] == [{"name": "Bob", "email": "bob@example.org"}]
    assert "unsent" in detail["flag_names"]  # type: ignore[operator]
    assert [(a["num"], a["filename"]) for a in detail["attachments"]] == [  # type: ignore[union-attr,index]
        (0, "report.bin"),
        (1, "notes.txt"),
    ]

    out = tmp_path / "downloaded.bin"
    got = cli(server, "--progress", "get", "Inbox/Trip", "1", "0", "-o", str(out))
    assert got.returncode == 0, got.stderr.decode()
    assert out.read_bytes() == big.read_bytes()
    assert b"100%" in got.stderr
    exists = cli(server, "get", "Inbox/Trip", "1", "0", "-o", str(out))
    assert exists.returncode == 2 and b"--force" in exists.stderr
    assert cli(server, "get", "Inbox/Trip", "1", "0", "-o", str(out), "-f").returncode == 0
    to_stdout = cli(server, "get", "Inbox/Trip", entry_id, "1", "-o", "-")
    assert to_stdout.returncode == 0 and to_stdout.stdout == notes.read_bytes()
    which = cli(server, "get", "Inbox/Trip", "1")
    assert which.returncode == 2 and b"give ATTACH_NUM" in which.stderr
    no_such = cli(server, "get", "Inbox/Trip", "1", "7", "-o", "-")
    assert no_such.returncode == 1 and b"MAPI_E_NOT_FOUND" in no_such.stderr

    extra = tmp_path / "extra.dat"
    extra.write_bytes(os.urandom(70_000))
    assert "as #2" in ok(server, "put", "Inbox/Trip", "1", str(extra))
    detail = as_json(server, "show", "Inbox/Trip", "1")
    assert [a["filename"] for a in detail["attachments"]] == [  # type: ignore[union-attr,index]
        "report.bin",
        "notes.txt",
        "extra.dat",
    ]
    again = cli(server, "get", "Inbox/Trip", "1", "2", "-o", "-")
    assert again.stdout == extra.read_bytes()


def test_ls_where_sort_limit_offset(server: Server) -> None:
    ok(server, "mkdir", "-p", "Inbox/Query")
    subjects = ["alpha report", "beta", "Gamma REPORT", "delta", "epsilon"]
    for subject in subjects:
        ok(server, "create", "Inbox/Query", "--subject", subject, "--body", subject * 3)

    def subjects_of(*args: str) -> list[str]:
        data = as_json(server, "ls", "Inbox/Query", "--columns", "PR_SUBJECT", *args)
        return [m["PR_SUBJECT"] for m in data["messages"]]  # type: ignore[union-attr,index]

    assert subjects_of() == subjects[::-1]  # newest first
    assert subjects_of("--sort", "PR_SUBJECT") == sorted(subjects, key=str.lower)
    assert subjects_of("--sort", "-PR_SUBJECT", "--limit", "2") == ["Gamma REPORT", "epsilon"]
    assert subjects_of("--sort", "subject", "--limit", "2", "--offset", "1") == ["beta", "delta"]
    assert subjects_of("--where", "PR_SUBJECT~report") == ["Gamma REPORT", "alpha report"]
    assert subjects_of("--where", "PR_SUBJECT=BETA") == ["beta"]
    assert subjects_of("--where", "PR_SUBJECT~report", "--where", "PR_SUBJECT~alp") == [
        "alpha report"
    ]
    assert subjects_of("--where", "PR_MESSAGE_SIZE>0") == subjects[::-1]
    assert subjects_of("--where", "PR_MESSAGE_SIZE<0") == []
    assert subjects_of("--where", "PR_MESSAGE_DELIVERY_TIME>2000-01-01") == subjects[::-1]
    assert subjects_of("--where", "PR_MESSAGE_DELIVERY_TIME<2000-01-01") == []

    # INDEX always counts in the default order, even in a sorted or filtered listing.
    data = as_json(server, "ls", "Inbox/Query", "--where", "PR_SUBJECT~beta")
    (beta,) = data["messages"]  # type: ignore[misc]
    assert beta["index"] == 4
    assert as_json(server, "show", "Inbox/Query", "4")["subject"] == "beta"
    assert data["total"] == 1
    text = ok(server, "ls", "Inbox/Query", "--limit", "2")
    assert "(1-2 of 5;" in text
    # Times show as ISO local time.
    row = as_json(server, "ls", "Inbox/Query", "--limit", "1")["messages"][0]  # type: ignore[index]
    when = dt.datetime.fromisoformat(row["PR_MESSAGE_DELIVERY_TIME"])
    assert when.tzinfo is not None and when.year >= 2024


def test_mv_cp_rm(server: Server) -> None:
    ok(server, "mkdir", "-p", "Inbox/Src")
    ok(server, "mkdir", "-p", "Inbox/Dst")
    for i in range(4):
        ok(server, "create", "Inbox/Src", "--subject", f"move me {i}")

    def subjects(folder: str) -> list[str]:
        data = as_json(server, "ls", folder, "--columns", "PR_SUBJECT", "--limit", "0")
        return [m["PR_SUBJECT"] for m in data["messages"]]  # type: ignore[union-attr,index]

    assert subjects("Inbox/Src") == ["move me 3", "move me 2", "move me 1", "move me 0"]
    assert "copied 1 message(s)" in ok(server, "cp", "Inbox/Src", "1", "Inbox/Dst")
    assert subjects("Inbox/Dst") == ["move me 3"]
    assert len(subjects("Inbox/Src")) == 4
    assert "moved 2 message(s)" in ok(server, "mv", "Inbox/Src", "2-3", "Inbox/Dst")
    assert sorted(subjects("Inbox/Dst")) == ["move me 1", "move me 2", "move me 3"]
    assert subjects("Inbox/Src") == ["move me 3", "move me 0"]

    src = as_json(server, "ls", "Inbox/Src")
    last_id = src["messages"][1]["entry_id"]  # type: ignore[index]
    ok(server, "rm", "Inbox/Src", last_id)  # soft: to Deleted Items
    assert subjects("Inbox/Src") == ["move me 3"]
    assert "move me 0" in subjects("deleted")
    assert "deleted for good" in ok(server, "rm", "Inbox/Src", "1", "--hard")
    assert subjects("Inbox/Src") == []
    beyond = cli(server, "rm", "Inbox/Src", "1")
    assert beyond.returncode == 1 and b"MAPI_E_NOT_FOUND" in beyond.stderr
    again = cli(server, "rm", "Inbox/Src", last_id)  # no longer in that folder
    assert again.returncode == 1 and b"MAPI_W_PARTIAL_COMPLETION" in again.stderr


# --- Pure helpers ----------------------------------------------------------------------


def test_filetime_round_trip_and_format() -> None:
    moment = dt.datetime(2024, 5, 1, 9, 30, 15, tzinfo=dt.UTC)
    filetime = fmt.datetime_to_filetime(moment)
    assert filetime == 133_590_294_150_000_000
    assert fmt.filetime_to_datetime(filetime) == moment
    assert dt.datetime.fromisoformat(fmt.format_time(filetime)) == moment
    assert fmt.json_value(pt.PR_ENTRYID, b"\x01\xab") == "01ab"
    assert fmt.text_value(pt.PR_MESSAGE_FLAGS, pt.MSGFLAG_HASATTACH) == "unread,attach"
    assert fmt.text_value(pt.PR_MESSAGE_SIZE, 2048) == "2.0 KiB"
    assert fmt.text_value(pt.PR_SUBJECT, "x" * 10, width=5) == "xxxx\u2026"


def test_where_parsing() -> None:
    assert fmt.parse_where("PR_SUBJECT~Report") == {
        "rt": rs.RES_CONTENT,
        "fuzzy": rs.FL_SUBSTRING | rs.FL_IGNORECASE,
        "tag": pt.PR_SUBJECT,
        "value": "Report",
    }
    size = fmt.parse_where("message_size >= 100")
    assert (size["relop"], size["tag"], size["value"]) == (rs.RELOP_GE, pt.PR_MESSAGE_SIZE, 100)
    when = fmt.parse_where("PR_MESSAGE_DELIVERY_TIME<2024-05-01T09:30:15+00:00")
    assert when["value"] == 133_590_294_150_000_000 and when["relop"] == rs.RELOP_LT
    assert fmt.parse_where("PR_HASATTACH=yes")["value"] is True
    combined = fmt.combine_where(["PR_SUBJECT~a", "PR_MESSAGE_SIZE>1"])
    assert combined is not None and combined["rt"] == rs.RES_AND
    assert fmt.combine_where([]) is None
    for bad in ("PR_SUBJECT", "PR_MESSAGE_SIZE~1", "PR_MESSAGE_SIZE>big", "PR_NOPE=1"):
        with pytest.raises(fmt.UsageError):
            fmt.parse_where(bad)
    assert fmt.parse_sort("-PR_MESSAGE_DELIVERY_TIME,subject") == [
        (pt.PR_MESSAGE_DELIVERY_TIME, True),
        (pt.PR_SUBJECT, False),
    ]


def test_folder_paths_and_selectors() -> None:
    assert split_path("Inbox/Projects") == ("inbox", ["Projects"])
    assert split_path("sent") == ("sent", [])
    assert split_path("trash/x") == ("deleted", ["x"])
    assert split_path("/Inbox") == ("ipm_subtree", ["Inbox"])
    assert split_path("Archive/2024") == ("ipm_subtree", ["Archive", "2024"])
    assert split_path("A\\/B/C") == ("ipm_subtree", ["A/B", "C"])
    assert split_path("/") == ("ipm_subtree", [])
    assert parse_selector("3") == (3, 3)
    assert parse_selector("2-5") == (2, 5)
    assert parse_selector("00ff" * 8) == bytes.fromhex("00ff" * 8)
    for bad in ("0", "5-2", "xyz", "abc"):
        with pytest.raises(fmt.UsageError):
            parse_selector(bad)


def test_send_watch_and_sync(server: Server, tmp_path: Path) -> None:
    """send delivers (to ourselves here), watch shows the events live, sync mirrors."""
    command = [sys.executable, "-m", "clients.cli", "watch", "inbox", "--count", "4"]
    watcher = subprocess.Popen(
        command, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().startswith("watching inbox")
        report = ok(server, "send", "drafts", "--subject", "note to self", "--to",
                    "Demo <demo@localhost>", "--to", "nobody@localhost",
                    "--to", "someone@nowhere.example")  # fmt: skip
        assert "sent to 1 mailbox(es)" in report
        # No such local user: a report at once; another domain: the outbound queue.
        assert "undeliverable" in report and "nobody@localhost" in report
        assert "queued for delivery to other domains: someone@nowhere.example" in report
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4, out  # exactly --count events
    assert any("new mail" in line and "in inbox" in line for line in lines), out
    assert any("row added" in line and "'note to self'" in line for line in lines), out

    mirror = tmp_path / "mirror"
    first = as_json(server, "sync", "inbox", str(mirror))
    assert first["changed"] >= 2 and first["deleted"] == 0  # the note and the NDR
    files = {p.name for p in mirror.glob("*.json")}
    subjects = {json.loads((mirror / f).read_text())["PR_SUBJECT"] for f in files}
    assert "note to self" in subjects
    assert any(s.startswith("Undeliverable") for s in subjects)
    again = as_json(server, "sync", "inbox", str(mirror))
    assert (again["changed"], again["deleted"]) == (0, 0)  # nothing new: nothing moves
    ok(server, "rm", "inbox", "1", "--hard")
    after = as_json(server, "sync", "inbox", str(mirror))
    assert after["deleted"] == 1
    assert len(list(mirror.glob("*.json"))) == len(files) - 1


@pytest.mark.parametrize("http1", [False, True], ids=["h2", "http1.1"])
def test_watch_through_the_tunnel(server: Server, http1: bool) -> None:
    assert server.tunnel_url and server.fingerprint
    env = server.env(MAPI_SERVER=server.tunnel_url, MAPI_FINGERPRINT=server.fingerprint)
    command = [sys.executable, "-m", "clients.cli", "watch", "inbox", "--count", "1", "--json"]
    if http1:
        command.append("--http1")
    watcher = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["event"] == "watching"
        ok(server, "send", "drafts", "--subject", "via tunnel", "--to", "demo@localhost")
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event["event"] == "new_mail"
