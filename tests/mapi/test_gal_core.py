"""The NSPI sans-IO core on GAL snapshots: STAT invariants under random positions and
moves (hypothesis), paging covers the table exactly once, seeks, matches, resolution,
hidden and disabled users left out, MIds kept across rebuilds, the directory's details
and their in-place upgrade."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from dcerpc.idl import nspi as idl
from mapi.addressbook import props as p
from mapi.addressbook.gal import FIRST_MID, build_gal
from mapi.addressbook.nspi import NspiCore, Reply
from mapi.storage.directory import UserRecord

GUID = bytes(range(16))


def users(n: int, **extra: object) -> list[UserRecord]:
    return [
        UserRecord(
            f"{i:032x}",
            f"user{i:03d}",
            f"Name {i % 7} {i:03d}",
            f"user{i:03d}@example.org",
            f"{i}.sqlite3",
            0,
            False,
            **extra,  # type: ignore[arg-type]
        )
        for i in range(n)
    ]


def core(n: int) -> NspiCore:
    gal, _ = build_gal(users(n), organization="org", server_guid=GUID)
    return NspiCore(gal)


u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def stats(draw: st.DrawFn, c: NspiCore) -> idl.Stat:
    mids = list(c.gal.mids)
    current = draw(st.one_of(st.sampled_from([0, 1, 2, *mids[:5], *mids[-5:]]), u32))
    return idl.Stat(
        sort_type=0,
        container_id=draw(st.sampled_from([0, 0x10])),
        current_rec=current,
        delta=draw(st.one_of(i32, st.integers(-5, 5))),
        num_pos=draw(st.one_of(u32, st.integers(0, 30))),
        total_recs=draw(st.one_of(u32, st.integers(0, 30))),
        code_page=p.CP_TELETEX,
    )


CORE = core(23)


def check_invariants(c: NspiCore, stat: idl.Stat) -> None:
    n = len(c.gal)
    assert 0 <= stat.num_pos <= stat.total_recs == n
    assert stat.delta == 0
    if stat.num_pos == n:
        assert stat.current_rec == p.MID_END_OF_TABLE
    else:
        assert stat.current_rec == c.gal.mids[stat.num_pos]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_stat_sequences_keep_the_invariants(data: st.DataObject) -> None:
    c = CORE
    stat = data.draw(stats(c))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["update", "query", "seek"]))
        if c.locate(stat, len(c.gal)) is None and op != "seek":
            # A CurrentRec that is no row's MId: NotFound, no STAT back (rule 5).
            assert stat.current_rec not in (0, 1, 2) and stat.current_rec not in c.gal.position
            assert c.update_stat(stat, True) == Reply(p.NOT_FOUND)
            assert c.query_rows(0, stat, None, 5, None) == Reply(p.NOT_FOUND)
            return
        if op == "update":
            reply = c.update_stat(stat, True)
            assert reply.result == 0 and reply.stat is not None
            start = c.locate(stat, len(c.gal))
            assert start is not None
            assert reply.values is not None
            assert reply.values["plDelta"] == reply.stat.num_pos - start
        elif op == "query":
            count = data.draw(st.integers(1, 30))
            reply = c.query_rows(0, stat, None, count, [p.PR_DISPLAY_NAME])
            assert reply.result == 0 and reply.stat is not None and reply.values is not None
            moved = c.moved(stat, len(c.gal))
            assert moved is not None
            pos = moved[1]
            assert len(reply.values["ppRows"]) == min(count, len(c.gal) - pos)
        else:
            text = data.draw(st.text(max_size=8))
            reply = c.seek_entries(stat, idl.PropertyValue(p.PR_DISPLAY_NAME, text), None, None)
            assert reply.result in (0, p.NOT_FOUND)
            if reply.result:
                continue
        assert reply.stat is not None
        check_invariants(c, reply.stat)
        stat = replace(reply.stat, delta=data.draw(st.integers(-5, 5)))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 40), st.integers(1, 9))
def test_paging_reads_every_row_once(n: int, page: int) -> None:
    c = core(n)
    stat = idl.Stat(code_page=p.CP_TELETEX)
    names: list[str] = []
    for _ in range(n + 2):
        reply = c.query_rows(0, stat, None, page, [p.PR_DISPLAY_NAME])
        assert reply.stat is not None and reply.values is not None
        rows = reply.values["ppRows"]
        names += [row.props[0].value for row in rows]
        stat = reply.stat
        if stat.current_rec == p.MID_END_OF_TABLE:
            break
    assert names == [e.display_name for e in c.gal.entries]
    assert names == sorted(names, key=str.casefold)


def test_errors_of_the_spec() -> None:
    c = CORE
    assert c.query_rows(0, idl.Stat(), None, 0, None).result == p.INVALID_PARAMETER
    assert c.query_rows(0, idl.Stat(sort_type=9), None, 1, None).result == p.GENERAL_FAILURE
    assert c.update_stat(idl.Stat(container_id=5), False).result == p.INVALID_BOOKMARK
    assert c.bind(0, idl.Stat(code_page=p.CP_WINUNICODE)).result == p.INVALID_CODEPAGE
    assert c.bind(0, idl.Stat(code_page=99999)).result == p.INVALID_CODEPAGE
    assert c.bind(0, idl.Stat(code_page=1252)).result == 0
    target = idl.PropertyValue(0x3003001F, "x")
    assert c.seek_entries(idl.Stat(), target, None, None).result == p.GENERAL_FAILURE
    # NspiGetProps of an object that is not there: as if it had no properties (rule 11).
    missing = c.get_props(0, idl.Stat(current_rec=5), [p.PR_DISPLAY_NAME, p.PR_ACCOUNT])
    assert missing.result == p.ERRORS_RETURNED and missing.values is not None
    assert [v.tag for v in missing.values["ppRows"].props] == [
        p.error_tag(p.PR_DISPLAY_NAME),
        p.error_tag(p.PR_ACCOUNT),
    ]
    assert c.get_props(0, idl.Stat(current_rec=p.MID_CURRENT), [p.PR_DISPLAY_NAME]).result != 0
    # A CurrentRec that is a MId of no row: NotFound (NspiUpdateStat rule 5), the
    # STAT not given back; MID_CURRENT with wild NumPos/TotalRecs is clamped.
    unknown = idl.Stat(current_rec=0xDEADBEEF, code_page=p.CP_TELETEX)
    assert c.update_stat(unknown, True) == Reply(p.NOT_FOUND)
    assert c.query_rows(0, unknown, None, 5, None) == Reply(p.NOT_FOUND)
    wild = idl.Stat(current_rec=p.MID_CURRENT, num_pos=2**32 - 1, total_recs=3, delta=-(2**31))
    assert c.update_stat(wild, False).result == 0
    # A code page we cannot serve: InvalidCodepage wherever 8-bit strings go out.
    odd = idl.Stat(code_page=0xFF)
    for reply in (
        c.get_props(0, replace(odd, current_rec=c.gal.mids[0]), [p.PR_DISPLAY_NAME]),
        c.query_rows(0, odd, None, 5, None),
        c.seek_entries(odd, idl.PropertyValue(p.PR_DISPLAY_NAME, "a"), None, None),
        c.resolve_names(odd, None, ["a"]),
        c.special_table(0, odd, 0),
    ):
        assert reply == Reply(p.INVALID_CODEPAGE)
    assert c.get_prop_list(0, c.gal.mids[0], 0xFF) == Reply(p.INVALID_CODEPAGE)
    assert c.special_table(p.NSPI_UNICODE_STRINGS, odd, 0).result == 0  # no 8-bit names
    assert c.compare_mids(idl.Stat(), 1, 2).result == p.GENERAL_FAILURE


def test_seek_matches_resolve_and_props() -> None:
    c = CORE
    reply = c.seek_entries(
        idl.Stat(code_page=p.CP_TELETEX),
        idl.PropertyValue(0x3001001E, b"name 3"),
        None,
        [p.PR_ACCOUNT],
    )
    assert reply.result == 0 and reply.stat is not None and reply.values is not None
    assert c.gal.entries[reply.stat.num_pos].display_name.startswith("Name 3")
    prefix = idl.Restriction(
        idl.RES_CONTENT,
        idl.ContentRestriction(
            0x10002, p.PR_DISPLAY_NAME, idl.PropertyValue(p.PR_DISPLAY_NAME, "name 2")
        ),
    )
    matches = c.get_matches(idl.Stat(), prefix, None, 100, [p.PR_DISPLAY_NAME])
    assert matches.result == 0 and matches.values is not None
    got = [r.props[0].value for r in matches.values["ppRows"]]
    assert got == [e.display_name for e in c.gal.entries if e.display_name.startswith("Name 2")]
    assert c.get_matches(idl.Stat(), prefix, None, 1, None).result == p.TABLE_TOO_BIG
    deep: idl.Restriction = prefix
    for _ in range(100):
        deep = idl.Restriction(idl.RES_NOT, deep)
    assert c.get_matches(idl.Stat(), deep, None, 100, None).result == p.TOO_COMPLEX
    resolved = c.resolve_names(idl.Stat(), [p.PR_ACCOUNT], ["user005", "name", "", "zzz"])
    assert resolved.values is not None
    mids = resolved.values["ppMIds"]
    assert mids[1:] == [p.MID_AMBIGUOUS, p.MID_UNRESOLVED, p.MID_UNRESOLVED]
    assert [r.props[0].value for r in resolved.values["ppRows"]] == ["user005"]
    props = c.get_props(0, idl.Stat(current_rec=mids[0], code_page=p.CP_TELETEX), [p.PR_TITLE])
    assert props.result == p.ERRORS_RETURNED  # no title set
    eph = c.get_props(p.F_EPH_ID, idl.Stat(current_rec=mids[0]), [p.PR_ENTRYID])
    assert eph.values is not None
    entry_id = eph.values["ppRows"].props[0].value
    assert entry_id[:4] == b"\x87\0\0\0" and entry_id[4:20] == GUID
    assert int.from_bytes(entry_id[28:32], "little") == mids[0]


def test_hidden_and_disabled_left_out_and_mids_kept() -> None:
    everyone = users(4)
    everyone[1] = replace(everyone[1], hidden=True)
    everyone[2] = replace(everyone[2], disabled=True)
    gal, mids = build_gal(everyone, organization="org", server_guid=GUID)
    assert {e.username for e in gal.entries} == {"user000", "user003"}
    assert gal.resolve("user001") == [] and gal.resolve("user002") == []
    again, _ = build_gal([*users(5)[::-1]], organization="org", server_guid=GUID, previous=mids)
    for e in gal.entries:
        assert again.by_mid[e.mid].username == e.username
    assert min(again.mids) >= FIRST_MID


def test_directory_details_and_in_place_upgrade(tmp_path) -> None:
    from mapi.access.directory import Directory
    from mapi.access.logon import KdfParams

    path = tmp_path / "directory.sqlite3"
    old = sqlite3.connect(path)  # a directory made before the details existed
    old.execute(
        "CREATE TABLE users (user_id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE,"
        " display_name TEXT NOT NULL, email TEXT NOT NULL, salt BLOB NOT NULL,"
        " kdf_n INTEGER NOT NULL, kdf_r INTEGER NOT NULL, kdf_p INTEGER NOT NULL,"
        " verifier BLOB NOT NULL, mailbox TEXT NOT NULL UNIQUE, created INTEGER NOT NULL,"
        " disabled INTEGER NOT NULL DEFAULT 0) STRICT"
    )
    old.execute(
        "INSERT INTO users VALUES ('ab', 'old', 'Old One', '', x'00', 1024, 8, 1, x'00',"
        " 'ab.sqlite3', 0, 0)"
    )
    old.commit()
    old.close()
    d = Directory(path, kdf=KdfParams(1024, 8, 1), clock=lambda: 0)
    try:
        record = d.get_user("old")
        assert (record.title, record.hidden) == (None, False)
        d.add_user("new", "pw-new-1", title="Boss", company="ACME", hidden=True)
        new = d.get_user("new")
        assert (new.title, new.company, new.hidden) == ("Boss", "ACME", True)
        before = d.version()
        d.update_user("new", title="", department="Ops", hidden=False)
        new = d.get_user("new")
        assert (new.title, new.department, new.hidden) == (None, "Ops", False)
        assert d.version() != before
    finally:
        d.close()
