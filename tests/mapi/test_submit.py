"""Submission: local delivery, Sent Items, non-delivery reports, events, retries."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from mapi_helpers import contents_of

from internet_mail.outbound.queue import OutboundQueue
from mapi.access import permissions
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.notify.subscriptions import NewMailNotification, ObjectNotification, TableEvent
from mapi.notify.subscriptions import TableNotification as TableNote
from mapi.objects import submit
from mapi.objects.messages import Message
from mapi.store import MsgStore, ObjectStore
from mapi.wire import EventType
from mapi_anywhere.outbound_service import StoreRemoteMail

BIG_BODY = "lorem ipsum " * 2000  # beyond the inline limit: stored in chunks


def _recipient(address: str, kind: int = pt.MAPI_TO, email: bool = True) -> list[object]:
    row: list[object] = [(pt.PR_DISPLAY_NAME_W, address), (pt.PR_RECIPIENT_TYPE, kind)]
    if email:
        row.append((pt.PR_EMAIL_ADDRESS_W, address))
    return row


def _draft(view: MsgStore, subject: str, *recipients: list[object]) -> Message:
    drafts = view.open_folder(view.special_folder_id("drafts"))
    msg = drafts.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, subject), (pt.PR_BODY_W, BIG_BODY),
                   (pt.PR_MESSAGE_CLASS_W, "IPM.Note")])  # fmt: skip
    msg.modify_recipients(list(recipients))
    att = msg.create_attach()
    att.set_props([(pt.PR_ATTACH_METHOD, pt.ATTACH_BY_VALUE),
                   (pt.PR_ATTACH_LONG_FILENAME_W, "data.bin"),
                   (pt.PR_ATTACH_DATA_BIN, bytes(range(256)) * 100)])  # fmt: skip
    att.save_changes()
    return msg


def _get(msg: Message, tag: int) -> object:
    return msg.get_props([tag]).values[0].value


def test_submit_delivers_files_and_reports(
    store: ObjectStore, alice: MsgStore, bob: MsgStore
) -> None:
    bob.advise(b"bob", EventType.NEW_MAIL | EventType.OBJECT_CREATED)
    bob.advise_table(b"bob", bob.get_receive_folder(), "contents", [pt.PR_SUBJECT_W])
    alice.advise(b"alice", EventType.NEW_MAIL)
    msg = _draft(
        alice, "Lunch?",
        _recipient("Bob@Example.org"),
        _recipient("nobody@nowhere.example", pt.MAPI_CC),
    )  # fmt: skip
    result = submit.submit(msg)
    bob_id = store.directory.get_user("bob").user_id
    assert result.delivered == [bob_id]
    assert result.undeliverable == ["nobody@nowhere.example"]

    # Bob's copy: unread, delivered, from Alice, body and attachment intact.
    [copy] = contents_of(bob, "inbox")
    flags = _get(copy, pt.PR_MESSAGE_FLAGS)
    assert isinstance(flags, int) and not flags & (pt.MSGFLAG_READ | pt.MSGFLAG_UNSENT)
    assert _get(copy, pt.PR_SUBJECT_W) == "Lunch?"
    assert _get(copy, pt.PR_BODY_W) == BIG_BODY
    assert _get(copy, pt.PR_SENDER_NAME_W) == "Alice Example"
    assert _get(copy, pt.PR_SENDER_EMAIL_ADDRESS_W) == "alice@example.org"
    assert _get(copy, pt.PR_RECEIVED_BY_NAME_W) == "Bob Example"
    assert _get(copy, pt.PR_MESSAGE_TO_ME) is True
    assert isinstance(_get(copy, pt.PR_MESSAGE_DELIVERY_TIME), int)
    assert _get(copy.open_attach(0), pt.PR_ATTACH_DATA_BIN) == bytes(range(256)) * 100

    # Bob heard of it: new mail, created, a contents-table row.
    notes = store.notifications.poll(b"bob", 0).events
    mail = [n for n in notes if isinstance(n, NewMailNotification)]
    assert [(n.entry_id, n.parent_id, n.message_class) for n in mail] == [
        (copy.entry_id, bob.get_receive_folder(), "IPM.Note")
    ]
    assert any(isinstance(n, ObjectNotification) and n.entry_id == copy.entry_id for n in notes)
    rows = [n for n in notes if isinstance(n, TableNote)]
    assert [n.table_event for n in rows] == [TableEvent.TABLE_ROW_ADDED]

    # Alice: the original in Sent Items, sent and read; Drafts empty.
    assert contents_of(alice, "drafts") == []
    [sent] = contents_of(alice, "sent")
    assert sent.entry_id == result.sent_entry_id == msg.entry_id
    flags = _get(sent, pt.PR_MESSAGE_FLAGS)
    assert isinstance(flags, int) and flags & pt.MSGFLAG_READ and not flags & pt.MSGFLAG_UNSENT
    assert isinstance(_get(sent, pt.PR_CLIENT_SUBMIT_TIME), int)

    # Alice: a non-delivery report naming the failed address, the original attached.
    [ndr] = contents_of(alice, "inbox")
    assert ndr.entry_id == result.ndr_entry_id
    assert _get(ndr, pt.PR_MESSAGE_CLASS_W) == submit.NDR_CLASS
    assert _get(ndr, pt.PR_SUBJECT_W) == "Undeliverable: Lunch?"
    body = _get(ndr, pt.PR_BODY_W)
    assert isinstance(body, str) and "nobody@nowhere.example" in body
    original = ndr.open_attach(0).open_embedded()
    assert _get(original, pt.PR_SUBJECT_W) == "Lunch?"
    mail = [n for n in store.notifications.poll(b"alice", 0).events if n.kind == EventType.NEW_MAIL]
    assert [n.entry_id for n in mail if isinstance(n, NewMailNotification)] == [ndr.entry_id]


def test_bcc_hidden_username_resolution_and_self(
    store: ObjectStore, alice: MsgStore, bob: MsgStore
) -> None:
    msg = _draft(
        alice, "Hi",
        _recipient("bob", email=False),  # a login name in the display name
        _recipient("alice@example.org", pt.MAPI_BCC),
    )  # fmt: skip
    result = submit.submit(msg)
    assert result.undeliverable == [] and result.ndr_entry_id is None
    assert len(result.delivered) == 2
    [copy] = contents_of(bob, "inbox")
    table = copy.recipient_table()
    assert table.get_row_count() == 1  # the Bcc row is not delivered
    [own] = contents_of(alice, "inbox")
    assert _get(own, pt.PR_MESSAGE_TO_ME) is False


def test_retry_after_a_crash_delivers_once(
    store: ObjectStore, alice: MsgStore, bob: MsgStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg = _draft(alice, "Once", _recipient("bob@example.org"))

    def crash(*args: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(submit, "_file", crash)
    with pytest.raises(RuntimeError):
        submit.submit(msg)
    assert len(contents_of(bob, "inbox")) == 1
    assert len(contents_of(alice, "drafts")) == 1  # still unsent
    monkeypatch.undo()
    result = submit.submit(msg)
    assert result.delivered == [store.directory.get_user("bob").user_id]
    assert len(contents_of(bob, "inbox")) == 1
    assert len(contents_of(alice, "sent")) == 1


def test_retry_after_a_crash_queues_a_remote_copy_once(
    store: ObjectStore, alice: MsgStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash falls between the hand-off to the outbound queue and the filing; the
    submission made again hands off with the same key, and the queue keeps one copy."""
    queue = OutboundQueue(tmp_path / "queue")
    store.remote_mail = StoreRemoteMail(queue, lambda a: a.endswith("@example.org"))
    view = store.logon_with_password("alice", "alice-pw").open_store()
    msg = _draft(view, "Far away", _recipient("carol@remote.example"))

    def crash(*args: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(submit, "_file", crash)
    with pytest.raises(RuntimeError):
        submit.submit(msg)
    assert len(queue.load()) == 1
    monkeypatch.undo()
    result = submit.submit(msg)
    assert result.queued == ["carol@remote.example"]
    [queued] = queue.load()
    assert queued.recipients[0].address == "carol@remote.example"
    assert len(contents_of(view, "sent")) == 1


def test_delete_after_submit(alice: MsgStore, bob: MsgStore) -> None:
    msg = _draft(alice, "Gone", _recipient("bob@example.org"))
    msg.set_props([(pt.PR_DELETE_AFTER_SUBMIT, True)])
    result = submit.submit(msg)
    assert result.sent_entry_id is None
    assert contents_of(alice, "sent") == [] and contents_of(alice, "drafts") == []
    assert len(contents_of(bob, "inbox")) == 1


def test_refusals(store: ObjectStore, alice: MsgStore) -> None:
    msg = _draft(alice, "Nobody")
    with pytest.raises(errors.InvalidParameter):
        submit.submit(msg)
    drafts = alice.open_folder(alice.special_folder_id("drafts"))
    bob_id = store.directory.get_user("bob").user_id
    drafts.set_permission(bob_id, permissions.ROLES["owner"])
    bob_view = store.logon_with_password("bob", "bob-pw").open_store("alice")
    other = bob_view.open_folder(drafts.entry_id).create_message()
    other.modify_recipients([_recipient("alice@example.org")])
    with pytest.raises(errors.NoAccess):
        submit.submit(other)


def test_crossed_submissions_do_not_deadlock(alice: MsgStore, bob: MsgStore) -> None:
    errors_seen: list[BaseException] = []

    def send(view: MsgStore, to: str) -> None:
        try:
            for i in range(5):
                submit.submit(_draft(view, f"m{i}", _recipient(to)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors_seen.append(exc)

    threads = [
        threading.Thread(target=send, args=(alice, "bob@example.org")),
        threading.Thread(target=send, args=(bob, "alice@example.org")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert errors_seen == []
    assert len(contents_of(alice, "inbox")) == 5 and len(contents_of(bob, "inbox")) == 5


def test_delivery_notifies_a_sorted_contents_subscription(
    store: ObjectStore, alice: MsgStore, bob: MsgStore
) -> None:
    """The notification renderer places the new row in the subscriber's sort order with
    a table of its own; it used to inherit the per-call READ_ANY check of client tables
    and fail as the sender (no rights on bob's Inbox), dropping every event of the
    delivery and asking bob to resync."""
    bob.advise(b"bob", EventType.NEW_MAIL)
    bob.advise_table(
        b"bob", bob.get_receive_folder(), "contents", [pt.PR_SUBJECT_W],
        sort=[(pt.PR_SUBJECT_W, False)],
    )  # fmt: skip
    submit.submit(_draft(alice, "hello", _recipient("bob@example.org")))
    result = store.notifications.poll(b"bob", 0)
    assert not result.resync_required
    kinds = {type(n) for n in result.events}
    assert kinds == {NewMailNotification, TableNote}
