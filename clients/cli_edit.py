"""Changing messages with ``mapi-cli``: create/send, mv/cp/rm, put and get attachments.

A new message is built in one round trip (create, properties, recipients), then its
body file and attachments are streamed in chunks (:mod:`clients.cli_transfer`), and
one SaveChanges commits everything in a single server transaction: a failure before
that leaves nothing behind.
"""

from __future__ import annotations

import argparse
import email.utils
import os
import sys
from pathlib import Path
from typing import Any

import trio

from clients.api import Attachment, Call, Message, Props, Stream
from clients.cli_folders import Context, release_call, resolve
from clients.cli_format import UsageError, now_filetime
from clients.cli_messages import attachments_of, select, select_one
from clients.cli_safety import printable, safe_filename
from clients.cli_transfer import FileExists, attach_file, download, upload_text
from mapi.model import errors
from mapi.model import proptags as pt

#: Bodies longer than this (in characters) go through a stream, not set_props.
_INLINE_BODY_CHARS = 256 * 1024


def _check_readable(paths: list[str]) -> list[Path]:
    out = []
    for name in paths:
        path = Path(name)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise UsageError(f"cannot read {name!r}")
        out.append(path)
    return out


def _recipient(address: str, kind: int) -> dict[str | int, Any]:
    name, addr = email.utils.parseaddr(address)
    if not addr:
        raise UsageError(f"bad address {address!r}")
    return {
        pt.PR_DISPLAY_NAME: name or addr,
        pt.PR_EMAIL_ADDRESS: addr,
        pt.PR_ADDRTYPE: "SMTP",
        pt.PR_SMTP_ADDRESS_W: addr,
        pt.PR_RECIPIENT_TYPE: kind,
    }


def _detail(exc: errors.MapiError) -> str:
    """The server's message of ``exc`` without the code's name in front."""
    text = str(exc)
    name = errors.hresult_name(exc.hresult)
    return text[len(name) + 2 :] if text.startswith(name + ": ") else text


async def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    """Create and save a message; ``send`` then submits it (delivered to the recipients'
    Inboxes on this server and filed in Sent Items; unknown addresses get an NDR)."""
    if args.command == "send" and not (args.to or args.cc or args.bcc):
        raise UsageError("send needs at least one recipient (--to, --cc or --bcc)")
    if args.body is not None and args.body_file is not None:
        raise UsageError("give --body or --body-file, not both")
    attachments = _check_readable(args.attach or [])
    if args.body_file not in (None, "-"):
        _check_readable([args.body_file])
    recipients = [_recipient(a, pt.MAPI_TO) for a in args.to or []]
    recipients += [_recipient(a, pt.MAPI_CC) for a in args.cc or []]
    recipients += [_recipient(a, pt.MAPI_BCC) for a in args.bcc or []]
    target = await resolve(ctx, args.folder)

    now = now_filetime()
    props: dict[str | int, Any] = {
        pt.PR_SUBJECT: args.subject,
        pt.PR_MESSAGE_CLASS: "IPM.Note",
        pt.PR_MESSAGE_DELIVERY_TIME: now,
        pt.PR_SENDER_NAME: ctx.session.user,
        pt.PR_SENT_REPRESENTING_NAME: ctx.session.user,
    }
    body = args.body
    if body is not None and len(body) <= _INLINE_BODY_CHARS:
        props[pt.PR_BODY] = body
        body = None
    async with ctx.session.batch() as batch:
        message: Message = batch.add(target.folder.create_message())
        batch.add(message.set_props(props))
        if recipients:
            batch.add(message.modify_recipients(recipients))
        stream: Stream | None = None
        if body is not None or args.body_file is not None:
            stream = batch.add(message.open_stream(pt.PR_BODY, write=True, create=True))
    if stream is not None:
        if body is not None:
            for start in range(0, len(body), _INLINE_BODY_CHARS):
                await stream.write(body[start : start + _INLINE_BODY_CHARS].encode("utf-16-le"))
            await stream.commit()
        else:
            await upload_text(stream, args.body_file)
        await stream.release()
    for path in attachments:
        attachment = await attach_file(message, path, progress=ctx.progress)
        await attachment.release()
    entry_id = await message.save()
    if args.command == "send":
        try:
            report = await message.submit()
        except errors.MapiError as exc:
            # A send that failed leaves nothing behind: the message this command made
            # is removed (shielded: also when the failure is a cancellation).
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await message.release()
                await target.folder.delete_messages([entry_id], hard=True)
            raise errors.error_for(
                exc.hresult, f"{_detail(exc)} (not sent; the unsent message was removed)"
            ) from exc
        await message.release()
        sent = report["sent"].hex() if report["sent"] else None
        lines = [f"sent to {report['delivered']} mailbox(es); filed as {sent}"]
        queued = report.get("queued") or []  # (a server before outbound mail sends none)
        if queued:
            lines.append("queued for delivery to other domains: " + ", ".join(queued))
        if report["undeliverable"]:
            lines.append("undeliverable (see the report in your Inbox): "
                         + ", ".join(report["undeliverable"]))  # fmt: skip
        ctx.emit(
            {"entry_id": sent, "delivered": report["delivered"], "queued": queued,
             "undeliverable": report["undeliverable"], "attachments": len(attachments)},
            "\n".join(lines),
        )  # fmt: skip
        return 0
    await message.release()
    ctx.emit(
        {"entry_id": entry_id.hex(), "folder": target.path, "attachments": len(attachments)},
        entry_id.hex(),
    )
    return 0


async def cmd_copy(ctx: Context, args: argparse.Namespace) -> int:
    """``mv``/``cp FOLDER SELECTOR... DEST``."""
    if len(args.items) < 2:
        raise UsageError(f"{args.command} needs at least one SELECTOR and a DEST_FOLDER")
    *selectors, dest_spec = args.items
    source, ids = await select(ctx, args.folder, selectors)
    dest = await resolve(ctx, dest_spec)
    move = args.command == "mv"
    status = await source.folder.copy_messages(ids, dest.folder, move=move)
    verb = "moved" if move else "copied"
    partial = status == errors.Hresult.MAPI_W_PARTIAL_COMPLETION
    ctx.emit(
        {verb: [i.hex() for i in ids], "from": source.path, "to": dest.path, "partial": partial},
        f"{verb} {len(ids)} message(s) from {source.path} to {dest.path}",
    )
    return _partial(status)


async def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    """``rm FOLDER SELECTOR... [--hard]``."""
    source, ids = await select(ctx, args.folder, args.selectors)
    status = await source.folder.delete_messages(ids, hard=args.hard)
    where = "deleted for good" if args.hard else "moved to Deleted Items"
    partial = status == errors.Hresult.MAPI_W_PARTIAL_COMPLETION
    ctx.emit(
        {"deleted": [i.hex() for i in ids], "hard": bool(args.hard), "partial": partial},
        f"{len(ids)} message(s) {where}",
    )
    return _partial(status)


def _partial(status: int) -> int:
    if status == errors.Hresult.MAPI_W_PARTIAL_COMPLETION:
        print("mapi-cli: some messages were not found (MAPI_W_PARTIAL_COMPLETION)", file=sys.stderr)
        return 1
    return 0


async def cmd_put(ctx: Context, args: argparse.Namespace) -> int:
    """``put FOLDER SELECTOR FILE``: add an attachment to a saved message."""
    (path,) = _check_readable([args.file])
    entry_id = await select_one(ctx, args.folder, args.message)
    message = await ctx.store.open_message(entry_id, write=True)
    attachment = await attach_file(message, path, progress=ctx.progress)
    async with ctx.session.batch() as batch:
        num: Call[Props] = batch.add(attachment.get_props([pt.PR_ATTACH_NUM]))
        batch.add(release_call(attachment))
        batch.add(message.save())
        batch.add(release_call(message))
    number = num.result.get(pt.PR_ATTACH_NUM)
    ctx.emit(
        {"entry_id": entry_id.hex(), "attach_num": number, "filename": path.name},
        f"attached {path.name} as #{number}",
    )
    return 0


def _default_name(info: dict[str, Any], num: int) -> str:
    """The attachment's own name made safe (:func:`clients.cli_safety.safe_filename`)."""
    return safe_filename(info.get("filename"), f"attachment-{num}.bin")


def _file_mode(text: str | None) -> int:
    """``--mode``: octal permissions of the saved file (default 600: mail is private)."""
    if text is None:
        return 0o600
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise UsageError(f"bad --mode {text!r}: give octal permissions such as 600 or 644")
    return mode


def _target_path(output: str | None, default: str, *, force: bool) -> str:
    """Where ``get`` writes: ``-o FILE``, into ``-o DIR/`` under the attachment's own
    (safe) name, or that name in the current directory.

    Raises:
        UsageError: the file exists (a dangling symlink too) and ``force`` is false.
    """
    target = default if output is None else output
    if output is not None and output != "-" and os.path.isdir(output):
        target = os.path.join(output, default)
    if target != "-" and os.path.lexists(target) and not force:
        raise UsageError(f"{printable(target)!r} exists; use --force to overwrite it")
    return target


async def cmd_get(ctx: Context, args: argparse.Namespace) -> int:
    """``get FOLDER SELECTOR [ATTACH_NUM] [-o FILE]``: download an attachment."""
    entry_id = await select_one(ctx, args.folder, args.message)
    message = await ctx.store.open_message(entry_id)
    listing = await attachments_of(message)
    if args.attach_num is None:
        if len(listing) != 1:
            nums = ", ".join(str(a["num"]) for a in listing) or "none"
            raise UsageError(
                f"the message has {len(listing)} attachments ({nums}); give ATTACH_NUM"
            )
        num = int(listing[0]["num"])
    else:
        num = args.attach_num
    info = next((a for a in listing if a["num"] == num), None)
    if info is None:
        raise errors.NotFound(f"the message has no attachment #{num}")
    mode = _file_mode(args.mode)
    name = _default_name(info, num)
    target = _target_path(args.output, name, force=args.force)
    async with ctx.session.batch() as batch:
        attachment: Attachment = batch.add(message.open_attachment(num))
        stream: Stream = batch.add(attachment.open_stream(pt.PR_ATTACH_DATA_BIN))
    try:
        size = await download(
            stream, target, progress=ctx.progress, label=name, mode=mode, overwrite=args.force
        )
    except FileExists:
        raise UsageError(
            f"{printable(target)!r} appeared meanwhile; use --force to overwrite it"
        ) from None
    async with ctx.session.batch() as batch:
        batch.add(release_call(stream, attachment, message))
    if target != "-":
        ctx.emit(
            {"saved": target, "size": size, "attach_num": num}, f"saved {target} ({size} bytes)"
        )
    return 0
