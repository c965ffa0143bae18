"""``mapi-cli import`` and ``export`` against a real ``serve`` on loopback.

The commands run in-process on a session of our client (their Context, as the CLI
builds it), except the user-error tests, which run ``mapi-cli`` as a process to see
its exact stderr lines and exit status. The pure readers and writers
(:mod:`clients.mailfiles`) get direct and hypothesis tests at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from serve_helpers import start_server

from clients.api import connect
from clients.cli_folders import Context, open_context, resolve
from clients.cli_mailfiles import cmd_export, cmd_import
from clients.mailfiles import (
    Kind,
    MailFileError,
    MboxSplitter,
    filetime_from_datetime,
    mbox_entry,
    parse_from_line,
    sniff,
    sniff_bytes,
    status_read,
    to_crlf,
)
from mapi.model import proptags as pt
from mapi_anywhere.config import StoreSection

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {"alice": "alice-password"}
ATTACHMENT = bytes(range(256)) * 8


def sample(subject: str, body: str = "Hello,\nsee the attachment.\n", n: int = 0) -> bytes:
    """A multipart message with CRLF line ends, as SMTP delivers it."""
    msg = EmailMessage()
    msg["From"] = "Carol Outside <carol@outside.example>"
    msg["To"] = "Alice <alice@example.org>"
    msg["Cc"] = "dave@example.org"
    msg["Subject"] = subject
    msg["Date"] = f"Tue, 05 Mar 2024 07:{n // 60 % 60:02d}:{n % 60:02d} +0000"
    msg["Message-ID"] = f"<{n}.{subject.replace(' ', '-')}@outside.example>"
    msg.set_content(body)
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="octet-stream", filename="a.bin")
    msg.set_boundary(f"boundary-{n}")  # the same bytes every time
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


MALFORMED = (
    b"From: \xff\xfebroken <x@y>\r\nSubject: =?utf-8?q?half\r\n"
    b"Content-Type: multipart/mixed; boundary=never\r\n\r\n"
    b"no boundary here\r\n--wrong\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@notbase64\r\n"
)


def too_deep(depth: int = 40) -> bytes:
    head = b"Subject: deep\r\n"
    body = b""
    for i in range(depth):
        head += f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
        body = f"\r\n--b{i}--\r\n".encode() + body
    return head + b"Content-Type: text/plain\r\n\r\nbottom\r\n" + body


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True,
        store=StoreSection(max_message_bytes=256 * 1024),
    )  # fmt: skip


def address(server: Any) -> str:
    return f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"


class Cli:
    """The import and export commands on one session, their output captured."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.out = io.StringIO()
        ctx.out = self.out
        ctx.json = True

    async def run(self, command: str, folder: str, *rest: str, fmt: str | None = None) -> Any:
        self.out.seek(0)
        self.out.truncate()
        if command == "import":
            args = argparse.Namespace(command=command, folder=folder, files=list(rest))
            status = await cmd_import(self.ctx, args)
        else:
            args = argparse.Namespace(command=command, folder=folder, dest=rest[0], format=fmt)
            status = await cmd_export(self.ctx, args)
        return status, json.loads(self.out.getvalue())

    async def mkdir(self, name: str) -> None:
        top = await self.ctx.store.open_folder(self.ctx.roles["ipm_subtree"])
        await (await top.create_folder(name)).release()
        await top.release()

    async def messages(self, folder: str) -> list[dict[str, Any]]:
        target = await resolve(self.ctx, folder)
        columns = [
            pt.PR_SUBJECT_W, pt.PR_MESSAGE_FLAGS, pt.PR_MESSAGE_DELIVERY_TIME, pt.PR_HASATTACH,
        ]  # fmt: skip
        sort = [(pt.PR_MESSAGE_DELIVERY_TIME, False)]
        rows = [dict(r) async for r in target.folder.contents(columns, sort=sort)]
        await target.folder.release()
        return rows


@pytest.fixture
async def cli(server):
    async with connect(address(server), "alice", PASSWORDS["alice"]) as session:
        yield Cli(await open_context(session))


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


async def test_import_eml_mbox_and_maildir(cli, tmp_path):
    with trio.fail_after(60):
        eml = tmp_path / "one.eml"
        eml.write_bytes(sample("eml message"))
        os.utime(eml, (1_700_000_000, 1_700_000_000))
        # An mbox with a body line "From " (quoted >From on disk) and one ">From "
        # (quoted >>From), Unix line ends as mbox files have them, one marked read.
        quoting = sample("quoting", body="Hi\n\nFrom here on, all is well.\n>From there too\n")
        read_one = sample("read in mutt").replace(b"\r\n\r\n", b"\r\nStatus: RO\r\n\r\n", 1)
        when = dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        box = tmp_path / "old.mbox"
        box.write_bytes(
            mbox_entry(quoting, "carol@outside.example", when)
            + mbox_entry(read_one, "carol@outside.example", when + dt.timedelta(seconds=1))
        )
        assert b"\n>From here on" in box.read_bytes() and b"\n>>From there" in box.read_bytes()
        maildir = tmp_path / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        (maildir / "new" / "1.host").write_bytes(sample("maildir new").replace(b"\r\n", b"\n"))
        (maildir / "cur" / "2.host:2,S").write_bytes(sample("maildir seen").replace(b"\r\n", b"\n"))
        (maildir / "cur" / "3.host:2,F").write_bytes(sample("maildir flagged"))
        (maildir / "tmp" / "4.host").write_bytes(sample("unfinished"))
        for i, name in enumerate(["new/1.host", "cur/2.host:2,S", "cur/3.host:2,F"]):
            os.utime(maildir / name, (1_600_000_000 + i, 1_600_000_000 + i))

        status, result = await cli.run("import", "inbox", str(eml), str(box), str(maildir))
        assert (status, result["imported"], result["skipped"]) == (0, 6, [])
        rows = {r[pt.PR_SUBJECT_W]: r for r in await cli.messages("inbox")}
        assert set(rows) == {
            "eml message", "quoting", "read in mutt", "maildir new", "maildir seen",
            "maildir flagged",
        }  # fmt: skip
        read = {s for s, r in rows.items() if r[pt.PR_MESSAGE_FLAGS] & pt.MSGFLAG_READ}
        assert read == {"read in mutt", "maildir seen"}
        assert all(r[pt.PR_HASATTACH] for r in rows.values())
        # Delivery times: the From_ line, else the file's modification time.
        assert rows["quoting"][pt.PR_MESSAGE_DELIVERY_TIME] == filetime_from_datetime(when)
        eml_time = dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)
        assert rows["eml message"][pt.PR_MESSAGE_DELIVERY_TIME] == filetime_from_datetime(eml_time)

        # What was stored is the message as it arrived: quoting undone, CRLF line ends.
        out = tmp_path / "out"
        status, result = await cli.run("export", "inbox", str(out))
        assert (status, result["exported"], result["format"]) == (0, 6, "eml")
        exported = list(files_of(out).values())
        assert exported[0] == sample("maildir new")  # oldest first (1600000000)
        assert quoting in exported and sample("eml message") in exported
        assert (out / "000001.eml").stat().st_mode & 0o777 == 0o600


async def test_round_trip_is_byte_identical(cli, tmp_path):
    with trio.fail_after(90):
        for name in ("Source", "Copy", "Copy2"):
            await cli.mkdir(name)
        src = tmp_path / "src"
        src.mkdir()
        for i, raw in enumerate([sample("first"), MALFORMED, sample("third", body="Ünïcode ✓\n")]):
            (src / f"{i}.eml").write_bytes(raw)
            os.utime(src / f"{i}.eml", (1_650_000_000 + i, 1_650_000_000 + i))
        status, result = await cli.run("import", "Source", str(src))
        assert (status, result["imported"]) == (0, 3)
        # A message made through MAPI: no original MIME, rendered from its properties.
        source = await resolve(cli.ctx, "Source")
        message = await source.folder.create_message()
        await message.set_props(
            {pt.PR_SUBJECT_W: "made here", pt.PR_BODY_W: "typed in\r\n",
             pt.PR_SENDER_NAME_W: "Alice", pt.PR_SENDER_EMAIL_ADDRESS_W: "alice@example.org",
             pt.PR_MESSAGE_DELIVERY_TIME: filetime_from_datetime(
                 dt.datetime(2024, 6, 1, tzinfo=dt.UTC))}
        )  # fmt: skip
        await message.add_recipient("Bob", "bob@example.org")
        attachment = await message.create_attachment()
        await attachment.set_props(
            {"PR_ATTACH_METHOD": pt.ATTACH_BY_VALUE, "PR_ATTACH_LONG_FILENAME": "n.txt"}
        )
        stream = await attachment.open_stream(pt.PR_ATTACH_DATA_BIN, write=True, create=True)
        await stream.write(b"notes\n")
        await stream.commit()
        await attachment.save()
        await message.save()

        for fmt, first, second in (
            ("eml", tmp_path / "e1", tmp_path / "e2"),
            ("mbox", tmp_path / "m1.mbox", tmp_path / "m2.mbox"),
        ):
            target = "Copy" if fmt == "eml" else "Copy2"
            status, result = await cli.run("export", "Source", str(first))
            assert (status, result["exported"], result["format"]) == (0, 4, fmt)
            status, result = await cli.run("import", target, str(first))
            assert (status, result["imported"]) == (0, 4)
            status, result = await cli.run("export", target, str(second))
            assert (status, result["exported"]) == (0, 4)
            if fmt == "eml":
                assert files_of(first) == files_of(second)
                originals = files_of(src)
                for i in range(3):  # what arrived comes back byte for byte
                    assert first.joinpath(f"{i + 1:06d}.eml").read_bytes() == originals[f"{i}.eml"]
                made = first.joinpath("000004.eml").read_bytes()
                assert b"Subject: made here\r\n" in made and b"notes" not in made  # base64
            else:
                assert first.read_bytes() == second.read_bytes()
                assert first.read_bytes().count(b"\nFrom ") == 3
                assert b"From carol@outside.example " in first.read_bytes()
        copied = [r[pt.PR_SUBJECT_W] for r in await cli.messages("Copy")]
        assert copied == [r[pt.PR_SUBJECT_W] for r in await cli.messages("Source")]


async def test_skips_with_reasons_and_keeps_going(cli, tmp_path):
    with trio.fail_after(60):
        box = tmp_path / "mixed.mbox"
        when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        huge = sample("huge", body="x" * 400_000 + "\n")  # over the server's 256 KiB
        entries = [sample("ok 1"), too_deep(), huge, MALFORMED, sample("ok 2")]
        box.write_bytes(b"".join(mbox_entry(e, "a@b.example", when) for e in entries))
        status, result = await cli.run("import", "inbox", str(box))
        assert status == 1 and result["imported"] == 3
        reasons = {s["source"]: s["reason"] for s in result["skipped"]}
        assert set(reasons) == {f"{box} #2", f"{box} #3"}
        assert reasons[f"{box} #2"].startswith("MAPI_E_TOO_COMPLEX")
        assert reasons[f"{box} #3"].startswith("too large (")
        # The text summary: a head line, then one line per skipped message.
        cli.ctx.json = False
        await cmd_import(
            cli.ctx, argparse.Namespace(command="import", folder="inbox", files=[str(box)])
        )
        lines = cli.out.getvalue().splitlines()[-3:]
        assert lines[0] == "imported 3 message(s) into inbox; skipped 2:"
        assert lines[1].startswith(f"  {box} #2: MAPI_E_TOO_COMPLEX")


async def test_a_200_message_mbox_streams_through(cli, tmp_path):
    with trio.fail_after(240):
        await cli.mkdir("Bulk")
        box = tmp_path / "bulk.mbox"
        start = dt.datetime(2022, 5, 1, tzinfo=dt.UTC)
        with box.open("wb") as file:
            for n in range(200):
                raw = sample(f"bulk {n}", body=f"message {n}\nFrom the list\n", n=n)
                when = start + dt.timedelta(minutes=n)
                file.write(mbox_entry(raw, "carol@outside.example", when))
        status, result = await cli.run("import", "Bulk", str(box))
        assert (status, result["imported"]) == (0, 200)
        rows = await cli.messages("Bulk")
        assert [r[pt.PR_SUBJECT_W] for r in rows] == [f"bulk {n}" for n in range(200)]
        out = tmp_path / "again.mbox"
        status, result = await cli.run("export", "Bulk", str(out))
        assert (status, result["exported"]) == (0, 200)
        assert out.read_bytes() == box.read_bytes()


async def test_user_errors_are_one_line_each(server, tmp_path):
    with trio.fail_after(60):
        garbage = tmp_path / "notes.txt"
        garbage.write_bytes(b"\x00\x01 just some bytes\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
        env.update(MAPI_SERVER=address(server), MAPI_USER="alice", MAPI_PASSWORD="alice-password")

        async def cli(*args: str) -> tuple[int, list[str]]:
            result = await trio.run_process(
                [sys.executable, "-m", "clients.cli", *args],
                cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            return result.returncode, result.stderr.decode().splitlines()

        status, lines = await cli("import", "inbox", str(tmp_path / "missing.mbox"), str(garbage))
        assert status == 2
        assert lines == [
            f"mapi-cli: {tmp_path / 'missing.mbox'}: no such file or directory",
            f"mapi-cli: {garbage}: not a mailbox file (neither an mbox 'From ' line nor a "
            "message header at its start) (nothing imported)",
        ]
        eml = tmp_path / "a.eml"
        eml.write_bytes(sample("a"))
        status, lines = await cli("import", "No Such Folder", str(eml))
        assert status == 1 and len(lines) == 1 and "no folder 'No Such Folder'" in lines[0]
        (tmp_path / "exists.mbox").write_bytes(b"")
        status, lines = await cli("export", "inbox", str(tmp_path / "exists.mbox"))
        assert status == 2 and lines == [
            f"mapi-cli: {tmp_path / 'exists.mbox'} exists; export to a new file"
        ]
        status, lines = await cli("import", "inbox", str(eml))
        assert status == 0 and lines == []  # no bar: stderr is not a terminal
        status, lines = await cli("--progress", "import", "inbox", str(eml))
        assert status == 0 and all(line.startswith("import [") for line in lines if line)
        assert lines[-1].startswith("import [########################] 100%  3.")  # KiB


# --- the pure readers and writers -------------------------------------------------------


def split(data: bytes, step: int, limit: int = 1 << 20) -> list[Any]:
    splitter = MboxSplitter(limit)
    out = []
    for i in range(0, len(data), step):
        out += splitter.feed(data[i : i + step])
    return out + splitter.end()


def test_mbox_quoting_both_ways_and_from_lines() -> None:
    m1 = b"Subject: a\r\n\r\nFrom me\r\n>From you\r\n>>From them\r\n\r\n"
    m2 = b"Subject: b\r\n\r\nbye\r\n"
    when = dt.datetime(2024, 3, 5, 7, 8, 9, tzinfo=dt.UTC)
    box = mbox_entry(m1, "a@b.example", when) + mbox_entry(m2, "not an address", when)
    assert box.startswith(b"From a@b.example Tue Mar  5 07:08:09 2024\nSubject: a\n")
    assert b"\n>From me\n>>From you\n>>>From them\n\n\nFrom MAILER-DAEMON " in box
    for step in (1, 2, 7, len(box)):
        messages = split(box, step)
        assert [to_crlf(m.raw) for m in messages] == [m1, m2]
        assert [m.index for m in messages] == [1, 2]
    assert parse_from_line(b"From a@b Tue Mar  5 07:08:09 2024") == ("a@b", when)
    assert parse_from_line(b"From a@b Tue Mar  5 07:08:09 +0100 2024")[1] == when
    assert parse_from_line(b"From a@b whenever") == ("a@b", None)
    # A "From " line inside a message without a blank line before it is content.
    assert len(split(b"From x Tue Mar  5 07:08:09 2024\nA: b\nFrom y\n", 3)) == 1


def test_mbox_limits_and_bad_input() -> None:
    box = b"From x Tue Mar  5 07:08:09 2024\n" + b"y" * 100_000 + b"\n\nFrom z\nA: b\n"
    big, small = split(box, 4096, limit=1000)
    assert big.raw is None and big.size == 100_001
    assert small.raw == b"A: b\n"
    with pytest.raises(MailFileError, match="not an mbox file"):
        split(b"\n\nSubject: no From_ line\n", 5)
    assert split(b"", 1) == [] and split(b"\n\n", 1) == []


def test_sniffing_and_status(tmp_path: Path) -> None:
    assert sniff_bytes(b"From x y\n", "f") is Kind.MBOX
    assert sniff_bytes(b"\r\nReturn-Path: <a@b>\r\n", "f") is Kind.EML
    with pytest.raises(MailFileError, match="f: empty file"):
        sniff_bytes(b"", "f")
    with pytest.raises(MailFileError, match="no such file"):
        sniff(tmp_path / "nope")
    with pytest.raises(MailFileError, match="not a mailbox"):
        sniff(tmp_path)
    assert status_read(b"A: b\r\nStatus: RO\r\n\r\n")
    assert not status_read(b"A: b\r\nStatus: O\r\n\r\n")
    assert not status_read(b"A: b\r\n\r\nStatus: R\r\n")


_LINE = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)
_SPECIAL = st.sampled_from([b"", b"From x", b">From y", b">>From z", b"From"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_LINE | _SPECIAL, min_size=1, max_size=12), min_size=1, max_size=5),
       st.integers(min_value=1, max_value=64))  # fmt: skip
def test_mbox_round_trip_property(messages: list[list[bytes]], step: int) -> None:
    """Any messages (CRLF, ending in a line end) written as mboxrd read back the same,
    however the file is cut into reads."""
    raws = [b"".join(line + b"\r\n" for line in lines) for lines in messages]
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    box = b"".join(mbox_entry(raw, "a@b.example", when) for raw in raws)
    assert [to_crlf(m.raw) for m in split(box, step)] == raws


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=300))
def test_mbox_splitter_takes_any_bytes(data: bytes, limit: int) -> None:
    """Arbitrary bytes give messages within the limit or MailFileError, nothing else."""
    try:
        messages = split(b"From a b\n" + data, 13, limit=limit)
    except MailFileError:
        return
    for message in messages:
        assert message.raw is None or len(message.raw) <= limit
        assert message.raw is None or message.size == len(message.raw)
