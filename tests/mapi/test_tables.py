"""Tables: columns, multi-key sorts, every restriction kind, cursors, bookmarks, find_row."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.limits import Limits
from mapi.objects.folders import Folder
from mapi.store import MsgStore
from mapi.tables.contents import ContentsTable

# (subject, delivery, size-ish importance, flags, recipient, has attachment)
DATA = [
    ("apple pie", 5, 2, 1, "Bob", False),
    ("Banana split", 3, 1, 0, "Carol", True),
    ("cherry tart", 9, 2, 0, "Bob", False),
    ("APPLE crumble", 1, 0, 1, "Dave", True),
    ("date loaf", None, 1, 1, "Carol", False),
]


@pytest.fixture
def folder(alice: MsgStore) -> Folder:
    f = alice.open_folder(alice.get_receive_folder()).create_folder("T")
    for subject, when, importance, flags, recip, attach in DATA:
        msg = f.create_message()
        props: list[tuple[int, object]] = [
            (pt.PR_SUBJECT_W, subject),
            (pt.PR_IMPORTANCE, importance),
            (pt.PR_MESSAGE_FLAGS, flags),
        ]
        if when is not None:
            props.append((pt.PR_MESSAGE_DELIVERY_TIME, when))
        assert msg.set_props(props) == []
        msg.modify_recipients([[(pt.PR_DISPLAY_NAME_W, recip), (pt.PR_RECIPIENT_TYPE, 1)]])
        if attach:
            a = msg.create_attach()
            a.set_props([(pt.PR_ATTACH_FILENAME_W, f"{subject}.txt")])
            a.save_changes()
        msg.save_changes()
    return f


def _subjects(table: ContentsTable, count: int = 100) -> list[object]:
    table.set_columns([pt.PR_SUBJECT_W])
    return [row[0].value for row in table.query_rows(count)]


def _restricted(folder: Folder, res: rs.Restriction) -> list[object]:
    table = folder.contents_table()
    table.restrict(res)
    return _subjects(table)


def test_default_order_columns_and_errors(folder: Folder) -> None:
    table = folder.contents_table()
    assert table.get_row_count() == 5
    table.set_columns([pt.PR_SUBJECT_W, pt.PR_BODY_W, pt.PR_ENTRYID])
    row = table.query_rows(1)[0]
    assert row[0].value == "apple pie"
    assert row[1].tag == pt.error_tag(pt.PR_BODY_W)
    assert row[1].value == errors.Hresult.MAPI_E_NOT_FOUND
    assert isinstance(row[2].value, bytes) and len(row[2].value) == 30
    with pytest.raises(errors.InvalidParameter):
        table.set_columns([])
    with pytest.raises(errors.InvalidParameter):
        table.query_rows(0)
    with pytest.raises(errors.UnknownFlags):
        table.query_rows(1, 0x80)


def test_sort_single_and_multi_key(folder: Folder) -> None:
    table = folder.contents_table()
    table.sort_table([(pt.PR_MESSAGE_DELIVERY_TIME, False)])
    assert table.uses_sql
    assert _subjects(table) == ["date loaf", "APPLE crumble", "Banana split", "apple pie",
                                "cherry tart"]  # fmt: skip
    table.sort_table([(pt.PR_MESSAGE_DELIVERY_TIME, True)])
    assert _subjects(table)[0] == "cherry tart"
    table.sort_table([(pt.PR_SUBJECT_W, False)])
    assert _subjects(table) == ["APPLE crumble", "apple pie", "Banana split", "cherry tart",
                                "date loaf"]  # fmt: skip
    # Importance is not a hot column: evaluated in Python, same semantics.
    table.sort_table([(pt.PR_IMPORTANCE, True), (pt.PR_SUBJECT_W, False)])
    assert not table.uses_sql
    assert _subjects(table) == ["apple pie", "cherry tart", "Banana split", "date loaf",
                                "APPLE crumble"]  # fmt: skip
    table.sort_table([(pt.PR_MESSAGE_FLAGS, False), (pt.PR_MESSAGE_DELIVERY_TIME, True)])
    assert table.uses_sql
    # flags: cherry 0, apple pie 1, date loaf 1, Banana 0x10, APPLE 0x11 (HASATTACH bit)
    assert _subjects(table) == ["cherry tart", "apple pie", "date loaf", "Banana split",
                                "APPLE crumble"]  # fmt: skip
    with pytest.raises(errors.TooComplex):
        table.sort_table([(0x6700101F, False)])


@pytest.mark.parametrize(
    ("res", "expected"),
    [
        (rs.Content(rs.FL_SUBSTRING | rs.FL_IGNORECASE, pt.PR_SUBJECT_W, "APPLE"),
         ["apple pie", "APPLE crumble"]),
        (rs.Content(rs.FL_SUBSTRING, pt.PR_SUBJECT_W, "apple"), ["apple pie"]),
        (rs.Content(rs.FL_PREFIX | rs.FL_IGNORECASE, pt.PR_SUBJECT_W, "b"), ["Banana split"]),
        (rs.Content(rs.FL_FULLSTRING, pt.PR_SUBJECT_W, "date loaf"), ["date loaf"]),
        (rs.Content(rs.FL_FULLSTRING, pt.PR_SUBJECT_W, "date"), []),
        (rs.Property(rs.RELOP_LT, pt.PR_MESSAGE_DELIVERY_TIME, 4),
         ["Banana split", "APPLE crumble"]),
        (rs.Property(rs.RELOP_LE, pt.PR_MESSAGE_DELIVERY_TIME, 3),
         ["Banana split", "APPLE crumble"]),
        (rs.Property(rs.RELOP_GT, pt.PR_MESSAGE_DELIVERY_TIME, 5), ["cherry tart"]),
        (rs.Property(rs.RELOP_GE, pt.PR_MESSAGE_DELIVERY_TIME, 5), ["apple pie", "cherry tart"]),
        (rs.Property(rs.RELOP_EQ, pt.PR_SUBJECT_W, "CHERRY TART"), ["cherry tart"]),
        (rs.Property(rs.RELOP_NE, pt.PR_MESSAGE_DELIVERY_TIME, 5),
         ["Banana split", "cherry tart", "APPLE crumble"]),
        (rs.Property(rs.RELOP_RE, pt.PR_SUBJECT_W, "^[a-cA-C].*t$"),
         ["Banana split", "cherry tart"]),
        (rs.Property(rs.RELOP_EQ, pt.PR_IMPORTANCE, 2), ["apple pie", "cherry tart"]),
        (rs.Not(rs.Exist(pt.PR_MESSAGE_DELIVERY_TIME)), ["date loaf"]),
        (rs.Not(rs.Property(rs.RELOP_EQ, pt.PR_MESSAGE_DELIVERY_TIME, 5)),
         ["Banana split", "cherry tart", "APPLE crumble", "date loaf"]),
        (rs.Bitmask(rs.BMR_NEZ, pt.PR_MESSAGE_FLAGS, pt.MSGFLAG_READ),
         ["apple pie", "APPLE crumble", "date loaf"]),
        (rs.Bitmask(rs.BMR_EQZ, pt.PR_MESSAGE_FLAGS, pt.MSGFLAG_READ),
         ["Banana split", "cherry tart"]),
        (rs.Bitmask(rs.BMR_NEZ, pt.PR_MESSAGE_FLAGS, pt.MSGFLAG_HASATTACH),
         ["Banana split", "APPLE crumble"]),
        (rs.Size(rs.RELOP_GT, pt.PR_SUBJECT_W, 20), ["Banana split", "cherry tart",
                                                    "APPLE crumble"]),
        (rs.Exist(pt.PR_HASATTACH), [s for s, *_ in DATA]),
        (rs.And((rs.Exist(pt.PR_MESSAGE_DELIVERY_TIME),
                 rs.Property(rs.RELOP_EQ, pt.PR_IMPORTANCE, 2))), ["apple pie", "cherry tart"]),
        (rs.Or((rs.Property(rs.RELOP_EQ, pt.PR_IMPORTANCE, 0),
                rs.Content(rs.FL_PREFIX, pt.PR_SUBJECT_W, "d"))), ["APPLE crumble", "date loaf"]),
        (rs.CompareProps(rs.RELOP_GT, pt.PR_MESSAGE_DELIVERY_TIME, pt.PR_IMPORTANCE),
         ["apple pie", "Banana split", "cherry tart", "APPLE crumble"]),
        (rs.SubRestriction(pt.PR_MESSAGE_RECIPIENTS,
                           rs.Property(rs.RELOP_EQ, pt.PR_DISPLAY_NAME_W, "bob")),
         ["apple pie", "cherry tart"]),
        (rs.SubRestriction(pt.PR_MESSAGE_ATTACHMENTS,
                           rs.Content(rs.FL_SUBSTRING, pt.PR_ATTACH_FILENAME_W, "crumble")),
         ["APPLE crumble"]),
        (rs.Comment(((pt.PR_SUBJECT_W, "note"),), rs.Exist(pt.PR_IMPORTANCE)),
         [s for s, *_ in DATA]),
        (rs.Comment((), None), [s for s, *_ in DATA]),
    ],
)  # fmt: skip
def test_every_restriction_kind(folder: Folder, res: rs.Restriction, expected: list[str]) -> None:
    assert _restricted(folder, res) == expected


def test_sql_and_python_paths_agree(folder: Folder) -> None:
    res = rs.Or(
        (rs.Not(rs.Property(rs.RELOP_GE, pt.PR_MESSAGE_DELIVERY_TIME, 4)),
         rs.Content(rs.FL_SUBSTRING | rs.FL_IGNORECASE, pt.PR_SUBJECT_W, "TART"))
    )  # fmt: skip
    fast = folder.contents_table()
    fast.restrict(res)
    fast.sort_table([(pt.PR_SUBJECT_W, True)])
    assert fast.uses_sql
    slow = folder.contents_table()
    slow.restrict(rs.And((res, rs.Exist(pt.PR_IMPORTANCE))))  # importance is not hot
    slow.sort_table([(pt.PR_SUBJECT_W, True)])
    assert not slow.uses_sql
    assert _subjects(fast) == _subjects(slow) == ["date loaf", "cherry tart", "Banana split",
                                                  "APPLE crumble"]  # fmt: skip


def test_cursor_backward_seek_and_position(folder: Folder) -> None:
    table = folder.contents_table()
    table.set_columns([pt.PR_SUBJECT_W])
    assert [r[0].value for r in table.query_rows(2)] == ["apple pie", "Banana split"]
    assert table.query_position() == (2, 5)
    assert [r[0].value for r in table.query_rows(-2)] == ["apple pie", "Banana split"]
    assert table.query_position() == (0, 5)
    assert table.query_rows(-3) == []
    assert table.seek_row(2, -2) == -2  # BOOKMARK_END
    assert [r[0].value for r in table.query_rows(5)] == ["APPLE crumble", "date loaf"]
    assert table.query_rows(1) == []
    assert table.seek_row(0, 100) == 5
    assert table.seek_row(1, -100) == -5
    rows = table.query_rows(2, 0x1)  # TBL_NOADVANCE
    assert len(rows) == 2 and table.query_position() == (0, 5)
    with pytest.raises(errors.InvalidBookmark):
        table.seek_row(99, 0)


def test_bookmarks(folder: Folder, alice: MsgStore) -> None:
    table = folder.contents_table()
    table.set_columns([pt.PR_SUBJECT_W])
    table.sort_table([(pt.PR_SUBJECT_W, False)])
    table.seek_row(0, 2)
    bm = table.create_bookmark()
    table.seek_row(0, 0)
    assert table.seek_row_bookmark(bm, 1) == 1
    assert table.query_rows(1)[0][0].value == "cherry tart"
    # A row added before the bookmarked one: the bookmark follows its row.
    msg = folder.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, "aaa first")])
    msg.save_changes()
    table.seek_row_bookmark(bm, 0)
    assert table.query_position()[0] == 3
    assert table.query_rows(1)[0][0].value == "Banana split"
    table.free_bookmark(bm)
    with pytest.raises(errors.InvalidBookmark):
        table.free_bookmark(bm)
    with pytest.raises(errors.InvalidBookmark):
        table.seek_row_bookmark(bm, 0)
    limit = alice.context.limits.max_bookmarks
    with pytest.raises(errors.NotEnoughMemory):
        for _ in range(limit + 1):
            table.create_bookmark()


def test_find_row(folder: Folder) -> None:
    table = folder.contents_table()
    table.set_columns([pt.PR_SUBJECT_W])
    res = rs.Property(rs.RELOP_EQ, pt.PR_IMPORTANCE, 1)
    assert table.find_row(res, 0)[0].value == "Banana split"
    assert table.query_position()[0] == 1
    table.seek_row(0, 2)
    assert table.find_row(res)[0].value == "date loaf"
    assert table.find_row(res, 2, 0x1)[0].value == "date loaf"  # backward from the end
    table.seek_row(0, 4)
    assert table.find_row(res, 1, 0x1)[0].value == "Banana split"
    with pytest.raises(errors.NotFound):
        table.find_row(rs.Property(rs.RELOP_EQ, pt.PR_IMPORTANCE, 7), 0)


def test_hierarchy_and_attachment_tables_sort_and_restrict(folder: Folder) -> None:
    for name in ("zeta", "Alpha", "mid"):
        folder.create_folder(name)
    table = folder.hierarchy_table()
    table.set_columns([pt.PR_DISPLAY_NAME_W])
    table.sort_table([(pt.PR_DISPLAY_NAME_W, True)])
    assert [r[0].value for r in table.query_rows(10)] == ["zeta", "mid", "Alpha"]
    table.restrict(rs.Content(rs.FL_PREFIX | rs.FL_IGNORECASE, pt.PR_DISPLAY_NAME_W, "a"))
    assert [r[0].value for r in table.query_rows(10)] == ["Alpha"]


def test_restriction_limits_and_validation() -> None:
    deep: rs.Restriction = rs.Exist(pt.PR_SUBJECT_W)
    for _ in range(40):
        deep = rs.Not(deep)
    with pytest.raises(errors.TooComplex):
        rs.check(deep)
    wide = rs.Or(tuple(rs.Exist(pt.PR_SUBJECT_W) for _ in range(2000)))
    with pytest.raises(errors.TooComplex):
        rs.check(wide)
    for bad in (
        {"rt": 99},
        {"rt": rs.RES_PROPERTY, "relop": 9, "tag": pt.PR_SUBJECT_W, "value": "x"},
        {"rt": rs.RES_PROPERTY, "relop": 4, "tag": pt.PR_IMPORTANCE, "value": "x"},
        {"rt": rs.RES_CONTENT, "fuzzy": 7, "tag": pt.PR_SUBJECT_W, "value": "x"},
        {"rt": rs.RES_CONTENT, "fuzzy": 1, "tag": pt.PR_IMPORTANCE, "value": 1},
        {"rt": rs.RES_BITMASK, "bmr": 0, "tag": pt.PR_SUBJECT_W, "mask": 1},
        {"rt": rs.RES_SUBRESTRICTION, "sub": pt.PR_SUBJECT_W, "res": {"rt": 8, "tag": 1}},
        {"rt": rs.RES_AND, "res": "nope"},
        "not a dict",
    ):
        with pytest.raises(errors.MapiError):
            rs.from_plain(bad)


def test_regex_dialect_is_linear_and_correct() -> None:
    assert rs.regex_search("a+b", "xxaaab")
    assert not rs.regex_search("^a+b$", "xaab")
    assert rs.regex_search("^[^0-9]*$", "letters")
    assert rs.regex_search("c.?t", "ct") and rs.regex_search("c.?t", "cat")
    assert not rs.regex_search("a*a*a*a*a*b", "a" * 5000)  # catastrophic for backtracking


_leaf = st.one_of(
    st.builds(rs.Exist, st.sampled_from([pt.PR_SUBJECT_W, pt.PR_IMPORTANCE])),
    st.builds(rs.Property, st.integers(0, 5), st.just(pt.PR_IMPORTANCE),
              st.integers(-(2**31), 2**31 - 1)),
    st.builds(rs.Content, st.sampled_from([0, 1, 2, 0x10001]), st.just(pt.PR_SUBJECT_W),
              st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                      max_size=10)),
    st.builds(rs.Bitmask, st.integers(0, 1), st.just(pt.PR_MESSAGE_FLAGS),
              st.integers(0, 2**32 - 1)),
    st.builds(rs.Size, st.integers(0, 5), st.just(pt.PR_SUBJECT_W), st.integers(0, 1000)),
    st.builds(rs.CompareProps, st.integers(0, 5), st.just(pt.PR_IMPORTANCE),
              st.just(pt.PR_MESSAGE_FLAGS)),
)  # fmt: skip
_tree = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(lambda xs: rs.And(tuple(xs)), st.lists(inner, max_size=3)),
        st.builds(lambda xs: rs.Or(tuple(xs)), st.lists(inner, max_size=3)),
        st.builds(rs.Not, inner),
        st.builds(rs.SubRestriction, st.just(pt.PR_MESSAGE_RECIPIENTS), inner),
        st.builds(rs.Comment, st.just(((pt.PR_SUBJECT_W, "c"),)), st.one_of(st.none(), inner)),
    ),
    max_leaves=12,
)


@given(_tree)
def test_restrictions_round_trip_through_plain_data(res: rs.Restriction) -> None:
    import msgpack

    plain = rs.to_plain(res)
    wire = msgpack.unpackb(msgpack.packb(plain, use_bin_type=True), raw=False)
    assert rs.from_plain(wire, Limits()) == res


@given(st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["rt", "res", "tag", "value",
                                                             "relop", "fuzzy"]), inner)),
    max_leaves=20,
))  # fmt: skip
def test_garbage_plain_data_gives_only_mapi_errors(data: object) -> None:
    with contextlib.suppress(errors.MapiError):
        rs.from_plain(data)
