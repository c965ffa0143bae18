"""``mapi-cli``: the command-line client of the object store.

The command parses its arguments (argparse, one subcommand per action), finds the
password (``MAPI_PASSWORD``, ``--password-file`` or a prompt, never the command line),
logs on with :func:`clients.api.connect`, opens the store, and runs one command module:
:mod:`clients.cli_folders` (tree, mkdir, rmdir, rename), :mod:`clients.cli_messages`
(ls, show), :mod:`clients.cli_edit` (create/send, mv/cp/rm, put, get) or
:mod:`clients.cli_mailfiles` (import, export). Exit status: 0 success, 1 a MAPI, server,
connection or local file error (the message names the MAPI error, e.g.
``MAPI_E_NOT_FOUND``), 2 a usage error (checked before connecting where possible:
addresses, ``?epm=``, fingerprints), 130 after Ctrl-C, 128+N after signal N (SIGTERM,
SIGHUP): both end the session with the server on the way out. Every failure is one line
on stderr, never a traceback; text that comes from the server is escaped before it
reaches the terminal (:mod:`clients.cli_safety`).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import io
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from clients.allocator import tune_allocator
from clients.api import (
    AUTH_LEVELS,
    AUTH_TYPES,
    check_fingerprint,
    connect,
    parse_address,
    parse_tunnel_address,
)
from clients.autodiscover import AutodiscoverError, EmailAddress, parse_email_address
from clients.cli_addressbook import (
    UnresolvedNames,
    add_addressbook_commands,
    resolve_recipient_args,
    run_addressbook_command,
)
from clients.cli_edit import cmd_copy, cmd_create, cmd_get, cmd_put, cmd_rm
from clients.cli_folders import Context, cmd_mkdir, cmd_rename, cmd_rmdir, cmd_tree, open_context
from clients.cli_format import UsageError, dump_json
from clients.cli_live import cmd_sync, cmd_watch
from clients.cli_mailfiles import add_mailfile_commands, cmd_export, cmd_import
from clients.cli_messages import cmd_ls, cmd_show
from clients.cli_permissions import add_permission_commands
from clients.cli_safety import printable
from dcerpc.errors import BindRejected, ConnectionClosed, ProtocolError, RpcFault
from mapi.model import errors
from tunnel.errors import TunnelError

DEFAULT_SERVER = "ncacn_ip_tcp:127.0.0.1[1135]"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("mapi-cli")

DESCRIPTION = """\
Command-line client of the mapi-anywhere object store.

Folders are paths from the top of the store (Inbox, Inbox/Projects) or special-folder
roles (inbox, sent, deleted, drafts, outbox, calendar, contacts, tasks, notes, journal);
a leading / forces a literal path. Messages are selected by INDEX (as `ls` numbers them,
newest first), a range like 2-5, or an entry id in hex (`ls --ids`).

examples:
  export MAPI_USER=demo MAPI_PASSWORD=... MAPI_SERVER='ncacn_ip_tcp:mail.lan[1135]'
  mapi-cli tree
  mapi-cli --server https://mail.example.org/ --fingerprint AB:CD:... tree   (via the tunnel)
  mapi-cli --server alice@example.org tree     (the tunnel found by autodiscover; user alice)
  mapi-cli mkdir -p Inbox/Projects/2024
  mapi-cli create Inbox/Projects --subject 'Q3 report' --to 'Bob <bob@example.org>' \\
           --body-file notes.txt --attach report.pdf
  mapi-cli ls inbox --limit 20 --where 'PR_SUBJECT~report' --sort -PR_MESSAGE_DELIVERY_TIME
  mapi-cli ls inbox --columns PR_SUBJECT,PR_MESSAGE_SIZE --ids --json
  mapi-cli show inbox 1
  mapi-cli get inbox 1 0 -o report.pdf       (attachment #0 of the newest message)
  mapi-cli get inbox 1 0 -o Downloads/        (under its own name, made safe; mode 600)
  mapi-cli mv inbox 1 3-5 Inbox/Projects
  mapi-cli rm inbox 2 --hard
  mapi-cli resolve Bob carol@example.org      (the address book: entry, candidates or unknown)
  mapi-cli gal --search bo --json
  mapi-cli send outbox --subject hi --to Bob  (names are resolved in the address book)
  mapi-cli import Inbox/Archive old.mbox ~/Maildir letter.eml
  mapi-cli export inbox inbox.mbox            (or a directory: one .eml file a message)
"""


class SafeFormatter(logging.Formatter):
    """Log lines (``-v``) quote server answers and exceptions too: escape them."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), multiline=True)


def _seconds(text: str) -> float:
    """An argparse type: a duration in seconds, not negative (argparse reports the error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, not {text!r}")
    return value


def _count(text: str) -> int:
    """An argparse type: a count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text!r}")
    return value


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes, before or after the command name."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--server",
        default=default(None),
        help="ncacn_ip_tcp:host[port] on the LAN, https://host:port/[?epm=N] through the "
        "HTTPS tunnel, or your e-mail address user@domain[:port] to find the tunnel by "
        f"autodiscover (env MAPI_SERVER; default {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--fingerprint",
        default=default(None),
        help="tunnel only: SHA-256 of the server certificate to pin, AB:CD:... "
        "(env MAPI_FINGERPRINT; default: verify with the system's trust store)",
    )
    group.add_argument(
        "--http1",
        action="store_true",
        default=default(False),
        help="tunnel only: RPC over HTTP v2 on HTTP/1.1 instead of HTTP/2",
    )
    group.add_argument(
        "--auth-level",
        choices=list(AUTH_LEVELS),
        default=default(None),
        help="DCE/RPC authentication of the store connection, with your password: "
        "privacy (NTLM, every packet signed and sealed), integrity (signed), connect, or "
        "none (env MAPI_AUTH_LEVEL; default: privacy on the LAN, none through the "
        "tunnel, which TLS protects)",
    )
    group.add_argument(
        "--auth-type",
        choices=list(AUTH_TYPES),
        default=default(None),
        help="with --auth-level: ntlm (default) or spnego (NTLM inside SPNEGO)",
    )
    group.add_argument("--user", default=default(None), help="user name (env MAPI_USER)")
    group.add_argument(
        "--password-file",
        default=default(None),
        help="read the password from this file's first line (else env MAPI_PASSWORD, "
        "else a prompt on a terminal)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable output"
    )
    group.add_argument(
        "--progress",
        action="store_true",
        default=default(False),
        help="show a progress bar for transfers even when stderr is not a terminal",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=default(None),
        help="give up after this many seconds (default: no limit)",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="debug logging"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mapi-cli``."""
    parser = argparse.ArgumentParser(
        prog="mapi-cli",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, helptext: str, **kwargs: Any) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=helptext, description=helptext, **kwargs)
        _global_options(cmd, suppress=True)
        return cmd

    cmd = command("tree", "show the folder tree with item and unread counts")
    cmd.add_argument("folder", nargs="?", default="/", help="top of the tree (default: all)")

    cmd = command("ls", "list a folder's messages")
    cmd.add_argument("folder")
    cmd.add_argument(
        "--columns", help="comma-separated properties (default: date, from, subject, size, flags)"
    )
    cmd.add_argument("--sort", help="comma-separated properties, '-' for descending")
    cmd.add_argument(
        "--where",
        action="append",
        help="PROP~TEXT (substring, any case), PROP=VALUE, PROP!=VALUE, PROP>VALUE, "
        "PROP<VALUE (numbers, ISO times); repeat to AND conditions",
    )
    cmd.add_argument("--limit", type=int, default=50, help="at most N rows (0: all; default 50)")
    cmd.add_argument("--offset", type=int, default=0, help="skip N rows")
    cmd.add_argument("--ids", action="store_true", help="show entry ids")

    cmd = command("show", "show a message: headers, body and attachments")
    cmd.add_argument("folder")
    cmd.add_argument("message", metavar="INDEX|ENTRYID")
    cmd.add_argument("--props", action="store_true", help="also list every property")

    for name in ("create", "send"):
        text = (
            "create and save a message (a draft: flagged unsent)"
            if name == "create"
            else "create a message and submit it (delivered on this server, filed in Sent Items)"
        )
        cmd = command(name, text)
        cmd.add_argument("folder")
        cmd.add_argument("--subject", required=True)
        cmd.add_argument("--body", help="the body text")
        cmd.add_argument("--body-file", help="read the body from a UTF-8 file ('-': stdin)")
        for kind in ("to", "cc", "bcc"):
            cmd.add_argument(
                f"--{kind}",
                action="append",
                metavar="ADDR",
                help="'Name <a@b>', a@b, or a name to look up in the address book "
                "(ambiguous or unknown names stop the command)",
            )
        cmd.add_argument("--attach", action="append", metavar="FILE", help="attach a file")

    for name, verb in (("mv", "move"), ("cp", "copy")):
        cmd = command(name, f"{verb} messages to another folder")
        cmd.add_argument("folder")
        cmd.add_argument("items", nargs="+", metavar="SELECTOR... DEST_FOLDER")

    cmd = command("rm", "delete messages (to Deleted Items unless --hard)")
    cmd.add_argument("folder")
    cmd.add_argument("selectors", nargs="+", metavar="SELECTOR")
    cmd.add_argument("--hard", action="store_true", help="delete for good")

    cmd = command("mkdir", "create a folder")
    cmd.add_argument("path")
    cmd.add_argument("-p", "--parents", action="store_true", help="create missing parents too")

    cmd = command("rmdir", "delete a folder (to Deleted Items unless --hard)")
    cmd.add_argument("path")
    cmd.add_argument("-r", "--recursive", action="store_true", help="even if not empty")
    cmd.add_argument("--hard", action="store_true", help="delete for good")

    cmd = command("rename", "rename a folder")
    cmd.add_argument("path")
    cmd.add_argument("newname")

    cmd = command("put", "add a file as an attachment to a saved message")
    cmd.add_argument("folder")
    cmd.add_argument("message", metavar="INDEX|ENTRYID")
    cmd.add_argument("file")

    cmd = command("get", "download an attachment")
    cmd.add_argument("folder")
    cmd.add_argument("message", metavar="INDEX|ENTRYID")
    cmd.add_argument("attach_num", nargs="?", type=int, metavar="ATTACH_NUM")
    cmd.add_argument("-o", "--output", help="file to write ('-': stdout; default: its name)")
    cmd.add_argument("-f", "--force", action="store_true", help="overwrite an existing file")
    cmd.add_argument(
        "--mode", help="permissions of the saved file, octal (default 600: only you can read it)"
    )

    cmd = command("watch", "print events as they arrive (new mail, changes, table rows)")
    cmd.add_argument("folder", nargs="?", help="a folder (default: the whole store)")
    cmd.add_argument("--count", type=_count, help="stop after N events")
    cmd.add_argument("--duration", type=_seconds, help="stop after S seconds")

    cmd = command("sync", "mirror a folder into a directory (one JSON file per message)")
    cmd.add_argument("folder")
    cmd.add_argument("directory")
    cmd.add_argument("--follow", action="store_true", help="keep the mirror current")
    cmd.add_argument("--duration", type=_seconds, help="with --follow, stop after S seconds")
    add_mailfile_commands(command)  # import, export
    add_permission_commands(command, COMMANDS)  # share, permissions
    add_addressbook_commands(command)  # resolve, gal (no store session)
    return parser


COMMANDS: dict[str, Callable[[Context, argparse.Namespace], Awaitable[int]]] = {
    "tree": cmd_tree,
    "ls": cmd_ls,
    "show": cmd_show,
    "create": cmd_create,
    "send": cmd_create,
    "mv": cmd_copy,
    "cp": cmd_copy,
    "rm": cmd_rm,
    "mkdir": cmd_mkdir,
    "rmdir": cmd_rmdir,
    "rename": cmd_rename,
    "put": cmd_put,
    "get": cmd_get,
    "watch": cmd_watch,
    "sync": cmd_sync,
    "import": cmd_import,
    "export": cmd_export,
}


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    """Let ``--sort -PR_X`` mean ``--sort=-PR_X`` (argparse takes ``-PR_X`` for an option)."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--sort":
            value = next(it, None)
            out.append(arg if value is None else f"--sort={value}")
        else:
            out.append(arg)
    return out


def read_password(args: argparse.Namespace) -> str:
    """The password: ``--password-file``, else ``MAPI_PASSWORD``, else a terminal prompt.

    Raises:
        UsageError: no source of a password.
    """
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as file:
                return file.readline().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read --password-file: {exc.strerror}") from None
    password = os.environ.get("MAPI_PASSWORD")
    if password is not None:
        return password
    if sys.stdin.isatty():
        try:
            return getpass.getpass(f"Password for {args.user}: ")
        except EOFError:  # Ctrl-D at the prompt
            raise UsageError("no password given") from None
    raise UsageError("no password: set MAPI_PASSWORD, use --password-file, or run in a terminal")


class Stopped(Exception):
    """A signal asked the client to stop; the session was closed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: Signals that end mapi-cli: the command is cancelled and the session disconnected (so
#: the server does not keep it, its subscriptions and queued events until the idle
#: timeout). Ctrl-C (SIGINT) is taken the same way while a command runs: as the
#: KeyboardInterrupt Python makes of it, it could land in the middle of a call and
#: break the connection the goodbye needs; before and after, it is KeyboardInterrupt.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def run(args: argparse.Namespace, password: str) -> int:
    """Run the command; SIGINT, SIGTERM or SIGHUP cancel it (leaving cleanly) and raise
    Stopped."""
    received: list[int] = []
    async with trio.open_nursery() as nursery:
        command = trio.CancelScope()

        async def stop_on_signal(task_status: trio.TaskStatus[None]) -> None:
            # A signal ignored on purpose (SIGHUP under nohup) stays ignored.
            wanted = [s for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN]
            with trio.open_signal_receiver(*wanted) as signals:
                task_status.started()
                async for signum in signals:
                    received.append(signum)
                    command.cancel()
                    return

        await nursery.start(stop_on_signal)
        with command:
            status = await _run_command(args, password)
        nursery.cancel_scope.cancel()
    if received:
        raise Stopped(received[0])
    return status


async def _run_command(args: argparse.Namespace, password: str) -> int:
    """Log on, open the store and run the command."""
    args.password_value = password  # watch reconnects with it after a cut connection
    live = args.command in ("watch", "sync")  # bounded by --duration/--count instead
    timeout = args.timeout if args.timeout and not live else None
    with trio.fail_after(timeout) if timeout else contextlib.nullcontext():
        if args.command in ("resolve", "gal"):
            return await run_addressbook_command(args, password)
        if args.command in ("create", "send"):
            await resolve_recipient_args(args, password)  # names -> addresses, first
        session_cm = connect(
            args.server,
            args.user,
            password,
            fingerprint=args.fingerprint,
            http2=not args.http1,
            auth_level=args.auth_level,
            auth_type=args.auth_type or "ntlm",
        )
        async with session_cm as session:
            log.debug("logged on as %s at %s", session.user, args.server)
            ctx = await open_context(session, json=args.json, progress=args.progress)
            return await COMMANDS[args.command](ctx, args)


def mapi_message(exc: errors.MapiError) -> str:
    """``MAPI_E_NOT_FOUND: detail`` (the error's name, then the server's detail)."""
    return str(exc)


def _leaf(exc: BaseException) -> BaseException:
    """The first meaningful exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _fail(args: argparse.Namespace | None, status: int, message: str, code: str | None) -> int:
    # Messages quote the server (error details, folder names): escape what they carry.
    print(f"mapi-cli: {printable(message)}", file=sys.stderr)
    if args is not None and getattr(args, "json", False):
        print(dump_json({"error": {"code": code, "message": message}}))
    return status


def _report(args: argparse.Namespace, exc: BaseException) -> int:
    """Turn an exception into a message on stderr and an exit status."""
    log.debug("command failed", exc_info=exc)
    if isinstance(exc, UsageError):
        return _fail(args, EXIT_USAGE, str(exc), "usage")
    if isinstance(exc, UnresolvedNames):  # one line per name, then the status
        for line in exc.lines:
            print(f"mapi-cli: {line}", file=sys.stderr)
        if getattr(args, "json", False):
            print(dump_json({"error": {"code": "unresolved", "message": str(exc)}}))
        return EXIT_ERROR
    if isinstance(exc, errors.LogonFailed):
        # The server's reason when it gave one ("too many failed logons; try again in
        # 40 s", "unknown or expired session"); a bare refusal is a wrong password.
        name = errors.hresult_name(exc.hresult)
        reason = str(exc).removeprefix(name).removeprefix(": ") or "wrong user name or password"
        return _fail(
            args,
            EXIT_ERROR,
            f"logon failed for user {args.user!r} at {args.server}: {reason} ({name})",
            name,
        )
    if isinstance(exc, errors.MapiError):
        return _fail(args, EXIT_ERROR, mapi_message(exc), errors.hresult_name(exc.hresult))
    if isinstance(exc, BrokenPipeError):  # the reader went away (`mapi-cli ls | head`)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    if isinstance(exc, OSError) and exc.filename is not None:  # a local file, not the server
        return _fail(args, EXIT_ERROR, f"{exc.filename}: {exc.strerror or exc}", "file")
    if isinstance(exc, ssl.SSLError):
        return _fail(args, EXIT_ERROR, f"TLS with {args.server} failed: {exc}", "tls")
    if isinstance(exc, ConnectionClosed | OSError | BindRejected | trio.BrokenResourceError):
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return _fail(args, EXIT_ERROR, f"server unreachable at {args.server}: {text}", "connection")
    if isinstance(exc, AutodiscoverError):
        hint = ""
        if "TLS" in str(exc) and not args.fingerprint:
            hint = " (a self-signed certificate? pin it with --fingerprint)"
        return _fail(args, EXIT_ERROR, f"{exc}{hint}", "autodiscover")
    if isinstance(exc, TunnelError):
        status = f" (HTTP {exc.status})" if exc.status else ""
        hint = ""
        if "TLS" in str(exc) and not args.fingerprint:
            hint = " (a self-signed certificate? pin it with --fingerprint)"
        message = f"tunnel to {args.server} failed{status}: {exc}{hint}"
        return _fail(args, EXIT_ERROR, message, "tunnel")
    if isinstance(exc, ProtocolError | RpcFault):
        return _fail(args, EXIT_ERROR, f"protocol error with {args.server}: {exc}", "protocol")
    if isinstance(exc, trio.TooSlowError):
        return _fail(args, EXIT_ERROR, f"timed out after {args.timeout} s", "timeout")
    raise exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mapi-cli`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, handlers=[handler])
    _escape_unencodable_output()
    args.server = args.server or os.environ.get("MAPI_SERVER") or DEFAULT_SERVER
    args.user = args.user or os.environ.get("MAPI_USER")
    args.fingerprint = args.fingerprint or os.environ.get("MAPI_FINGERPRINT")
    args.auth_level = getattr(args, "auth_level", None) or os.environ.get("MAPI_AUTH_LEVEL")
    args.auth_type = getattr(args, "auth_type", None)
    try:
        if args.auth_level is not None and args.auth_level not in AUTH_LEVELS:
            raise ValueError(
                f"MAPI_AUTH_LEVEL: {args.auth_level!r} is not one of {', '.join(AUTH_LEVELS)}"
            )
        email = check_address(args.server)
        check_fingerprint(args.fingerprint)
    except ValueError as exc:
        return _fail(args, EXIT_USAGE, str(exc), "usage")
    if email is not None and not args.user:
        args.user = email.local  # the address's own user, unless told otherwise
    try:
        if not args.user:
            raise UsageError("no user: give --user or set MAPI_USER")
        password = read_password(args)
        tune_allocator()  # megabyte stream calls: see clients.allocator
        return trio.run(run, args, password)
    except BaseException as exc:  # every failure becomes a message
        leaf = _leaf(exc)
        if isinstance(leaf, KeyboardInterrupt):
            print("mapi-cli: interrupted", file=sys.stderr)
            return 130
        if isinstance(leaf, Stopped):
            said = "interrupted" if leaf.signum == signal.SIGINT else f"stopped by {leaf}"
            print(f"mapi-cli: {said}", file=sys.stderr)
            return 128 + leaf.signum
        return _report(args, leaf)


def check_address(server: str) -> EmailAddress | None:
    """Check ``--server`` before connecting; returns it parsed when an e-mail address.

    Raises:
        ValueError: not an address the client understands (the message says why).
    """
    if server.startswith("https://"):
        parse_tunnel_address(server)
        return None
    if server.startswith("ncacn_ip_tcp:"):
        parse_address(server)
        return None
    email = parse_email_address(server)
    if email is None:
        raise ValueError(
            f"not a server address: {server!r} (expected ncacn_ip_tcp:host[port], "
            "https://host:port/ or an e-mail address user@domain)"
        )
    return email


def _escape_unencodable_output() -> None:
    """Print characters the terminal's encoding lacks as escapes instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(main())
