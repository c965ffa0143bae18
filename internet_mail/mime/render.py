"""MAPI to MIME: a :class:`ConvertedMessage` rendered as an Internet message.

Theory of operation
-------------------
The renderer writes bytes itself (CRLF line ends, headers folded at 78 columns by
:mod:`internet_mail.mime.text`), bottom-up: each entity is a list of folded header fields and a
body; a multipart's boundary is ``=_`` and 32 hex digits of the SHA-256 of its
children's bytes (rehashed in the unheard-of case that a child contains it). Dates
come from the properties, never from a clock, and nothing is random, so the same
message always renders to the same bytes.

The shape ([MS-OXCMAIL] 2.2.3, 2.1.3.2):

    multipart/mixed                     when there are non-inline attachments
      multipart/alternative             when there are PR_BODY and PR_HTML
        text/plain                      PR_BODY
        multipart/related               when inline attachments have a Content-ID
          text/html                     PR_HTML
          inline attachments
      attachments (base 64), embedded messages (message/rfc822)

Text goes in the charset of ``PR_INTERNET_CPID`` when it can hold it (UTF-8 else),
7bit when it is short-lined ASCII, quoted-printable otherwise; the HTML part keeps
``PR_HTML``'s bytes (7bit or base 64, both exact). Header values lose line breaks and
control characters (no header injection from a property). Bcc recipients are written
only when asked (an export of the sender's copy); a message for transport has none.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
from collections.abc import Iterable
from email.utils import format_datetime

from internet_mail.mime.addresses import (
    address_units,
    group_person,
    parse_flat_entry_list,
    parse_one_off,
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
)
from internet_mail.mime.text import (
    charset_of,
    fold,
    one_line,
    param,
    params_words,
    unstructured_words,
)
from mapi.model import proptags as pt
from mapi.model.properties import PropData, datetime_from_filetime

_Entity = tuple[list[bytes], bytes]
_CRLF = re.compile(r"\r\n|\r|\n")
_MIME_TAG = re.compile(r"^[a-z0-9!#$&.+^_-]{1,64}/[a-z0-9!#$&.+^_-]{1,64}$")
_IMPORTANCE = {pt.IMPORTANCE_LOW: "low", pt.IMPORTANCE_NORMAL: "normal", pt.IMPORTANCE_HIGH: "high"}
_X_PRIORITY = {pt.IMPORTANCE_LOW: "5 (Lowest)", pt.IMPORTANCE_HIGH: "1 (Highest)"}
_PRIORITY = {PRIO_URGENT: "urgent", PRIO_NORMAL: "normal", PRIO_NONURGENT: "non-urgent"}
_SENSITIVITY = {
    SENSITIVITY_PERSONAL: "Personal",
    SENSITIVITY_PRIVATE: "Private",
    SENSITIVITY_COMPANY_CONFIDENTIAL: "Company-Confidential",
}
#: Charsets we write text in only as UTF-8 (not ASCII-compatible, or unsafe in mail).
_NOT_FOR_TEXT = frozenset({"utf-16", "utf-7", "iso-2022-jp"})


def mapi_to_mime(message: ConvertedMessage, *, bcc: bool = False) -> bytes:
    """Render ``message`` as an Internet message (byte-stable: see the module doc).

    Args:
        message: the properties, recipients and attachments to render (``raw_mime`` is
            ignored: a caller that kept the original returns it instead).
        bcc: write a ``Bcc`` header for the MAPI_BCC recipients (for an export of the
            sender's copy; never for a message going to its recipients).

    Returns:
        The message's bytes, CRLF line ends, ending with CRLF.
    """
    return _message_bytes(message, bcc=bcc)


def _message_bytes(message: ConvertedMessage, *, bcc: bool) -> bytes:
    fields = _message_fields(message, bcc=bcc)
    entity_fields, body = _content(message, bcc=bcc)
    return b"".join(fields) + b"MIME-Version: 1.0\r\n" + b"".join(entity_fields) + b"\r\n" + body


def _str(props: dict[int, PropData], tag: int) -> str | None:
    value = props.get(tag)
    return value if isinstance(value, str) else None


def _int(props: dict[int, PropData], tag: int) -> int | None:
    value = props.get(tag)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _addresses(name: str, people: Iterable[tuple[str, str]]) -> bytes:
    units: list[str] = []
    for person in people:
        one = address_units(*person)
        if one:
            if units:
                units[-1] += ","
            units.extend(one)
    return fold(name, units) if units else b""


def _recipient_person(row: dict[int, PropData]) -> tuple[str, str] | None:
    return group_person("RECIPIENT", row)


def _message_fields(message: ConvertedMessage, *, bcc: bool) -> list[bytes]:
    props = message.props
    out: list[bytes] = []
    when = next(
        (v for t in (pt.PR_CLIENT_SUBMIT_TIME, pt.PR_MESSAGE_DELIVERY_TIME, pt.PR_CREATION_TIME)
         if (v := _int(props, t)) is not None),
        None,
    )  # fmt: skip
    if when is not None:
        stamp = datetime_from_filetime(when).replace(microsecond=0)
        out.append(fold("Date", format_datetime(stamp.astimezone(datetime.UTC)).split(" ")))
    author = group_person("SENT_REPRESENTING", props) or group_person("SENDER", props)
    sender = group_person("SENDER", props)
    if author is not None:
        out.append(_addresses("From", [author]))
    if sender is not None and author is not None and sender[1].lower() != author[1].lower():
        out.append(_addresses("Sender", [sender]))
    reply = props.get(pt.PR_REPLY_RECIPIENT_ENTRIES)
    if isinstance(reply, bytes):
        people = [parse_one_off(eid) for eid in parse_flat_entry_list(reply)]
        out.append(
            _addresses("Reply-To", [(n if n != a else "", a) for n, _, a in filter(None, people)])
        )
    kinds = [("To", pt.MAPI_TO), ("Cc", pt.MAPI_CC)] + ([("Bcc", pt.MAPI_BCC)] if bcc else [])
    for name, kind in kinds:
        rows = [r for r in message.recipients if r.get(pt.PR_RECIPIENT_TYPE) == kind]
        out.append(_addresses(name, filter(None, map(_recipient_person, rows))))
    subject = _str(props, pt.PR_SUBJECT_W)
    if subject is None and pt.PR_NORMALIZED_SUBJECT_W in props:
        subject = (_str(props, pt.PR_SUBJECT_PREFIX_W) or "") + (
            _str(props, pt.PR_NORMALIZED_SUBJECT_W) or ""
        )
    if subject is not None:
        out.append(fold("Subject", unstructured_words(subject)))
    for name, tag in (
        ("Message-ID", pt.PR_INTERNET_MESSAGE_ID_W),
        ("In-Reply-To", pt.PR_IN_REPLY_TO_ID_W),
        ("References", pt.PR_INTERNET_REFERENCES_W),
    ):
        value = _str(props, tag)
        if value and one_line(value):
            out.append(fold(name, one_line(value).split()))
    importance = _int(props, pt.PR_IMPORTANCE)
    if importance in _IMPORTANCE:
        out.append(fold("Importance", [_IMPORTANCE[importance]]))
        if importance in _X_PRIORITY:
            out.append(fold("X-Priority", _X_PRIORITY[importance].split(" ")))
    priority = _int(props, pt.PR_PRIORITY)
    if priority in _PRIORITY:
        out.append(fold("Priority", [_PRIORITY[priority]]))
    sensitivity = _int(props, pt.PR_SENSITIVITY)
    if sensitivity in _SENSITIVITY:
        out.append(fold("Sensitivity", [_SENSITIVITY[sensitivity]]))
    if props.get(pt.PR_READ_RECEIPT_REQUESTED) is True:
        to = _str(props, pt.PR_READ_RECEIPT_EMAIL_ADDRESS_W) or (author or sender or ("", ""))[1]
        if to:
            out.append(_addresses("Disposition-Notification-To", [("", to)]))
    if props.get(pt.PR_ORIGINATOR_DELIVERY_REPORT_REQUESTED) is True:
        to = (sender or author or ("", ""))[1]
        if to:
            out.append(_addresses("Return-Receipt-To", [("", to)]))
    return [f for f in out if f]


# --- entities -----------------------------------------------------------------------------


def _entity_bytes(entity: _Entity) -> bytes:
    return b"".join(entity[0]) + b"\r\n" + entity[1]


def _multipart(subtype: str, children: list[_Entity]) -> _Entity:
    parts = [_entity_bytes(child) for child in children]
    digest = hashlib.sha256(subtype.encode())
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    boundary = "=_" + digest.hexdigest()[:32]
    while any(boundary.encode() in part for part in parts):
        boundary = "=_" + hashlib.sha256(boundary.encode()).hexdigest()[:32]
    mark = b"--" + boundary.encode()
    body = b"".join(mark + b"\r\n" + part + b"\r\n" for part in parts) + mark + b"--\r\n"
    head = fold("Content-Type", params_words(f"multipart/{subtype}", [[f'boundary="{boundary}";']]))
    return [head], body


def _line_safe(data: bytes) -> bool:
    lines = data.split(b"\r\n")
    return all(
        b"\r" not in ln and b"\n" not in ln and b"\0" not in ln and len(ln) <= 998 for ln in lines
    )


def _seven_bit_safe(data: bytes) -> bool:
    if not data.isascii() or b"\x00" in data:
        return False
    if data and not data.endswith(b"\r\n"):
        return False
    lines = data.split(b"\r\n")
    return all(b"\r" not in line and b"\n" not in line and len(line) <= 998 for line in lines)


def _text_entity(text: str, cpid: int | None) -> _Entity:
    text = _CRLF.sub("\r\n", text)
    charset = charset_of(cpid)
    if charset in _NOT_FOR_TEXT:
        charset = "utf-8"
    try:
        data = text.encode(charset)
    except (UnicodeError, LookupError):
        charset, data = "utf-8", text.encode("utf-8", "surrogatepass")
    head = fold("Content-Type", params_words("text/plain", [[f'charset="{charset}";']]))
    if _seven_bit_safe(data):
        return [head, b"Content-Transfer-Encoding: 7bit\r\n"], data
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    if data and not data.endswith(b"\r\n"):
        encoded += b"=\r\n"
    if b"\r\n" not in data:  # b2a_qp kept lone LF line ends when it saw no CRLF
        encoded = encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return [head, b"Content-Transfer-Encoding: quoted-printable\r\n"], encoded


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _html_entity(html: bytes, cpid: int | None) -> _Entity:
    charset = charset_of(cpid)
    head = fold("Content-Type", params_words("text/html", [[f'charset="{charset}";']]))
    if _seven_bit_safe(html):
        return [head, b"Content-Transfer-Encoding: 7bit\r\n"], html
    return [head, b"Content-Transfer-Encoding: base64\r\n"], _base64(html)


def _attachment_entity(attachment: ConvertedAttachment, *, bcc: bool) -> _Entity:
    props = attachment.props
    filename = _str(props, pt.PR_ATTACH_LONG_FILENAME_W) or _str(props, pt.PR_ATTACH_FILENAME_W)
    flags = _int(props, pt.PR_ATTACH_FLAGS) or 0
    inline = bool(flags & ATT_MHTML_REF)
    if attachment.embedded is not None:
        ctype, body = "message/rfc822", _message_bytes(attachment.embedded, bcc=bcc)
        cte = "8bit" if not body.isascii() else "7bit"
    else:
        ctype = (_str(props, pt.PR_ATTACH_MIME_TAG_W) or "").strip().lower()
        if not _MIME_TAG.match(ctype) or ctype.startswith("multipart/"):
            ctype = "application/octet-stream"
        body, cte = _base64(attachment.data), "base64"
        if ctype.startswith("message/"):  # RFC 2046 5.2: never encoded; readers parse it
            body = _CRLF.sub("\r\n", attachment.data.decode("latin-1")).encode("latin-1")
            if body and not body.endswith(b"\r\n"):
                body += b"\r\n"
            cte = "7bit" if body.isascii() else "8bit"
            if ctype in ("message/rfc822", "message/global") or not _line_safe(body):
                ctype, body, cte = "application/octet-stream", _base64(attachment.data), "base64"
    name_params = [param("name", filename)] if filename else []
    fields = [fold("Content-Type", params_words(ctype, name_params))]
    fields.append(f"Content-Transfer-Encoding: {cte}\r\n".encode())
    disposition = "inline" if inline else "attachment"
    file_params = [param("filename", filename)] if filename else []
    fields.append(fold("Content-Disposition", params_words(disposition, file_params)))
    cid = _str(props, pt.PR_ATTACH_CONTENT_ID_W)
    if cid and one_line(cid).strip("<>"):
        fields.append(fold("Content-ID", ["<" + one_line(cid).strip("<>").replace(" ", "") + ">"]))
    location = _str(props, pt.PR_ATTACH_CONTENT_LOCATION_W)
    if location and one_line(location):
        fields.append(fold("Content-Location", one_line(location).split(" ")))
    return fields, body


def _content(message: ConvertedMessage, *, bcc: bool) -> _Entity:
    props = message.props
    cpid = _int(props, pt.PR_INTERNET_CPID)
    plain = _str(props, pt.PR_BODY_W)
    html = props.get(pt.PR_HTML)
    html = html if isinstance(html, bytes) else None
    related: list[_Entity] = []
    mixed: list[_Entity] = []
    for attachment in message.attachments:
        entity = _attachment_entity(attachment, bcc=bcc)
        flags = _int(attachment.props, pt.PR_ATTACH_FLAGS) or 0
        has_cid = bool(_str(attachment.props, pt.PR_ATTACH_CONTENT_ID_W))
        inline_ref = bool(flags & ATT_MHTML_REF) and has_cid and attachment.embedded is None
        (related if html is not None and inline_ref else mixed).append(entity)
    html_part: _Entity | None = None
    if html is not None:
        html_part = _html_entity(html, cpid)
        if related:
            html_part = _multipart("related", [html_part, *related])
    body: list[_Entity] = []
    if plain is not None and html_part is not None:
        body = [_multipart("alternative", [_text_entity(plain, cpid), html_part])]
    elif html_part is not None:
        body = [html_part]
    elif plain is not None or not mixed:  # no body and no attachments: an empty text
        body = [_text_entity(plain or "", cpid)]
    if mixed:
        return _multipart("mixed", [*body, *mixed])
    return body[0]
