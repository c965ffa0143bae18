"""Two small clients for the firewall demo, built on ``clients.api``.

``watch``: log on (on the LAN or through the tunnel), subscribe to new-mail events on
the whole store, print ``subscribed ...`` once the subscription is in place, then print
each new-mail event as it arrives (with the message's subject and sender). Exits 0 after
``--count`` new mails, 1 when ``--timeout`` passes first.

``send``: log on, compose a message to ``--to`` in Drafts and submit it (delivery to a
mailbox on this server). Exits 0 when every recipient got it.

    python demos/firewall/mailtool.py watch --server 'https://10.251.1.2:443/?epm=135' \\
        --fingerprint AB:CD:... --user bob --password-file bob.pw
    python demos/firewall/mailtool.py send --server 'ncacn_ip_tcp:10.251.1.2[135]' \\
        --user alice --password-file alice.pw --to bob@example.org --subject hello
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from clients.api import Session, connect
from mapi.wire import EventType


def _say(text: str) -> None:
    print(text, flush=True)


def _password(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").splitlines()[0]


def _transport(args: argparse.Namespace) -> str:
    if not args.server.startswith("https://"):
        return "LAN, ncacn_ip_tcp"
    return "tunnel, RPC over HTTP v2 on HTTP/1.1" if args.http1 else "tunnel, HTTP/2"


async def _describe(session: Session, entry_id: bytes) -> str:
    store = await session.open_store()
    try:
        async with await store.open_message(entry_id) as message:
            props = await message.get_props(["PR_SUBJECT", "PR_SENDER_EMAIL_ADDRESS"])
        return f"subject {props.get('PR_SUBJECT')!r} from {props.get('PR_SENDER_EMAIL_ADDRESS')}"
    finally:
        await store.release()


async def watch(args: argparse.Namespace) -> int:
    password = _password(args.password_file)
    with trio.move_on_after(args.timeout):
        async with connect(
            args.server, args.user, password, fingerprint=args.fingerprint, http2=not args.http1
        ) as session:
            store = await session.open_store()
            await store.advise(EventType.NEW_MAIL)
            _say(f"subscribed to new-mail events of {args.user} ({_transport(args)})")
            seen = 0
            while seen < args.count:
                for event in await session.wait_for_events(poll_seconds=10):
                    if event.name != "new_mail":
                        continue
                    seen += 1
                    about = await _describe(session, event["entry_id"])
                    _say(f"event new_mail (seq {event.seq}): {about}")
            return 0
    _say(f"no new-mail event within {args.timeout:g} s")
    return 1


async def send(args: argparse.Namespace) -> int:
    password = _password(args.password_file)
    with trio.fail_after(args.timeout):
        async with connect(args.server, args.user, password) as session:
            store = await session.open_store()
            drafts = await store.open_folder(await store.special_folder("drafts"))
            message = await drafts.create_message()
            await message.set_props({"PR_SUBJECT": args.subject, "PR_BODY": args.body})
            await message.add_recipient(args.to, args.to)
            await message.save()
            result = await message.submit()
    undeliverable = list(result.get("undeliverable", []))
    _say(
        f"{args.user} submitted {args.subject!r} to {args.to} ({_transport(args)}): "
        f"delivered {result.get('delivered')}, undeliverable {undeliverable or 'none'}"
    )
    return 0 if not undeliverable and result.get("delivered") else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailtool.py",
        description="Watch for new mail, or send a message, with clients.api.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, helptext in (
        ("watch", "subscribe to new-mail events and print them as they arrive"),
        ("send", "compose and submit a message to a user of this server"),
    ):
        cmd = sub.add_parser(name, help=helptext, description=helptext.capitalize() + ".")
        cmd.add_argument("--server", required=True, help="ncacn_ip_tcp:host[port] or https://...")
        cmd.add_argument("--user", required=True)
        cmd.add_argument("--password-file", required=True, help="the password's first line")
        cmd.add_argument("--fingerprint", help="tunnel: SHA-256 of the certificate to pin")
        cmd.add_argument("--http1", action="store_true", help="tunnel: RPC over HTTP v2")
        cmd.add_argument(
            "--timeout", type=float, default=30.0, help="give up after this many seconds"
        )
        if name == "watch":
            cmd.add_argument("--count", type=int, default=1, help="new mails to wait for")
        else:
            cmd.add_argument("--to", required=True, help="recipient's e-mail address")
            cmd.add_argument("--subject", default="Hello from inside")
            cmd.add_argument("--body", default="Sent inside the firewall, read outside it.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runner = watch if args.command == "watch" else send
    try:
        return trio.run(runner, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every failure becomes one line and exit status 1
        while isinstance(exc, ExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        print(f"mailtool: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
