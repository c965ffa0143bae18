"""A private Dovecot on loopback: the reference peer of the mail benches and tests.

Dovecot (Debian's ``dovecot-core``, ``-imapd``, ``-pop3d``, ``-lmtpd``) runs in the
foreground (``dovecot -F -c <conf>``) from a configuration written into a temporary
directory of its own: base_dir, state, log file, a passwd-file user database with known
passwords, ``mail_location = maildir:...``, and IMAP, POP3 and LMTP listeners on free
127.0.0.1 ports. Nothing outside that directory is read or written, and :meth:`stop`
removes it. Every wait is bounded in time.

Privileges: as root, Dovecot's own users run its processes (``dovecot`` internal,
``dovenull`` for the login processes) and mail is stored as ``nobody`` (root may not own
mail, and the package's users must not); as another user, everything runs as that user.

``mail_fsync`` is Dovecot's default unless asked: ``optimized`` (fsync "whenever it's
useful to prevent potential data loss", in Dovecot's words); ``always`` fsyncs after
every write.

Use from plain code::

    with Dovecot(users={"alice": "secret"}) as dove:
        imaplib.IMAP4("127.0.0.1", dove.imap_port)

from trio code: ``async with open_dovecot(...) as dove`` (start and stop run in a worker
thread). Tests skip with :func:`dovecot_available`'s reason when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType

import trio

DOVECOT = "/usr/sbin/dovecot"
#: The protocol binaries the harness needs (Debian's layout).
BINARIES = {
    "imap": "/usr/lib/dovecot/imap",
    "pop3": "/usr/lib/dovecot/pop3",
    "lmtp": "/usr/lib/dovecot/lmtp",
}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
DOMAIN = "example.org"


def dovecot_available() -> tuple[bool, str]:
    """``(True, "")`` when Dovecot and its IMAP, POP3 and LMTP binaries are installed,
    else ``(False, reason)``."""
    dovecot = shutil.which("dovecot") or (DOVECOT if os.access(DOVECOT, os.X_OK) else None)
    if dovecot is None:
        return False, "dovecot is not installed (Debian: dovecot-core)"
    for name, path in BINARIES.items():
        if not os.access(path, os.X_OK):
            return False, f"{path} is missing (Debian: dovecot-{name}d)"
    if os.geteuid() == 0:
        for user in ("dovecot", "dovenull", "nobody"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                return False, f"system user {user!r} is missing (made by dovecot-core)"
    return True, ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(
    root: Path, ports: Mapping[str, int], *, internal: str, login: str, fsync: str,
    chroot: bool,
) -> str:  # fmt: skip
    chroot_line = "" if chroot else "  chroot =\n"
    return f"""\
# Written by bench/dovecot_harness.py: a private Dovecot for one test or bench run.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
instance_name = harness-{root.name}
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%n/Maildir
mail_fsync = {fsync}
postmaster_address = postmaster@{DOMAIN}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {ports["imap"]}
  }}
  inet_listener imaps {{
    port = 0
  }}
{chroot_line}}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {ports["pop3"]}
  }}
  inet_listener pop3s {{
    port = 0
  }}
{chroot_line}}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {ports["lmtp"]}
  }}
}}
"""


class Dovecot:
    """One private Dovecot process (see the module docstring)."""

    def __init__(self, users: Mapping[str, str] | None = None, *, fsync: str = "optimized") -> None:
        if fsync not in ("optimized", "always", "never"):
            raise ValueError(f"mail_fsync: {fsync!r}")
        self.users = dict(users or {"alice": "secret"})
        self.fsync = fsync
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.imap_port = self.pop3_port = self.lmtp_port = 0

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> Dovecot:
        ok, reason = dovecot_available()
        if not ok:
            raise RuntimeError(reason)
        # Under /tmp, never a test's deep directory: unix socket paths are short.
        root = Path(tempfile.mkdtemp(prefix="dovecot-"))
        self.root = root
        try:
            self._write(root)
            self._launch(root)
        except BaseException:
            self.stop()
            raise
        return self

    def _write(self, root: Path) -> None:
        if os.geteuid() == 0:
            internal, login, chroot = "dovecot", "dovenull", True
            mail = pwd.getpwnam("nobody")
        else:
            mail = pwd.getpwuid(os.geteuid())
            internal = login = mail.pw_name
            chroot = False
        root.chmod(0o755)  # the mail user walks through it to its Maildir
        (root / "mail").mkdir()
        os.chown(root / "mail", mail.pw_uid, mail.pw_gid)
        lines = [
            f"{name}:{{PLAIN}}{password}:{mail.pw_uid}:{mail.pw_gid}::{root}/mail/{name}::"
            for name, password in self.users.items()
        ]
        (root / "passwd").write_text("\n".join(lines) + "\n")
        (root / "passwd").chmod(0o644)
        ports = {"imap": free_port(), "pop3": free_port(), "lmtp": free_port()}
        self.imap_port, self.pop3_port, self.lmtp_port = ports["imap"], ports["pop3"], ports["lmtp"]
        conf = _config(root, ports, internal=internal, login=login, fsync=self.fsync,
                       chroot=chroot)  # fmt: skip
        (root / "dovecot.conf").write_text(conf)

    def _launch(self, root: Path) -> None:
        with open(root / "stderr.log", "wb") as stderr:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + START_TIMEOUT
        waiting = [self.imap_port, self.pop3_port, self.lmtp_port]
        while waiting:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited ({self.process.returncode}): {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not listen in {START_TIMEOUT} s: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=1):
                    waiting.pop(0)
            except OSError:
                time.sleep(0.05)

    def log(self) -> str:
        """Dovecot's log and standard error so far (for error messages)."""
        if self.root is None:
            return ""
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``) and remove its
        directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- mail -----------------------------------------------------------------------------

    def address(self, user: str) -> str:
        return f"{user}@{DOMAIN}"

    def maildir(self, user: str) -> Path:
        assert self.root is not None
        return self.root / "mail" / user / "Maildir"

    def deliver(self, user: str, messages: Iterable[bytes], sender: str = "") -> int:
        """Deliver ``messages`` to ``user``'s INBOX over one LMTP connection, in order;
        returns how many were accepted (an LMTP refusal raises)."""
        count = 0
        with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=30) as lmtp:
            for message in messages:
                lmtp.sendmail(sender or f"sender@{DOMAIN}", [self.address(user)], message)
                count += 1
        return count


@contextlib.asynccontextmanager
async def open_dovecot(
    users: Mapping[str, str] | None = None, *, fsync: str = "optimized"
) -> AsyncIterator[Dovecot]:
    """:class:`Dovecot` for trio code: started and stopped in a worker thread."""
    dove = Dovecot(users, fsync=fsync)
    await trio.to_thread.run_sync(dove.start)
    try:
        yield dove
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(dove.stop)
