"""The ``mapi-anywhere`` command: run the server, administer it, query endpoint mappers.

Every user error (a bad configuration, a port in use, a missing data directory, no
terminal to ask a password on) is one line on standard error and a non-zero exit
status, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from clients.allocator import tune_allocator
from mapi_anywhere.config import (
    DEFAULT_CONFIG_TOML,
    Config,
    ConfigError,
    load_config,
    with_overrides,
)

DESCRIPTION = """\
A MAPI-style object server with a DCE/RPC endpoint mapper and an HTTPS tunnel.

  mapi-anywhere serve                 run on the defaults (endpoint mapper on 127.0.0.1:1135)
  mapi-anywhere serve -c server.toml  run with a configuration file
  mapi-anywhere config > server.toml  write the documented default configuration
  mapi-anywhere lookup 127.0.0.1 -p 1135   list what an endpoint mapper has registered
  mapi-anywhere adduser alice         create a user (asks for the password)
  mapi-anywhere passwd alice          change a password (ends alice's sessions)
  mapi-anywhere usermod alice --title Engineer --department R&D
                                      change alice's address-book details
  mapi-anywhere deluser alice         delete a user and its mailbox
  mapi-anywhere users                 list users
  mapi-anywhere sessions              list the running server's sessions
  mapi-anywhere sessions --end HANDLE end one of them
  mapi-anywhere quota alice --set 2G  give alice's mailbox a limit of its own
  mapi-anywhere dkim                  print the DKIM record to publish in DNS
  mapi-anywhere queue                 list the outbound mail waiting for delivery

passwd, deluser, usermod, quota and sessions go through the running server's control
socket (<data_dir>/control.sock) when it runs; passwd, deluser, usermod and quota work
on the files otherwise.
"""

#: Commands that need an existing data directory (they never create a store).
_EXISTING_DATA_DIR = ("users", "passwd", "deluser", "sessions", "quota", "usermod")
#: The address-book details adduser and usermod set: option -> directory field.
_DETAIL_OPTIONS = {
    "title": "the job title",
    "department": "the department",
    "office": "the office location",
    "phone": "the business telephone number",
    "company": "the company name",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapi-anywhere",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the server until Ctrl-C or SIGTERM",
        description="Start the endpoint mapper and every service.",
    )
    serve.add_argument(
        "-c",
        "--config",
        type=Path,
        help="TOML configuration file (see `mapi-anywhere config`; default: built-in defaults)",
    )
    serve.add_argument("--data-dir", help="data directory (overrides [server] data_dir)")
    serve.add_argument(
        "--host", help="address every listener binds to (overrides [server] and [tunnel] host)"
    )
    serve.add_argument(
        "--epm-port", type=int, help="endpoint mapper port (overrides [endpoint_mapper] port)"
    )
    serve.add_argument(
        "--tunnel-port", type=int, help="HTTPS tunnel port (overrides [tunnel] port; 0 = dynamic)"
    )
    serve.add_argument("--no-tunnel", action="store_true", help="do not start the HTTPS tunnel")
    serve.add_argument(
        "--smtp-port", type=int, help="incoming SMTP port (overrides [smtp] port; 0 = dynamic)"
    )
    serve.add_argument("--no-smtp", action="store_true", help="do not start the SMTP listener")
    serve.add_argument(
        "--submission-port", type=int,
        help="SMTP submission port, STARTTLS (overrides [submission] port; 0 = dynamic)",
    )  # fmt: skip
    serve.add_argument(
        "--submissions-port", type=int,
        help="SMTP submission port, implicit TLS (overrides [submission] tls_port; 0 = dynamic)",
    )  # fmt: skip
    serve.add_argument(
        "--no-submission", action="store_true", help="do not start the SMTP submission listeners"
    )
    for name, upper, plain, tls in (("imap", "IMAP", 143, 993), ("pop3", "POP3", 110, 995)):
        serve.add_argument(
            f"--{name}-port", type=int,
            help=f"{upper} port, STARTTLS ({plain} in production; overrides [{name}] port; "
            "0 = dynamic)",
        )  # fmt: skip
        serve.add_argument(
            f"--{name}s-port", type=int,
            help=f"{upper} port, implicit TLS ({tls} in production; overrides [{name}] tls_port; "
            "0 = dynamic)",
        )  # fmt: skip
        serve.add_argument(
            f"--no-{name}", action="store_true", help=f"do not start the {upper} listeners"
        )
    serve.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (overrides [server] log_level)",
    )
    serve.add_argument(
        "--log-file",
        help="log to this file instead of standard error (overrides [server] log_file; "
        "reopened when logrotate moves it)",
    )

    sub.add_parser(
        "config",
        help="print the default configuration file",
        description="Print the documented default configuration (TOML).",
    )

    for name, helptext in (
        ("adduser", "create a user (its mailbox is created on first logon)"),
        ("passwd", "set a user's password (the running server ends the user's sessions)"),
        ("deluser", "delete a user and its mailbox (the running server ends its sessions)"),
        ("users", "list the users"),
        ("sessions", "list the running server's sessions, or end some"),
        ("quota", "show a user's mailbox size and limit, or give it a limit of its own"),
        ("usermod", "change a user's address-book details (an empty value clears one)"),
        ("dkim", "print the DKIM DNS record to publish (the key is made on first use)"),
        ("queue", "list the outbound mail queue (read from the files; safe while serve runs)"),
    ):
        cmd = sub.add_parser(name, help=helptext, description=helptext.capitalize() + ".")
        cmd.add_argument("-c", "--config", type=Path, help="TOML configuration file")
        cmd.add_argument("--data-dir", help="data directory (overrides [server] data_dir)")
        if name in ("adduser", "passwd", "deluser", "quota", "usermod"):
            cmd.add_argument("username")
        if name == "quota":
            cmd.add_argument(
                "--set",
                metavar="LIMIT",
                help="the mailbox's own limit: bytes with an optional K/M/G/T suffix (e.g. "
                "500M), 0 for none, or 'default' for the server's [store] "
                "mailbox_quota_bytes",
            )
        if name in ("adduser", "passwd"):
            cmd.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from the first line of standard input (for scripts)",
            )
        if name in ("adduser", "usermod"):
            cmd.add_argument("--display-name", help="the user's display name")
            cmd.add_argument("--email", help="the user's e-mail address")
            for option, what in _DETAIL_OPTIONS.items():
                cmd.add_argument(f"--{option}", help=f"{what} (shown in the address book)")
            hide = cmd.add_mutually_exclusive_group()
            hide.add_argument(
                "--hidden",
                dest="hidden",
                action="store_const",
                const=True,
                help="hide the user from the address book (the GAL and name resolution)",
            )
            if name == "usermod":
                hide.add_argument(
                    "--visible",
                    dest="hidden",
                    action="store_const",
                    const=False,
                    help="show the user in the address book again",
                )
        if name == "sessions":
            group = cmd.add_mutually_exclusive_group()
            group.add_argument("--end", metavar="HANDLE", help="end the session HANDLE")
            group.add_argument("--end-user", metavar="USER", help="end every session of USER")
            cmd.add_argument("--json", action="store_true", help="JSON output (for scripts)")
        if name == "queue":
            cmd.add_argument("--json", action="store_true", help="JSON output (for scripts)")

    lookup = sub.add_parser(
        "lookup",
        help="list the endpoints an endpoint mapper knows",
        description="Query an endpoint mapper with ept_lookup.",
    )
    lookup.add_argument("host", nargs="?", default="127.0.0.1")
    lookup.add_argument(
        "-p", "--port", type=int, default=1135, help="endpoint mapper port (default 1135)"
    )
    lookup.add_argument(
        "--timeout", type=_seconds, default=10.0, help="give up after S seconds (default 10)"
    )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _fail(message: str, status: int = 1) -> int:
    print(f"mapi-anywhere: {message}", file=sys.stderr)
    return status


def _setup_logging(level: str, log_file: Path | None) -> None:
    """Log to standard error, or to ``log_file`` (created mode 0600: the first run logs
    the demo user's password), reopened whenever logrotate moves or removes it."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler()
    else:
        os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    # At DEBUG, the HTTP/2 libraries log every header they code, Authorization included
    # (the Basic credentials): secrets never reach our logs, whatever the level.
    for library in ("hpack", "h2", "h11"):
        logging.getLogger(library).setLevel(max(logging.INFO, logging.root.level))


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _startup_failure(exc: BaseException) -> str | None:
    """One line for a failed start, or None when ``exc`` is not a user-facing error."""
    from mapi_anywhere.listening import StartupError

    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, StartupError):
            return f"cannot start: {leaf}"
    for leaf in leaves:
        if isinstance(leaf, OSError):
            return f"cannot start: {leaf}"
    return None


def _load(args: argparse.Namespace, **overrides: Any) -> Config:
    return with_overrides(load_config(args.config), data_dir=args.data_dir, **overrides)


def _serve(args: argparse.Namespace) -> int:
    from mapi_anywhere.serve import serve_until_signal

    try:
        config = _load(
            args,
            host=args.host,
            log_level=args.log_level,
            log_file=args.log_file,
            epm_port=args.epm_port,
            tunnel_port=args.tunnel_port,
            no_tunnel=args.no_tunnel,
            smtp_port=args.smtp_port,
            no_smtp=args.no_smtp,
            submission_port=args.submission_port,
            submissions_port=args.submissions_port,
            no_submission=args.no_submission,
            imap_port=args.imap_port,
            imaps_port=args.imaps_port,
            no_imap=args.no_imap,
            pop3_port=args.pop3_port,
            pop3s_port=args.pop3s_port,
            no_pop3=args.no_pop3,
        )
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", 2)
    try:
        _setup_logging(config.server.log_level, config.server.log_file)
    except OSError as exc:
        return _fail(f"cannot open the log file: {exc}", 2)
    logging.getLogger("mapi_anywhere").info("data directory: %s", config.server.data_dir.resolve())
    tune_allocator()
    try:
        trio.run(serve_until_signal, config)
    except Exception as exc:
        message = _startup_failure(exc)
        if message is None:
            raise
        logging.getLogger("mapi_anywhere").error("%s", message)
        if config.server.log_file is not None:  # the log went to the file: say it here too
            _fail(message)
        return 1
    return 0


def _lookup(args: argparse.Namespace) -> int:
    from dcerpc.errors import ConnectionClosed, RpcFault
    from endpoint_mapper.client import lookup

    async def bounded() -> list[Any]:
        with trio.fail_after(args.timeout):
            return await lookup(args.host, args.port)

    try:
        entries = trio.run(bounded)
    except trio.TooSlowError:
        return _fail(f"lookup timed out after {args.timeout} s")
    except (ConnectionClosed, RpcFault, OSError, OverflowError) as exc:
        return _fail(f"lookup failed: {exc}")
    for entry in entries:
        print(f"{entry.interface}  {entry.tower.string_binding()}  {entry.annotation}")
    if not entries:
        print("(no endpoints registered)")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise ValueError("no terminal to ask for the password on: use --password-stdin")
        import getpass

        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            raise ValueError("the passwords differ")
    if not password:
        raise ValueError("empty password")
    return password


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("HANDLE", "USER", "ADDRESS", "TRANSPORT", "AGE", "IDLE")
    cells = [
        (
            str(r.get("handle", "")),
            str(r.get("user", "")),
            str(r.get("address") or "-"),
            str(r.get("transport", "")),
            _duration(float(r.get("age") or 0)),
            _duration(float(r.get("idle") or 0)),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *cells]
    )


def _sessions(args: argparse.Namespace, data_dir: Path) -> int:
    import json

    from mapi_anywhere import control

    try:
        if args.end is not None:
            if not control.call(data_dir, "end_session", handle=args.end, timeout=60):
                return _fail(f"sessions: no session {args.end}")
            print(f"ended session {args.end}")
        elif args.end_user is not None:
            count = control.call(data_dir, "end_user_sessions", user=args.end_user, timeout=60)
            print(f"ended {count} session(s) of {args.end_user}")
        else:
            rows = control.call(data_dir, "sessions", timeout=60)
            if args.json:
                print(json.dumps(rows))
            elif rows:
                print(_table(rows))
            else:
                print("(no sessions)")
    except control.NotRunning:
        return _fail(f"sessions: no server is running on {data_dir}")
    except control.ControlError as exc:
        return _fail(f"sessions: {exc}")
    except (OSError, control.ControlProtocolError) as exc:
        return _fail(f"sessions: cannot reach the running server: {exc}")
    return 0


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _quota(args: argparse.Namespace, config: Config) -> int:
    """quota USER [--set LIMIT]: through the running server, else on the files."""
    from mapi.model import errors as mapi_errors
    from mapi.store import ObjectStore
    from mapi_anywhere import control
    from mapi_anywhere.serve import parse_quota_limit, store_limits

    data_dir = config.server.data_dir
    limit = args.set or ""
    try:
        change, value = parse_quota_limit(limit)
        try:
            answer = control.call(data_dir, "quota", user=args.username, limit=limit, timeout=60)
            used, applies, own = answer["used"], answer["limit"], answer["own"]
        except control.NotRunning:
            store = ObjectStore(data_dir, limits=store_limits(config))
            try:
                used, applies, own = store.mailbox_quota(args.username, value, change=change)
            finally:
                store.close()
    except control.ControlError as exc:
        return _fail(f"quota: {exc}")
    except (mapi_errors.MapiError, ValueError, OSError, control.ControlProtocolError) as exc:
        return _fail(f"quota: {exc}")
    where = "its own" if own else "the server's default"
    shown = "no limit" if not applies else f"a limit of {_size(applies)} ({where})"
    print(f"{args.username}: {_size(used)} used, {shown}")
    return 0


def _through_server(args: argparse.Namespace, data_dir: Path, password: str | None) -> bool:
    """passwd / deluser through the running server; False when none runs there."""
    from mapi_anywhere import control

    try:
        if args.command == "deluser":
            control.call(data_dir, "delete_user", user=args.username)
            print(f"deleted {args.username} and its mailbox (its sessions ended)")
        else:
            assert password is not None
            ended = control.call(data_dir, "set_password", user=args.username, password=password)
            print(f"password of {args.username} changed ({ended} session(s) ended)")
    except control.NotRunning:
        return False
    except control.ControlProtocolError as exc:
        raise ValueError(str(exc)) from None
    except control.ControlError as exc:
        raise ValueError(str(exc)) from None
    except OSError as exc:
        raise ValueError(f"cannot reach the running server: {exc}") from None
    return True


def _detail_changes(args: argparse.Namespace) -> dict[str, object]:
    """The details given on the command line (adduser, usermod)."""
    changes: dict[str, object] = {
        key: value
        for key in ("display_name", "email", *_DETAIL_OPTIONS)
        if (value := getattr(args, key, None)) is not None
    }
    if getattr(args, "hidden", None) is not None:
        changes["hidden"] = args.hidden
    return changes


def _usermod(args: argparse.Namespace, data_dir: Path) -> int:
    """usermod USER --title ...: through the running server, else on the files."""
    import json

    from mapi.model.errors import MapiError
    from mapi.store import ObjectStore
    from mapi_anywhere import control

    changes = _detail_changes(args)
    if not changes:
        return _fail("usermod: nothing to change (see mapi-anywhere usermod --help)", 2)
    try:
        control.call(data_dir, "update_user", user=args.username, changes=json.dumps(changes))
        print(f"changed {args.username}")
        return 0
    except control.NotRunning:
        pass
    except (control.ControlError, control.ControlProtocolError) as exc:
        return _fail(f"usermod: {exc}")
    except OSError as exc:
        return _fail(f"usermod: cannot reach the running server: {exc}")
    try:
        store = ObjectStore(data_dir)
    except Exception as exc:
        return _fail(f"usermod: cannot open the store in {data_dir}: {exc}")
    try:
        store.directory.update_user(args.username, **changes)
    except (MapiError, ValueError) as exc:
        return _fail(f"usermod: {exc}")
    finally:
        store.close()
    print(f"changed {args.username}")
    return 0


def _tell_server(data_dir: Path) -> None:
    """A running server reloads the credentials it keeps in memory (the NT hashes NTLM
    needs) at once; without one, nothing to do."""
    from mapi_anywhere import control

    with contextlib.suppress(control.NotRunning, control.ControlError, OSError, ValueError):
        control.call(data_dir, "credentials_changed", timeout=30.0)


def _accounts(args: argparse.Namespace) -> int:
    """adduser / passwd / deluser / users / sessions: through the running server's
    control socket where that matters, on the data directory's databases otherwise."""
    from mapi.model.errors import MapiError
    from mapi.store import ObjectStore
    from mapi_anywhere.listening import StartupError
    from mapi_anywhere.serve import forget_demo_password, prepare_data_dir

    try:
        config = _load(args)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", 2)
    data_dir = config.server.data_dir
    if args.command in _EXISTING_DATA_DIR and not data_dir.is_dir():
        problem = "is not a directory" if data_dir.exists() else "does not exist"
        return _fail(
            f"{args.command}: data directory {data_dir} {problem} "
            "(give --data-dir, or -c with [server] data_dir)"
        )
    if args.command == "sessions":
        return _sessions(args, data_dir)
    if args.command == "quota":
        return _quota(args, config)
    if args.command != "adduser" and not (data_dir / "directory.sqlite3").is_file():
        return _fail(f"{args.command}: {data_dir} holds no store (no directory.sqlite3)")
    if args.command == "usermod":
        return _usermod(args, data_dir)
    try:
        password = _read_password(args) if args.command in ("adduser", "passwd") else None
        if args.command in ("passwd", "deluser") and _through_server(args, data_dir, password):
            return 0
        if args.command == "adduser":
            prepare_data_dir(data_dir)
    except (ValueError, StartupError, OSError) as exc:
        return _fail(f"{args.command}: {exc}")
    try:
        store = ObjectStore(data_dir)
    except Exception as exc:
        return _fail(f"{args.command}: cannot open the store in {data_dir}: {exc}")
    try:
        if args.command == "users":
            for user in store.list_users():
                print(f"{user.username}\t{user.display_name or ''}\t{user.email or ''}")
        elif args.command == "deluser":
            store.delete_user(args.username)
            forget_demo_password(data_dir, args.username)
            print(f"deleted {args.username} and its mailbox")
        elif args.command == "adduser":
            assert password is not None
            details = _detail_changes(args)
            details.pop("display_name", None)
            details.pop("email", None)
            store.directory.add_user(
                args.username, password, display_name=args.display_name, email=args.email,
                **details,
            )  # fmt: skip
            print(f"created {args.username}")
            _tell_server(data_dir)
        else:
            assert password is not None
            store.set_password(args.username, password)
            forget_demo_password(data_dir, args.username)
            print(f"password of {args.username} changed")
    except (MapiError, ValueError) as exc:
        return _fail(f"{args.command}: {exc}")
    finally:
        store.close()
    return 0


def _dkim(args: argparse.Namespace) -> int:
    """Print the TXT record of the outbound DKIM key (docs/smtp.md, "Outbound mail")."""
    from internet_mail.outbound.dkim_sign import record_name, txt_record
    from mapi.store import ObjectStore
    from mapi_anywhere.outbound_service import dkim_key

    try:
        config = _load(args)
    except (ConfigError, OSError) as exc:
        return _fail(f"configuration error: {exc}", 2)
    store = ObjectStore(config.server.data_dir)
    try:
        key = dkim_key(store, config)
    finally:
        store.close()
    value = txt_record(key)
    chunks = " ".join(f'"{value[i : i + 250]}"' for i in range(0, len(value), 250))
    print(f"{record_name(key)}. IN TXT ( {chunks} )")
    return 0


def _queue(args: argparse.Namespace) -> int:
    """List ``<data_dir>/queue/`` (docs/operating.md, "Outbound mail")."""
    from mapi_anywhere.queue_cli import list_queue

    try:
        config = _load(args)
    except (ConfigError, OSError) as exc:
        return _fail(f"configuration error: {exc}", 2)
    data_dir = config.server.data_dir
    if not data_dir.is_dir():
        return _fail(f"queue: data directory {data_dir} does not exist (give --data-dir, or -c)")
    list_queue(data_dir, sys.stdout, json_output=args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in (
            "adduser", "passwd", "deluser", "users", "sessions", "quota", "usermod"
        ):  # fmt: skip
            return _accounts(args)
        if args.command == "config":
            sys.stdout.write(DEFAULT_CONFIG_TOML)
            return 0
        if args.command == "dkim":
            return _dkim(args)
        if args.command == "queue":
            return _queue(args)
        if args.command == "lookup":
            return _lookup(args)
        return _serve(args)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
