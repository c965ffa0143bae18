"""The ``mapi-anywhere`` command: run the server and query endpoint mappers."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import trio

from dcerpc.allocator import tune_allocator
from mapi_anywhere.config import DEFAULT_CONFIG_TOML, ConfigError, load_config, with_overrides

DESCRIPTION = """\
A MAPI-style object server with a DCE/RPC endpoint mapper and an HTTPS tunnel.

  mapi-anywhere serve                 run on the defaults (endpoint mapper on 127.0.0.1:1135)
  mapi-anywhere serve -c server.toml  run with a configuration file
  mapi-anywhere config > server.toml  write the documented default configuration
  mapi-anywhere lookup 127.0.0.1 -p 1135   list what an endpoint mapper has registered
  mapi-anywhere adduser alice         create a user (asks for the password)
  mapi-anywhere users                 list users
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapi-anywhere",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the server until Ctrl-C",
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
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (overrides [server] log_level)",
    )

    sub.add_parser(
        "config",
        help="print the default configuration file",
        description="Print the documented default configuration (TOML).",
    )

    for name, helptext in (
        ("adduser", "create a user (its mailbox is created on first logon)"),
        ("passwd", "set a user's password"),
        ("deluser", "delete a user and its mailbox"),
        ("users", "list the users"),
    ):
        cmd = sub.add_parser(name, help=helptext, description=helptext.capitalize() + ".")
        cmd.add_argument("-c", "--config", type=Path, help="TOML configuration file")
        cmd.add_argument("--data-dir", help="data directory (overrides [server] data_dir)")
        if name != "users":
            cmd.add_argument("username")
        if name in ("adduser", "passwd"):
            cmd.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from standard input (for scripts)",
            )
        if name == "adduser":
            cmd.add_argument("--display-name", help="the user's display name")
            cmd.add_argument("--email", help="the user's e-mail address")

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
        "--timeout", type=float, default=10.0, help="give up after S seconds (default 10)"
    )
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # At DEBUG, the HTTP/2 libraries log every header they code, Authorization included
    # (the Basic credentials): secrets never reach our logs, whatever the level.
    for library in ("hpack", "h2", "h11"):
        logging.getLogger(library).setLevel(max(logging.INFO, logging.root.level))


def _serve(args: argparse.Namespace) -> int:
    from mapi_anywhere.serve import serve_until_signal

    try:
        config = with_overrides(
            load_config(args.config),
            data_dir=args.data_dir,
            host=args.host,
            log_level=args.log_level,
            epm_port=args.epm_port,
            tunnel_port=args.tunnel_port,
            no_tunnel=args.no_tunnel,
        )
    except ConfigError as exc:
        print(f"mapi-anywhere: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.server.log_level)
    logging.getLogger("mapi_anywhere").info("data directory: %s", config.server.data_dir.resolve())
    tune_allocator()
    try:
        trio.run(serve_until_signal, config)
    except OSError as exc:
        print(f"mapi-anywhere: cannot start: {exc}", file=sys.stderr)
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
        print(f"mapi-anywhere: lookup timed out after {args.timeout} s", file=sys.stderr)
        return 1
    except (ConnectionClosed, RpcFault, OSError) as exc:
        print(f"mapi-anywhere: lookup failed: {exc}", file=sys.stderr)
        return 1
    for entry in entries:
        print(f"{entry.interface}  {entry.tower.string_binding()}  {entry.annotation}")
    if not entries:
        print("(no endpoints registered)")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise ValueError("the passwords differ")
    return first


def _accounts(args: argparse.Namespace) -> int:
    """adduser / passwd / deluser / users, straight on the data directory's databases."""
    from mapi.errors import MapiError
    from mapi.store import ObjectStore

    try:
        config = with_overrides(load_config(args.config), data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"mapi-anywhere: configuration error: {exc}", file=sys.stderr)
        return 2
    store = ObjectStore(config.server.data_dir)
    try:
        if args.command == "users":
            for user in store.list_users():
                print(f"{user.username}\t{user.display_name or ''}\t{user.email or ''}")
        elif args.command == "deluser":
            store.delete_user(args.username)
            print(f"deleted {args.username} and its mailbox")
        else:
            password = _read_password(args)
            if args.command == "adduser":
                store.add_user(
                    args.username, password, display_name=args.display_name, email=args.email
                )
                print(f"created {args.username}")
            else:
                store.set_password(args.username, password)
                print(f"password of {args.username} changed")
    except (MapiError, ValueError) as exc:
        print(f"mapi-anywhere: {args.command}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("adduser", "passwd", "deluser", "users"):
        return _accounts(args)
    if args.command == "config":
        sys.stdout.write(DEFAULT_CONFIG_TOML)
        return 0
    if args.command == "lookup":
        return _lookup(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
