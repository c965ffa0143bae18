"""The contents-table storage object (``MailboxDB.contents``) on its own: which tables get
a plan, the plan's count, pages, position and rows against the Python path, large
values, the sub-objects a restriction looks into, and the cap on candidate rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from mapi_helpers import FAST_KDF, Clock

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.limits import Limits
from mapi.objects.folders import Folder
from mapi.store import MsgStore, ObjectStore

BIG = "x" * 5000  # UTF-16: 10,000 bytes, past inline_value_bytes: a stream row


def _save(folder: Folder, subject: str, when: int, *, body: str | None = None,
          attach: bool = False) -> int:  # fmt: skip
    msg = folder.create_message()
    props: list[tuple[int, object]] = [
        (pt.PR_SUBJECT_W, subject),
        (pt.PR_MESSAGE_DELIVERY_TIME, when),
    ]
    if body is not None:
        props.append((pt.PR_BODY_W, body))
    assert msg.set_props(props) == []
    msg.modify_recipients([[(pt.PR_DISPLAY_NAME_W, f"to {subject}"), (pt.PR_RECIPIENT_TYPE, 1)]])
    if attach:
        a = msg.create_attach()
        a.set_props([(pt.PR_ATTACH_FILENAME_W, f"{subject}.txt")])
        a.save_changes()
    msg.save_changes()
    assert msg.entry_id is not None
    return folder._ctx.parse(msg.entry_id).object_id


@pytest.fixture
def folder(alice: MsgStore) -> Folder:
    return alice.open_folder(alice.get_receive_folder()).create_folder("T")


def test_plan_only_for_hot_sorts_and_sql_restrictions(alice: MsgStore) -> None:
    contents = alice.context.db.contents
    hot = rs.Content(rs.FL_SUBSTRING | rs.FL_IGNORECASE, pt.PR_SUBJECT_W, "a")
    cold = rs.Exist(pt.PR_IMPORTANCE)
    assert contents.plan(None, ()) is not None
    assert contents.plan(hot, [(pt.PR_MESSAGE_DELIVERY_TIME, True)]) is not None
    assert contents.plan(None, [(pt.PR_IMPORTANCE, False)]) is None
    assert contents.plan(rs.And((hot, cold)), ()) is None
    # The expressible conjunct still filters in SQL; the rest is left to the core.
    prefilter, rest = contents.prefilter(rs.And((hot, cold)))
    assert rest == cold and prefilter.params == ("a", rs.FL_SUBSTRING | rs.FL_IGNORECASE)
    assert contents.prefilter(hot)[1] is None
    assert contents.prefilter(cold) == (contents.prefilter(None)[0], cold)


def test_plan_count_keys_position_records(alice: MsgStore, folder: Folder) -> None:
    ids = [_save(folder, s, w) for s, w in [("b", 2), ("a", 3), ("c", 1), ("a2", 3)]]
    db = alice.context.db
    plan = db.contents.plan(None, [(pt.PR_MESSAGE_DELIVERY_TIME, True)])
    assert plan is not None
    with db.reading() as txn:
        assert db.contents.count(txn, folder.folder_id, plan) == 4
        # Ties (delivery 3) break on id in the direction of the last key.
        order = [ids[3], ids[1], ids[0], ids[2]]
        assert db.contents.keys(txn, folder.folder_id, plan, 0, 10) == order
        assert db.contents.keys(txn, folder.folder_id, plan, 1, 2) == order[1:3]
        assert [db.contents.position(txn, folder.folder_id, plan, k) for k in order] == [0, 1, 2, 3]
        assert db.contents.position(txn, folder.folder_id, plan, 999_999) is None
        records = db.contents.records(txn, [ids[0], 999_999])
        assert list(records) == [ids[0]]
        record = records[ids[0]]
        assert record.folder_id == folder.folder_id and record.props[pt.PR_SUBJECT_W] == "b"
        assert db.contents.record(txn, ids[0], folder.folder_id) == record
        assert (
            db.contents.record(txn, ids[0], alice.context.db.folders.role_folder(txn, "inbox"))
            is None
        )
        assert db.contents.record(txn, 999_999) is None


def test_large_values_and_sub_objects(alice: MsgStore, folder: Folder) -> None:
    big = _save(folder, "big", 1, body=BIG, attach=True)
    small = _save(folder, "small", 2, body="short")
    db = alice.context.db
    with db.reading() as txn:
        assert db.contents.large_tags(txn, [big, small]) == {big: frozenset({pt.PR_BODY_W})}
        data = db.contents.read_large(txn, big, pt.PR_BODY_W, 1 << 20)
        assert data == BIG.encode("utf-16-le")
        assert db.contents.read_large(txn, big, pt.PR_BODY_W, 100) is None  # too long
        assert db.contents.read_large(txn, small, pt.PR_BODY_W, 1 << 20) is None  # inline
        (attachment,) = db.contents.attachments(txn, big)
        assert (
            attachment[pt.PR_ATTACH_NUM] == 0 and attachment[pt.PR_ATTACH_FILENAME_W] == "big.txt"
        )
        assert isinstance(attachment[pt.PR_ATTACH_SIZE], int)
        assert db.contents.attachments(txn, small) == []
        (recipient,) = db.contents.recipients(txn, small)
        assert recipient[pt.PR_DISPLAY_NAME_W] == "to small" and pt.PR_ROWID in recipient
    # Through the table: the SQL path reports the stream value as too large for a row,
    # the Python path finds it by content.
    table = folder.contents_table()
    table.set_columns([pt.PR_SUBJECT_W, pt.PR_BODY_W])
    table.sort_table([(pt.PR_MESSAGE_DELIVERY_TIME, False)])
    assert table.uses_sql
    rows = table.query_rows(10)
    assert rows[0][1].tag == pt.error_tag(pt.PR_BODY_W)
    assert rows[0][1].value == int(errors.Hresult.MAPI_E_NOT_ENOUGH_MEMORY)
    assert rows[1][1].value == "short"
    table.restrict(rs.Content(rs.FL_SUBSTRING, pt.PR_BODY_W, "xxxx"))
    assert not table.uses_sql
    assert [r[0].value for r in table.query_rows(10)] == ["big"]
    table.restrict(
        rs.SubRestriction(
            pt.PR_MESSAGE_ATTACHMENTS, rs.Content(rs.FL_PREFIX, pt.PR_ATTACH_FILENAME_W, "big")
        )
    )
    assert [r[0].value for r in table.query_rows(10)] == ["big"]


def test_candidates_cap_and_table_too_big(tmp_path: Path) -> None:
    store = ObjectStore(
        tmp_path / "data", kdf=FAST_KDF, clock=Clock(), limits=Limits(max_materialized_rows=2)
    )
    try:
        store.add_user("carol", "carol-pw")
        carol = store.logon_with_password("carol", "carol-pw").open_store()
        folder = carol.open_folder(carol.get_receive_folder()).create_folder("T")
        ids = [_save(folder, s, w) for s, w in [("a", 1), ("b", 2), ("c", 3)]]
        db = carol.context.db
        prefilter, _ = db.contents.prefilter(None)
        with db.reading() as txn:
            got = db.contents.candidates(txn, folder.folder_id, prefilter, 1)
            assert [r.id for r in got] == ids[:2]  # limit + 1: the caller sees the excess
            assert len(db.contents.candidates(txn, folder.folder_id, prefilter, 5)) == 3
        table = folder.contents_table()
        table.sort_table([(pt.PR_SUBJECT_W, False)])
        assert table.get_row_count() == 3  # the SQL path is not capped
        table.sort_table([(pt.PR_IMPORTANCE, False)])
        with pytest.raises(errors.TableTooBig):
            table.get_row_count()
        table.restrict(rs.Property(rs.RELOP_GE, pt.PR_MESSAGE_DELIVERY_TIME, 2))
        assert table.get_row_count() == 2  # the SQL prefilter keeps it under the cap
    finally:
        store.close()
