"""Messages: transactional save, computed properties, recipients, attachments, moves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mapi_helpers import FAST_KDF, Clock

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.objects.messages import MODRECIP_ADD, MODRECIP_MODIFY, MODRECIP_REMOVE, Message
from mapi.store import MsgStore, ObjectStore

PR_SUBJECT_A = 0x0037001E


def _inbox_count(store: MsgStore) -> object:
    inbox = store.open_folder(store.get_receive_folder())
    return inbox.get_props([pt.PR_CONTENT_COUNT]).values[0].value


def _draft(store: MsgStore, subject: str = "Hello") -> Message:
    msg = store.open_folder(store.get_receive_folder()).create_message()
    assert msg.set_props([(pt.PR_SUBJECT_W, subject), (pt.PR_BODY_W, "Body text")]) == []
    return msg


def test_unsaved_changes_are_invisible(alice: MsgStore, store: ObjectStore) -> None:
    msg = _draft(alice)
    assert msg.entry_id is None
    assert _inbox_count(alice) == 0
    other = store.logon_with_password("alice", "alice-pw").open_store()
    assert _inbox_count(other) == 0
    msg.save_changes()
    assert _inbox_count(other) == 1
    msg.set_props([(pt.PR_SUBJECT_W, "Changed")])
    assert msg.entry_id is not None
    seen = other.open_message(msg.entry_id)
    assert seen.get_props([pt.PR_SUBJECT_W]).values[0].value == "Hello"
    msg.save_changes()
    fresh = other.open_message(msg.entry_id)
    assert fresh.get_props([pt.PR_SUBJECT_W]).values[0].value == "Changed"


def test_discarded_message_leaves_no_trace(alice: MsgStore) -> None:
    msg = _draft(alice)
    msg.close()
    assert _inbox_count(alice) == 0
    with pytest.raises(errors.InvalidObject):
        msg.get_props([pt.PR_SUBJECT_W])


def test_reopened_store_sees_saved_message(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "d"
    first = ObjectStore(data, kdf=FAST_KDF, clock=clock)
    first.add_user("carol", "pw")
    ms = first.logon_with_password("carol", "pw").open_store()
    msg = _draft(ms, "persisted")
    msg.save_changes()
    eid = msg.entry_id
    first.close()
    second = ObjectStore(data, kdf=FAST_KDF, clock=clock)
    ms2 = second.logon_with_password("carol", "pw").open_store()
    assert eid is not None
    got = ms2.open_message(eid).get_props([pt.PR_SUBJECT_W, pt.PR_BODY_W]).as_dict()
    assert got == {pt.PR_SUBJECT_W: "persisted", pt.PR_BODY_W: "Body text"}
    second.close()


def test_saved_message_is_durable_for_another_process(store: ObjectStore, alice: MsgStore) -> None:
    msg = _draft(alice, "durable")
    msg.save_changes()
    assert msg.entry_id is not None
    user = store.directory.get_user("alice")
    path = store.data_dir / "mailboxes" / user.mailbox
    # The store stays open (no close, no checkpoint): another process must see the save.
    script = textwrap.dedent(
        f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r})
        print(conn.execute("PRAGMA journal_mode").fetchone()[0])
        print(conn.execute("SELECT subject FROM messages WHERE id = ?",
                           ({int.from_bytes(msg.entry_id[22:], "big")},)).fetchone()[0])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["wal", "durable"]


def test_get_props_errors_and_computed(alice: MsgStore) -> None:
    msg = _draft(alice)
    result = msg.get_props([pt.PR_SUBJECT_W, pt.PR_IMPORTANCE, PR_SUBJECT_A, 0x0037_0000])
    assert result.hresult == errors.MAPI_W_ERRORS_RETURNED
    values = result.values
    assert values[0].value == "Hello"
    assert values[1].tag == pt.error_tag(pt.PR_IMPORTANCE)
    assert values[1].value == errors.Hresult.MAPI_E_NOT_FOUND
    assert (values[2].tag, values[2].value) == (PR_SUBJECT_A, "Hello")
    assert (values[3].tag, values[3].value) == (pt.PR_SUBJECT_W, "Hello")
    assert msg.get_props([pt.PR_SUBJECT_W]).hresult == 0
    problems = msg.set_props(
        [(pt.PR_ENTRYID, b"x"), (pt.PR_MESSAGE_SIZE, 1), (pt.PR_IMPORTANCE, "high"),
         (pt.PR_IMPORTANCE, 2), (pt.PR_LAST_MODIFICATION_TIME, 0)]
    )  # fmt: skip
    assert [(p.index, p.hresult) for p in problems] == [
        (0, errors.Hresult.MAPI_E_COMPUTED),
        (1, errors.Hresult.MAPI_E_COMPUTED),
        (2, errors.Hresult.MAPI_E_INVALID_PARAMETER),
        (4, errors.Hresult.MAPI_E_COMPUTED),
    ]
    assert msg.get_props([pt.PR_IMPORTANCE]).values[0].value == 2
    assert msg.delete_props([pt.PR_IMPORTANCE, pt.PR_ENTRYID])[0].index == 1
    assert msg.get_props([pt.PR_IMPORTANCE]).values[0].is_error
    msg.save_changes()
    props = msg.get_props(
        [pt.PR_ENTRYID, pt.PR_PARENT_ENTRYID, pt.PR_MESSAGE_SIZE, pt.PR_CHANGE_KEY,
         pt.PR_CREATION_TIME, pt.PR_HASATTACH, pt.PR_MESSAGE_FLAGS]
    ).as_dict()  # fmt: skip
    assert props[pt.PR_ENTRYID] == msg.entry_id
    assert props[pt.PR_PARENT_ENTRYID] == alice.get_receive_folder()
    assert isinstance(props[pt.PR_MESSAGE_SIZE], int) and props[pt.PR_MESSAGE_SIZE] > 0
    assert isinstance(props[pt.PR_CHANGE_KEY], bytes) and len(props[pt.PR_CHANGE_KEY]) == 22
    assert props[pt.PR_HASATTACH] is False
    assert props[pt.PR_MESSAGE_FLAGS] == pt.MSGFLAG_READ | pt.MSGFLAG_UNSENT
    tags = msg.get_prop_list()
    assert pt.PR_SUBJECT_W in tags and pt.PR_ENTRYID in tags
    everything = msg.get_props().as_dict()
    assert everything[pt.PR_BODY_W] == "Body text"


def test_unmapped_named_id_is_refused(alice: MsgStore) -> None:
    msg = _draft(alice)
    problems = msg.set_props([(0x8001001F, "x")])
    assert problems[0].hresult == errors.Hresult.MAPI_E_INVALID_PARAMETER


def test_change_key_and_conflicts(alice: MsgStore, store: ObjectStore) -> None:
    msg = _draft(alice)
    msg.save_changes()
    assert msg.entry_id is not None
    key1 = msg.get_props([pt.PR_CHANGE_KEY]).values[0].value
    other = store.logon_with_password("alice", "alice-pw").open_store()
    theirs = other.open_message(msg.entry_id, writable=True)
    theirs.set_props([(pt.PR_SUBJECT_W, "theirs")])
    theirs.save_changes()
    msg.set_props([(pt.PR_SUBJECT_W, "mine")])
    with pytest.raises(errors.ObjectChanged):
        msg.save_changes()
    from mapi.objects.messages import FORCE_SAVE, KEEP_OPEN_READWRITE

    msg.save_changes(FORCE_SAVE | KEEP_OPEN_READWRITE)
    assert msg.get_props([pt.PR_CHANGE_KEY]).values[0].value != key1
    inbox = alice.open_folder(alice.get_receive_folder())
    inbox.delete_messages([msg.entry_id], hard=True)
    theirs2 = other.open_message  # opening a deleted message fails
    with pytest.raises(errors.NotFound):
        theirs2(msg.entry_id)
    msg.set_props([(pt.PR_SUBJECT_W, "late")])
    with pytest.raises(errors.ObjectDeleted):
        msg.save_changes()


def test_read_only_open(alice: MsgStore) -> None:
    msg = _draft(alice)
    msg.save_changes()
    assert msg.entry_id is not None
    ro = alice.open_message(msg.entry_id)
    with pytest.raises(errors.NoAccess):
        ro.set_props([(pt.PR_SUBJECT_W, "x")])
    with pytest.raises(errors.NoAccess):
        ro.save_changes()
    ro.set_read_flag(clear=True)
    assert alice.open_message(msg.entry_id).get_props([pt.PR_MESSAGE_FLAGS]).values[0].value == (
        pt.MSGFLAG_UNSENT
    )


def test_recipients(alice: MsgStore) -> None:
    msg = _draft(alice)
    msg.modify_recipients(
        [
            [(pt.PR_DISPLAY_NAME_W, "Bob"), (pt.PR_EMAIL_ADDRESS_W, "bob@x"),
             (pt.PR_ADDRTYPE_W, "SMTP"), (pt.PR_RECIPIENT_TYPE, pt.MAPI_TO)],
            [(pt.PR_DISPLAY_NAME_W, "Carol"), (pt.PR_RECIPIENT_TYPE, pt.MAPI_CC)],
        ]
    )  # fmt: skip
    msg.modify_recipients(
        [[(pt.PR_DISPLAY_NAME_W, "Dave"), (pt.PR_RECIPIENT_TYPE, pt.MAPI_BCC)]], MODRECIP_ADD
    )
    table = msg.recipient_table()
    rows = table.query_rows(10)
    assert [(r[0].value, r[1].value, r[4].value) for r in rows] == [
        (0, "Bob", 1), (1, "Carol", 2), (2, "Dave", 3)
    ]  # fmt: skip
    msg.modify_recipients(
        [[(pt.PR_ROWID, 1), (pt.PR_DISPLAY_NAME_W, "Carla"), (pt.PR_RECIPIENT_TYPE, pt.MAPI_TO)]],
        MODRECIP_MODIFY,
    )
    msg.modify_recipients([[(pt.PR_ROWID, 2)]], MODRECIP_REMOVE)
    with pytest.raises(errors.NotFound):
        msg.modify_recipients([[(pt.PR_ROWID, 9)]], MODRECIP_REMOVE)
    with pytest.raises(errors.InvalidParameter):
        msg.modify_recipients([[(pt.PR_RECIPIENT_TYPE, "to")]])
    assert msg.get_props([pt.PR_DISPLAY_TO_W]).values[0].value == "Bob; Carla"
    table.seek_row(0, 0)
    assert len(table.query_rows(10)) == 2
    msg.save_changes()
    assert msg.entry_id is not None
    again = alice.open_message(msg.entry_id)
    props = again.get_props([pt.PR_DISPLAY_TO_W, pt.PR_DISPLAY_CC_W, pt.PR_DISPLAY_BCC_W])
    assert [v.value for v in props.values] == ["Bob; Carla", "", ""]
    rows = again.recipient_table().query_rows(10)
    assert [r[3].value for r in rows] == ["SMTP", None] or rows[1][3].is_error
    contents = alice.open_folder(alice.get_receive_folder()).contents_table()
    contents.set_columns([pt.PR_DISPLAY_TO_W])
    assert contents.query_rows(1)[0][0].value == "Bob; Carla"


def test_attachments_and_embedded_messages(alice: MsgStore) -> None:
    msg = _draft(alice)
    att = msg.create_attach()
    att.set_props(
        [(pt.PR_ATTACH_METHOD, pt.ATTACH_BY_VALUE), (pt.PR_ATTACH_LONG_FILENAME_W, "r.pdf"),
         (pt.PR_ATTACH_MIME_TAG_W, "application/pdf"), (pt.PR_ATTACH_DATA_BIN, b"%PDF" * 10)]
    )  # fmt: skip
    assert msg.attachment_table().get_row_count() == 0  # not saved into the message yet
    att.save_changes()
    assert msg.attachment_table().get_row_count() == 1
    assert msg.get_props([pt.PR_HASATTACH]).values[0].value is True
    emb_att = msg.create_attach()
    inner = emb_att.open_embedded(create=True)
    inner.set_props([(pt.PR_SUBJECT_W, "forwarded")])
    inner.modify_recipients([[(pt.PR_DISPLAY_NAME_W, "Zed"), (pt.PR_RECIPIENT_TYPE, 1)]])
    inner.save_changes()
    emb_att.save_changes()
    assert _inbox_count(alice) == 0
    msg.save_changes()
    assert msg.entry_id is not None
    assert _inbox_count(alice) == 1  # the embedded message is not a folder message
    again = alice.open_message(msg.entry_id)
    table = again.attachment_table()
    table.set_columns([pt.PR_ATTACH_NUM, pt.PR_ATTACH_METHOD, pt.PR_ATTACH_LONG_FILENAME_W])
    rows = table.query_rows(10)
    assert [(r[0].value, r[1].value) for r in rows] == [(0, 1), (1, pt.ATTACH_EMBEDDED_MSG)]
    first = again.open_attach(0)
    props = first.get_props([pt.PR_ATTACH_DATA_BIN, pt.PR_ATTACH_SIZE, pt.PR_ATTACH_NUM])
    assert props.values[0].value == b"%PDF" * 10
    assert props.values[1].value >= 40  # type: ignore[operator]
    with pytest.raises(errors.NoAccess):
        first.set_props([(pt.PR_ATTACH_FILENAME_W, "x")])
    assert att.set_props([(pt.PR_ATTACH_NUM, 4)])[0].hresult == errors.Hresult.MAPI_E_COMPUTED
    emb = again.open_attach(1).open_embedded()
    assert emb.get_props([pt.PR_SUBJECT_W, pt.PR_DISPLAY_TO_W]).as_dict() == {
        pt.PR_SUBJECT_W: "forwarded",
        pt.PR_DISPLAY_TO_W: "Zed",
    }
    assert emb.entry_id is None
    with pytest.raises(errors.NotFound):
        again.open_attach(7)
    with pytest.raises(errors.NotFound):
        first.open_embedded()
    # Edit the embedded message in place, then delete the first attachment.
    edit = alice.open_message(msg.entry_id, writable=True)
    emb_attach = edit.open_attach(1, writable=True)
    emb2 = emb_attach.open_embedded()
    emb2.set_props([(pt.PR_SUBJECT_W, "edited")])
    emb2.save_changes()
    emb_attach.save_changes()
    edit.delete_attach(0)
    edit.save_changes()
    final = alice.open_message(msg.entry_id)
    assert final.attachment_table().get_row_count() == 1
    inner_final = final.open_attach(1).open_embedded()
    assert inner_final.get_props([pt.PR_SUBJECT_W]).values[0].value == "edited"
    assert inner_final.recipient_table().get_row_count() == 1


def test_delete_move_copy_messages(alice: MsgStore) -> None:
    inbox = alice.open_folder(alice.get_receive_folder())
    drafts = alice.open_folder(alice.special_folder_id("drafts"))
    deleted = alice.open_folder(alice.special_folder_id("deleted"))
    msgs = []
    for i in range(3):
        m = _draft(alice, f"m{i}")
        att = m.create_attach()
        att.set_props([(pt.PR_ATTACH_DATA_BIN, b"data" * 2000)])
        att.save_changes()
        m.save_changes()
        assert m.entry_id is not None
        msgs.append(m.entry_id)
    assert inbox.copy_messages([msgs[0]], drafts) == 0
    assert inbox.copy_messages([msgs[1]], drafts, move=True) == 0
    assert drafts.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 2
    assert inbox.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 2
    moved = alice.open_message(msgs[1])
    assert moved.get_props([pt.PR_PARENT_ENTRYID]).values[0].value == drafts.entry_id
    table = drafts.contents_table()
    table.set_columns([pt.PR_ENTRYID, pt.PR_SUBJECT_W])
    copies = [r for r in table.query_rows(10) if r[1].value == "m0"]
    copy = alice.open_message(copies[0][0].value)  # type: ignore[arg-type]
    assert copy.entry_id != msgs[0]
    assert copy.open_attach(0).get_props([pt.PR_ATTACH_DATA_BIN]).values[0].value == b"data" * 2000
    assert inbox.delete_messages([msgs[0], msgs[1]]) == errors.MAPI_W_PARTIAL_COMPLETION
    assert deleted.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 1
    assert deleted.delete_messages([msgs[0]]) == 0
    assert deleted.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 0
    with pytest.raises(errors.NotFound):
        alice.open_message(msgs[0])
    assert inbox.delete_messages([msgs[2]], hard=True) == 0
    assert deleted.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 0


def test_concurrent_saves_from_worker_threads(store: ObjectStore) -> None:
    import threading

    sessions = [store.logon_with_password("alice", "alice-pw").open_store() for _ in range(4)]
    failures: list[BaseException] = []

    def work(ms: MsgStore, n: int) -> None:
        try:
            inbox = ms.open_folder(ms.get_receive_folder())
            for i in range(20):
                msg = inbox.create_message()
                msg.set_props([(pt.PR_SUBJECT_W, f"t{n}-{i}")])
                msg.save_changes()
                inbox.contents_table().query_rows(5)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(ms, n)) for n, ms in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert _inbox_count(sessions[0]) == 80
