#!/usr/bin/env python3
"""Why the tunnel exists: direct RPC versus a firewall that lets HTTPS through only.

Builds three hosts on this machine with network namespaces and veth pairs, runs the
server on the inside one and, from the outside one, shows that:

  1. with the firewall open, the LAN client finds the store through the endpoint
     mapper (port 135) and works on its dynamic port;
  2. with the firewall closed except HTTPS, the endpoint mapper and the dynamic port
     are unreachable (the client fails fast and says so);
  3. through the HTTPS tunnel (HTTP/2, then RPC over HTTP v2 on HTTP/1.1) the same
     client works;
  4. notifications still arrive through the tunnel (a user inside sends mail, the
     new-mail event reaches the client outside).

    outside 10.251.2.2 --- 10.251.2.1 [ firewall: nftables ] 10.251.1.1 --- 10.251.1.2 inside
    (mapifw-outside)             (mapifw-fw, forwards)                      (mapifw-inside)

Needs root (network namespaces, nftables), `ip` (iproute2) and `nft` (nftables). Every
namespace, process and file it makes is removed on exit, on Ctrl-C and on SIGTERM;
leftovers of a crashed run (the `mapifw-` prefix) are removed first. Traffic stays in
the private addresses of its own veths.

Exit status: 0 every check passed, 1 a check failed, 2 usage, 3 prerequisites missing.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: Every namespace and link this demo makes starts with these, so leftovers are ours.
NS_PREFIX = "mapifw-"
LINK_PREFIX = "mfw-"
NS_INSIDE, NS_FW, NS_OUTSIDE = "mapifw-inside", "mapifw-fw", "mapifw-outside"
# veth pairs: (end in the host's namespace, end in the firewall's namespace)
VETH_INSIDE, VETH_FW_INSIDE = "mfw-in", "mfw-fw-in"
VETH_OUTSIDE, VETH_FW_OUTSIDE = "mfw-out", "mfw-fw-out"
INSIDE_NET, OUTSIDE_NET = "10.251.1.0/24", "10.251.2.0/24"
INSIDE_IP, FW_INSIDE_IP = "10.251.1.2", "10.251.1.1"
OUTSIDE_IP, FW_OUTSIDE_IP = "10.251.2.2", "10.251.2.1"
NFT_TABLE = "mapifw"
WORKDIR_PREFIX = "mapifw-demo-"
LOCK_FILE = Path("/run/mapifw-demo.lock")
STORE_UUID = "6d617069-616e-7977-6865-726501000000"
USERS = {"alice": "alice@example.org", "bob": "bob@example.org"}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PREREQ = 0, 1, 2, 3

TOPOLOGY = f"""\
  +---------------------+        +--------------------------+        +---------------------+
  | outside             |  veth  | firewall (nftables)      |  veth  | inside              |
  | {NS_OUTSIDE:<19} |--------| {NS_FW:<24} |--------| {NS_INSIDE:<19} |
  | {OUTSIDE_IP:<19} |        | {FW_OUTSIDE_IP:<11}  {FW_INSIDE_IP:<11} |        | {INSIDE_IP:<19} |
  | mapi-cli, mailtool  |        | forwards, filters        |        | mapi-anywhere serve |
  +---------------------+        +--------------------------+        +---------------------+"""


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop and clean up (SIGINT raises KeyboardInterrupt)."""


class Prerequisite(Exception):
    """Something this demo needs is missing (root, ip, nft, the venv, namespaces)."""


# -- output ------------------------------------------------------------------------------


class Out:
    def __init__(self, ascii_only: bool) -> None:
        self.ok = "OK  " if ascii_only else "✔"
        self.fail = "FAIL" if ascii_only else "✘"
        self.rule = "=" if ascii_only else "═"

    @staticmethod
    def line(text: str = "") -> None:
        print(text, flush=True)

    def header(self, text: str) -> None:
        self.line()
        self.line(self.rule * 88)
        self.line(text)
        self.line(self.rule * 88)

    def note(self, text: str) -> None:
        for part in textwrap.wrap(text, 86) or [""]:
            self.line(f"  {part}")

    def block(self, text: str, prefix: str = "    | ") -> None:
        for part in text.rstrip("\n").splitlines():
            self.line(f"{prefix}{part}")


@dataclass
class Check:
    key: str
    title: str
    passed: bool
    detail: str


@dataclass
class Demo:
    args: argparse.Namespace
    out: Out
    bin_dir: Path
    python: Path
    workdir: Path = field(default_factory=Path)
    checks: list[Check] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server_log: Path = field(default_factory=Path)
    fingerprint: str = ""
    store_port: int = 0

    # -- results ---------------------------------------------------------------------------

    def check(self, key: str, title: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(key, title, passed, detail))
        mark = self.out.ok if passed else self.out.fail
        self.out.line(f"{mark} [{key}] {title}")
        if detail:
            self.out.line(f"       {detail}")
        return passed

    # -- commands --------------------------------------------------------------------------

    def run_in(
        self, ns: str, argv: Sequence[str], *, shown: str, timeout: float | None = None
    ) -> tuple[int, str, float]:
        """Run ``argv`` in namespace ``ns``, show it and its output; (status, output, secs)."""
        where = ns.removeprefix(NS_PREFIX)
        self.out.line(f"  [{where}]$ {shown}")
        started = time.monotonic()
        limit = timeout or self.args.command_timeout
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", ns, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=limit,
                cwd=self.workdir,
                env=self.env(),
            )
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode(errors="replace")
            output += f"\n(killed: no answer within {limit:g} s)"
            self.out.block(output)
            return 124, output, time.monotonic() - started
        output = done.stdout.decode(errors="replace")
        self.out.block(output or "(no output)")
        elapsed = time.monotonic() - started
        self.out.line(f"    -> exit status {done.returncode} after {elapsed:.2f} s")
        return done.returncode, output, elapsed

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
        env["PYTHONPATH"] = str(REPO)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("LANG", "C.UTF-8")
        return env

    def cli(self, *argv: str, user: str = "bob") -> tuple[list[str], str]:
        """A mapi-cli command line for ``user`` (real argv, and how to show it)."""
        common = ["--timeout", f"{self.args.client_timeout:g}", "--user", user]
        common += ["--password-file", f"{user}.pw"]
        real = [str(self.bin_dir / "mapi-cli"), *common, *argv]
        return real, " ".join(["mapi-cli", *map(_quote, common + list(argv))])

    def tunnel_url(self) -> str:
        return f"https://{INSIDE_IP}:{self.args.tunnel_port}/?epm={self.args.epm_port}"

    def lan_address(self, port: int | None = None) -> str:
        return f"ncacn_ip_tcp:{INSIDE_IP}[{port or self.args.epm_port}]"

    def start(self, ns: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running process in ``ns`` (own session, so we can end its group)."""
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=self.env(),
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop_processes(self) -> None:
        for proc in reversed(self.procs):
            _end_group(proc)
        self.procs.clear()


def _quote(arg: str) -> str:
    return f"'{arg}'" if re.search(r"[\[\]?&* ]", arg) else arg


def _end_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- system commands -----------------------------------------------------------------------


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    """Run a setup command (bounded); raise with its stderr when it fails and check=True."""
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def in_ns(ns: str, *argv: str, check: bool = True, stdin: str | None = None) -> str:
    return sh("ip", "netns", "exec", ns, *argv, check=check, stdin=stdin)


def our_namespaces() -> list[str]:
    names = sh("ip", "netns", "list", check=False).split()
    return [n for n in names if n.startswith(NS_PREFIX)]


def cleanup_network(out: Out | None = None) -> None:
    """Remove every namespace and link with our prefixes, and the processes left inside
    those namespaces (idempotent: nothing to do is fine)."""
    for ns in our_namespaces():
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split() if p.isdigit()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if Path(f"/proc/{p}").exists()]
                time.sleep(0.1)
        sh("ip", "netns", "delete", ns, check=False)
        if out is not None:
            out.line(f"  removed namespace {ns}")
    links = sh("ip", "-o", "link", "show", check=False)
    for match in re.finditer(rf"^\d+:\s+({re.escape(LINK_PREFIX)}[\w-]+)[@:]", links, re.M):
        sh("ip", "link", "delete", match[1], check=False)
        if out is not None:
            out.line(f"  removed link {match[1]}")


def cleanup_leftovers(out: Out) -> None:
    """What a run killed with SIGKILL (or a power cut) left: namespaces, links, processes
    in those namespaces, and work directories. Only ever our prefixes, under our lock."""
    cleanup_network(out)
    for stale in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
            out.line(f"  removed {stale} (left by an earlier run)")


@contextlib.contextmanager
def single_run() -> Iterator[None]:
    """One demo at a time on this machine: the names are fixed, so two would collide."""
    with LOCK_FILE.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Prerequisite(f"another run holds {LOCK_FILE}; wait for it to end") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_prerequisites(python: Path) -> None:
    if sys.platform != "linux":
        raise Prerequisite("network namespaces need Linux")
    if os.geteuid() != 0:
        raise Prerequisite(
            "this demo needs root (it creates network namespaces and firewall rules): "
            f"run it as  sudo {sys.executable} {' '.join(sys.argv)}"
        )
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        packages = {"ip": "iproute2", "nft": "nftables"}
        hint = " ".join(packages[t] for t in missing)
        raise Prerequisite(f"missing {', '.join(missing)}: install with  apt-get install -y {hint}")
    for tool in ("mapi-anywhere", "mapi-cli"):
        if not (python.parent / tool).exists():
            raise Prerequisite(
                f"no {tool} next to {python}: create the venv first "
                "(python3 -m venv .venv && .venv/bin/pip install .), or pass --python"
            )
    probe = f"{NS_PREFIX}probe-{os.getpid()}"
    try:
        sh("ip", "netns", "add", probe)
        in_ns(probe, "nft", "add", "table", "inet", NFT_TABLE)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise Prerequisite(f"cannot create a network namespace with nftables here: {exc}") from None
    finally:
        sh("ip", "netns", "delete", probe, check=False)


# -- topology and firewall -----------------------------------------------------------------


def build_network() -> None:
    for ns in (NS_INSIDE, NS_FW, NS_OUTSIDE):
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
    for host_ns, host_if, fw_if, host_ip, fw_ip, other_net in (
        (NS_INSIDE, VETH_INSIDE, VETH_FW_INSIDE, INSIDE_IP, FW_INSIDE_IP, OUTSIDE_NET),
        (NS_OUTSIDE, VETH_OUTSIDE, VETH_FW_OUTSIDE, OUTSIDE_IP, FW_OUTSIDE_IP, INSIDE_NET),
    ):
        sh(
            "ip",
            "link",
            "add",
            host_if,
            "netns",
            host_ns,
            "type",
            "veth",
            "peer",
            "name",
            fw_if,
            "netns",
            NS_FW,
        )
        in_ns(host_ns, "ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        in_ns(NS_FW, "ip", "addr", "add", f"{fw_ip}/24", "dev", fw_if)
        in_ns(host_ns, "ip", "link", "set", host_if, "up")
        in_ns(NS_FW, "ip", "link", "set", fw_if, "up")
        # Only the other private subnet goes through the firewall: no default route.
        in_ns(host_ns, "ip", "route", "add", other_net, "via", fw_ip)
    in_ns(NS_FW, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")


def firewall_open() -> str:
    return f"""\
table inet {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        counter comment "firewall open: everything is forwarded"
    }}
}}
"""


def firewall_https_only(tunnel_port: int, block: str) -> str:
    verdict = "reject with icmpx type admin-prohibited" if block == "reject" else "drop"
    return f"""\
table inet {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{VETH_FW_INSIDE}" oifname "{VETH_FW_OUTSIDE}" accept comment "inside may go out"
        iifname "{VETH_FW_OUTSIDE}" ip daddr {INSIDE_IP} tcp dport {tunnel_port} ct state new \
counter accept comment "HTTPS to the tunnel"
        iifname "{VETH_FW_OUTSIDE}" counter {verdict} comment "everything else from outside"
    }}
}}
"""


def apply_firewall(ruleset: str) -> None:
    # Create-then-delete makes the replacement atomic and idempotent in one transaction.
    script = f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n{ruleset}"
    in_ns(NS_FW, "nft", "-f", "-", stdin=script)


def blocked_packets() -> int:
    listing = in_ns(NS_FW, "nft", "list", "table", "inet", NFT_TABLE)
    match = re.search(r"counter packets (\d+) bytes \d+ (?:reject|drop)", listing)
    return int(match[1]) if match else 0


# -- the demo ------------------------------------------------------------------------------


def write_config(demo: Demo) -> Path:
    # The store's listeners bind the inside host's wildcard address: the tunnel's backend
    # connections go to 127.0.0.1 (tunnel/policy.py AllowList.backend_host), which a bind
    # to 10.251.1.2 alone would refuse. The inside namespace has only lo and its veth, so
    # this serves exactly 10.251.1.2 and loopback. --strict-bind binds 10.251.1.2 only.
    bind = INSIDE_IP if demo.args.strict_bind else "0.0.0.0"
    config = demo.workdir / "server.toml"
    config.write_text(
        f"""\
[server]
data_dir = "{demo.workdir / "data"}"
host = "{bind}"
log_level = "INFO"

[endpoint_mapper]
port = {demo.args.epm_port}

[store]
demo_user = false

[tunnel]
host = "{INSIDE_IP}"
port = {demo.args.tunnel_port}
server_names = ["{INSIDE_IP}"]
""",
        encoding="utf-8",
    )
    return config


def start_server(demo: Demo, config: Path) -> bool:
    out = demo.out
    for user, email in USERS.items():
        password = secrets.token_urlsafe(15)
        pw_file = demo.workdir / f"{user}.pw"
        pw_file.write_text(password + "\n", encoding="utf-8")
        pw_file.chmod(0o600)
        sh(
            str(demo.bin_dir / "mapi-anywhere"),
            "adduser",
            "-c",
            str(config),
            user,
            "--email",
            email,
            "--password-stdin",
            stdin=password + "\n",
        )
        out.line(f"  user {user} <{email}> created (password in {pw_file.name}, mode 0600)")
    demo.server_log = demo.workdir / "server.log"
    out.line(f"  [inside]$ mapi-anywhere serve -c {config.name}")
    out.block(config.read_text(encoding="utf-8"), prefix="    server.toml | ")
    proc = demo.start(
        NS_INSIDE,
        [str(demo.bin_dir / "mapi-anywhere"), "serve", "-c", str(config)],
        demo.server_log,
    )
    deadline = time.monotonic() + demo.args.start_timeout
    log = ""
    while time.monotonic() < deadline and proc.poll() is None:
        log = demo.server_log.read_text(encoding="utf-8", errors="replace")
        if "ready; press Ctrl-C" in log:
            break
        time.sleep(0.1)
    log = demo.server_log.read_text(encoding="utf-8", errors="replace")
    out.block(log, prefix="    server log | ")
    if "ready; press Ctrl-C" not in log:
        why = f"exited with {proc.returncode}" if proc.poll() is not None else "timed out"
        return demo.check("0", "server started inside", False, why)
    match = re.search(r"certificate SHA-256 ([0-9A-F:]{95})", log)
    demo.fingerprint = match[1] if match else ""
    pem = (demo.workdir / "data").glob("*.pem")
    from_cert = ""
    for path in pem:
        text = path.read_text(encoding="utf-8", errors="replace")
        if "BEGIN CERTIFICATE" in text:
            digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(text)).hexdigest().upper()
            from_cert = ":".join(digest[i : i + 2] for i in range(0, 64, 2))
    same = bool(demo.fingerprint) and demo.fingerprint == from_cert
    return demo.check(
        "0",
        "server started inside; tunnel certificate fingerprint from the log",
        same,
        f"{demo.fingerprint or '(none in the log)'}"
        + (" (matches the certificate in the data directory)" if same else " (mismatch!)"),
    )


def step_open(demo: Demo) -> None:
    out = demo.out
    out.header(
        "Step 1/4  Firewall open: the LAN client discovers the store through the endpoint mapper"
    )
    apply_firewall(firewall_open())
    out.note(
        f"The firewall forwards everything. A client outside asks the endpoint mapper "
        f"on {INSIDE_IP}:{demo.args.epm_port} where the store interface is, then talks "
        "to the store on the dynamic port it was given."
    )
    lookup = [
        str(demo.bin_dir / "mapi-anywhere"),
        "lookup",
        INSIDE_IP,
        "-p",
        str(demo.args.epm_port),
    ]
    status, output, _ = demo.run_in(
        NS_OUTSIDE, lookup, shown=f"mapi-anywhere lookup {INSIDE_IP} -p {demo.args.epm_port}"
    )
    match = re.search(rf"{STORE_UUID}.*?ncacn_ip_tcp:[^\[]*\[(\d+)\]", output)
    demo.store_port = int(match[1]) if match else 0
    demo.check(
        "1a",
        "endpoint mapper reachable: the store is registered on a dynamic port",
        status == 0 and demo.store_port > 0,
        f"store interface {STORE_UUID} at {INSIDE_IP}[{demo.store_port}]"
        if demo.store_port
        else "no store in the endpoint mapper's answer",
    )
    argv, shown = demo.cli("--server", demo.lan_address(), "tree")
    status, output, elapsed = demo.run_in(NS_OUTSIDE, argv, shown=shown)
    demo.check(
        "1b",
        "LAN client works: endpoint mapper, then the dynamic port (ncacn_ip_tcp)",
        status == 0 and "Inbox" in output,
        f"folder tree listed in {elapsed:.2f} s" if status == 0 else "the client failed",
    )


def _blocked(demo: Demo, status: int, output: str, elapsed: float) -> tuple[bool, str]:
    """Did the client fail, quickly, with a message (not a hang, not a success)?"""
    reason = output.strip().splitlines()[-1] if output.strip() else "(no message)"
    fast = elapsed <= demo.args.client_timeout + 5
    ok = status not in (0, 124) and "Inbox" not in output and fast and "mapi-cli:" in reason
    how = (
        "the firewall answered the SYN with ICMP admin-prohibited"
        if demo.args.block == "reject"
        else "the firewall dropped the SYN; the client gave up at its --timeout"
    )
    if not ok:
        return False, f"status {status} after {elapsed:.2f} s: {reason}"
    return True, f"failed after {elapsed:.2f} s ({how})"


def step_closed(demo: Demo) -> None:
    out = demo.out
    out.header(
        f"Step 2/4  Firewall closed except HTTPS ({demo.args.tunnel_port}/tcp): direct "
        "RPC is blocked"
    )
    apply_firewall(firewall_https_only(demo.args.tunnel_port, demo.args.block))
    out.note(
        "The firewall now forwards new connections from outside to the tunnel's HTTPS "
        f"port only, and {demo.args.block}s everything else:"
    )
    listing = in_ns(NS_FW, "nft", "list", "table", "inet", NFT_TABLE).expandtabs(4)
    out.block(listing, prefix="    nft | ")
    argv, shown = demo.cli("--server", demo.lan_address(), "tree")
    status, output, elapsed = demo.run_in(NS_OUTSIDE, argv, shown=shown)
    ok, detail = _blocked(demo, status, output, elapsed)
    demo.check(
        "2a",
        f"endpoint mapper ({demo.args.epm_port}/tcp) unreachable, the client "
        "says so without hanging",
        ok,
        detail,
    )
    port = demo.store_port or 49152
    out.note(
        f"Even a client that remembers the store's dynamic port ({port}) from step 1 "
        "cannot reach it:"
    )
    argv, shown = demo.cli("--server", demo.lan_address(port), "tree")
    status, output, elapsed = demo.run_in(NS_OUTSIDE, argv, shown=shown)
    ok, detail = _blocked(demo, status, output, elapsed)
    demo.check("2b", f"store's dynamic port ({port}/tcp) unreachable", ok, detail)
    count = blocked_packets()
    demo.check(
        "2c",
        "the firewall counted the blocked connection attempts",
        count > 0,
        f"{count} packet(s) hit the '{demo.args.block}' rule",
    )


def step_tunnel(demo: Demo) -> None:
    out = demo.out
    out.header("Step 3/4  Same firewall: the same client through the HTTPS tunnel")
    out.note(
        f"The client now gives an https:// address: the tunnel on {INSIDE_IP}:"
        f"{demo.args.tunnel_port} carries the DCE/RPC stream to the endpoint mapper and "
        "to the store inside. The self-signed certificate is pinned by its fingerprint "
        "(from the server's log)."
    )
    for key, label, extra in (
        ("3a", "HTTP/2", []),
        ("3b", "RPC over HTTP v2 on HTTP/1.1", ["--http1"]),
    ):
        argv, shown = demo.cli(
            "--server", demo.tunnel_url(), "--fingerprint", demo.fingerprint, *extra, "tree"
        )
        shown = shown.replace(demo.fingerprint, "$FINGERPRINT")
        status, output, elapsed = demo.run_in(NS_OUTSIDE, argv, shown=shown)
        demo.check(
            key,
            f"tunnel, {label}: the client works",
            status == 0 and "Inbox" in output,
            f"folder tree listed in {elapsed:.2f} s" if status == 0 else "the client failed",
        )


def step_notifications(demo: Demo) -> None:
    out = demo.out
    out.header("Step 4/4  Notifications through the tunnel: new mail from inside, seen outside")
    out.note(
        "bob (outside) subscribes to new-mail events through the tunnel and long-polls "
        "(wait_for_events); alice (inside, on the LAN) sends him a message; the event "
        "reaches bob through the firewall, over HTTPS only."
    )
    tool = str(HERE / "mailtool.py")
    for key, label, extra in (
        ("4a", "HTTP/2", []),
        ("4b", "RPC over HTTP v2 on HTTP/1.1", ["--http1"]),
    ):
        watch_log = demo.workdir / f"watch-{key}.log"
        watch = [
            str(demo.python),
            tool,
            "watch",
            "--server",
            demo.tunnel_url(),
            "--fingerprint",
            demo.fingerprint,
            *extra,
            "--user",
            "bob",
            "--password-file",
            "bob.pw",
            "--timeout",
            f"{demo.args.event_timeout:g}",
        ]
        flags = "".join(f" {flag}" for flag in extra)
        out.line(
            f"  [outside]$ python mailtool.py watch --server '{demo.tunnel_url()}' "
            f"--fingerprint $FINGERPRINT{flags} --user bob --password-file bob.pw &"
        )
        proc = demo.start(NS_OUTSIDE, watch, watch_log)
        lines = _follow(watch_log, proc, "subscribed", demo.args.event_timeout, out)
        if not any("subscribed" in line for line in lines):
            demo.check(
                key,
                f"tunnel, {label}: new-mail event arrives",
                False,
                "the watcher did not subscribe",
            )
            _end_group(proc)
            continue
        subject = f"Lunch? (sent inside, read outside over {label})"
        send = [
            str(demo.python),
            tool,
            "send",
            "--server",
            demo.lan_address(),
            "--user",
            "alice",
            "--password-file",
            "alice.pw",
            "--to",
            USERS["bob"],
            "--subject",
            subject,
        ]
        sent_at = time.monotonic()
        status, _, _ = demo.run_in(
            NS_INSIDE,
            send,
            shown=f"python mailtool.py send --server '{demo.lan_address()}' --user alice ... "
            f"--to {USERS['bob']} --subject '{subject}'",
        )
        lines += _follow(
            watch_log, proc, "event new_mail", demo.args.event_timeout, out, skip=len(lines)
        )
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _end_group(proc)
        event = next((line for line in lines if "event new_mail" in line), "")
        demo.check(
            key,
            f"tunnel, {label}: alice's mail reaches bob as a new-mail event",
            status == 0 and subject in event and proc.returncode == 0,
            f"{time.monotonic() - sent_at:.2f} s from alice's send (logon, compose, submit) "
            "to bob's event outside"
            if event
            else "no event arrived",
        )


def _follow(
    log: Path,
    proc: subprocess.Popen[bytes],
    marker: str,
    timeout: float,
    out: Out,
    skip: int = 0,
) -> list[str]:
    """Show ``log``'s new lines (after ``skip``) until one holds ``marker``, the process
    ends, or ``timeout`` seconds pass; returns the new lines."""
    deadline = time.monotonic() + timeout
    shown: list[str] = []
    while True:
        exited = proc.poll() is not None
        text = log.read_text(encoding="utf-8", errors="replace")
        # Whole lines only, unless the writer has ended.
        lines = (text.splitlines() if exited else text.split("\n")[:-1])[skip:]
        for line in lines[len(shown) :]:
            out.line(f"    watch | {line}")
        shown = lines
        if any(marker in line for line in lines) or exited or time.monotonic() > deadline:
            return shown
        time.sleep(0.05)


def summary(demo: Demo) -> int:
    out = demo.out
    out.header("Summary")
    for check in demo.checks:
        out.line(f"  {out.ok if check.passed else out.fail} [{check.key}] {check.title}")
    failed = [c for c in demo.checks if not c.passed]
    out.line()
    if failed:
        out.line(f"{out.fail} {len(failed)} of {len(demo.checks)} checks failed")
        if demo.server_log.is_file():
            tail = demo.server_log.read_text(encoding="utf-8", errors="replace")
            out.block("\n".join(tail.splitlines()[-25:]), prefix="    server log | ")
        return EXIT_FAILED
    out.line(
        f"{out.ok} all {len(demo.checks)} checks passed: direct RPC needs the endpoint "
        "mapper and a dynamic port; the tunnel needs HTTPS only"
    )
    return EXIT_OK


def run(demo: Demo) -> int:
    out = demo.out
    out.header("Setup  Three hosts in network namespaces, a firewall between them")
    out.line(TOPOLOGY)
    out.line()
    build_network()
    out.note(
        f"Namespaces {NS_OUTSIDE}, {NS_FW} and {NS_INSIDE} and two veth pairs are up; "
        f"{NS_FW} routes between {OUTSIDE_NET} and {INSIDE_NET} (no other route exists)."
    )
    apply_firewall(firewall_open())
    config = write_config(demo)
    if start_server(demo, config):
        step_open(demo)
        step_closed(demo)
        step_tunnel(demo)
        step_notifications(demo)
    return summary(demo)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Interrupted` (SIGINT: KeyboardInterrupt), so the
    cleanup in ``finally`` runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish even when the user presses Ctrl-C again."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epm-port", type=int, default=135, help="endpoint mapper port (135)")
    parser.add_argument("--tunnel-port", type=int, default=443, help="HTTPS tunnel port (443)")
    parser.add_argument(
        "--block",
        choices=["reject", "drop"],
        default="reject",
        help="how the closed firewall blocks: reject (fails at once, default) or drop "
        "(silent; the client gives up after --client-timeout)",
    )
    parser.add_argument(
        "--client-timeout", type=float, default=5.0, help="mapi-cli --timeout (5 s)"
    )
    parser.add_argument(
        "--command-timeout", type=float, default=30.0, help="hard limit per command (30 s)"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=30.0, help="wait for the server (30 s)"
    )
    parser.add_argument(
        "--event-timeout", type=float, default=30.0, help="wait for each notification (30 s)"
    )
    parser.add_argument(
        "--strict-bind",
        action="store_true",
        help="bind the server's RPC listeners to the inside address only, not the inside "
        "host's wildcard (the tunnel then cannot reach its backends: see the README)",
    )
    parser.add_argument(
        "--python",
        type=Path,
        default=REPO / ".venv" / "bin" / "python",
        help="the venv's python; mapi-anywhere and mapi-cli are taken beside it "
        "(default: the project's .venv)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--ascii", action="store_true", help="OK/FAIL instead of ✔/✘")
    parser.add_argument(
        "--check", action="store_true", help="only check the prerequisites (exit 0 or 3)"
    )
    parser.add_argument(
        "--cleanup", action="store_true", help="only remove leftovers of an earlier run"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    encoding = (sys.stdout.encoding or "").lower().replace("-", "")
    out = Out(args.ascii or encoding != "utf8")
    python = args.python if args.python.is_absolute() else Path.cwd() / args.python
    try:
        check_prerequisites(python)
        with single_run():
            if args.check:
                print("run.py: prerequisites OK (root, ip, nft, network namespaces, the venv)")
                return EXIT_OK
            cleanup_leftovers(out)
            if args.cleanup:
                return EXIT_OK
            return run_and_clean_up(args, out, python)
    except Prerequisite as exc:
        print(f"run.py: cannot run the firewall demo: {exc}", file=sys.stderr)
        return EXIT_PREREQ


def run_and_clean_up(args: argparse.Namespace, out: Out, python: Path) -> int:
    demo = Demo(args=args, out=out, bin_dir=python.parent, python=python)
    status = EXIT_FAILED
    try:
        with signals_raise():
            demo.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            status = run(demo)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\nrun.py: interrupted ({str(exc) or 'SIGINT'}); cleaning up", file=sys.stderr)
        status = 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        status = EXIT_FAILED
    finally:
        with signals_ignored():
            out.header("Cleanup")
            demo.stop_processes()
            cleanup_network(out)
            if demo.workdir != Path() and demo.workdir.is_dir():
                if args.keep:
                    out.line(f"  kept {demo.workdir} (until the next run)")
                else:
                    shutil.rmtree(demo.workdir, ignore_errors=True)
                    out.line(f"  removed {demo.workdir}")
            left = our_namespaces()
            out.line(
                f"  {out.fail} left behind: {left}" if left else f"  {out.ok} nothing left behind"
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
