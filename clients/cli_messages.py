"""Reading messages with ``mapi-cli``: selectors, ``ls`` and ``show``.

A message is selected by its INDEX, counted from 1 in a folder's default order
(newest delivery time first, as ``ls`` lists it without ``--sort``/``--where``),
by a range ``3-7``, or by its entry id in hex (``ls --ids`` shows them). All index
selectors of one command are resolved in a single round trip: one contents table,
sorted once, with a seek and a query per selector.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from typing import Any

from clients.api import Attachment, Call, Message, Props, Stream, Table
from clients.cli_folders import PAGE, Context, release_call, resolve
from clients.cli_format import (
    UsageError,
    column_header,
    combine_where,
    display_name,
    flag_names,
    format_time,
    human_size,
    json_value,
    parse_sort,
    parse_tags,
    render_table,
    text_value,
)
from clients.cli_safety import printable
from clients.html_text import decode_html, html_to_text
from mapi.model import errors
from mapi.model import proptags as pt

#: The default order of a folder, which INDEX selectors count in.
DEFAULT_SORT: list[tuple[int, bool]] = [(pt.PR_MESSAGE_DELIVERY_TIME, True)]
DEFAULT_COLUMNS = [
    pt.PR_MESSAGE_DELIVERY_TIME,
    pt.PR_SENDER_NAME,
    pt.PR_SUBJECT,
    pt.PR_MESSAGE_SIZE,
    pt.PR_MESSAGE_FLAGS,
]
_HEADERS = {
    pt.PR_MESSAGE_DELIVERY_TIME: "DATE",
    pt.PR_SENDER_NAME: "FROM",
    pt.PR_MESSAGE_SIZE: "SIZE",
    pt.PR_MESSAGE_FLAGS: "FLAGS",
}
_MAX_CELL = 60
_STREAM_READ = 256 * 1024

Selector = tuple[int, int] | bytes


def parse_selector(text: str) -> Selector:
    """``"3"`` -> (3, 3); ``"2-5"`` -> (2, 5); a hex entry id -> its bytes.

    Raises:
        UsageError: neither an index, a range nor an entry id.
    """
    match = re.fullmatch(r"(\d{1,9})(?:-(\d{1,9}))?", text.strip())
    if match:
        first = int(match[1])
        last = int(match[2] or first)
        if first < 1 or last < first:
            raise UsageError(f"bad message index {text!r} (indexes count from 1)")
        return (first, last)
    hexdigits = text.strip().lower()
    if re.fullmatch(r"[0-9a-f]{16,}", hexdigits) and len(hexdigits) % 2 == 0:
        return bytes.fromhex(hexdigits)
    raise UsageError(f"bad message selector {text!r}: give an INDEX (as `ls` shows) or an entry id")


async def select(ctx: Context, spec: str, selectors: list[str]) -> tuple[Any, list[bytes]]:
    """Resolve ``spec`` and ``selectors`` to (the resolved folder, entry ids in order).

    Raises:
        NotFound: an index beyond the end of the folder.
    """
    parsed = [parse_selector(s) for s in selectors]  # usage errors before any round trip
    target = await resolve(ctx, spec)
    ranges = [p for p in parsed if isinstance(p, tuple)]
    found: dict[tuple[int, int], list[bytes]] = {}
    if ranges:
        async with ctx.session.batch() as batch:
            table: Table = batch.add(target.folder.contents_table())
            batch.add(table.set_columns([pt.PR_ENTRYID]))
            batch.add(table.sort(DEFAULT_SORT))
            count: Call[int] = batch.add(table.row_count())
            queries: list[tuple[tuple[int, int], list[Call[list[Props]]]]] = []
            for first, last in ranges:
                batch.add(table.seek(0, first - 1))
                calls = []
                for start in range(first, last + 1, PAGE):
                    calls.append(batch.add(table.query_rows(min(PAGE, last + 1 - start))))
                queries.append(((first, last), calls))
            batch.add(release_call(table))
        for (first, last), calls in queries:
            ids = [bytes(row[pt.PR_ENTRYID]) for call in calls for row in call.result]
            if len(ids) != last - first + 1:
                raise errors.NotFound(
                    f"no message #{last} in {target.path} (it has {count.result})"
                )
            found[(first, last)] = ids
    out: list[bytes] = []
    for item in parsed:
        for eid in found[item] if isinstance(item, tuple) else [item]:
            if eid not in out:
                out.append(eid)
    return target, out


async def select_one(ctx: Context, spec: str, selector: str) -> bytes:
    """The entry id of one message."""
    _, ids = await select(ctx, spec, [selector])
    if len(ids) != 1:
        raise UsageError(f"{selector!r} selects {len(ids)} messages; give exactly one")
    return ids[0]


async def _default_positions(ctx: Context, table_of: Any) -> dict[bytes, int]:
    """Entry id -> INDEX in the default order (for ``ls`` with ``--sort``/``--where``)."""
    async with ctx.session.batch() as batch:
        table: Table = batch.add(table_of.contents_table())
        batch.add(table.set_columns([pt.PR_ENTRYID]))
        batch.add(table.sort(DEFAULT_SORT))
        first: Call[list[Props]] = batch.add(table.query_rows(PAGE))
    rows = list(first.result)
    if len(rows) == PAGE:
        rows += [row async for row in table.rows(PAGE)]
    await table.release()
    return {bytes(row[pt.PR_ENTRYID]): i for i, row in enumerate(rows, 1)}


def _is_number(tag: int, value: Any) -> bool:
    """Right-align plain numbers (not times, not flags)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return pt.prop_type(tag) != pt.PropType.PT_SYSTIME and tag != pt.PR_MESSAGE_FLAGS


async def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    """A folder's messages as a table."""
    columns = parse_tags(args.columns) if args.columns else list(DEFAULT_COLUMNS)
    sort = parse_sort(args.sort) if args.sort else DEFAULT_SORT
    restriction = combine_where(args.where or [])
    if args.limit < 0 or args.offset < 0:
        raise UsageError("--limit and --offset must not be negative")
    target = await resolve(ctx, args.folder)
    limit = args.limit or None
    async with ctx.session.batch() as batch:
        table: Table = batch.add(target.folder.contents_table())
        batch.add(table.set_columns([pt.PR_ENTRYID, *columns]))
        batch.add(table.sort(sort))
        if restriction is not None:
            batch.add(table.restrict(restriction))
        count: Call[int] = batch.add(table.row_count())
        if args.offset:
            batch.add(table.seek(0, args.offset))
        first: Call[list[Props]] = batch.add(table.query_rows(min(limit or PAGE, PAGE)))
    rows = list(first.result)
    while len(rows) % PAGE == 0 and rows and (limit is None or len(rows) < limit):
        more = await table.query_rows(min(PAGE, (limit or PAGE + len(rows)) - len(rows)))
        rows += more
        if not more:
            break
    await table.release()

    if restriction is None and sort == DEFAULT_SORT:
        positions = {bytes(r[pt.PR_ENTRYID]): args.offset + i for i, r in enumerate(rows, 1)}
    else:
        positions = await _default_positions(ctx, target.folder)
    messages = []
    for row in rows:
        eid = bytes(row[pt.PR_ENTRYID])
        item: dict[str, Any] = {"index": positions.get(eid), "entry_id": eid.hex()}
        item.update({display_name(t): json_value(t, row.get(t)) for t in columns})
        messages.append(item)

    def text() -> str:
        if not rows:
            return f"(no messages in {target.path})"
        headers = ["#", *(_HEADERS.get(t, column_header(t)) for t in columns)]
        right = {0}
        body = []
        for row in rows:
            eid = bytes(row[pt.PR_ENTRYID])
            cells = [str(positions.get(eid, ""))]
            for i, tag in enumerate(columns, 1):
                value = row.get(tag)
                if _is_number(tag, value):
                    right.add(i)
                cells.append(text_value(tag, value, width=_MAX_CELL))
            if args.ids:
                cells.append(eid.hex())
            body.append(cells)
        if args.ids:
            headers.append("ENTRYID")
        lines = render_table(headers, body, right)
        if len(rows) < count.result:
            start = args.offset + 1
            lines += (
                f"\n({start}-{args.offset + len(rows)} of {count.result};"
                " use --limit/--offset for more)"
            )
        return lines

    ctx.emit(
        {"folder": target.path, "total": count.result, "offset": args.offset, "messages": messages},
        text,
    )
    return 0


_SHOW_TAGS = [
    pt.PR_ENTRYID, pt.PR_SUBJECT, pt.PR_SENDER_NAME, pt.PR_SENDER_EMAIL_ADDRESS,
    pt.PR_SENT_REPRESENTING_NAME, pt.PR_MESSAGE_DELIVERY_TIME, pt.PR_CLIENT_SUBMIT_TIME,
    pt.PR_CREATION_TIME, pt.PR_MESSAGE_SIZE, pt.PR_MESSAGE_FLAGS, pt.PR_MESSAGE_CLASS,
    pt.PR_IMPORTANCE, pt.PR_BODY, pt.PR_INTERNET_CPID,
]  # fmt: skip
_RECIPIENT_COLUMNS = [pt.PR_DISPLAY_NAME, pt.PR_EMAIL_ADDRESS, pt.PR_RECIPIENT_TYPE]
ATTACHMENT_COLUMNS = [
    pt.PR_ATTACH_NUM, pt.PR_ATTACH_LONG_FILENAME, pt.PR_ATTACH_FILENAME, pt.PR_ATTACH_SIZE,
    pt.PR_ATTACH_MIME_TAG, pt.PR_ATTACH_METHOD,
]  # fmt: skip


def attachment_info(row: Props) -> dict[str, Any]:
    """An attachment table row as plain data."""
    name = row.get(pt.PR_ATTACH_LONG_FILENAME) or row.get(pt.PR_ATTACH_FILENAME)
    return {
        "num": row.get(pt.PR_ATTACH_NUM),
        "filename": name,
        "size": row.get(pt.PR_ATTACH_SIZE),
        "mime_type": row.get(pt.PR_ATTACH_MIME_TAG),
        "method": row.get(pt.PR_ATTACH_METHOD),
    }


async def attachments_of(message: Message) -> list[dict[str, Any]]:
    """Every attachment of ``message`` (one round trip)."""
    async with message.session.batch() as batch:
        table: Table = batch.add(message.attachment_table())
        batch.add(table.set_columns(ATTACHMENT_COLUMNS))
        rows: Call[list[Props]] = batch.add(table.query_rows(PAGE))
        batch.add(release_call(table))
    return [attachment_info(r) for r in rows.result]


async def attachment_sizes(message: Message, rows: list[Props]) -> dict[int, int]:
    """Attachment number -> the size of its data (PR_ATTACH_DATA_BIN), in one round trip.

    PR_ATTACH_SIZE is the size of the whole attachment object (its properties too), not
    what ``get`` saves; the data's size is its stream's. Attachments without data (an
    embedded message) are left out.
    """
    nums = [
        int(r[pt.PR_ATTACH_NUM])
        for r in rows
        if r.get(pt.PR_ATTACH_METHOD, pt.ATTACH_BY_VALUE) == pt.ATTACH_BY_VALUE
        and isinstance(r.get(pt.PR_ATTACH_NUM), int)
    ]
    if not nums:
        return {}
    calls: dict[int, Call[int]] = {}
    opened: list[Any] = []
    try:
        async with message.session.batch() as batch:
            for num in nums:
                attachment: Attachment = batch.add(message.open_attachment(num))
                stream: Stream = batch.add(attachment.open_stream(pt.PR_ATTACH_DATA_BIN))
                calls[num] = batch.add(stream.size())
                opened += [stream, attachment]
            batch.add(release_call(*opened))
    except errors.MapiError:
        pass  # an attachment without data: the others' sizes are still known
    sizes = {}
    for num, call in calls.items():
        with contextlib.suppress(RuntimeError):  # not run: that attachment had no data
            sizes[num] = int(call.result)
    return sizes


async def read_stream(obj: Message, tag: int) -> bytes:
    """A property through a stream, for values too large for get_props."""
    stream: Stream = await obj.open_stream(tag)
    data = bytearray()
    while chunk := await stream.read(_STREAM_READ):
        data += chunk
    await stream.release()
    return bytes(data)


def _too_big(props: Props, tag: int) -> bool:
    """The value exists but get_props did not carry it (too large: read a stream)."""
    return tag not in props and props.errors.get(tag) not in (None, errors.Hresult.MAPI_E_NOT_FOUND)


async def _body_text(message: Message, p: Props) -> tuple[str | None, str | None]:
    """(the body as text, "text" or "html"): PR_BODY, else PR_HTML made readable.

    PR_HTML is asked for only when there is no PR_BODY (most messages have one: the
    HTML, often larger, then never crosses the wire for ``show``).
    """
    if pt.PR_BODY in p:
        return str(p[pt.PR_BODY]), "text"
    if _too_big(p, pt.PR_BODY):
        return (await read_stream(message, pt.PR_BODY)).decode("utf-16-le", "replace"), "text"
    found = await message.get_props([pt.PR_HTML])
    html = found.get(pt.PR_HTML)
    if html is None and _too_big(found, pt.PR_HTML):
        html = await read_stream(message, pt.PR_HTML)
    if isinstance(html, bytes):
        return html_to_text(decode_html(html, p.get(pt.PR_INTERNET_CPID))), "html"
    return None, None


def _property_value(tag: int, value: Any, cpid: Any) -> Any:
    """A property for ``show --props``: PR_HTML decoded as text, the rest as JSON shows it."""
    if tag == pt.PR_HTML and isinstance(value, bytes):
        return decode_html(value, cpid if isinstance(cpid, int) else None)
    return json_value(tag, value)


def _people(rows: list[Props], kind: int) -> list[dict[str, Any]]:
    return [
        {"name": r.get(pt.PR_DISPLAY_NAME), "email": r.get(pt.PR_EMAIL_ADDRESS)}
        for r in rows
        if r.get(pt.PR_RECIPIENT_TYPE) == kind
    ]


def _person(p: dict[str, Any]) -> str:
    name, email = p.get("name") or "", p.get("email") or ""
    if name and email and name != email:
        return f"{name} <{email}>"
    return str(name or email)


async def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    """One message: headers, body and attachment list."""
    entry_id = await select_one(ctx, args.folder, args.message)
    async with ctx.session.batch() as batch:
        message: Message = batch.add(ctx.store.open_message(entry_id))
        props: Call[Props] = batch.add(message.get_props(_SHOW_TAGS))
        everything: Call[Props] | None = None
        if args.props:
            everything = batch.add(message.get_props())
        recipients: Table = batch.add(message.recipient_table())
        batch.add(recipients.set_columns(_RECIPIENT_COLUMNS))
        recipient_rows: Call[list[Props]] = batch.add(recipients.query_rows(PAGE))
        attach_table: Table = batch.add(message.attachment_table())
        batch.add(attach_table.set_columns(ATTACHMENT_COLUMNS))
        attach_rows: Call[list[Props]] = batch.add(attach_table.query_rows(PAGE))
        batch.add(release_call(recipients, attach_table))
    p = props.result
    body, body_format = await _body_text(message, p)
    attachments = [attachment_info(r) for r in attach_rows.result]
    sizes = await attachment_sizes(message, attach_rows.result)
    for info in attachments:
        info["size"] = sizes.get(info["num"])
    when = next(
        (p[t] for t in (pt.PR_MESSAGE_DELIVERY_TIME, pt.PR_CLIENT_SUBMIT_TIME, pt.PR_CREATION_TIME)
         if t in p),
        None,
    )  # fmt: skip
    flags = int(p.get(pt.PR_MESSAGE_FLAGS) or 0)
    rows = recipient_rows.result
    data: dict[str, Any] = {
        "entry_id": entry_id.hex(),
        "subject": p.get(pt.PR_SUBJECT),
        "from": {
            "name": p.get(pt.PR_SENDER_NAME) or p.get(pt.PR_SENT_REPRESENTING_NAME),
            "email": p.get(pt.PR_SENDER_EMAIL_ADDRESS),
        },
        "to": _people(rows, pt.MAPI_TO),
        "cc": _people(rows, pt.MAPI_CC),
        "bcc": _people(rows, pt.MAPI_BCC),
        "date": None if when is None else format_time(when),
        "size": p.get(pt.PR_MESSAGE_SIZE),
        "flags": flags,
        "flag_names": flag_names(flags),
        "message_class": p.get(pt.PR_MESSAGE_CLASS),
        "body": body,
        "body_format": body_format,
        "attachments": attachments,
    }
    if everything is not None:
        cpid = everything.result.get(pt.PR_INTERNET_CPID)
        data["properties"] = {
            display_name(t): _property_value(t, v, cpid)
            for t, v in sorted(everything.result.items())
        }

    def text() -> str:
        # Everything shown here but the sizes, dates and flags comes from the sender.
        head = [
            ("Subject", printable(data["subject"] or "")),
            ("From", printable(_person(data["from"]))),
            ("To", printable("; ".join(map(_person, data["to"])))),
            ("Cc", printable("; ".join(map(_person, data["cc"])))),
            ("Date", data["date"] or ""),
            ("Size", "" if data["size"] is None else human_size(data["size"])),
            ("Flags", ", ".join(data["flag_names"])),
            ("Entry-Id", data["entry_id"]),
        ]
        lines = [f"{k + ':':<9} {v}" for k, v in head if v or k in ("Subject", "From")]
        lines += ["", printable(body, multiline=True) if body else "(no body)"]
        if data["attachments"]:
            lines += ["", "Attachments:"]
            for a in data["attachments"]:
                size = "" if a["size"] is None else human_size(a["size"])
                name = printable(a["filename"] or "(unnamed)")
                mime = printable(a["mime_type"] or "")
                lines.append(f"  #{a['num']}  {name}  {size}  {mime}".rstrip())
        if "properties" in data:
            lines += ["", "Properties:"]
            lines += [f"  {k} = {printable(repr(v))}" for k, v in data["properties"].items()]
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0
