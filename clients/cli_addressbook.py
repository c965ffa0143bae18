"""Address-book commands of ``mapi-cli``: ``resolve NAME...``, ``gal``, and the name
resolution behind ``create``/``send --to NAME``.

They connect to the address book (:func:`clients.addressbook.open_address_book`) with
the same server, user, password and options as every other command, without opening
the store. ``resolve`` prints one line per name (its entry, its candidates when
ambiguous, or "unknown") and exits 1 when any name did not resolve to one entry.
``gal`` lists the Global Address List (``--search TEXT``: display names starting with
TEXT; ``--anr``: ambiguous name resolution instead). A ``--to``/``--cc``/``--bcc``
value that is not an address (no ``@``) is resolved; names that are ambiguous or
unknown stop the command before anything is created, one line each.
"""

from __future__ import annotations

import argparse
import email.utils
from collections.abc import Callable
from typing import Any

from clients.addressbook import AddressBook, Entry, Resolution, open_address_book
from clients.cli_format import UsageError, dump_json, render_table
from clients.cli_safety import printable

#: Columns of ``gal``'s table: header and attribute.
_GAL_COLUMNS = (
    ("NAME", "display_name"),
    ("ADDRESS", "smtp_address"),
    ("TITLE", "title"),
    ("DEPARTMENT", "department"),
    ("OFFICE", "office"),
    ("PHONE", "phone"),
    ("COMPANY", "company"),
)


class UnresolvedNames(Exception):
    """Recipient names that did not resolve to one address-book entry (each line of
    :attr:`lines` says which and why)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def add_addressbook_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``resolve`` and ``gal`` (``command`` makes a subparser, as
    :func:`clients.cli.build_parser` does)."""
    cmd = command(
        "resolve",
        "resolve names in the address book (display name, login name, e-mail address, or "
        "the start of one): one line per name with its entry, its candidates when "
        "ambiguous, or 'unknown'; exit status 1 unless every name resolved to one entry",
    )
    cmd.add_argument("names", nargs="+", metavar="NAME")
    cmd = command(
        "gal",
        "list the Global Address List (name, address, title, department, office, phone, "
        "company), in display-name order",
    )
    cmd.add_argument("--search", metavar="TEXT", help="only display names starting with TEXT")
    cmd.add_argument(
        "--anr",
        action="store_true",
        help="with --search: match as name resolution does (names, login names, "
        "addresses, or the start of a word of them)",
    )
    cmd.add_argument("--offset", type=int, default=0, help="skip N entries")
    cmd.add_argument("--limit", type=int, default=0, help="at most N entries (0: all)")


def open_book(args: argparse.Namespace, password: str) -> Any:
    """The address book of ``args``'s server, as ``connect`` reaches the store."""
    return open_address_book(
        args.server,
        args.user,
        password,
        fingerprint=args.fingerprint,
        http2=not args.http1,
        auth_level=args.auth_level,
        auth_type=args.auth_type or "ntlm",
    )


def _entry_text(entry: Entry) -> str:
    address = f" <{entry.smtp_address}>" if entry.smtp_address else ""
    return printable(f"{entry.display_name}{address}")


def resolution_line(res: Resolution) -> str:
    """``NAME: Display Name <address>``, ``NAME: ambiguous: A <a>, B <b>``, or
    ``NAME: unknown``."""
    name = printable(repr(res.name))
    if res.entry is not None:
        return f"{name}: {_entry_text(res.entry)}"
    if res.candidates:
        listed = ", ".join(_entry_text(c) for c in res.candidates)
        return f"{name}: ambiguous: {listed}"
    return f"{name}: unknown"


def _write(text: str) -> None:
    print(text)


async def run_addressbook_command(args: argparse.Namespace, password: str) -> int:
    """Run ``resolve`` or ``gal``."""
    async with open_book(args, password) as book:
        if args.command == "resolve":
            return await _resolve(book, args)
        return await _gal(book, args)


async def _resolve(book: AddressBook, args: argparse.Namespace) -> int:
    results = await book.resolve(args.names)
    if args.json:
        _write(dump_json({"resolutions": [r.as_dict() for r in results]}))
    else:
        for res in results:
            _write(resolution_line(res))
    return 0 if all(r.entry is not None for r in results) else 1


async def _gal(book: AddressBook, args: argparse.Namespace) -> int:
    if args.offset < 0 or args.limit < 0:
        raise UsageError("--offset and --limit must be 0 or more")
    if args.search is not None:
        entries = (await book.search(args.search, anr=args.anr))[args.offset :]
        if args.limit:
            entries = entries[: args.limit]
        total = len(entries)
    elif args.limit:
        page = await book.gal_page(args.offset, args.limit)
        entries, total = page.entries, page.total
    else:
        entries = []
        index = 0
        async for entry in book.gal():
            if index >= args.offset:
                entries.append(entry)
            index += 1
        total = index
    if args.json:
        _write(dump_json({"total": total, "entries": [e.as_dict() for e in entries]}))
        return 0
    rows = [[printable(getattr(e, attr) or "") for _, attr in _GAL_COLUMNS] for e in entries]
    if rows:
        _write(render_table([h for h, _ in _GAL_COLUMNS], rows, set()))
    return 0


def _is_address(value: str) -> bool:
    _, addr = email.utils.parseaddr(value)
    return "@" in addr


async def resolve_recipient_args(args: argparse.Namespace, password: str) -> None:
    """Replace each ``--to``/``--cc``/``--bcc`` value that is a name, not an address,
    by ``Display Name <address>`` from the address book.

    Raises:
        UnresolvedNames: names that are ambiguous (their candidates listed), unknown,
            or whose entry has no e-mail address; one line each.
    """
    kinds = ("to", "cc", "bcc")
    names = sorted({v for kind in kinds for v in getattr(args, kind) or [] if not _is_address(v)})
    if not names:
        return
    async with open_book(args, password) as book:
        results = {r.name: r for r in await book.resolve(names)}
    problems: list[str] = []
    for name in names:
        res = results[name]
        if res.entry is None:
            problems.append(resolution_line(res))
        elif not res.entry.smtp_address:
            problems.append(
                f"{printable(repr(name))}: {_entry_text(res.entry)} has no e-mail address"
            )
    if problems:
        raise UnresolvedNames(problems)
    for kind in kinds:
        values = getattr(args, kind) or []
        setattr(args, kind, [_as_address(results[v].entry) if v in results else v for v in values])


def _as_address(entry: Entry | None) -> str:
    assert entry is not None and entry.smtp_address
    return email.utils.formataddr((entry.display_name, entry.smtp_address))
