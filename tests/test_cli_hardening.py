"""``mapi-cli`` and the client library under hostile input and user mistakes.

End to end where the behaviour is: a real server on loopback (``serve`` as a
subprocess, as in ``tests/test_cli.py``, or in-process for what needs a look at the
server's state), the CLI run as subprocesses, hostile content put in place with the
Python API the way another user's mail would arrive. Pure helpers (escaping, file
names, HTML to text, autodiscover answers) get direct unit tests. Every subprocess and
loop is bounded in time; nothing asserts durations.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from clients import api
from clients.autodiscover import EmailAddress, hosts_to_ask, parse_answer, parse_email_address
from clients.cli import SafeFormatter
from clients.cli_safety import printable, safe_filename, safe_json
from clients.html_text import decode_html, html_to_text
from mapi.model import errors
from mapi.model import proptags as pt
from tests.serve_helpers import start_server
from tests.test_cli import ROOT, TIMEOUT, Server, server

__all__ = ["server"]  # the module-scoped fixture, shared with tests/test_cli.py's recipe

#: Everything that must never reach a terminal raw, as it would be encoded in UTF-8.
RAW = [b"\x1b", b"\x07", b"\x9b", b"\xc2\x9b", b"\xc2\x85", "\u202e".encode(), b"\r",
       "\u2028".encode()]  # fmt: skip
HOSTILE = "\x1b]0;pwned\x07\x1b[31mred\x1b[0m\u202egnp.exe\x9b2J\rover\u2028x"


def run(server: Server | None, *args: str, cwd: Path = ROOT, **env: str) -> Any:
    """``mapi-cli ARGS`` as a user runs it (in ``cwd``), bounded in time."""
    environ = server.env(**env) if server is not None else dict(os.environ, **env)
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def ok(server: Server, *args: str, cwd: Path = ROOT) -> str:
    result = run(server, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return str(result.stdout.decode())


def assert_terminal_safe(output: bytes) -> None:
    for raw in RAW:
        assert raw not in output, (raw, output)


def with_session(server: Server, work: Callable[[api.Session], Awaitable[Any]]) -> Any:
    """Run ``work(session)`` against the server with the Python API (another client)."""

    async def main() -> Any:
        with trio.fail_after(TIMEOUT):
            async with api.connect(server.address, "demo", server.password) as session:
                return await work(session)

    return trio.run(main)


async def _folder(session: api.Session, path: str) -> api.Folder:
    """``Inbox/<path>``, created if missing."""
    store = await session.open_store()
    folder = await store.open_folder(await store.special_folder("inbox"))
    for name in path.split("/"):
        folder = await folder.create_folder(name, open_if_exists=True)
    return folder


def deliver(
    server: Server,
    path: str,
    props: dict[str | int, Any],
    attachments: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
) -> None:
    """Put a message with ``props`` and (file name, data) attachments in ``Inbox/path``."""

    async def work(session: api.Session) -> None:
        folder = await _folder(session, path)
        message = await folder.create_message()
        await message.set_props({"PR_MESSAGE_CLASS": "IPM.Note", **props})
        for name, data in attachments:
            attachment = await message.create_attachment()
            await attachment.set_props(
                {"PR_ATTACH_METHOD": pt.ATTACH_BY_VALUE, "PR_ATTACH_LONG_FILENAME": name}
            )
            stream = await attachment.open_stream("PR_ATTACH_DATA_BIN", write=True, create=True)
            await stream.write(data)
            await stream.commit()
            await stream.release()
            await attachment.save()
        await message.save()

    with_session(server, work)


# --- 1. Terminal safety ------------------------------------------------------------------


def test_printable_escapes_every_terminal_control() -> None:
    shown = printable(HOSTILE)
    assert shown == ("\\x1b]0;pwned\\x07\\x1b[31mred\\x1b[0m\\u202egnp.exe\\x9b2J\\rover\\u2028x")
    assert printable(shown) == shown  # idempotent: safe to apply twice
    assert printable("caf\u00e9 \U0001f600 \u4e2d\u6587") == "caf\u00e9 \U0001f600 \u4e2d\u6587"
    assert printable("a\r\nb\tc\x1b", multiline=True) == "a\nb\tc\\x1b"
    assert printable("a\nb") == "a\\nb"
    data = {"subject": HOSTILE, "n": 1}
    text = safe_json(data)
    assert json.loads(text) == data  # exact for a JSON reader
    assert_terminal_safe(text.encode())


def test_safe_filename() -> None:
    fallback = "attachment-0.bin"
    assert safe_filename("report.pdf", fallback) == "report.pdf"
    assert safe_filename(".bash_profile", fallback) == "bash_profile"
    assert safe_filename("../../.ssh/authorized_keys", fallback) == "authorized_keys"
    assert safe_filename("C:\\Users\\x\\evil.exe", fallback) == "evil.exe"
    assert safe_filename("a\nb\x1b[31m.txt", fallback) == "a_b_[31m.txt"
    assert safe_filename("\u202etxt.exe", fallback) == "_txt.exe"
    assert safe_filename("..", fallback) == fallback
    assert safe_filename("", fallback) == fallback
    assert safe_filename(None, fallback) == fallback
    assert safe_filename("dir/", fallback) == fallback
    assert safe_filename("CON", fallback) == "_CON"
    assert safe_filename("nul.txt", fallback) == "_nul.txt"
    long = safe_filename("x" * 300 + ".pdf", fallback)
    assert long.endswith(".pdf") and len(long.encode()) <= 200


def test_hostile_text_is_escaped_in_every_command(server: Server, tmp_path: Path) -> None:
    """Another user's subject, names, body, folder and file names: escaped everywhere."""
    folder = "Hostile"
    deliver(
        server,
        folder,
        {
            "PR_SUBJECT": HOSTILE,
            "PR_SENDER_NAME": "Mallory\x1b[8m",
            "PR_BODY": "line 1\n\x1b[2J\x1b[Hline 2\rfake\n\u202eevil",
            "PR_MESSAGE_DELIVERY_TIME": 133_590_294_150_000_000,
        },
        [("evil\x1b]52;c;aGk=\x07.txt", b"data"), ("\u202eFDP.exe", b"x")],
    )
    with_session(server, lambda s: _folder(s, f"{folder}/Bad\x1b[5mname\u202e"))
    outputs = [
        run(server, "ls", f"inbox/{folder}"),
        run(server, "ls", f"inbox/{folder}", "--columns", "PR_SUBJECT,PR_SENDER_NAME"),
        run(server, "show", f"inbox/{folder}", "1"),
        run(server, "show", f"inbox/{folder}", "1", "--props"),
        run(server, "--json", "show", f"inbox/{folder}", "1"),
        run(server, "--json", "ls", f"inbox/{folder}"),
        run(server, "tree", f"inbox/{folder}"),
        run(server, "--json", "tree", f"inbox/{folder}"),
        run(server, "--progress", "get", f"inbox/{folder}", "1", "0", "-o", "-"),
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr.decode()
    for result in outputs[:-1]:
        assert_terminal_safe(result.stdout + result.stderr)
    progress = outputs[-1]  # the bar's own \r redraws its line; its label is the safe name
    assert outputs[-1].stdout == b"data"
    assert_terminal_safe(progress.stderr.replace(b"\r", b""))
    assert b"evil_]52;c;aGk=_.txt [" in progress.stderr
    shown = outputs[2].stdout.decode()
    assert "\\x1b]0;pwned\\x07" in shown and "\\u202egnp.exe" in shown  # visible, not lost
    assert "line 1\n\\x1b[2J\\x1b[Hline 2\\rfake\n\\u202eevil" in shown
    assert "evil\\x1b]52;c;aGk=\\x07.txt" in shown
    assert "Bad\\x1b[5mname\\u202e" in outputs[6].stdout.decode()
    as_json = json.loads(outputs[4].stdout)
    assert as_json["subject"] == HOSTILE  # --json stays exact

    # A folder name in an error message, from the server: escaped too.
    missing = run(server, "ls", f"inbox/{folder}/No\x1b[31mSuch")
    assert missing.returncode == 1
    assert_terminal_safe(missing.stderr)
    assert b"No\\x1b[31mSuch" in missing.stderr


def test_watch_escapes_and_shows_no_internal_events(server: Server) -> None:
    """``watch``: a hostile subject is escaped; a delivery is one "new mail" and its
    table row, not also "object created" and the folder's count update."""
    watcher = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "watch", "inbox", "--count", "2"],
        env=server.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().startswith(b"watching inbox")
        ok(
            server,
            "send",
            "drafts",
            "--subject",
            "hi \x1b[31mthere\u202e",
            "--to",
            "demo@localhost",
        )
        out, err = watcher.communicate(timeout=TIMEOUT)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    assert_terminal_safe(out + err)
    lines = out.decode().splitlines()
    assert len(lines) == 2, lines
    assert "new mail" in lines[0]
    assert "row added" in lines[1] and "\\x1b[31mthere\\u202e" in lines[1], lines
    assert not any("object modified" in line or "object created" in line for line in lines)


def test_sync_follow_prints_changes_only(server: Server, tmp_path: Path) -> None:
    """``sync --follow`` prints the first pass, then a line per change, and nothing for
    a wake-up that changed no message (a subfolder created, here)."""
    ok(server, "mkdir", "-p", "Inbox/Followed")
    mirror = tmp_path / "mirror"
    follower = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "sync", "Inbox/Followed", str(mirror), "--follow",
         "--duration", str(TIMEOUT)],
        env=server.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline().decode()
        assert "0 new or changed, 0 deleted" in first
        ok(server, "mkdir", "Inbox/Followed/Sub")  # wakes the follower; no message changed
        ok(server, "mkdir", "Inbox/Followed/Sub2")
        ok(server, "create", "Inbox/Followed", "--subject", "follow me")
        second = follower.stdout.readline().decode()
        follower.send_signal(signal.SIGINT)
        rest, err = follower.communicate(timeout=TIMEOUT)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert "1 new or changed, 0 deleted" in second, (second, err)
    assert b"0 new or changed, 0 deleted" not in rest


# --- get: file names and modes -----------------------------------------------------------


def test_get_saves_under_a_safe_private_name(server: Server, tmp_path: Path) -> None:
    names = [".bash_profile", "../../escaped.txt", "a\nb\x1b[31m.txt", "CON", "..", "ok.txt"]
    deliver(server, "Files", {"PR_SUBJECT": "files"}, [(n, n.encode()) for n in names])
    work = tmp_path / "work"
    work.mkdir()
    expected = ["bash_profile", "escaped.txt", "a_b_[31m.txt", "_CON", "attachment-4.bin",
                "ok.txt"]  # fmt: skip
    for num, name in enumerate(expected):
        result = run(server, "get", "inbox/Files", "1", str(num), cwd=work)
        assert result.returncode == 0, result.stderr.decode()
        saved = work / name
        assert saved.read_bytes() == names[num].encode()
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert_terminal_safe(result.stdout + result.stderr)
    assert sorted(p.name for p in work.iterdir()) == sorted(expected)  # nothing else
    assert not (tmp_path / "escaped.txt").exists()

    # An existing name is refused; a symlink there is never followed.
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (work / "link.txt").symlink_to(victim)
    refused = run(server, "get", "inbox/Files", "1", "5", "-o", "link.txt", cwd=work)
    assert refused.returncode == 2 and b"--force" in refused.stderr
    (work / "dangling.txt").symlink_to(tmp_path / "nowhere")
    dangling = run(server, "get", "inbox/Files", "1", "5", "-o", "dangling.txt", cwd=work)
    assert dangling.returncode == 2 and not (tmp_path / "nowhere").exists()
    forced = run(server, "get", "inbox/Files", "1", "5", "-o", "link.txt", "-f", cwd=work)
    assert forced.returncode == 0, forced.stderr.decode()
    assert victim.read_text() == "keep me"  # the link was replaced, not written through
    assert not (work / "link.txt").is_symlink()
    assert (work / "link.txt").read_bytes() == b"ok.txt"

    # -o DIR/ saves under the safe name there; --mode widens on request.
    into = tmp_path / "into"
    into.mkdir()
    ok(server, "get", "inbox/Files", "1", "0", "-o", str(into), "--mode", "644", cwd=work)
    assert stat.S_IMODE((into / "bash_profile").stat().st_mode) == 0o644
    bad_mode = run(server, "get", "inbox/Files", "1", "0", "-o", "-", "--mode", "999")
    assert bad_mode.returncode == 2 and b"--mode" in bad_mode.stderr
    assert not [p for p in work.iterdir() if p.name.endswith(".part")]


# --- 2. User errors: one line, no traceback ---------------------------------------------


def _one_line_error(result: Any, status: int, *needles: bytes) -> None:
    assert result.returncode == status, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_user_errors_are_one_line(server: Server, tmp_path: Path) -> None:
    assert server.tunnel_url and server.fingerprint
    base = server.tunnel_url.partition("?")[0]
    via = ["--fingerprint", server.fingerprint]
    _one_line_error(
        run(server, "--server", server.tunnel_url, "--fingerprint", "zz:top", "tree"),
        2, b"bad fingerprint", b"SHA-256",
    )  # fmt: skip
    _one_line_error(
        run(server, "tree", MAPI_SERVER=server.tunnel_url, MAPI_FINGERPRINT="AB:CD"),
        2, b"bad fingerprint",
    )  # fmt: skip
    _one_line_error(run(server, "--server", base + "?epm=abc", *via, "tree"), 2, b"?epm=", b"'abc'")
    _one_line_error(run(server, "--server", base + "?epm=70000", *via, "tree"), 2, b"?epm=")
    _one_line_error(run(server, "--server", base, *via, "tree"), 1, b"?epm=PORT")
    _one_line_error(
        run(server, "--server", "https://127.0.0.1:99999/", *via, "tree"), 2, b"bad port"
    )
    _one_line_error(run(server, "--server", "https://127.0.0.1:x/", *via, "tree"), 2, b"port")
    _one_line_error(
        run(server, "--server", "ncacn_ip_tcp:127.0.0.1[99999]", "tree"), 2, b"bad port"
    )
    _one_line_error(run(server, "--server", "demo@", "tree"), 2, b"not a server address")
    _one_line_error(run(server, "sync", "inbox", "/proc/no/such/dir"), 1, b"/proc/no")
    missing_dir = str(tmp_path / "no" / "such" / "x.bin")
    deliver(server, "Err", {"PR_SUBJECT": "e"}, [("e.txt", b"e")])
    _one_line_error(run(server, "get", "inbox/Err", "1", "0", "-o", missing_dir), 1, b"no/such")
    for args in (
        ("--timeout", "-1", "tree"),
        ("watch", "--duration", "-5"),
        ("watch", "--count", "0"),
        ("sync", "inbox", "d", "--duration", "nan"),
    ):
        result = run(server, *args)
        assert result.returncode == 2 and b"Traceback" not in result.stderr, args
        assert result.stderr.decode().strip().splitlines()[-1].startswith("mapi-cli")


def test_closed_stdout_is_no_error_message(server: Server) -> None:
    """``mapi-cli tree | head -0``: the reader left; no traceback, no "server unreachable"."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write gets EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "clients.cli", "tree"],
            cwd=ROOT, env=server.env(), stdout=write_end, stderr=subprocess.PIPE,
            timeout=TIMEOUT, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == b""


def test_verbose_log_lines_are_escaped() -> None:
    record = logging.LogRecord("mapi-cli", logging.DEBUG, __file__, 1, "got %s", (HOSTILE,), None)
    line = SafeFormatter("%(message)s").format(record)
    assert_terminal_safe(line.encode())
    assert "\\x1b]0;pwned" in line


def test_api_refuses_bad_addresses_early() -> None:
    async def attempt(address: str, fingerprint: str | None = None) -> None:
        async with api.connect(address, "demo", "pw", fingerprint=fingerprint):
            raise AssertionError("connected")

    for address, fingerprint, needle in [
        ("https://127.0.0.1:1/?epm=abc", None, "?epm="),
        ("https://127.0.0.1:1/", "not-hex", "fingerprint"),
        ("ncacn_ip_tcp:127.0.0.1[0]", None, "port"),
    ]:
        with pytest.raises(ValueError, match=needle.replace("?", r"\?")):
            trio.run(attempt, address, fingerprint)


# --- 3. Everyday gaps --------------------------------------------------------------------


def test_html_to_text() -> None:
    html = (
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<script>alert('x')</script><h1>Hello</h1><p>First &amp; <b>bold</b>\n  text "
        "<a href='https://example.org/'>here</a></p><ul><li>one</li><li>two</li></ul>"
        "<p>a<br>b</p><pre>  keep\n  this</pre></body></html>"
    )
    assert html_to_text(html) == (
        "Hello\n\nFirst & bold text here <https://example.org/>\n\n- one\n- two\n"
        "a\nb\n\n  keep\n  this"
    )
    assert decode_html("caf\u00e9".encode("cp1252"), 1252) == "caf\u00e9"
    assert decode_html(b'<meta charset="iso-8859-1">\xe9').endswith("\u00e9")
    assert decode_html("\u00e9".encode()) == "\u00e9"


def test_show_html_only_message_and_attachment_data_size(server: Server) -> None:
    html = (
        "<html><head><style>.x{}</style><script>steal()</script></head>"
        "<body><p>Hello <b>HTML</b> world \u00e9</p><p>Second</p></body></html>"
    )
    data = os.urandom(70_000)
    deliver(
        server,
        "Html",
        {"PR_SUBJECT": "html only", "PR_HTML": html.encode("cp1252"), "PR_INTERNET_CPID": 1252},
        [("data.bin", data)],
    )
    shown = ok(server, "show", "inbox/Html", "1")
    assert "Hello HTML world \u00e9\n\nSecond" in shown
    assert "steal" not in shown and "<p>" not in shown and "(no body)" not in shown
    assert "#0  data.bin  68.4 KiB" in shown
    detail = json.loads(ok(server, "--json", "show", "inbox/Html", "1"))
    assert detail["attachments"][0]["size"] == len(data)  # the data, not PR_ATTACH_SIZE
    assert detail["body_format"] == "html"
    props = ok(server, "show", "inbox/Html", "1", "--props")
    assert "PR_HTML = '<html><head><style>" in props  # text, not a bytes repr or hex
    every = json.loads(ok(server, "--json", "show", "inbox/Html", "1", "--props"))
    assert every["properties"]["PR_HTML"] == html

    # An HTML body too large for get_props comes through a stream.
    big = "<p>Big <i>one</i></p><script>" + "x" * 1_500_000 + "</script><p>tail</p>"

    async def stream_html(session: api.Session) -> None:
        folder = await _folder(session, "BigHtml")
        message = await folder.create_message()
        await message.set_props({"PR_SUBJECT": "big html"})
        stream = await message.open_stream("PR_HTML", write=True, create=True)
        data = big.encode()
        for start in range(0, len(data), 256 * 1024):
            await stream.write(data[start : start + 256 * 1024])
        await stream.commit()
        await stream.release()
        await message.save()

    with_session(server, stream_html)
    shown = ok(server, "show", "inbox/BigHtml", "1")
    assert "Big one\n\ntail" in shown and "xxxx" not in shown


def test_rmdir_suggests_r_and_mkdir_refuses_dot_components(server: Server) -> None:
    ok(server, "mkdir", "-p", "Inbox/Full/Child")
    not_empty = run(server, "rmdir", "Inbox/Full")
    _one_line_error(not_empty, 1, b"MAPI_E_HAS_FOLDERS", b"rmdir -r")
    ok(server, "create", "Inbox/Full/Child", "--subject", "x")
    _one_line_error(run(server, "rmdir", "Inbox/Full/Child"), 1, b"MAPI_E_HAS_MESSAGES", b"-r")
    for path in ("Inbox/x/../y", "Inbox/./z", "../top"):
        _one_line_error(run(server, "mkdir", "-p", path), 2, b"'..'")
    tree = json.loads(ok(server, "--json", "tree"))
    assert not any(f["name"] in (".", "..") for f in tree["folders"])


def test_props_print_with_names() -> None:
    props = api.Props([(pt.PR_SUBJECT, "Hi"), (pt.PR_MESSAGE_SIZE, 12)])
    for text in (repr(props), str(props)):
        assert "PR_SUBJECT_W" in text or "PR_SUBJECT" in text
        assert "PR_MESSAGE_SIZE" in text and str(pt.PR_SUBJECT) not in text
    failed = api.Props([(pt.change_type(pt.PR_BODY, pt.PropType.PT_ERROR), 0x8004010F)])
    assert "MAPI_E_NOT_FOUND" in repr(failed)
    event = api.Event(kind=0x100, seq=1, table_event=3, row=[[pt.PR_SUBJECT, "Hi"]])
    assert "table_modified" in repr(event) and "PR_SUBJECT" in str(event)
    assert str(pt.PR_SUBJECT) not in repr(event)


def test_set_props_too_big_says_use_a_stream(server: Server) -> None:
    message = api.MapiObject(None, 1)  # type: ignore[arg-type]  # refused before any I/O
    with pytest.raises(errors.TooBig, match="open_stream"):
        message.set_props({"PR_BODY": "x" * 600_000})
    with pytest.raises(errors.TooBig, match="stream"):
        message.set_props({"PR_HTML": b"x" * (2 << 20)})
    # The server's per-property MAPI_E_TOO_BIG is raised the same way, not returned.
    decode = api._problems([[pt.PR_BODY, "x"]])
    with pytest.raises(errors.TooBig, match="PR_BODY"):
        decode(0, [[0, pt.PR_BODY, errors.Hresult.MAPI_E_TOO_BIG]])
    assert decode(0, [[0, pt.PR_BODY, errors.Hresult.MAPI_E_NO_ACCESS]]) == [
        [0, pt.PR_BODY, errors.Hresult.MAPI_E_NO_ACCESS]
    ]

    async def end_to_end(session: api.Session) -> str:
        folder = await _folder(session, "TooBig")
        msg = await folder.create_message()
        with pytest.raises(errors.TooBig, match="stream"):
            await msg.set_props({"PR_BODY": "y" * 600_000})
        return "refused"

    assert with_session(server, end_to_end) == "refused"


def test_autodiscover_helpers() -> None:
    assert parse_email_address("demo@localhost") == EmailAddress("demo", "localhost")
    assert parse_email_address("a.b@Example.ORG:8443") == EmailAddress("a.b", "example.org", 8443)
    for other in ("ncacn_ip_tcp:h[1]", "https://x/", "demo@", "@x", "a@b/c"):
        assert parse_email_address(other) is None
    with pytest.raises(ValueError):
        parse_email_address("a@b:99999")
    assert hosts_to_ask(EmailAddress("a", "example.org")) == [
        ("example.org", 443),
        ("autodiscover.example.org", 443),
    ]
    found = parse_answer(
        b'{"Url": "https://mail.example.org:8443/", "EndpointMapperPort": 1135,'
        b' "CertificateFingerprintSha256": "AB:CD", "Http2": true}'
    )
    assert found.url == "https://mail.example.org:8443/?epm=1135"
    assert found.fingerprint == "AB:CD" and found.http2


def test_email_address_finds_the_server_by_autodiscover(server: Server) -> None:
    """``--server demo@localhost:PORT``: autodiscover names the tunnel and its pin."""
    assert server.tunnel_url and server.fingerprint
    port = server.tunnel_url.split("://")[1].split("/")[0].rsplit(":", 1)[1]
    env = server.env()
    del env["MAPI_USER"]  # the address's own user
    address = f"demo@localhost:{port}"
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "--server", address,
         "--fingerprint", server.fingerprint, "--json", "tree"],
        cwd=ROOT, env=env, capture_output=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert "Inbox" in {f["path"] for f in json.loads(result.stdout)["folders"]}
    unpinned = run(server, "--server", address, "tree")  # self-signed: refused, with a hint
    _one_line_error(unpinned, 1, b"--fingerprint")

    async def main() -> str:
        with trio.fail_after(TIMEOUT):
            async with api.connect(
                address, "demo", server.password, fingerprint=server.fingerprint
            ) as session:
                return session.user

    assert trio.run(main) == "demo"


# --- 4. SIGTERM ends the session like Ctrl-C ---------------------------------------------


@pytest.mark.parametrize(
    ("command", "signum"),
    [("watch", signal.SIGTERM), ("watch", signal.SIGINT), ("sync", signal.SIGTERM)],
    ids=["watch-SIGTERM", "watch-SIGINT", "sync-follow-SIGTERM"],
)
async def test_signal_disconnects_the_session(
    nursery: trio.Nursery, tmp_path: Path, command: str, signum: signal.Signals
) -> None:
    """``watch`` or ``sync --follow`` stopped by SIGTERM says goodbye to the server, as
    Ctrl-C does: its session and subscriptions are gone at once, not kept until the idle
    timeout."""
    running = await start_server(nursery, tmp_path / "data", {"alice": "alice-password-1"})
    hub = running.store.notifications
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
    env.update(
        MAPI_SERVER=f"ncacn_ip_tcp:127.0.0.1[{running.epm_port}]",
        MAPI_USER="alice",
        MAPI_PASSWORD="alice-password-1",
        PYTHONPATH=str(ROOT),
    )
    with trio.fail_after(TIMEOUT):
        args = ["watch", "inbox"]
        if command == "sync":
            args = ["sync", "inbox", str(tmp_path / "mirror"), "--follow"]
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "clients.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            seen = b""
            while b"\n" not in seen:
                chunk = await proc.stdout.receive_some()
                assert chunk, "watch ended before watching"
                seen += chunk
            assert seen.startswith(b"watching inbox" if command == "watch" else b"inbox -> ")
            assert hub.statistics()["subscribers"] == 1
            proc.send_signal(signum)
            await proc.wait()
            err = b""
            while chunk := await proc.stderr.receive_some():
                err += chunk
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert b"Traceback" not in err, err
    assert proc.returncode == (130 if signum == signal.SIGINT else 128 + signum), err
    # The client exits only after the server answered its disconnect: no wait needed.
    assert hub.statistics()["subscribers"] == 0
