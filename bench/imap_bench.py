"""IMAP reading speed, side by side with Dovecot, on the same 10,000-message mailbox.

The same messages (about 10 KB each, three shapes: plain text, multipart/alternative,
multipart/mixed with a small attachment; distinct subjects made of words to search)
fill the Inbox of one user on each side:

- **ours**: a real ``serve`` (a child process of this script, a temporary data
  directory, the IMAP listeners on free ports, every other mail listener off). The
  child fills the mailbox in-process before serve starts (``prepare_delivery`` and
  ``commit_deliveries`` in batches: the SMTP listener's own path without the wire), so
  each message is stored as SMTP delivery stores it, MIME original included;
- **dovecot**: Dovecot (Debian's ``dovecot-imapd``, started by
  ``bench/dovecot_harness.py`` with a temporary configuration) on a Maildir written
  directly by this script, one file a message as Dovecot's LMTP writes them (LF line
  ends, ``S=`` and ``W=`` sizes in the name); Dovecot builds its index and uid list on
  the first SELECT.

Our IMAP allows ``LOGIN`` only under TLS (docs/imap.md: there is no clear-text
setting), so both sides are measured over TLS: STARTTLS on the plain port, then
``LOGIN``; Dovecot runs with ``ssl = yes`` and our serve's certificate and key (the
same EC P-256 key on both sides, so the TLS work is the same).

Before timing, each side gets one untimed warm-up session (``SELECT INBOX``,
``FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)``, the search): Dovecot's first SELECT
indexes the Maildir and its first FETCH fills its cache; ours assigns the uids and
caches its listing. So every figure is **warm** on both sides. Then each round opens one
session a side (in alternating order) and times, client side, from the command's first
byte sent to its tagged completion read:

- ``SELECT INBOX`` (ms);
- ``FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)`` (ms and messages/s; every ``* n FETCH``
  is counted and must be the mailbox's size);
- ``UID SEARCH SUBJECT <word>`` (ms; both sides must find the same number);

and then an ``mbsync`` (isync) full sync of the Inbox into an empty Maildir (seconds,
``Sync Pull``, ``FSync no`` so the local disk's fsyncs do not hide the server), STARTTLS
with the certificate pinned (``CertificateFile``).

Prints one figure a line (``imap_select_ms ours=... dovecot=...`` and the ratios
``rate ours/dovecot``: above 1 is faster than Dovecot), each the median of ``--rounds``
rounds, and rewrites its section of ``docs/benchmarks.md``.

``--profile FILE``: our server's cProfile statistics (its event loop thread in FILE,
the IMAP core calls in the worker threads, where the store work runs, in FILE.core).

Usage: ``python bench/imap_bench.py [--messages 10000] [--rounds 3] [--no-mbsync]``;
``--quick`` for a smoke run with tiny counts (the docs are still written: pass ``--docs``
elsewhere).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import json
import os
import pstats
import pwd
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dovecot_harness import Dovecot, dovecot_available  # noqa: E402
from rpc_bench import DOCS, write_section  # noqa: E402
from smtp_bench import machine  # noqa: E402

from internet_mail.imap.session import ImapSession  # noqa: E402
from internet_mail.mime import ConvertedMessage, mime_to_mapi  # noqa: E402
from mapi.model.limits import Limits  # noqa: E402
from mapi.objects.delivery import commit_deliveries, prepare_delivery  # noqa: E402
from mapi.store import ObjectStore  # noqa: E402
from mapi_anywhere import config as cfg  # noqa: E402
from mapi_anywhere.serve import run_server  # noqa: E402
from tunnel.config import TunnelConfig  # noqa: E402
from tunnel.drivers.tls import ensure_certificate  # noqa: E402

TITLE = "IMAP reading, side by side with Dovecot (bench/imap_bench.py)"
USER, PASSWORD = "bench", "bench-password"
ADDRESS = f"{USER}@example.org"
MESSAGE_SIZE = 10_000
FILL_BATCH = 250
REPLY_TIMEOUT = 600.0
MBSYNC_TIMEOUT = 1800.0

#: Subject words; the search looks for SEARCH_WORD (in one subject of len(WORDS)).
WORDS = (
    "budget", "meeting", "quarterly", "invoice", "release", "holiday", "roadmap", "hiring",
    "security", "migration", "lunch", "offsite", "deadline", "contract", "feedback",
    "inventory", "newsletter",
)  # fmt: skip
SEARCH_WORD = "roadmap"
TEXT = (
    "Please find the figures below; the numbers for the northern region are late again "
    "and the team would like to hear from you before the end of the week about it."
)


# -- the mailbox ----------------------------------------------------------------------------


def _body_lines(number: int, size: int) -> str:
    words = TEXT.split()
    lines = []
    total = 0
    row = 0
    while total < size:
        start = (number + row) % len(words)
        line = " ".join(words[start:] + words[:start])[:76]
        lines.append(line)
        total += len(line) + 2
        row += 1
    return "\r\n".join(lines) + "\r\n"


def message(number: int) -> bytes:
    """Message ``number`` (CRLF lines, about ``MESSAGE_SIZE`` bytes): plain text,
    multipart/alternative or multipart/mixed with a small attachment, by ``number % 3``."""
    word = WORDS[number % len(WORDS)]
    other = WORDS[(number * 7 + 3) % len(WORDS)]
    day = 1 + number % 28
    head = (
        f"From: Sender {number % 97} <sender{number % 97}@example.net>\r\n"
        f"To: Bench User <{ADDRESS}>\r\n"
        + (f"Cc: Copy Person <copy{number % 13}@example.com>\r\n" if number % 2 else "")
        + f"Subject: {word.capitalize()} notes and {other} plans, number {number}\r\n"
        f"Date: Mon, {day:02d} Jan 2024 12:{number % 60:02d}:00 +0000\r\n"
        f"Message-ID: <imap-bench-{number}@example.net>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    shape = number % 3
    if shape == 0:
        text = _body_lines(number, MESSAGE_SIZE - 600)
        out = head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
    elif shape == 1:
        text = _body_lines(number, (MESSAGE_SIZE - 900) // 3)
        html = "<html><body><p>" + _body_lines(number + 1, (MESSAGE_SIZE - 900) * 2 // 3)
        html += "</p></body></html>\r\n"
        boundary = f"alt-{number}"
        out = (
            head + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
            f"\r\n--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}"
            f"\r\n--{boundary}--\r\n"
        )
    else:
        text = _body_lines(number, MESSAGE_SIZE - 3600)
        blob = bytes((number + i) % 256 for i in range(2000))
        b64 = _base64_lines(blob)
        boundary = f"mixed-{number}"
        out = (
            head + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
            f"\r\n--{boundary}\r\nContent-Type: application/octet-stream; "
            f'name="data-{number}.bin"\r\nContent-Disposition: attachment; '
            f'filename="data-{number}.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            f"{b64}\r\n--{boundary}--\r\n"
        )
    return out.encode()


def _base64_lines(blob: bytes) -> str:
    encoded = base64.b64encode(blob).decode()
    return "\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def expected_hits(messages: int) -> int:
    """How many of ``messages`` have SEARCH_WORD in their subject."""
    return sum(
        1
        for n in range(1, messages + 1)
        if SEARCH_WORD in (WORDS[n % len(WORDS)], WORDS[(n * 7 + 3) % len(WORDS)])
    )


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


def fill_ours(data_dir: Path, messages: int) -> float:
    """Deliver messages 1..``messages`` into the bench user's Inbox in ``data_dir``
    (in-process, ``FILL_BATCH`` a transaction); returns the seconds it took."""
    start = time.perf_counter()
    store = ObjectStore(data_dir)
    try:
        store.add_user(USER, PASSWORD, email=ADDRESS)
        for first in range(1, messages + 1, FILL_BATCH):
            batch = [
                prepare_delivery(
                    store, [ADDRESS], message(n), convert=_convert, delivery_id=b"%d" % n
                )
                for n in range(first, min(first + FILL_BATCH, messages + 1))
            ]
            for result in commit_deliveries(store, batch):
                if isinstance(result, Exception):
                    raise result
    finally:
        store.close()
    return time.perf_counter() - start


def fill_maildir(maildir: Path, messages: int) -> float:
    """Write messages 1..``messages`` into ``maildir``'s ``cur/`` as Dovecot's LMTP would
    (LF line ends, ``S=`` the file size and ``W=`` the CRLF size); returns the seconds."""
    start = time.perf_counter()
    owner = maildir.parent.stat()
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for path in (maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
        os.chown(path, owner.st_uid, owner.st_gid)
    base = 1_700_000_000
    for n in range(1, messages + 1):
        raw = message(n)
        data = raw.replace(b"\r\n", b"\n")
        name = f"{base + n}.M{n}P{os.getpid()}.bench,S={len(data)},W={len(raw)}:2,"
        path = maildir / "cur" / name
        path.write_bytes(data)
        os.chown(path, owner.st_uid, owner.st_gid)
        os.utime(path, (base + n, base + n))
    return time.perf_counter() - start


# -- our server (a child process) -----------------------------------------------------------


def serve(data_dir: Path, messages: int, profile: Path | None) -> None:
    """Fill ``data_dir`` with ``messages`` messages, then run ``serve`` with only the IMAP
    listeners (ports 0) until stdin closes; prints ``{"imap": port, "fill_s": s}`` once
    it listens."""
    filled = fill_ours(data_dir, messages)
    config = cfg.Config(
        server=cfg.ServerSection(data_dir=data_dir),
        endpoint_mapper=cfg.EndpointMapperSection(port=0),
        store=cfg.StoreSection(demo_user=False),
        tunnel=cfg.TunnelSection(enabled=False, settings=TunnelConfig(port=0)),
        smtp=cfg.SmtpSection(enabled=False),
        submission=cfg.SubmissionSection(enabled=False),
        outbound=cfg.OutboundSection(enabled=False),
        imap=cfg.ImapSection(port=0, tls_port=0),
        pop3=cfg.Pop3Section(enabled=False),
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_server, config)
            print(json.dumps({"imap": running.imap_port, "fill_s": filled}), flush=True)
            await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

    if profile is None:
        trio.run(main)
    else:
        _run_profiled(lambda: trio.run(main), profile)


def _run_profiled(run: Callable[[], None], profile: Path) -> None:
    """``run`` under cProfile (this thread), with every call into the IMAP core in the
    worker threads profiled too (one profiler a thread, merged at the end)."""
    profilers: list[cProfile.Profile] = []
    local = threading.local()

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def profiled(*args: Any) -> Any:
            prof = getattr(local, "profiler", None)
            if prof is None:
                prof = local.profiler = cProfile.Profile()
                profilers.append(prof)
            prof.enable()
            try:
                return original(*args)
            finally:
                prof.disable()

        return profiled

    for name in ("receive_data", "resume", "poll"):
        setattr(ImapSession, name, wrap(getattr(ImapSession, name)))
    main = cProfile.Profile()
    main.enable()
    try:
        run()
    finally:
        main.disable()
        main.dump_stats(str(profile))
        if profilers:
            stats = pstats.Stats(profilers[0])
            for prof in profilers[1:]:
                stats.add(prof)
            stats.dump_stats(str(profile) + ".core")


def launch(
    data_dir: Path, messages: int, profile: Path | None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    args = [sys.executable, __file__, "--serve", str(data_dir), "--messages", str(messages)]
    if profile is not None:
        args += ["--profile", str(profile)]
    server = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert server.stdout is not None
    line = server.stdout.readline()  # bounded: EOF if the child cannot start
    if not line:
        server.wait(timeout=30)
        raise RuntimeError(f"the benchmark server did not start (exit {server.returncode})")
    return server, json.loads(line)


def stop(server: subprocess.Popen[bytes]) -> None:
    assert server.stdin is not None
    server.stdin.close()
    try:
        server.wait(timeout=120)
    except subprocess.TimeoutExpired:
        server.terminate()
        server.wait(timeout=10)


# -- Dovecot with TLS -----------------------------------------------------------------------


class TlsDovecot(Dovecot):
    """The harness's Dovecot with ``ssl = yes`` and a given certificate and key (STARTTLS
    on its IMAP port; plain LOGIN stays allowed, the bench does not use it)."""

    def __init__(self, users: dict[str, str], cert: Path, key: Path) -> None:
        super().__init__(users)
        self.cert, self.key = cert, key

    def _write(self, root: Path) -> None:
        super()._write(root)
        (root / "ssl").mkdir()
        shutil.copy(self.cert, root / "ssl" / "cert.pem")
        shutil.copy(self.key, root / "ssl" / "key.pem")
        conf = root / "dovecot.conf"
        text = conf.read_text()
        if "ssl = no\n" not in text:
            raise RuntimeError("the harness's configuration changed: no 'ssl = no' line")
        conf.write_text(
            text.replace(
                "ssl = no\n",
                f"ssl = yes\nssl_cert = <{root}/ssl/cert.pem\nssl_key = <{root}/ssl/key.pem\n",
            )
        )

    def mail_owner(self) -> tuple[int, int]:
        """The uid and gid that own the users' mail."""
        info = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        return info.pw_uid, info.pw_gid


# -- the client -----------------------------------------------------------------------------

_LITERAL = re.compile(rb"\{(\d+)\+?\}$")


class Client:
    """A minimal blocking IMAP client: STARTTLS, LOGIN, then timed commands."""

    def __init__(self, port: int, cafile: Path) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
        self.raw: socket.socket | ssl.SSLSocket = self.sock
        self.buffer = b""
        self.tags = 0
        self.cafile = cafile
        self._line()  # greeting
        self.command(b"STARTTLS")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = False
        self.raw = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.command(f"LOGIN {USER} {PASSWORD}".encode())

    def _fill(self) -> None:
        data = self.raw.recv(1 << 20)
        if not data:
            raise RuntimeError("the server closed the connection")
        self.buffer += data

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def command(self, text: bytes) -> tuple[float, list[bytes]]:
        """Send one command; returns (seconds to its tagged OK, its untagged lines with
        their literals inline). A tagged NO or BAD raises."""
        self.tags += 1
        tag = b"b%d" % self.tags
        start = time.perf_counter()
        self.raw.sendall(tag + b" " + text + b"\r\n")
        untagged: list[bytes] = []
        pieces: list[bytes] = []
        while True:
            line = self._line()
            literal = _LITERAL.search(line)
            if literal is not None:
                size = int(literal.group(1))
                while len(self.buffer) < size:
                    self._fill()
                pieces += [line, b"\r\n", self.buffer[:size]]
                self.buffer = self.buffer[size:]
                continue
            if pieces:
                line = b"".join([*pieces, line])
                pieces = []
            if line.startswith(tag + b" "):
                elapsed = time.perf_counter() - start
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:60]!r}: {line[:200]!r}")
                return elapsed, untagged
            untagged.append(line)

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.command(b"LOGOUT")
        self.raw.close()


@contextlib.contextmanager
def session(port: int, cafile: Path) -> Iterator[Client]:
    client = Client(port, cafile)
    try:
        yield client
    finally:
        client.close()


def measure(port: int, cafile: Path, messages: int) -> dict[str, float]:
    """One timed session: SELECT, FETCH, UID SEARCH (seconds each, and the hits)."""
    with session(port, cafile) as client:
        select, lines = client.command(b"SELECT INBOX")
        exists = [int(line.split()[1]) for line in lines if line.endswith(b" EXISTS")]
        if exists != [messages]:
            raise RuntimeError(f"SELECT: EXISTS {exists}, expected {messages}")
        fetch, lines = client.command(b"FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)")
        fetched = sum(1 for line in lines if b" FETCH (" in line[:30])
        if fetched != messages:
            raise RuntimeError(f"FETCH: {fetched} answers, expected {messages}")
        search, lines = client.command(f"UID SEARCH SUBJECT {SEARCH_WORD}".encode())
        hits = sum(len(line.split()) - 2 for line in lines if line.startswith(b"* SEARCH"))
        if hits != expected_hits(messages):
            raise RuntimeError(f"SEARCH: {hits} hits, expected {expected_hits(messages)}")
    return {"select": select, "fetch": fetch, "search": search, "hits": float(hits)}


MBSYNC_RC = """\
FSync no

IMAPAccount bench
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType STARTTLS
CertificateFile {cert}

IMAPStore far
Account bench

MaildirStore near
Path {root}/
Inbox {root}/INBOX
SubFolders Verbatim

Channel bench
Far :far:
Near :near:
Patterns INBOX
Create Near
Sync Pull
SyncState *
"""


def mbsync(port: int, cafile: Path, work: Path, messages: int) -> float:
    """A full ``mbsync`` of the Inbox into an empty Maildir under ``work``; seconds."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "Mail").mkdir(parents=True)
    rc = work / "mbsyncrc"
    rc.write_text(MBSYNC_RC.format(port=port, user=USER, password=PASSWORD, cert=cafile,
                                   root=work / "Mail"))  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True,
                          timeout=MBSYNC_TIMEOUT)  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"mbsync failed ({done.returncode}): {done.stdout}{done.stderr}")
    got = sum(len(os.listdir(work / "Mail" / "INBOX" / sub)) for sub in ("cur", "new"))
    if got != messages:
        raise RuntimeError(f"mbsync brought {got} messages, expected {messages}")
    return elapsed


# -- the run --------------------------------------------------------------------------------


def load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the mailbox")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median taken)")
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    parser.add_argument("--no-mbsync", action="store_true", help="skip the mbsync figure")
    parser.add_argument("--docs", type=Path, default=DOCS, help="document to update")
    parser.add_argument("--profile", type=Path, help="write our server's cProfile here")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.messages, args.profile)
        return
    if args.quick:
        args.messages, args.rounds = 30, 1
    ok, reason = dovecot_available()
    if not ok:
        sys.exit(f"imap_bench: Dovecot is the reference peer and is missing: {reason}")
    use_mbsync = not args.no_mbsync
    if use_mbsync and shutil.which("mbsync") is None:
        sys.exit("imap_bench: mbsync is missing (Debian: isync); or pass --no-mbsync")

    kinds = ("ours", "dovecot")
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="imap-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir(mode=0o700)
        cert, key = ensure_certificate(data_dir, ["localhost"])
        cafile = Path(tmp) / "cert.pem"
        shutil.copy(cert, cafile)
        cafile.chmod(0o644)
        with TlsDovecot({USER: PASSWORD}, cert, key) as dove:
            server, info = launch(data_dir, args.messages, args.profile)
            try:
                maildir = dove.maildir(USER)
                uid, gid = dove.mail_owner()
                maildir.parent.mkdir(parents=True, exist_ok=True)
                os.chown(maildir.parent, uid, gid)
                fills = {"ours": float(info["fill_s"])}
                fills["dovecot"] = fill_maildir(maildir, args.messages)
                ports = {"ours": int(info["imap"]), "dovecot": dove.imap_port}
                for kind in kinds:  # warm up: indexes, caches, uids
                    measure(ports[kind], cafile, args.messages)
                for round_no in range(args.rounds):
                    order = kinds if round_no % 2 == 0 else kinds[::-1]
                    for kind in order:
                        got = measure(ports[kind], cafile, args.messages)
                        if use_mbsync:
                            got["mbsync"] = mbsync(ports[kind], cafile, Path(tmp) / "mbsync",
                                                   args.messages)  # fmt: skip
                        for name, value in got.items():
                            samples[kind].setdefault(name, []).append(value)
            finally:
                stop(server)
    load_after = load()

    med = {k: {name: statistics.median(v) for name, v in samples[k].items()} for k in kinds}
    ours, dove_ = med["ours"], med["dovecot"]
    n = args.messages
    figures = [
        f"imap_select_ms ours={ours['select'] * 1e3:.1f} dovecot={dove_['select'] * 1e3:.1f}",
        f"imap_fetch_ms ours={ours['fetch'] * 1e3:.1f} dovecot={dove_['fetch'] * 1e3:.1f}",
        f"imap_fetch_msgs_per_s ours={n / ours['fetch']:.0f} dovecot={n / dove_['fetch']:.0f}",
        f"imap_search_ms ours={ours['search'] * 1e3:.1f} dovecot={dove_['search'] * 1e3:.1f}",
    ]
    ratios = {name: dove_[name] / ours[name] for name in ("select", "fetch", "search")}
    if use_mbsync:
        figures.append(f"mbsync_full_sync_s ours={ours['mbsync']:.2f} "
                       f"dovecot={dove_['mbsync']:.2f}")  # fmt: skip
        ratios["mbsync"] = dove_["mbsync"] / ours["mbsync"]
    rates = [f"rate ours/dovecot {name}={ratio:.2f}" for name, ratio in ratios.items()]
    figures.append(f"fill_s ours={fills['ours']:.1f} dovecot={fills['dovecot']:.1f}")
    figures.append(f"search_hits ours={ours['hits']:.0f} dovecot={dove_['hits']:.0f}")
    figures += rates
    for line in figures:
        print(line)
    size = sum(len(message(i)) for i in range(1, 31)) // 30
    lines = [f"- `{line}`" for line in figures]
    lines += [
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; load average "
        f"{load_before} before the run and {load_after} after it (the run itself keeps "
        f"two or three processes busy). {n:,} messages of about "
        f"{size:,} bytes (plain, multipart/alternative, multipart/mixed with a 2 KB "
        f"attachment) in the Inbox on each side; each figure the median of {args.rounds} "
        "rounds in alternating order, timed by the client from the command sent to its "
        "tagged OK; client, our `serve`, Dovecot and mbsync on the same machine, over "
        "loopback. `rate` is Dovecot's time over ours (1.00: as fast; above: faster).",
        "",
        "- Both over TLS: our IMAP accepts LOGIN only under TLS (there is no clear-text "
        "setting), so both sides get STARTTLS then LOGIN, Dovecot with `ssl = yes` and "
        "our certificate and key (EC P-256).",
        "- Warm on both sides: one untimed session (SELECT, FETCH, SEARCH) first, so "
        "Dovecot's index and cache are built (its Maildir is written directly, as its LMTP "
        "would write it) and ours has assigned the uids (our mailbox is filled in-process "
        f"through `prepare_delivery`/`commit_deliveries`, {FILL_BATCH} a transaction).",
        f"- The search is `UID SEARCH SUBJECT {SEARCH_WORD}` (1 subject in {len(WORDS)}); "
        "both sides must find the same messages. mbsync (isync): `Sync Pull` of INBOX "
        "into an empty Maildir, `FSync no`, STARTTLS, default pipelining.",
        "",
        "Target (issue 21): at least half of Dovecot's rate on each (every `rate` at "
        "0.50 or above). " + standing(ratios),
        "",
        "Where our time goes (`--profile`): SELECT answers from the folder listing that "
        "the user's connections share (kept until the mailbox commits) and its cached "
        "counts; FETCH ENVELOPE and SEARCH SUBJECT read each message's header only, once, "
        "and then answer from a shared cache of parsed headers and ENVELOPEs (keyed by "
        "UIDVALIDITY, UID and MODSEQ, so a change misses), much as Dovecot answers from "
        "its index and cache files; SEARCH still evaluates its key on every message in "
        "Python (a few microseconds each). mbsync pipelines one `UID FETCH n "
        "(BODY.PEEK[])` a message; the core answers one in about 0.2 ms (command parsing "
        "and the store read), but serve spends about 0.6 ms of CPU a message in all: the "
        "trio driver hands each command to a worker thread and writes each answer through "
        "TLS on its own, so that per-command overhead is most of the gap, and this figure "
        "swings the most from run to run (0.52 to 0.75 over five runs).",
        "",
        "Before the speed work (the first run of this bench, 1 round): select 259 ms vs "
        "Dovecot's 19, fetch 3,465 ms vs 235, search 2,199 ms vs 32, and mbsync was "
        "quadratic on our side (every command compared and resolved the whole folder).",
    ]
    write_section(TITLE, lines, args.docs)


def standing(ratios: dict[str, float]) -> str:
    """Where we stand against the target, in one sentence."""
    below = [name for name, ratio in ratios.items() if ratio < 0.5]
    if not below:
        return "Met on every measure in this run."
    return "Below it in this run: " + ", ".join(below) + "."


if __name__ == "__main__":
    main()
