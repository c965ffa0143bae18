"""MIME <-> MAPI conversion (internet_mail.mime): the corpus's expected properties, store-ready
values, stable rendering, round trips, an independent reader, limits, and hypothesis."""

from __future__ import annotations

import email
import email.policy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mime_corpus import EXPECTED, PDF, PNG, corpus

from internet_mail.mime import (
    ATT_MHTML_REF,
    ConvertedAttachment,
    ConvertedMessage,
    MimeLimitExceeded,
    mapi_to_mime,
    mime_to_mapi,
)
from internet_mail.mime.addresses import parse_flat_entry_list, parse_one_off
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.model.properties import PropData, validate

CORPUS = corpus()
BIG = Limits(max_value_bytes=1 << 30, inline_value_bytes=4096)
#: Properties that describe the transport or are derived, not carried by rendering.
NOT_RENDERED = {pt.PR_TRANSPORT_MESSAGE_HEADERS_W, pt.PR_MESSAGE_DELIVERY_TIME}


def _check(conv: ConvertedMessage, expected: dict[str, Any], where: str) -> None:
    for key, want in expected.items():
        if key == "recipients":
            got = [
                (r[pt.PR_RECIPIENT_TYPE], r[pt.PR_DISPLAY_NAME_W], r[pt.PR_EMAIL_ADDRESS_W])
                for r in conv.recipients
            ]
            assert got == want, where
        elif key == "attachments":
            assert len(conv.attachments) == len(want), (where, conv.attachments)
            for i, (att, spec) in enumerate(zip(conv.attachments, want, strict=True)):
                _check_attachment(att, spec, f"{where} attachment {i}")
        elif key == "defects":
            assert bool(conv.defects) is want, (where, conv.defects)
        else:
            got = conv.props.get(pt.tag_from_name(key))
            assert got == want, f"{where}: {key} is {got!r}, expected {want!r}"


def _check_attachment(att: ConvertedAttachment, spec: dict[str, Any], where: str) -> None:
    for key, want in spec.items():
        if key == "embedded":
            assert att.embedded is not None, where
            _check(att.embedded, want, where + " embedded")
        else:
            got = att.props.get(pt.tag_from_name(key))
            assert got == want, f"{where}: {key} is {got!r}, expected {want!r}"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_expected_properties(name: str) -> None:
    conv = mime_to_mapi(CORPUS[name], received=133_000_000_000_000_000)
    _check(conv, EXPECTED[name], name)
    assert conv.raw_mime == CORPUS[name]
    assert conv.props[pt.PR_MESSAGE_DELIVERY_TIME] == 133_000_000_000_000_000
    assert conv.props[pt.PR_MESSAGE_CLASS_W] == "IPM.Note"


def _all_props(conv: ConvertedMessage) -> list[dict[int, PropData]]:
    out = [conv.props, *conv.recipients]
    for att in conv.attachments:
        out.append(att.props)
        if att.embedded is not None:
            out.extend(_all_props(att.embedded))
    return out


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_values_are_store_ready(name: str) -> None:
    conv = mime_to_mapi(CORPUS[name])
    for props in _all_props(conv):
        for tag, value in props.items():
            assert validate(tag, value, BIG) == value, (name, pt.tag_name(tag))
            assert pt.canonical_tag(tag) == tag
    for row in conv.recipients:
        assert row[pt.PR_RECIPIENT_TYPE] in (pt.MAPI_TO, pt.MAPI_CC, pt.MAPI_BCC)


def _comparable(conv: ConvertedMessage) -> Any:
    props = {k: v for k, v in conv.props.items() if k not in NOT_RENDERED}
    atts = [
        (att.props, None if att.embedded is None else _comparable(att.embedded))
        for att in conv.attachments
    ]
    return props, conv.recipients, atts


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_renders_stably_and_round_trips(name: str) -> None:
    first = mime_to_mapi(CORPUS[name])
    rendered = mapi_to_mime(first, bcc=True)
    assert mapi_to_mime(first, bcc=True) == rendered  # twice: the same bytes
    assert rendered.endswith(b"\r\n")
    assert b"\n" not in rendered.replace(b"\r\n", b"")  # CRLF only
    second = mime_to_mapi(rendered)
    # What MAPI -> MIME -> MAPI keeps: everything the rendering carries.
    assert _comparable(second) == _comparable(first)
    assert mapi_to_mime(second, bcc=True) == rendered


def _utf8(text: str) -> str:
    """A header value with raw UTF-8 (RFC 6532) read as such; the stdlib reader leaves its
    bytes as surrogate escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8")


def _leaves(msg: email.message.Message) -> list[email.message.Message]:
    return [p for p in msg.walk() if not p.is_multipart()]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_independent_reader_sees_what_was_rendered(name: str) -> None:
    """Python's email parser (policy default, structured headers) reads our rendering and
    finds the same subject, people, ids and parts as the properties."""
    conv = mime_to_mapi(CORPUS[name])
    msg = email.message_from_bytes(mapi_to_mime(conv, bcc=True), policy=email.policy.default)
    assert not [d for d in msg.defects], msg.defects
    props = conv.props
    assert msg.get("Subject") == props.get(pt.PR_SUBJECT_W)
    if pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W in props:
        (author,) = msg["From"].addresses
        assert _utf8(author.addr_spec) == props[pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W]
    for header, kind in (("To", pt.MAPI_TO), ("Cc", pt.MAPI_CC), ("Bcc", pt.MAPI_BCC)):
        want = [
            r[pt.PR_EMAIL_ADDRESS_W] for r in conv.recipients if r[pt.PR_RECIPIENT_TYPE] == kind
        ]
        got = [_utf8(a.addr_spec) for a in msg[header].addresses] if msg[header] else []
        assert got == want, header
    assert msg.get("Message-ID") == props.get(pt.PR_INTERNET_MESSAGE_ID_W)
    if pt.PR_BODY_W in props:
        plain = msg.get_body(("plain",))
        assert plain is not None
        assert plain.get_content().replace("\r\n", "\n") == props[pt.PR_BODY_W].replace(
            "\r\n", "\n"
        )
    if pt.PR_HTML in props:
        html = msg.get_body(("html",))
        assert html is not None
        assert html.get_payload(decode=True) == props[pt.PR_HTML]
    files = [p for p in _leaves(msg) if p.get_content_disposition() is not None]
    by_value = [  # message/* parts are containers to the reader: compared elsewhere
        a for a in conv.attachments
        if a.embedded is None and not str(a.props[pt.PR_ATTACH_MIME_TAG_W]).startswith("message/")
    ]  # fmt: skip
    assert sorted(
        p.get_payload(decode=True) for p in files if p.get_content_type() != "message/rfc822"
    ) == sorted(a.data for a in by_value)
    for part, att in zip(files, by_value, strict=False):
        if pt.PR_ATTACH_LONG_FILENAME_W in att.props and part.get_payload(decode=True) == att.data:
            assert part.get_filename() == att.props[pt.PR_ATTACH_LONG_FILENAME_W]


def test_reply_to_entries_and_one_off_ids() -> None:
    conv = mime_to_mapi(CORPUS["reply_to_list"])
    entries = parse_flat_entry_list(conv.props[pt.PR_REPLY_RECIPIENT_ENTRIES])  # type: ignore[arg-type]
    people = [parse_one_off(e) for e in entries]
    assert people == [
        ("Discussion", "SMTP", "discuss@lists.example.org"),
        ("owner@lists.example.org", "SMTP", "owner@lists.example.org"),
    ]
    sender = conv.props[pt.PR_SENDER_ENTRYID]
    assert parse_one_off(sender) == ("List Robot", "SMTP", "robot@lists.example.org")  # type: ignore[arg-type]
    assert conv.props[pt.PR_SENDER_SEARCH_KEY] == b"SMTP:ROBOT@LISTS.EXAMPLE.ORG\x00"


def test_bcc_is_written_only_when_asked() -> None:
    conv = mime_to_mapi(CORPUS["bcc_and_groups"])
    assert b"hidden@example.com" not in mapi_to_mime(conv)
    assert b"Bcc: hidden@example.com\r\n" in mapi_to_mime(conv, bcc=True)


def test_transport_headers_are_the_header_block() -> None:
    conv = mime_to_mapi(CORPUS["plain_ascii"])
    headers = conv.props[pt.PR_TRANSPORT_MESSAGE_HEADERS_W]
    assert isinstance(headers, str)
    assert headers.startswith("Return-Path: <alice@example.com>\r\nReceived: from mx")
    assert headers.endswith("Content-Type: text/plain; charset=us-ascii")


# --- a message made through MAPI ------------------------------------------------------


def _made_through_mapi() -> ConvertedMessage:
    inner = ConvertedMessage(
        props={
            pt.PR_MESSAGE_CLASS_W: "IPM.Note",
            pt.PR_SUBJECT_W: "Inner",
            pt.PR_SUBJECT_PREFIX_W: "",
            pt.PR_NORMALIZED_SUBJECT_W: "Inner",
            pt.PR_CONVERSATION_TOPIC_W: "Inner",
            pt.PR_BODY_W: "inner body\r\n",
            pt.PR_INTERNET_CPID: 65001,
        }
    )
    return ConvertedMessage(
        props={
            pt.PR_MESSAGE_CLASS_W: "IPM.Note",
            pt.PR_SUBJECT_W: "Ünïcödé subject with a very long tail that needs folding over lines",
            pt.PR_SENT_REPRESENTING_NAME_W: "Ålice",
            pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W: "alice@example.org",
            pt.PR_CLIENT_SUBMIT_TIME: 134_405_928_000_000_000,
            pt.PR_BODY_W: "Hello\r\nwith a line of " + "x" * 1200 + "\r\n",
            pt.PR_HTML: b"<p>Hello <img src='cid:logo'></p>",
            pt.PR_INTERNET_CPID: 65001,
            pt.PR_IMPORTANCE: 0,
            pt.PR_SENSITIVITY: 1,
            pt.PR_PRIORITY: -1,
        },
        recipients=[
            {
                pt.PR_DISPLAY_NAME_W: 'Bob, "the" Builder',
                pt.PR_EMAIL_ADDRESS_W: "bob@example.org",
                pt.PR_ADDRTYPE_W: "SMTP",
                pt.PR_RECIPIENT_TYPE: pt.MAPI_TO,
            },
        ],
        attachments=[
            ConvertedAttachment(
                props={
                    pt.PR_ATTACH_METHOD: pt.ATTACH_BY_VALUE,
                    pt.PR_ATTACH_MIME_TAG_W: "image/png",
                    pt.PR_ATTACH_CONTENT_ID_W: "logo",
                    pt.PR_ATTACH_FLAGS: ATT_MHTML_REF,
                    pt.PR_ATTACH_DATA_BIN: PNG,
                }
            ),
            ConvertedAttachment(
                props={
                    pt.PR_ATTACH_METHOD: pt.ATTACH_BY_VALUE,
                    pt.PR_ATTACH_MIME_TAG_W: "application/pdf",
                    pt.PR_ATTACH_LONG_FILENAME_W: "Ein sehr langer Dateiname für den Bericht "
                    "über das Jahr 2026 mit Umlauten äöü.pdf",
                    pt.PR_ATTACH_DATA_BIN: PDF,
                }
            ),
            ConvertedAttachment(
                props={pt.PR_ATTACH_METHOD: pt.ATTACH_EMBEDDED_MSG}, embedded=inner
            ),
        ],
    )


def test_made_through_mapi_renders_and_reads_back() -> None:
    message = _made_through_mapi()
    raw = mapi_to_mime(message)
    assert raw == mapi_to_mime(message)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    back = mime_to_mapi(raw)
    for tag, value in message.props.items():
        assert back.props.get(tag) == value, pt.tag_name(tag)
    assert back.recipients[0][pt.PR_DISPLAY_NAME_W] == 'Bob, "the" Builder'
    logo, pdf, emb = back.attachments
    assert logo.props[pt.PR_ATTACHMENT_HIDDEN] is True and logo.data == PNG
    assert (
        pdf.props[pt.PR_ATTACH_LONG_FILENAME_W]
        == message.attachments[1].props[pt.PR_ATTACH_LONG_FILENAME_W]
    )
    assert emb.embedded is not None and emb.embedded.props[pt.PR_BODY_W] == "inner body\r\n"


def test_header_injection_through_properties_is_impossible() -> None:
    message = ConvertedMessage(
        props={
            pt.PR_SUBJECT_W: "hi\r\nBcc: victim@example.com",
            pt.PR_INTERNET_MESSAGE_ID_W: "<a@b>\r\nX-Evil: 1",
            pt.PR_SENT_REPRESENTING_NAME_W: "x\nTo: y@z",
            pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W: "a@b\r\n.\r\n",
            pt.PR_BODY_W: "body",
        }
    )
    raw = mapi_to_mime(message)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None and parsed["To"] is None


# --- limits -------------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    head = b"From: a@example.com\r\nSubject: deep\r\n"
    body = b"Content-Type: text/plain\r\n\r\ncore\r\n"
    for level in range(depth):
        boundary = b"b%d" % level
        body = (
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--' + boundary
            + b"\r\n" + body + b"\r\n--" + boundary + b"--\r\n"
        )  # fmt: skip
    return head + body


def test_depth_within_the_limit_converts() -> None:
    conv = mime_to_mapi(_nested(20))
    assert conv.props[pt.PR_BODY_W] == "core\r\n"


@pytest.mark.parametrize("depth", [33, 400, 5000])
def test_absurd_nesting_is_the_typed_error(depth: int) -> None:
    with pytest.raises(MimeLimitExceeded) as info:
        mime_to_mapi(_nested(depth))
    assert info.value.limit in ("max_mime_depth", "max_mime_parts")
    assert info.value.hresult == 0x80040117


def test_part_count_limit() -> None:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(50))
    raw = b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"
    assert len(mime_to_mapi(raw).attachments) == 49
    with pytest.raises(MimeLimitExceeded) as info:
        mime_to_mapi(raw, limits=Limits(max_mime_parts=20))
    assert info.value.limit == "max_mime_parts"


def test_header_limits() -> None:
    raw = b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\nbody"
    assert mime_to_mapi(raw).props[pt.PR_BODY_W] == "body"
    with pytest.raises(MimeLimitExceeded) as info:
        mime_to_mapi(raw, limits=Limits(max_mime_header_fields=100))
    assert info.value.limit == "max_mime_header_fields"
    with pytest.raises(MimeLimitExceeded) as info:
        mime_to_mapi(raw, limits=Limits(max_mime_header_bytes=1000))
    assert info.value.limit == "max_mime_header_bytes"


def test_recipient_and_embedding_limits() -> None:
    raw = b"To: " + b", ".join(b"u%d@example.com" % i for i in range(30)) + b"\r\n\r\nx"
    assert len(mime_to_mapi(raw).recipients) == 30
    with pytest.raises(MimeLimitExceeded):
        mime_to_mapi(raw, limits=Limits(max_recipients=10))
    inner = b"Subject: core\r\n\r\ncore\r\n"
    for _ in range(5):
        inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
    assert mime_to_mapi(inner).attachments[0].embedded is not None
    with pytest.raises(MimeLimitExceeded) as info:
        mime_to_mapi(inner, limits=Limits(max_embedding_depth=3))
    assert info.value.limit == "max_embedding_depth"


def test_hostile_headers_cost_only_themselves() -> None:
    raw = (
        b"From: " + b"(" * 5000 + b"x@example.com\r\n"
        b"Content-Type: text/plain; " + b"a=(" * 3000 + b"\r\n"
        b"Subject: =?utf-8?b?####?= =?utf-99?q?x?= =?\xff?q?y?=\r\n"
        b"Date: Tue, 99 Zzz 99999 99:99:99 +9999\r\n\r\nbody"
    )
    conv = mime_to_mapi(raw)
    assert conv.props[pt.PR_SUBJECT_W] == "xy"  # garbage decodes to nothing, charsets fall back
    assert pt.PR_CLIENT_SUBMIT_TIME not in conv.props


# --- hypothesis ---------------------------------------------------------------------------

_SEEDS = list(CORPUS.values())


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[i] = draw(st.integers(0, 255))
        elif op == 1:
            del data[i : i + draw(st.integers(1, 40))]
        elif op == 2:
            data[i:i] = draw(st.binary(max_size=40))
        else:
            data[i:i] = data[i : i + draw(st.integers(1, 200))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), _mutated()))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        conv = mime_to_mapi(data)
    except MimeLimitExceeded:
        return
    for props in _all_props(conv):
        for tag, value in props.items():
            validate(tag, value, BIG)
    rendered = mapi_to_mime(conv, bcc=True)
    assert mapi_to_mime(conv, bcc=True) == rendered
    # Garbage may need one normalisation (the corpus needs none): after it, a fixpoint.
    again = mapi_to_mime(mime_to_mapi(rendered), bcc=True)
    assert mapi_to_mime(mime_to_mapi(again), bcc=True) == again


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
    max_size=60,
)
_line = _text.map(lambda s: s.replace("\r", "").replace("\n", ""))
_address = st.from_regex(r"[a-z][a-z0-9.]{0,10}@[a-z]{1,8}\.(com|org|de)", fullmatch=True)
_name = _line.map(str.strip)


@st.composite
def _messages(draw: st.DrawFn) -> ConvertedMessage:
    props: dict[int, PropData] = {pt.PR_MESSAGE_CLASS_W: "IPM.Note", pt.PR_INTERNET_CPID: 65001}
    subject = " ".join(draw(_line).split())
    if subject:
        props[pt.PR_SUBJECT_W] = subject
    author = draw(_address)
    props[pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W] = author
    props[pt.PR_SENT_REPRESENTING_NAME_W] = " ".join(draw(_name).split()) or author
    props[pt.PR_CLIENT_SUBMIT_TIME] = draw(st.integers(0, 2**30)) * 10_000_000 + 116444736000000000
    lines = draw(st.lists(_line, max_size=5))
    props[pt.PR_BODY_W] = "\r\n".join(lines) + draw(st.sampled_from(["", "\r\n"]))
    if draw(st.booleans()):
        props[pt.PR_HTML] = draw(_line).encode("utf-8")
    for tag, values in ((pt.PR_IMPORTANCE, [0, 1, 2]), (pt.PR_SENSITIVITY, [1, 2, 3]),
                        (pt.PR_PRIORITY, [-1, 0, 1])):  # fmt: skip
        if draw(st.booleans()):
            props[tag] = draw(st.sampled_from(values))
    recipients = []
    for kind in draw(st.lists(st.sampled_from([1, 2, 3]), max_size=4)):
        address = draw(_address)
        name = " ".join(draw(_name).split()) or address
        recipients.append({pt.PR_DISPLAY_NAME_W: name, pt.PR_EMAIL_ADDRESS_W: address,
                           pt.PR_RECIPIENT_TYPE: kind})  # fmt: skip
    attachments = []
    for data in draw(st.lists(st.binary(max_size=300), max_size=3)):
        att = {pt.PR_ATTACH_METHOD: 1, pt.PR_ATTACH_MIME_TAG_W: "application/octet-stream",
               pt.PR_ATTACH_DATA_BIN: data}  # fmt: skip
        filename = draw(_name)
        if filename:
            att[pt.PR_ATTACH_LONG_FILENAME_W] = filename
        attachments.append(ConvertedAttachment(props=att))
    return ConvertedMessage(props=props, recipients=recipients, attachments=attachments)


@settings(max_examples=200, deadline=None)
@given(_messages())
def test_generated_messages_round_trip(message: ConvertedMessage) -> None:
    raw = mapi_to_mime(message, bcc=True)
    assert raw == mapi_to_mime(message, bcc=True)
    back = mime_to_mapi(raw)
    for tag, value in message.props.items():
        assert back.props.get(tag) == value, pt.tag_name(tag)
    got = [(r[pt.PR_RECIPIENT_TYPE], r[pt.PR_DISPLAY_NAME_W], r[pt.PR_EMAIL_ADDRESS_W])
           for r in back.recipients]  # fmt: skip
    want = [(r[pt.PR_RECIPIENT_TYPE], r[pt.PR_DISPLAY_NAME_W], r[pt.PR_EMAIL_ADDRESS_W])
            for r in message.recipients]  # fmt: skip
    assert got == sorted(want, key=lambda row: row[0])  # rendered To, then Cc, then Bcc
    assert [a.data for a in back.attachments] == [a.data for a in message.attachments]
    assert [a.props.get(pt.PR_ATTACH_LONG_FILENAME_W) for a in back.attachments] == [
        a.props.get(pt.PR_ATTACH_LONG_FILENAME_W) for a in message.attachments
    ]
