"""Submission: the delivered copy carries the real sender's identity, and named
properties are translated by name into the recipient's mailbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mapi_helpers import FAST_KDF, Clock, contents_of

from mapi.model import named
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects.messages import Message
from mapi.objects.submit import submit
from mapi.store import MsgStore, ObjectStore

SPOOF_EID = bytes(4) + bytes(16) + b"\x00\x00" + b"ceo@example.org"
BIG = bytes(range(256)) * 40  # beyond the inline limit: a large (streamed) value

SENDER_SMTP_W = 0x5D01001F
SENDER_SMTP_A = 0x5D01001E
SENT_REP_SMTP_W = 0x5D02001F
SENDER_SEARCH_KEY = 0x0C1D0102
SENT_REP_SEARCH_KEY = 0x003B0102
TRANSPORT_HEADERS_W = 0x007D001F

#: Spoofed envelope properties a sender may put on a draft.
SPOOFED: list[tuple[int, object]] = [
    (pt.PR_SENDER_NAME_W, "CEO"),
    (pt.PR_SENDER_EMAIL_ADDRESS_W, "ceo@example.org"),
    (pt.PR_SENDER_ENTRYID, SPOOF_EID),
    (pt.PR_SENT_REPRESENTING_ENTRYID, SPOOF_EID),
    (SENDER_SMTP_A, "ceo@example.org"),
    (SENT_REP_SMTP_W, "ceo@example.org"),
    (SENDER_SEARCH_KEY, b"SMTP:CEO@EXAMPLE.ORG\x00"),
    (SENT_REP_SEARCH_KEY, b"SMTP:CEO@EXAMPLE.ORG\x00"),
    (TRANSPORT_HEADERS_W, "From: CEO <ceo@example.org>\r\nX-Sender-Verified: yes\r\n"),
]
#: Ids that must not survive delivery with the sender's own values.
REMOVED_IDS = {
    pt.prop_id(t)
    for t in (pt.PR_SENDER_ENTRYID, pt.PR_SENT_REPRESENTING_ENTRYID, SENDER_SEARCH_KEY,
              SENT_REP_SEARCH_KEY, TRANSPORT_HEADERS_W)
}  # fmt: skip

VERIFIED = named.PropName.by_name(named.PS_PUBLIC_STRINGS, "X-Sender-Verified")
WHATEVER = named.PropName.by_name(named.PS_PUBLIC_STRINGS, "whatever")
COLOUR = named.PropName.by_id(named.PSETID_COMMON, 0x8501)
BLOB = named.PropName.by_name(named.PS_PUBLIC_STRINGS, "blob")


def _props(msg: Message, *tags: int) -> dict[int, object]:
    return dict(msg.get_props(list(tags)).as_dict())


def _draft(view: MsgStore, subject: str, to: str, props: list[tuple[int, object]]) -> Message:
    drafts = view.open_folder(view.special_folder_id("drafts"))
    msg = drafts.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, subject), (pt.PR_MESSAGE_CLASS_W, "IPM.Note"), *props])
    msg.modify_recipients([[(pt.PR_DISPLAY_NAME_W, to), (pt.PR_EMAIL_ADDRESS_W, to),
                            (pt.PR_RECIPIENT_TYPE, pt.MAPI_TO)]])  # fmt: skip
    return msg


def _tag(pid: int, tag: int) -> int:
    return pt.make_tag(pid, pt.prop_type(tag))


# --- 1. Sender identity -------------------------------------------------------------------


def test_delivered_copy_carries_the_real_sender_identity(alice: MsgStore, bob: MsgStore) -> None:
    msg = _draft(alice, "wire the money", "bob@example.org", SPOOFED)
    # A forwarded message inside: its sender properties are content, kept as they are.
    att = msg.create_attach()
    att.set_props([(pt.PR_ATTACH_METHOD, pt.ATTACH_EMBEDDED_MSG)])
    inner = att.open_embedded(create=True)
    inner.set_props([(pt.PR_SUBJECT_W, "forwarded"), (pt.PR_SENDER_ENTRYID, SPOOF_EID),
                     (TRANSPORT_HEADERS_W, "From: someone\r\n")])  # fmt: skip
    inner.save_changes()
    att.save_changes()
    submit(msg)

    [copy] = contents_of(bob, "inbox")
    shown = (
        pt.PR_SENDER_NAME_W, pt.PR_SENDER_EMAIL_ADDRESS_W, pt.PR_SENDER_ADDRTYPE_W,
        pt.PR_SENT_REPRESENTING_NAME_W, pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W,
        SENDER_SMTP_W, SENDER_SMTP_A, SENT_REP_SMTP_W,
    )  # fmt: skip
    assert _props(copy, *shown) == {
        pt.PR_SENDER_NAME_W: "Alice Example",
        pt.PR_SENDER_EMAIL_ADDRESS_W: "alice@example.org",
        pt.PR_SENDER_ADDRTYPE_W: "SMTP",
        pt.PR_SENT_REPRESENTING_NAME_W: "Alice Example",
        pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W: "alice@example.org",
        SENDER_SMTP_W: "alice@example.org",
        SENDER_SMTP_A: "alice@example.org",
        SENT_REP_SMTP_W: "alice@example.org",
    }
    assert not REMOVED_IDS & {pt.prop_id(t) for t in copy.get_prop_list()}
    assert _props(copy, *(t for t, _ in SPOOFED if pt.prop_id(t) in REMOVED_IDS)) == {}
    # The embedded message is delivered as it was written.
    emb = copy.open_attach(0).open_embedded()
    assert _props(emb, pt.PR_SENDER_ENTRYID, TRANSPORT_HEADERS_W) == {
        pt.PR_SENDER_ENTRYID: SPOOF_EID,
        TRANSPORT_HEADERS_W: "From: someone\r\n",
    }

    # The sender's own filed copy keeps what she set (only the existing sender rules).
    [sent] = contents_of(alice, "sent")
    kept = _props(sent, pt.PR_SENDER_ENTRYID, SENT_REP_SMTP_W, TRANSPORT_HEADERS_W)
    assert kept == {
        pt.PR_SENDER_ENTRYID: SPOOF_EID,
        SENT_REP_SMTP_W: "ceo@example.org",
        TRANSPORT_HEADERS_W: "From: CEO <ceo@example.org>\r\nX-Sender-Verified: yes\r\n",
    }


def test_sender_without_email_gets_no_smtp_address(store: ObjectStore, bob: MsgStore) -> None:
    store.add_user("carol", "carol-pw", display_name="Carol NoMail")
    carol = store.logon_with_password("carol", "carol-pw").open_store()
    submit(_draft(carol, "hello", "bob@example.org", SPOOFED))
    [copy] = contents_of(bob, "inbox")
    assert _props(copy, pt.PR_SENDER_NAME_W, pt.PR_SENDER_EMAIL_ADDRESS_W) == {
        pt.PR_SENDER_NAME_W: "Carol NoMail",
        pt.PR_SENDER_EMAIL_ADDRESS_W: "carol",
    }
    smtp_ids = {pt.prop_id(SENDER_SMTP_W), pt.prop_id(SENT_REP_SMTP_W)}
    assert not (smtp_ids | REMOVED_IDS) & {pt.prop_id(t) for t in copy.get_prop_list()}


# --- 2. Named properties --------------------------------------------------------------------


def test_named_properties_are_translated_by_name(alice: MsgStore, bob: MsgStore) -> None:
    # Bob (the recipient) maps X-Sender-Verified first, so it is his 0x8000.
    bob_ids = bob.get_ids_from_names([VERIFIED, named.PropName.by_id(named.PSETID_COMMON, 1),
                                      named.PropName.by_id(named.PSETID_COMMON, 2)],
                                     create=True)  # fmt: skip
    assert bob_ids == [0x8000, 0x8001, 0x8002]
    # Alice (the sender) maps other names to the same numbers.
    a_what, a_colour, a_blob = alice.get_ids_from_names([WHATEVER, COLOUR, BLOB], create=True)
    assert (a_what, a_colour, a_blob) == (0x8000, 0x8001, 0x8002)
    what_tag = pt.make_tag(a_what, pt.PropType.PT_BOOLEAN)
    colour_tag = pt.make_tag(a_colour, pt.PropType.PT_UNICODE)
    blob_tag = pt.make_tag(a_blob, pt.PropType.PT_BINARY)
    unmapped_tag = pt.make_tag(0x8123, pt.PropType.PT_BOOLEAN)  # no name in Alice's store

    msg = _draft(
        alice, "named", "bob@example.org", [(what_tag, True), (colour_tag, "blue"), (blob_tag, BIG)]
    )  # fmt: skip
    msg.modify_recipients([[(pt.PR_DISPLAY_NAME_W, "bob@example.org"),
                            (pt.PR_EMAIL_ADDRESS_W, "bob@example.org"),
                            (pt.PR_RECIPIENT_TYPE, pt.MAPI_TO), (colour_tag, "row-blue"),
                            (unmapped_tag, True)]])  # fmt: skip
    att = msg.create_attach()
    att.set_props([(pt.PR_ATTACH_METHOD, pt.ATTACH_BY_VALUE), (colour_tag, "att-blue"),
                   (blob_tag, BIG[::-1])])  # fmt: skip
    att.save_changes()
    att2 = msg.create_attach()
    att2.set_props([(pt.PR_ATTACH_METHOD, pt.ATTACH_EMBEDDED_MSG)])
    inner = att2.open_embedded(create=True)
    inner.set_props([(pt.PR_SUBJECT_W, "inner"), (colour_tag, "inner-blue"), (what_tag, True)])
    inner.save_changes()
    att2.save_changes()
    submit(msg)

    b_what, b_colour, b_blob = bob.get_ids_from_names([WHATEVER, COLOUR, BLOB])
    assert {b_what, b_colour, b_blob}.isdisjoint({0, 0x8000, 0x8001, 0x8002})
    [copy] = contents_of(bob, "inbox")
    wanted = (_tag(b_what, what_tag), _tag(b_colour, colour_tag), _tag(b_blob, blob_tag))
    assert _props(copy, *wanted) == {
        _tag(b_what, what_tag): True,
        _tag(b_colour, colour_tag): "blue",
        _tag(b_blob, blob_tag): BIG,
    }
    # Nothing landed under Bob's own meaning of Alice's numbers.
    named_ids = {pt.prop_id(t) for t in copy.get_prop_list() if pt.is_named_id(pt.prop_id(t))}
    assert named_ids == {b_what, b_colour, b_blob}
    assert _props(copy, pt.make_tag(0x8000, pt.PropType.PT_BOOLEAN)) == {}

    table = copy.recipient_table()
    table.set_columns([pt.PR_EMAIL_ADDRESS_W, _tag(b_colour, colour_tag), colour_tag,
                       unmapped_tag])  # fmt: skip
    [row] = table.query_rows(10)
    assert [v.value for v in row[:2]] == ["bob@example.org", "row-blue"]
    assert row[2].is_error and row[3].is_error

    attach = copy.open_attach(0)
    assert _props(attach, _tag(b_colour, colour_tag), _tag(b_blob, blob_tag), colour_tag) == {
        _tag(b_colour, colour_tag): "att-blue",
        _tag(b_blob, blob_tag): BIG[::-1],
    }
    emb = copy.open_attach(1).open_embedded()
    assert _props(emb, _tag(b_colour, colour_tag), _tag(b_what, what_tag), colour_tag) == {
        _tag(b_colour, colour_tag): "inner-blue",
        _tag(b_what, what_tag): True,
    }

    # Alice's own copy keeps her numbering.
    [sent] = contents_of(alice, "sent")
    assert _props(sent, what_tag, colour_tag) == {what_tag: True, colour_tag: "blue"}


@pytest.fixture
def tight_store(tmp_path: Path) -> Iterator[ObjectStore]:
    limits = Limits(max_named_props=2)
    s = ObjectStore(tmp_path / "tight", kdf=FAST_KDF, clock=Clock(), limits=limits)
    s.add_user("alice", "alice-pw", display_name="Alice Example", email="alice@example.org")
    s.add_user("bob", "bob-pw", display_name="Bob Example", email="bob@example.org")
    yield s
    s.close()


def test_named_properties_dropped_when_recipient_store_is_full(
    tight_store: ObjectStore,
) -> None:
    alice = tight_store.logon_with_password("alice", "alice-pw").open_store()
    bob = tight_store.logon_with_password("bob", "bob-pw").open_store()
    assert bob.get_ids_from_names([WHATEVER, VERIFIED], create=True) == [0x8000, 0x8001]
    assert alice.get_ids_from_names([COLOUR, WHATEVER], create=True) == [0x8000, 0x8001]
    colour_tag = pt.make_tag(0x8000, pt.PropType.PT_BOOLEAN)
    what_tag = pt.make_tag(0x8001, pt.PropType.PT_UNICODE)
    msg = _draft(alice, "full", "bob@example.org", [(colour_tag, True), (what_tag, "w")])
    result = submit(msg)
    assert result.delivered == [tight_store.directory.get_user("bob").user_id]
    [copy] = contents_of(bob, "inbox")
    # WHATEVER is Bob's 0x8000; COLOUR has no id left in Bob's store and is dropped
    # (not stored under Bob's 0x8001, X-Sender-Verified).
    assert _props(copy, pt.make_tag(0x8000, pt.PropType.PT_UNICODE)) == {
        pt.make_tag(0x8000, pt.PropType.PT_UNICODE): "w"
    }
    named_tags = [t for t in copy.get_prop_list() if pt.is_named_id(pt.prop_id(t))]
    assert named_tags == [pt.make_tag(0x8000, pt.PropType.PT_UNICODE)]
    assert bob.get_ids_from_names([COLOUR]) == [0]
