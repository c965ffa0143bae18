"""A stored message as Internet mail bytes: its MIME original, or rendered from MAPI.

Theory of operation
-------------------
A message that came in as MIME (SMTP delivery, IMAP APPEND) keeps the bytes as they
arrived under ``PR_MIME_ORIGINAL``: those are the message, exactly. A message made
through MAPI has none; it is read whole from the store in one read snapshot (its
properties with the large values, recipients, attachments, embedded messages) into a
:class:`~internet_mail.mime.ConvertedMessage` and rendered by
:func:`~internet_mail.mime.mapi_to_mime`, which writes the same bytes for the same
properties every time (so a size cached by change number stays true).
"""

from __future__ import annotations

from collections.abc import Callable

from internet_mail.mime import ConvertedAttachment, ConvertedMessage, mapi_to_mime
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.properties import PropData, from_stream_bytes
from mapi.storage.api import MailboxStorage, Txn
from mapi.storage.propbag import PropBag, Source


def _props(bag: PropBag, read: Callable[[int, int], bytes]) -> dict[int, PropData]:
    """Every value of ``bag``; large ones through ``read(tag, length)``."""
    out: dict[int, PropData] = {}
    for tag in bag.tags():
        found = bag.lookup(tag)
        if found is None:
            continue
        source, value = found
        if source is Source.LARGE:
            assert isinstance(value, int)
            out[tag] = from_stream_bytes(tag, read(tag, value))
        elif source is Source.VALUE:
            out[tag] = value  # type: ignore[assignment]
    return out


def original(db: MailboxStorage, txn: Txn, message_id: int) -> bytes | None:
    """The stored MIME original of a message, or None."""
    state, _ = db.messages.load(txn, message_id)
    found = state.bag.lookup(pt.PR_MIME_ORIGINAL)
    if found is None:
        return None
    source, value = found
    if source is Source.LARGE:
        assert isinstance(value, int)
        return db.messages.read_value(txn, message_id, pt.PR_MIME_ORIGINAL, 0, value)
    return value if isinstance(value, bytes) else None


def _converted(db: MailboxStorage, txn: Txn, message_id: int, depth: int) -> ConvertedMessage:
    if depth > db.limits.max_embedding_depth:
        raise errors.TooComplex("embedded messages nested too deeply")
    state, _ = db.messages.load(txn, message_id)
    stored = db.messages

    def read(tag: int, length: int) -> bytes:
        return stored.read_value(txn, message_id, tag, 0, length)

    props = _props(state.bag, read)
    attachments = []
    for row in db.contents.attachments(txn, message_id):
        num = row.get(pt.PR_ATTACH_NUM)
        if not isinstance(num, int):
            continue
        att = stored.load_attachment(txn, message_id, num)
        attach_id = att.db_id

        def read_att(tag: int, length: int, attach_id: int | None = attach_id) -> bytes:
            assert attach_id is not None
            return stored.read_attachment_value(txn, attach_id, tag, 0, length)

        embedded = None
        inner = stored.embedded_id(txn, attach_id)
        if inner is not None:
            embedded = _converted(db, txn, inner, depth + 1)
        attachments.append(ConvertedAttachment(props=_props(att.bag, read_att), embedded=embedded))
    return ConvertedMessage(
        props=props, recipients=stored.recipients(txn, message_id), attachments=attachments
    )


def message_bytes(db: MailboxStorage, message_id: int) -> bytes:
    """The message as Internet mail (see the module docstring).

    Raises:
        NotFound: no such message. Other MapiErrors: the store failed.
    """
    with db.reading() as txn:
        raw = original(db, txn, message_id)
        if raw is not None:
            return raw
        return mapi_to_mime(_converted(db, txn, message_id, 0), bcc=True)


__all__ = ["message_bytes", "original"]
