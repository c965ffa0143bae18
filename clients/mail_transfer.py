"""Internet messages into a folder and out of the store, through the client API.

Theory of operation
-------------------
The client converts locally with :mod:`internet_mail.mime` (a sans-IO codec: bytes and
property dicts in and out), then speaks only the store's ordinary calls, so an import
is what any MAPI client could do and the server's rules (rights, quotas, size limits)
apply as to any other client.

:func:`import_message` converts one message with ``mime_to_mapi`` and creates it in the
folder: properties (values too large for one ``set_props`` through streams), recipient
rows, attachments (embedded messages recursively), ``PR_MESSAGE_DELIVERY_TIME`` (the
time the caller read from the mailbox file), ``PR_MESSAGE_FLAGS`` (read or unread), and
the bytes themselves under ``PR_MIME_ORIGINAL``, as the server's SMTP delivery keeps
them; one SaveChanges commits it, so a failure leaves nothing behind.

:func:`export_message` gives a message's MIME: ``PR_MIME_ORIGINAL`` when the message has
it (mail that arrived as MIME, or was imported), else a rendering of its properties,
recipients and attachments with ``mapi_to_mime`` (Bcc included: an export is the
owner's copy), which is stable, so exporting an imported message gives its bytes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from clients.api import MAX_INLINE_VALUE, Attachment, Folder, Message, Props, Store, Stream
from internet_mail.mime import ConvertedAttachment, ConvertedMessage, mapi_to_mime, mime_to_mapi
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import DEFAULT_LIMITS, Limits
from mapi.model.properties import PropData

#: Bytes per stream write or read (the server takes up to 1 MiB per call).
CHUNK: Final = 256 * 1024
#: PR_MAX_SUBMIT_MESSAGE_SIZE ([MS-OXPROPS]): the server's message size limit, in KiB.
PR_MAX_SUBMIT_MESSAGE_SIZE: Final = 0x666D0003
#: Largest message an import reads when the server sets no limit of its own.
DEFAULT_MAX_MESSAGE_BYTES: Final = 100 * 1024 * 1024
#: Columns of the recipient rows an export renders.
_RECIPIENT_COLUMNS: Final = (
    pt.PR_DISPLAY_NAME_W, pt.PR_EMAIL_ADDRESS_W, pt.PR_ADDRTYPE_W, pt.PR_SMTP_ADDRESS_W,
    pt.PR_RECIPIENT_TYPE,
)  # fmt: skip
#: Large values an export reads through a stream when get_props cannot carry them.
_STREAMED: Final = {pt.prop_id(t): t for t in (pt.PR_BODY_W, pt.PR_HTML, pt.PR_MIME_ORIGINAL)}
#: Senders an mbox From_ line may name, in order (the envelope sender first).
_SENDERS: Final = (
    pt.PR_SENDER_SMTP_ADDRESS_W, pt.PR_SENDER_EMAIL_ADDRESS_W,
    pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W, pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W,
)  # fmt: skip


async def max_message_bytes(store: Store) -> int:
    """The server's message size limit (PR_MAX_SUBMIT_MESSAGE_SIZE), or
    :data:`DEFAULT_MAX_MESSAGE_BYTES` when it has none."""
    props = await store.get_props([PR_MAX_SUBMIT_MESSAGE_SIZE])
    kib = props.get(PR_MAX_SUBMIT_MESSAGE_SIZE)
    if isinstance(kib, int) and kib > 0:
        return kib * 1024
    return DEFAULT_MAX_MESSAGE_BYTES


# --- import -----------------------------------------------------------------------------


async def import_message(
    folder: Folder,
    raw: bytes,
    *,
    delivered: int | None,
    read: bool,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """Create the Internet message ``raw`` in ``folder``; returns its entry id.

    Args:
        delivered: PR_MESSAGE_DELIVERY_TIME (FILETIME); None: the Date header's time,
            else none (the server's creation time stands in).
        read: the message's read flag.

    Raises:
        MimeLimitExceeded: the message is beyond a MIME limit of ``limits``.
        MapiError: the server refused it (MAPI_E_TOO_BIG, MAPI_E_NOT_ENOUGH_DISK...);
            nothing was saved.
    """
    converted = mime_to_mapi(raw, limits=limits, received=delivered)
    props = converted.props
    props.setdefault(pt.PR_MESSAGE_CLASS_W, "IPM.Note")
    if delivered is None and pt.PR_CLIENT_SUBMIT_TIME in props:
        props[pt.PR_MESSAGE_DELIVERY_TIME] = props[pt.PR_CLIENT_SUBMIT_TIME]
    props[pt.PR_MESSAGE_FLAGS] = pt.MSGFLAG_READ if read else 0
    message: Message = await folder.create_message()
    try:
        await _fill(message, converted)
        await _write_stream(message, pt.PR_MIME_ORIGINAL, raw)
        return await message.save()
    finally:
        await message.release()  # unsaved: nothing is left behind


async def _fill(message: Message, converted: ConvertedMessage) -> None:
    """Properties, recipients and attachments of a new message (not saved)."""
    inline: dict[int | str, Any] = {}
    large: list[tuple[int, PropData]] = []
    for tag, value in converted.props.items():
        if _large(value):
            large.append((tag, value))
        else:
            inline[tag] = value
    session = message.session
    async with session.batch() as batch:
        if inline:
            batch.add(message.set_props(inline))
        if converted.recipients:
            rows: list[dict[int | str, Any]] = [
                {tag: v for tag, v in row.items()} for row in converted.recipients
            ]
            batch.add(message.modify_recipients(rows))
    for tag, value in large:
        await _write_stream(message, tag, _stream_bytes(value))
    for attachment in converted.attachments:
        await _add_attachment(message, attachment)


def _large(value: PropData) -> bool:
    """Too large for ``set_props`` (with room for the rest of the call): a stream's job."""
    if isinstance(value, str):
        return 4 * len(value) > MAX_INLINE_VALUE // 2  # UTF-16: at most 4 bytes a character
    if isinstance(value, bytes):
        return len(value) > MAX_INLINE_VALUE // 2
    return False


def _stream_bytes(value: PropData) -> bytes:
    """A large value as its stream holds it (strings in UTF-16LE)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass")
    if isinstance(value, bytes):
        return value
    raise errors.TooBig("a multi-valued property too large for one call")


async def _add_attachment(message: Message, converted: ConvertedAttachment) -> None:
    props: dict[int | str, Any] = {
        t: v for t, v in converted.props.items() if t != pt.PR_ATTACH_DATA_BIN
    }
    attachment: Attachment = await message.create_attachment()
    try:
        if props:
            await attachment.set_props(props)
        if converted.embedded is not None:
            inner: Message = await attachment.open_embedded(create=True)
            try:
                await _fill(inner, converted.embedded)
                await inner.save()
            finally:
                await inner.release()
        else:
            await _write_stream(attachment, pt.PR_ATTACH_DATA_BIN, converted.data)
        await attachment.save()
    finally:
        await attachment.release()


async def _write_stream(obj: Message | Attachment, tag: int, data: bytes) -> None:
    stream: Stream = await obj.open_stream(tag, write=True, create=True)
    try:
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            await stream.write(bytes(view[start : start + CHUNK]))
        await stream.commit()
    finally:
        await stream.release()


# --- export -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exported:
    """One exported message."""

    raw: bytes
    #: PR_MESSAGE_DELIVERY_TIME, else PR_CREATION_TIME (FILETIME).
    delivered: int | None
    #: The envelope sender for an mbox From_ line ("" when the message names none).
    sender: str
    read: bool


@dataclass(frozen=True, slots=True)
class FolderEntry:
    """A message of a folder to export, oldest first."""

    entry_id: bytes
    size: int


async def folder_entries(folder: Folder) -> list[FolderEntry]:
    """The folder's messages, in delivery order (then creation order)."""
    columns = [pt.PR_ENTRYID, pt.PR_MESSAGE_SIZE]
    sort = [(pt.PR_MESSAGE_DELIVERY_TIME, False), (pt.PR_CREATION_TIME, False)]
    out = []
    async for row in folder.contents(columns, sort=sort, page=500):
        size = row.get(pt.PR_MESSAGE_SIZE)
        out.append(FolderEntry(bytes(row[pt.PR_ENTRYID]), size if isinstance(size, int) else 0))
    return out


async def export_message(store: Store, entry_id: bytes) -> Exported:
    """The MIME of the message ``entry_id`` (see the module docstring).

    Raises:
        MapiError: the server refused (the message went away: MAPI_E_NOT_FOUND...).
    """
    message: Message = await store.open_message(entry_id)
    try:
        props = await _all_props(message)
        original = props.get(pt.PR_MIME_ORIGINAL)
        if isinstance(original, bytes):
            raw = original
        else:
            raw = mapi_to_mime(await _converted(message, props, depth=0), bcc=True)
    finally:
        await message.release()
    delivered = props.get(pt.PR_MESSAGE_DELIVERY_TIME) or props.get(pt.PR_CREATION_TIME)
    flags = props.get(pt.PR_MESSAGE_FLAGS)
    return Exported(
        raw,
        delivered if isinstance(delivered, int) else None,
        _sender(props),
        isinstance(flags, int) and bool(flags & pt.MSGFLAG_READ),
    )


def _sender(props: Props) -> str:
    for tag in _SENDERS:
        value = props.get(tag)
        if isinstance(value, str) and "@" in value:
            return value.strip()
    return ""


async def _all_props(obj: Message | Attachment) -> Props:
    """Every property; the large ones an export needs read through streams."""
    props = await obj.get_props()
    for tag, hresult in list(props.errors.items()):
        full = _STREAMED.get(pt.prop_id(tag))
        if full is None or hresult == errors.Hresult.MAPI_E_NOT_FOUND:
            continue
        data = await _read_stream(obj, full)
        props[full] = data.decode("utf-16-le", "replace") if full == pt.PR_BODY_W else data
    return props


async def _read_stream(obj: Message | Attachment, tag: int) -> bytes:
    stream: Stream = await obj.open_stream(tag)
    try:
        data = bytearray()
        while chunk := await stream.read(CHUNK):
            data += chunk
        return bytes(data)
    finally:
        await stream.release()


async def read_converted(message: Message) -> ConvertedMessage:
    """The message as the MIME renderer takes it: every property (large ones read
    through streams, ``PR_MIME_ORIGINAL`` left out), its recipients and attachments,
    embedded messages included. What an export renders; tests compare it with what the
    server's conversion should have stored."""
    return await _converted(message, await _all_props(message), depth=0)


async def _converted(message: Message, props: Props, *, depth: int) -> ConvertedMessage:
    """The message as the renderer takes it."""
    if depth > DEFAULT_LIMITS.max_embedding_depth:
        raise errors.TooComplex("embedded messages nested too deeply")
    out = ConvertedMessage(props={t: v for t, v in props.items() if t != pt.PR_MIME_ORIGINAL})
    recipients = await message.recipient_table()
    try:
        await recipients.set_columns(_RECIPIENT_COLUMNS)
        out.recipients = [dict(row) async for row in recipients.rows(500)]
    finally:
        await recipients.release()
    table = await message.attachment_table()
    try:
        await table.set_columns([pt.PR_ATTACH_NUM])
        numbers = [row.get(pt.PR_ATTACH_NUM) async for row in table.rows(500)]
    finally:
        await table.release()
    for num in numbers:
        if isinstance(num, int):
            out.attachments.append(await _converted_attachment(message, num, depth))
    return out


async def _converted_attachment(message: Message, num: int, depth: int) -> ConvertedAttachment:
    attachment: Attachment = await message.open_attachment(num)
    try:
        props = await attachment.get_props()
        if props.get(pt.PR_ATTACH_METHOD) == pt.ATTACH_EMBEDDED_MSG:
            inner: Message = await attachment.open_embedded()
            try:
                inner_props = await _all_props(inner)
                embedded = await _converted(inner, inner_props, depth=depth + 1)
            finally:
                await inner.release()
            return ConvertedAttachment(props=dict(props), embedded=embedded)
        try:
            data = await _read_stream(attachment, pt.PR_ATTACH_DATA_BIN)
        except errors.NotFound:
            data = b""
        values: dict[int, PropData] = dict(props)
        values[pt.PR_ATTACH_DATA_BIN] = data
        return ConvertedAttachment(props=values)
    finally:
        await attachment.release()
