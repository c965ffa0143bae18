"""MIME to MAPI: a received Internet message as a :class:`ConvertedMessage`.

Theory of operation
-------------------
1. *Parse* with the standard library's :class:`email.parser.BytesFeedParser`, policy
   ``default``, given all bytes at once (sans-IO: no clock, no I/O). The part factory
   counts entities and stops the parser at ``Limits.max_mime_parts``. The parser
   repairs what it can (missing boundaries, bad headers) and notes defects. Its
   header-value parser is known to raise on some hostile Content-Type values (deep
   comment nesting); then the message is parsed again with policy ``compat32``, whose
   headers are plain strings, and as a last resort the bytes become a plain-text body.
2. *Check* the tree against ``max_mime_depth``, ``max_mime_header_fields`` and
   ``max_mime_header_bytes``; beyond any limit, :class:`MimeLimitExceeded`, nothing
   else. A nesting deep enough to exhaust the parser's recursion is beyond
   ``max_mime_depth`` by construction (the default, 32, is far below it).
3. *Convert*, following [MS-OXCMAIL] 2.2.3 (headers) and 2.2.3.x / 2.1.3 (bodies and
   attachments). Header values are read raw (``raw_items``) and decoded by
   :mod:`internet_mail.mime.text` and :mod:`internet_mail.mime.addresses`, never by the
   policy's header registry, so a broken header costs its own value only. The body is the first text
   part that is not an attachment: ``text/plain`` gives ``PR_BODY``, ``text/html``
   gives ``PR_HTML``, and a ``multipart/alternative`` gives both (its last part of each
   kind, the richest by RFC 2046 5.1.4); the root of a ``multipart/related`` is read the
   same way and its other parts are inline attachments. Every other leaf is an
   attachment; ``message/rfc822`` becomes an embedded message (``ATTACH_EMBEDDED_MSG``)
   converted the same way, up to ``Limits.max_embedding_depth``.

Choices where [MS-OXCMAIL] leaves one (also in ``docs/mime.md``):

- ``PR_BODY`` line ends are CRLF, whatever the part used (MAPI's convention).
- ``PR_HTML`` keeps the part's bytes in its own charset when we know a code page for it
  (``PR_INTERNET_CPID``); otherwise it is transcoded to UTF-8 (65001).
  ``PR_INTERNET_CPID`` is the HTML part's code page, else the plain part's.
- An attachment is *inline* (``PR_ATTACH_FLAGS`` has ``ATT_MHTML_REF``) when its
  disposition says ``inline``, or when it has none and sits in a ``multipart/related``
  with a Content-ID; an inline attachment whose Content-ID the HTML body references
  (``cid:``) is also ``PR_ATTACHMENT_HIDDEN``.
- Importance comes from ``Importance``, else ``X-Priority``, else ``X-MSMail-Priority``;
  a missing header sets no property (not "normal").
- ``multipart/signed`` and ``multipart/encrypted`` are read as ``multipart/mixed``: the
  signature or the encrypted data is an attachment; the class stays ``IPM.Note``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from email.feedparser import BytesFeedParser
from email.message import EmailMessage, Message
from email.policy import Policy, compat32, default
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from internet_mail.mime.addresses import (
    flat_entry_list,
    group_props,
    one_off_entry_id,
    parse_addresses,
)
from internet_mail.mime.message import (
    ATT_MHTML_REF,
    PRIO_NONURGENT,
    PRIO_NORMAL,
    PRIO_URGENT,
    SENSITIVITY_COMPANY_CONFIDENTIAL,
    SENSITIVITY_PERSONAL,
    SENSITIVITY_PRIVATE,
    ConvertedAttachment,
    ConvertedMessage,
    MimeLimitExceeded,
)
from internet_mail.mime.text import (
    CPID_CHARSETS,
    clean,
    cpid_of,
    decode_bytes,
    decode_header_text,
    decode_words,
    fix_8bit,
    one_line,
    text_codec,
    unfold,
)
from mapi.model import proptags as pt
from mapi.model.limits import DEFAULT_LIMITS, Limits
from mapi.model.properties import PropData, filetime_from_datetime

T = TypeVar("T")
_PREFIX = re.compile(r"^([^\s\d:]{1,3}): ")
_CRLF = re.compile(r"\r\n|\r|\n")
_MIME_TAG = re.compile(r"^[a-z0-9!#$&.+^_-]{1,64}/[a-z0-9!#$&.+^_-]{1,64}$")
_IMPORTANCE = {"low": pt.IMPORTANCE_LOW, "normal": pt.IMPORTANCE_NORMAL, "high": pt.IMPORTANCE_HIGH}
_X_PRIORITY = {"1": 2, "2": 2, "3": 1, "4": 0, "5": 0}
_PRIORITY = {"urgent": PRIO_URGENT, "normal": PRIO_NORMAL, "non-urgent": PRIO_NONURGENT}
_SENSITIVITY = {
    "personal": SENSITIVITY_PERSONAL,
    "private": SENSITIVITY_PRIVATE,
    "company-confidential": SENSITIVITY_COMPANY_CONFIDENTIAL,
}
_RECIPIENT_HEADERS = (("to", pt.MAPI_TO), ("cc", pt.MAPI_CC), ("bcc", pt.MAPI_BCC))


def mime_to_mapi(
    raw: bytes, *, limits: Limits = DEFAULT_LIMITS, received: int | None = None
) -> ConvertedMessage:
    """Convert the Internet message ``raw`` ([RFC 5322], MIME) to MAPI properties.

    Args:
        raw: the message as it arrived (any bytes: malformed input gives the most
            faithful message that can be read from it).
        limits: ``max_mime_depth``, ``max_mime_parts``, ``max_mime_header_fields``,
            ``max_mime_header_bytes``, ``max_recipients``, ``max_attachments`` and
            ``max_embedding_depth`` bound the work.
        received: ``PR_MESSAGE_DELIVERY_TIME`` (FILETIME) when the caller delivers it.

    Returns:
        The converted message, with ``raw_mime`` set to ``raw``.

    Raises:
        MimeLimitExceeded: the input is beyond one of the limits above.
    """
    raw = bytes(raw)
    msg, defects = _parse(raw, limits)
    _check_tree(msg, limits)
    result = _Converter(limits, defects).message(msg, embedded=0)
    defects += _part_defects(msg)  # after decoding: decoders note defects too
    result.props[pt.PR_TRANSPORT_MESSAGE_HEADERS_W] = _header_block(raw, limits)
    if received is not None:
        result.props[pt.PR_MESSAGE_DELIVERY_TIME] = received
    result.raw_mime = raw
    return result


# --- parsing and limits -----------------------------------------------------------------


def _parse(raw: bytes, limits: Limits) -> tuple[Message, list[str]]:
    for policy in (default, compat32):
        try:
            msg = _parse_with(raw, limits, policy)
        except MimeLimitExceeded:
            raise
        except RecursionError:
            if policy is compat32:
                raise MimeLimitExceeded("max_mime_depth", "MIME nesting too deep") from None
            continue
        except Exception:  # the stdlib parser's own bugs on hostile input
            continue
        found: Any = getattr(msg, "defects", [])
        return msg, [type(defect).__name__ for defect in found]
    fallback = EmailMessage(policy=default)
    fallback.set_payload(raw.decode("ascii", "surrogateescape"))
    return fallback, ["unparsable"]


def _parse_with(raw: bytes, limits: Limits, policy: Policy) -> Message:
    count = 0

    def factory(policy: Policy = policy) -> Message:
        nonlocal count
        count += 1
        if count > limits.max_mime_parts:
            raise MimeLimitExceeded(
                "max_mime_parts", f"more than {limits.max_mime_parts} MIME parts"
            )
        return EmailMessage(policy=policy) if policy is default else Message(policy=policy)

    parser: BytesFeedParser[Message] = BytesFeedParser(_factory=factory, policy=policy)
    count = 0  # the parser called the factory once to learn its signature
    parser.feed(raw)
    return parser.close()


def _part_defects(msg: Message) -> list[str]:
    """The defects the parts below ``msg`` noted (the limits are checked: no recursion
    bomb here)."""
    defects: list[str] = []
    stack = list(_children(msg) or [])
    while stack:
        part = stack.pop()
        found: Any = getattr(part, "defects", [])
        defects.extend(type(defect).__name__ for defect in found)
        stack.extend(_children(part) or [])
    return defects


def _check_tree(msg: Message, limits: Limits) -> None:
    stack = [(msg, 0)]
    parts = 0
    while stack:
        part, depth = stack.pop()
        parts += 1
        if depth > limits.max_mime_depth:
            raise MimeLimitExceeded(
                "max_mime_depth", f"MIME parts nested deeper than {limits.max_mime_depth}"
            )
        if parts > limits.max_mime_parts:
            raise MimeLimitExceeded("max_mime_parts", f"more than {limits.max_mime_parts} parts")
        items = list(part.raw_items())
        if len(items) > limits.max_mime_header_fields:
            raise MimeLimitExceeded(
                "max_mime_header_fields",
                f"more than {limits.max_mime_header_fields} header fields in one part",
            )
        size = sum(len(name) + len(str(value)) for name, value in items)
        if size > limits.max_mime_header_bytes:
            raise MimeLimitExceeded(
                "max_mime_header_bytes",
                f"a header block larger than {limits.max_mime_header_bytes} bytes",
            )
        stack.extend((child, depth + 1) for child in _children(part) or [])


def _children(part: Message) -> list[Message] | None:
    """The sub-entities of a multipart or message/* entity, None for a leaf."""
    if not part.is_multipart():
        return None
    payload: Any = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _header_block(raw: bytes, limits: Limits) -> str:
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i != -1]
    end = min(ends) if ends else len(raw)
    if raw.startswith((b"\r\n", b"\n")):
        end = 0
    block = raw[: min(end, limits.max_mime_header_bytes)]
    return clean(block.decode("utf-8", "replace"))


def _safe(call: Callable[[], T], fallback: T) -> T:
    """``call()``, or ``fallback`` when the stdlib's message API fails on odd input."""
    try:
        return call()
    except Exception:  # see the module doc: a bad value costs itself only
        return fallback


# --- reading one entity -------------------------------------------------------------------


class _Headers:
    """The raw header fields of one entity, by lower-case name."""

    def __init__(self, part: Message) -> None:
        self.fields: dict[str, list[str]] = {}
        for name, value in part.raw_items():
            self.fields.setdefault(str(name).strip().lower(), []).append(str(value))

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def text(self, name: str) -> str | None:
        raw = self.first(name)
        return None if raw is None else decode_header_text(raw)

    def token(self, name: str) -> str | None:
        raw = self.first(name)
        return None if raw is None else clean(one_line(unfold(fix_8bit(raw))))


def _content_type(part: Message) -> str:
    ctype = _safe(part.get_content_type, "text/plain").lower()
    return ctype if _MIME_TAG.match(ctype) else "application/octet-stream"


def _payload_bytes(part: Message) -> bytes:
    data = _safe(lambda: part.get_payload(decode=True), None)
    if isinstance(data, bytes):
        return data
    payload = _safe(part.get_payload, None)
    if isinstance(payload, str):
        return payload.encode("ascii", "surrogateescape")
    if isinstance(payload, list):  # message/* parsed into header blocks: write them out
        blocks = [_block_text(p) for p in payload if isinstance(p, Message)]
        text = _CRLF.sub("\r\n", "\r\n".join(b for b in blocks if b)).strip("\r\n")
        return (text + "\r\n").encode("utf-8", "surrogateescape") if text.strip() else b""
    return b""


def _block_text(part: Message) -> str:
    """A header block (and any text after it) of a message/* part, as it was written."""
    head = "".join(f"{name}: {value}\r\n" for name, value in part.raw_items())
    body: Any = part._payload  # type: ignore[attr-defined]  # as read, undecoded
    if isinstance(body, list):
        return head + "\r\n" + "\r\n".join(_block_text(p) for p in body if isinstance(p, Message))
    return head + ("\r\n" + body if isinstance(body, str) and body.strip() else "")


def _filename(part: Message) -> str | None:
    name: Any = _safe(part.get_filename, None)
    if not isinstance(name, str) or not name.strip():
        name = _safe(lambda: part.get_param("name"), None)
        if isinstance(name, tuple):  # an RFC 2231 value the API left undecoded
            name = _safe(lambda: decode_bytes(str(name[2]).encode("latin-1"), name[0]), None)
        if not isinstance(name, str) or not name.strip():
            return None
    return clean(one_line(decode_words(fix_8bit(name))))


def _disposition(part: Message) -> str | None:
    value: Any = _safe(part.get_content_disposition, None)
    return value.lower() if isinstance(value, str) else None


def _charset(part: Message) -> str | None:
    value: Any = _safe(lambda: part.get_param("charset"), None)
    if isinstance(value, tuple):
        value = value[2]
    return fix_8bit(value) if isinstance(value, str) else None


def _filetime(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        when = parsedate_to_datetime(unfold(fix_8bit(raw)))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        ticks = filetime_from_datetime(when)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return ticks if 0 <= ticks < 1 << 63 else None


def _msg_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = clean(one_line(unfold(fix_8bit(raw))))
    return " ".join(value.split()) or None


# --- the conversion ----------------------------------------------------------------------


class _Body:
    """What the walk found for one message: body candidates and attachments."""

    def __init__(self) -> None:
        self.plain: str | None = None
        self.plain_cpid: int | None = None
        self.html: bytes | None = None
        self.html_cpid: int | None = None
        self.attachments: list[ConvertedAttachment] = []

    @property
    def taken(self) -> bool:
        return self.plain is not None or self.html is not None


class _Converter:
    def __init__(self, limits: Limits, defects: list[str]) -> None:
        self.limits = limits
        self.defects = defects

    def message(self, msg: Message, *, embedded: int) -> ConvertedMessage:
        headers = _Headers(msg)
        props: dict[int, PropData] = {pt.PR_MESSAGE_CLASS_W: "IPM.Note"}
        self._subject(headers, props)
        self._people(headers, props)
        recipients = self._recipients(headers)
        self._ids_and_flags(headers, props)
        body = _Body()
        self._walk(msg, body, embedded=embedded, in_related=False)
        self._bodies(body, props)
        if len(body.attachments) > self.limits.max_attachments:
            raise MimeLimitExceeded(
                "max_attachments", f"more than {self.limits.max_attachments} attachments"
            )
        result = ConvertedMessage(
            props=props, recipients=recipients, attachments=body.attachments,
            defects=self.defects if embedded == 0 else [],
        )  # fmt: skip
        if embedded:
            block = "".join(f"{name}: {value}\r\n" for name, value in msg.raw_items())
            props[pt.PR_TRANSPORT_MESSAGE_HEADERS_W] = clean(fix_8bit(block))
        return result

    # -- headers

    def _subject(self, headers: _Headers, props: dict[int, PropData]) -> None:
        subject = headers.text("subject")
        if subject is None:
            return
        match = _PREFIX.match(subject)
        prefix = match.group(0) if match else ""
        props[pt.PR_SUBJECT_W] = subject
        props[pt.PR_SUBJECT_PREFIX_W] = prefix
        props[pt.PR_NORMALIZED_SUBJECT_W] = subject[len(prefix) :]
        props[pt.PR_CONVERSATION_TOPIC_W] = subject[len(prefix) :]

    def _people(self, headers: _Headers, props: dict[int, PropData]) -> None:
        limit = self.limits.max_recipients
        sender = parse_addresses(headers.fields.get("from", [])[:1], limit=0)[:1]
        real = parse_addresses(headers.fields.get("sender", [])[:1], limit=0)[:1]
        if sender:
            props.update(group_props("SENT_REPRESENTING", *sender[0]))
        if real or sender:
            props.update(group_props("SENDER", *(real or sender)[0]))
        reply = parse_addresses(headers.fields.get("reply-to", []), limit=limit)[:limit]
        if reply:
            props[pt.PR_REPLY_RECIPIENT_NAMES_W] = "; ".join(n or a for n, a in reply)
            props[pt.PR_REPLY_RECIPIENT_ENTRIES] = flat_entry_list(
                [one_off_entry_id(n or a, a) for n, a in reply]
            )
        receipt = headers.fields.get("disposition-notification-to")
        if receipt:
            props[pt.PR_READ_RECEIPT_REQUESTED] = True
            first = parse_addresses(receipt[:1], limit=0)
            if first and first[0][1]:
                props[pt.PR_READ_RECEIPT_EMAIL_ADDRESS_W] = first[0][1]
        if headers.fields.get("return-receipt-to"):
            props[pt.PR_ORIGINATOR_DELIVERY_REPORT_REQUESTED] = True

    def _recipients(self, headers: _Headers) -> list[dict[int, PropData]]:
        rows: list[dict[int, PropData]] = []
        limit = self.limits.max_recipients
        for name, rtype in _RECIPIENT_HEADERS:
            for person, address in parse_addresses(headers.fields.get(name, []), limit=limit):
                row = group_props("RECIPIENT", person, address)
                row[pt.PR_RECIPIENT_TYPE] = rtype
                rows.append(row)
                if len(rows) > limit:
                    raise MimeLimitExceeded("max_recipients", f"more than {limit} recipients")
        return rows

    def _ids_and_flags(self, headers: _Headers, props: dict[int, PropData]) -> None:
        sent = _filetime(headers.first("date"))
        if sent is not None:
            props[pt.PR_CLIENT_SUBMIT_TIME] = sent
        for name, tag in (
            ("message-id", pt.PR_INTERNET_MESSAGE_ID_W),
            ("in-reply-to", pt.PR_IN_REPLY_TO_ID_W),
            ("references", pt.PR_INTERNET_REFERENCES_W),
        ):
            value = _msg_id(headers.first(name))
            if value is not None:
                props[tag] = value
        importance = (headers.token("importance") or "").lower()
        if importance in _IMPORTANCE:
            props[pt.PR_IMPORTANCE] = _IMPORTANCE[importance]
        else:
            xprio = (headers.token("x-priority") or "").strip()[:1]
            ms = (headers.token("x-msmail-priority") or "").lower()
            if xprio in _X_PRIORITY:
                props[pt.PR_IMPORTANCE] = _X_PRIORITY[xprio]
            elif ms in _IMPORTANCE:
                props[pt.PR_IMPORTANCE] = _IMPORTANCE[ms]
        priority = (headers.token("priority") or "").lower()
        if priority in _PRIORITY:
            props[pt.PR_PRIORITY] = _PRIORITY[priority]
        sensitivity = (headers.token("sensitivity") or "").lower()
        if sensitivity in _SENSITIVITY:
            props[pt.PR_SENSITIVITY] = _SENSITIVITY[sensitivity]

    # -- the body and the attachments

    def _walk(self, part: Message, body: _Body, *, embedded: int, in_related: bool) -> None:
        ctype = _content_type(part)
        if ctype in ("message/rfc822", "message/global"):
            self._embedded(part, body, embedded=embedded, in_related=in_related)
            return
        children = _children(part)
        if children is None and ctype.startswith("multipart/"):
            ctype = "text/plain"  # no boundary found: the parser left the text whole
        if children is not None and ctype.startswith("multipart/"):
            kids = children
            if ctype == "multipart/alternative" and not body.taken:
                self._alternative(kids, body, embedded=embedded)
            elif ctype == "multipart/related" and not body.taken:
                self._related(part, kids, body, embedded=embedded)
            else:
                for kid in kids:
                    self._walk(kid, body, embedded=embedded, in_related=in_related)
            return
        if not body.taken and self._is_body(part, ctype):
            self._take_body(part, ctype, body)
            return
        body.attachments.append(self._attachment(part, ctype, in_related=in_related))

    def _is_body(self, part: Message, ctype: str) -> bool:
        return (
            ctype in ("text/plain", "text/html")
            and _disposition(part) != "attachment"
            and _filename(part) is None
        )

    def _take_body(self, part: Message, ctype: str, body: _Body) -> None:
        data = _payload_bytes(part)
        charset = _charset(part)
        if ctype == "text/plain":
            text = decode_bytes(data, charset)
            body.plain = _CRLF.sub("\r\n", text)
            body.plain_cpid = _cpid_for(data, charset)
            return
        cpid = cpid_of(charset) if charset else None
        codec = text_codec(charset)
        if cpid is not None and codec is not None and cpid != 1200:
            try:
                data.decode(codec)
            except (UnicodeError, ValueError, LookupError):
                cpid = None
        if cpid is None or cpid == 1200:
            data, cpid = decode_bytes(data, charset).encode("utf-8"), 65001
        body.html, body.html_cpid = data, cpid

    def _alternative(self, kids: list[Message], body: _Body, *, embedded: int) -> None:
        plain = html = None
        rest: list[Message] = []
        for kid in kids:
            ctype = _content_type(kid)
            if ctype == "text/plain" and self._is_body(kid, ctype):
                plain = kid
            elif (ctype == "text/html" and self._is_body(kid, ctype)) or ctype in (
                "multipart/related", "multipart/mixed", "multipart/alternative"
            ):  # fmt: skip
                html = kid
            else:
                rest.append(kid)
        if plain is not None:
            self._take_body(plain, "text/plain", body)
        if html is not None:
            inner = _Body()
            self._walk(html, inner, embedded=embedded, in_related=False)
            if inner.html is not None:
                body.html, body.html_cpid = inner.html, inner.html_cpid
            if body.plain is None and inner.plain is not None:
                body.plain, body.plain_cpid = inner.plain, inner.plain_cpid
            body.attachments.extend(inner.attachments)
        for kid in rest:  # text/calendar, text/enriched...: kept as attachments
            body.attachments.append(self._attachment(kid, _content_type(kid), in_related=False))

    def _related(self, part: Message, kids: list[Message], body: _Body, *, embedded: int) -> None:
        if not kids:
            return
        start = _safe(lambda: part.get_param("start"), None)
        root = kids[0]
        if isinstance(start, str):
            wanted = start.strip().strip("<>")
            for kid in kids:
                cid = (_Headers(kid).token("content-id") or "").strip("<>")
                if cid and cid == wanted:
                    root = kid
                    break
        self._walk(root, body, embedded=embedded, in_related=False)
        for kid in kids:
            if kid is not root:
                self._walk(kid, body, embedded=embedded, in_related=True)

    def _attachment(self, part: Message, ctype: str, *, in_related: bool) -> ConvertedAttachment:
        data = _payload_bytes(part)
        props: dict[int, PropData] = {
            pt.PR_ATTACH_METHOD: pt.ATTACH_BY_VALUE,
            pt.PR_ATTACH_MIME_TAG_W: ctype,
            pt.PR_ATTACH_DATA_BIN: data,
        }
        self._attachment_common(part, props, in_related=in_related)
        return ConvertedAttachment(props=props)

    def _attachment_common(
        self, part: Message, props: dict[int, PropData], *, in_related: bool
    ) -> None:
        headers = _Headers(part)
        filename = _filename(part)
        if filename:
            props[pt.PR_ATTACH_LONG_FILENAME_W] = filename
            props[pt.PR_DISPLAY_NAME_W] = filename
            dot = filename.rfind(".")
            if 0 <= dot < len(filename) - 1:
                props[pt.PR_ATTACH_EXTENSION_W] = filename[dot:]
        cid = (headers.token("content-id") or "").strip().strip("<>").strip()
        if cid:
            props[pt.PR_ATTACH_CONTENT_ID_W] = cid
        location = headers.token("content-location")
        if location:
            props[pt.PR_ATTACH_CONTENT_LOCATION_W] = location
        disposition = _disposition(part)
        inline = disposition == "inline" or (disposition is None and in_related and bool(cid))
        props[pt.PR_ATTACH_FLAGS] = ATT_MHTML_REF if inline else 0

    def _embedded(self, part: Message, body: _Body, *, embedded: int, in_related: bool) -> None:
        if embedded + 1 > self.limits.max_embedding_depth:
            raise MimeLimitExceeded(
                "max_embedding_depth",
                f"embedded messages nested deeper than {self.limits.max_embedding_depth}",
            )
        kids = _children(part)
        inner = kids[0] if kids else None
        if not isinstance(inner, Message):
            body.attachments.append(self._attachment(part, "message/rfc822", in_related=in_related))
            return
        converted = self.message(inner, embedded=embedded + 1)
        props: dict[int, PropData] = {
            pt.PR_ATTACH_METHOD: pt.ATTACH_EMBEDDED_MSG,
            pt.PR_ATTACH_MIME_TAG_W: "message/rfc822",
        }
        self._attachment_common(part, props, in_related=in_related)
        if pt.PR_DISPLAY_NAME_W not in props:
            props[pt.PR_DISPLAY_NAME_W] = converted.props.get(pt.PR_SUBJECT_W, "")
        body.attachments.append(ConvertedAttachment(props=props, embedded=converted))

    def _bodies(self, body: _Body, props: dict[int, PropData]) -> None:
        if body.plain is not None:
            props[pt.PR_BODY_W] = body.plain
        if body.html is not None:
            props[pt.PR_HTML] = body.html
        cpid = body.html_cpid if body.html is not None else body.plain_cpid
        if cpid is not None:
            props[pt.PR_INTERNET_CPID] = cpid
        if body.html is None:
            return
        text = body.html.decode("utf-8", "replace") if body.html_cpid == 65001 else None
        if text is None:
            codec = text_codec(CPID_CHARSETS.get(body.html_cpid or 0))
            text = body.html.decode(codec or "cp1252", "replace")
        for attachment in body.attachments:
            cid = attachment.props.get(pt.PR_ATTACH_CONTENT_ID_W)
            flags = attachment.props.get(pt.PR_ATTACH_FLAGS, 0)
            inline = isinstance(flags, int) and bool(flags & ATT_MHTML_REF)
            if isinstance(cid, str) and inline and f"cid:{cid}" in text:
                attachment.props[pt.PR_ATTACHMENT_HIDDEN] = True


def _cpid_for(data: bytes, charset: str | None) -> int:
    cpid = cpid_of(charset) if charset else None
    if cpid is not None:
        return cpid
    return 20127 if data.isascii() else 65001
