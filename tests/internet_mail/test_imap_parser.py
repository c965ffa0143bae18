"""The IMAP command parser: RFC 9051 vectors fed whole, byte by byte and at random cut
points; limits answered with the protocol's own replies; arbitrary bytes never raise
and never grow memory beyond the limits."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from internet_mail.imap import commands as c
from internet_mail.imap import mutf7
from internet_mail.imap.config import ImapLimits
from internet_mail.imap.parser import (
    CommandParser,
    CommandReceived,
    CommandRejected,
    ContinuationNeeded,
    IdleDone,
    ParserEvent,
    ProtocolViolation,
)

APPEND_MESSAGE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu.example\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)

#: Commands of RFC 9051 section 6 (and 8's session), with what they parse to.
VECTORS: list[tuple[bytes, c.Command]] = [
    (b"abcd CAPABILITY\r\n", c.Capability(tag="abcd")),
    (b"a002 NOOP\r\n", c.Noop(tag="a002")),
    (b"A023 LOGOUT\r\n", c.Logout(tag="A023")),
    (b"a002 STARTTLS\r\n", c.StartTLS(tag="a002")),
    (b"A001 AUTHENTICATE GSSAPI\r\n", c.Authenticate(tag="A001", mechanism="GSSAPI")),
    (
        b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        c.Authenticate(tag="a", mechanism="PLAIN", initial_response=b"\0alice\0secret"),
    ),
    (b"a001 LOGIN SMITH SESAME\r\n", c.Login(tag="a001", user=b"SMITH", password=b"SESAME")),
    (
        b"t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n",
        c.Enable(tag="t2", capabilities=("CONDSTORE", "X-GOOD-IDEA")),
    ),
    (
        b'a023 ID ("name" "sodr" "version" NIL)\r\n',
        c.Id(tag="a023", params=(("name", "sodr"), ("version", None))),
    ),
    (b"A142 SELECT INBOX\r\n", c.Select(tag="A142", mailbox=b"INBOX")),
    (
        b"A932 EXAMINE blurdybloop\r\n",
        c.Select(tag="A932", mailbox=b"blurdybloop", read_only=True),
    ),
    (b"A003 CREATE owatagu/\r\n", c.Create(tag="A003", mailbox=b"owatagu/")),
    (
        b't1 CREATE "Important Messages" (USE (\\Important))\r\n',
        c.Create(tag="t1", mailbox=b"Important Messages", special_use=("\\Important",)),
    ),
    (b"A683 DELETE blurdybloop\r\n", c.Delete(tag="A683", mailbox=b"blurdybloop")),
    (
        b"A683 RENAME blurdybloop sarasoop\r\n",
        c.Rename(tag="A683", old=b"blurdybloop", new=b"sarasoop"),
    ),
    (
        b"A002 SUBSCRIBE #news.comp.mail.mime\r\n",
        c.Subscribe(tag="A002", mailbox=b"#news.comp.mail.mime"),
    ),
    (
        b"A002 UNSUBSCRIBE #news.comp.mail.mime\r\n",
        c.Unsubscribe(tag="A002", mailbox=b"#news.comp.mail.mime"),
    ),
    (b'A101 LIST "" ""\r\n', c.List(tag="A101", reference=b"", patterns=(b"",))),
    (b"A202 LIST ~/Mail/ %\r\n", c.List(tag="A202", reference=b"~/Mail/", patterns=(b"%",))),
    (
        b'A02 LIST (SUBSCRIBED) "" "*"\r\n',
        c.List(tag="A02", reference=b"", patterns=(b"*",), selection=("SUBSCRIBED",)),
    ),
    (
        b'A03 LIST () "" "%" RETURN (CHILDREN)\r\n',
        c.List(tag="A03", reference=b"", patterns=(b"%",), returns=("CHILDREN",)),
    ),
    (
        b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))\r\n',
        c.List(
            tag="A01",
            reference=b"",
            patterns=(b"%",),
            returns=("STATUS",),
            status_items=("MESSAGES", "UNSEEN"),
        ),
    ),
    (b"A001 NAMESPACE\r\n", c.Namespace(tag="A001")),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n",
        c.Status(tag="A042", mailbox=b"blurdybloop", items=("UIDNEXT", "MESSAGES")),
    ),
    (
        b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(APPEND_MESSAGE)
        + APPEND_MESSAGE
        + b"\r\n",
        c.Append(tag="A003", mailbox=b"saved-messages", flags=("\\Seen",), message=APPEND_MESSAGE),
    ),
    (
        b'A004 APPEND INBOX " 7-Feb-1994 21:52:25 -0800" ~{3+}\r\na\x00b\r\n',
        c.Append(
            tag="A004",
            mailbox=b"INBOX",
            message=b"a\x00b",
            binary=True,
            date=dt.datetime(1994, 2, 7, 21, 52, 25, tzinfo=dt.timezone(-dt.timedelta(hours=8))),
        ),
    ),
    (b"A001 IDLE\r\n", c.Idle(tag="A001")),
    (b"A341 CLOSE\r\n", c.Close(tag="A341")),
    (b"A342 UNSELECT\r\n", c.Unselect(tag="A342")),
    (b"A202 EXPUNGE\r\n", c.Expunge(tag="A202")),
    (
        b"A003 UID EXPUNGE 3000:3002\r\n",
        c.Expunge(tag="A003", uids=c.SequenceSet(((3000, 3002),))),
    ),
    (
        b'A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"\r\n',
        c.Search(
            tag="A282",
            returns=("MIN", "COUNT"),
            criteria=c.And(
                (
                    c.Criterion("FLAGGED"),
                    c.Criterion("SINCE", (dt.date(1994, 2, 1),)),
                    c.Not(c.Criterion("FROM", (b"Smith",))),
                )
            ),
        ),
    ),
    (
        b"A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n" + "Николай".encode()[:12] + b"\r\n",
        c.Search(
            tag="A285", charset="UTF-8", criteria=c.Criterion("TEXT", ("Николай".encode()[:12],))
        ),
    ),
    (
        b"A1 UID SEARCH OR (UID 1:* SMALLER 100) HEADER X-Spam yes $\r\n",
        c.Search(
            tag="A1",
            uid=True,
            criteria=c.And(
                (
                    c.Or(
                        c.And(
                            (
                                c.Criterion("UID", (c.SequenceSet(((1, c.STAR),)),)),
                                c.Criterion("SMALLER", (100,)),
                            )
                        ),
                        c.Criterion("HEADER", ("X-SPAM", b"yes")),
                    ),
                    c.Criterion("SEQ", (c.SequenceSet(saved=True),)),
                )
            ),
        ),
    ),
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
        c.Fetch(
            tag="A654",
            sequence=c.SequenceSet(((2, 4),)),
            attributes=(
                c.FetchAttribute("FLAGS"),
                c.FetchAttribute("BODY", c.Section((), "HEADER.FIELDS", ("DATE", "FROM"))),
            ),
        ),
    ),
    (
        b"A5 FETCH *:* FAST\r\n",
        c.Fetch(
            tag="A5",
            sequence=c.SequenceSet(((c.STAR, c.STAR),)),
            attributes=(
                c.FetchAttribute("FLAGS"),
                c.FetchAttribute("INTERNALDATE"),
                c.FetchAttribute("RFC822.SIZE"),
            ),
        ),
    ),
    (
        b"A6 UID FETCH 1:4294967295 (BODY.PEEK[1.2.MIME]<0.2048> BINARY[3]) (CHANGEDSINCE 12345"
        b" VANISHED)\r\n",
        c.Fetch(
            tag="A6",
            uid=True,
            sequence=c.SequenceSet(((1, 4294967295),)),
            attributes=(
                c.FetchAttribute("BODY", c.Section((1, 2), "MIME"), (0, 2048), peek=True),
                c.FetchAttribute("BINARY", c.Section((3,))),
                c.FetchAttribute("UID"),
            ),
            changed_since=12345,
            vanished=True,
        ),
    ),
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)\r\n",
        c.Store(tag="A003", sequence=c.SequenceSet(((2, 4),)), mode="+", flags=("\\Deleted",)),
    ),
    (
        b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) -FLAGS.SILENT \\Seen $Junk\r\n",
        c.Store(
            tag="d105",
            sequence=c.SequenceSet(((7, 7), (5, 5), (9, 9))),
            mode="-",
            silent=True,
            flags=("\\Seen", "$Junk"),
            unchanged_since=320162338,
        ),
    ),
    (
        b"A003 COPY 2:4 MEETING\r\n",
        c.Copy(tag="A003", sequence=c.SequenceSet(((2, 4),)), mailbox=b"MEETING"),
    ),
    (
        b"a UID MOVE 42:69 foo\r\n",
        c.Move(tag="a", uid=True, sequence=c.SequenceSet(((42, 69),)), mailbox=b"foo"),
    ),
    (
        b"A1 SORT (REVERSE ARRIVAL SUBJECT) UTF-8 ALL\r\n",
        c.Sort(tag="A1", keys=("REVERSE", "ARRIVAL", "SUBJECT"), criteria=c.Criterion("ALL")),
    ),
    (
        b"A2 UID THREAD REFERENCES UTF-8 SINCE 5-MAR-2000\r\n",
        c.Thread(
            tag="A2",
            uid=True,
            algorithm="REFERENCES",
            criteria=c.Criterion("SINCE", (dt.date(2000, 3, 5),)),
        ),
    ),
    (b'G GETQUOTA ""\r\n', c.GetQuota(tag="G", root=b"")),
    (b"G GETQUOTAROOT INBOX\r\n", c.GetQuotaRoot(tag="G", mailbox=b"INBOX")),
    (
        b"s SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
        c.Select(
            tag="s",
            mailbox=b"INBOX",
            condstore=True,
            qresync=c.QresyncParams(
                uidvalidity=67890007,
                modseq=20050715194045000,
                known_uids=c.SequenceSet(((41, 41), (43, 211), (214, 541))),
            ),
        ),
    ),
]


def _feed(parser: CommandParser, chunks: list[bytes]) -> list[ParserEvent]:
    events: list[ParserEvent] = []
    for chunk in chunks:
        events += parser.receive_data(chunk)
    return [e for e in events if not isinstance(e, ContinuationNeeded)]


@pytest.mark.parametrize(
    ("data", "expected"), VECTORS, ids=[v[0][:24].decode("latin-1") for v in VECTORS]
)
def test_vectors_whole_and_byte_by_byte(data: bytes, expected: c.Command) -> None:
    whole = _feed(CommandParser(), [data])
    assert whole == [CommandReceived(command=expected)]
    bytewise = _feed(CommandParser(), [data[i : i + 1] for i in range(len(data))])
    assert bytewise == whole
    # Trailing bytes stay for the next command.
    parser = CommandParser()
    assert _feed(parser, [data + b"x NOOP"]) == whole
    assert _feed(parser, [b"\r\n"]) == [CommandReceived(command=c.Noop(tag="x"))]


ALL_BYTES = b"".join(v[0] for v in VECTORS)
EXPECTED = [CommandReceived(command=v[1]) for v in VECTORS]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(ALL_BYTES)), max_size=40))
def test_random_cut_points(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(ALL_BYTES)]
    chunks = [ALL_BYTES[a:b] for a, b in itertools.pairwise(points)]
    assert _feed(CommandParser(), chunks) == EXPECTED


def test_synchronizing_literal_asks_for_continuation() -> None:
    parser = CommandParser()
    assert parser.receive_data(b"a LOGIN {5}\r\n") == [ContinuationNeeded(tag="a")]
    assert parser.receive_data(b"alice {6+}\r\nsecret\r\n") == [
        CommandReceived(command=c.Login(tag="a", user=b"alice", password=b"secret"))
    ]


def test_idle_done_mode() -> None:
    parser = CommandParser()
    parser.expect_done()
    assert parser.receive_data(b"DONE\r\n") == [IdleDone(ok=True)]
    parser.expect_done()
    assert parser.receive_data(b"a NOOP\r\n") == [IdleDone(ok=False)]


@pytest.mark.parametrize(
    "line",
    [
        b"a FETCH 1 (FLAGS\r\n",
        b"a SELECT\r\n",
        b"a BOGUS\r\n",
        b"a UID NOOP\r\n",
        b"a FETCH 0 FLAGS\r\n",
        b"a FETCH 1:4294967296 FLAGS\r\n",
        b"a STORE 1 FLAGS (\\*)\r\n",
        b'a LOGIN "unterminated\r\n',
        b"a SEARCH BEFORE 31-Feb-2020\r\n",
        b"a  NOOP\r\n",
        b"a NOOP extra\r\n",
        b"a FETCH 1 BODY[HEADER.FIELDS ()]\r\n",
    ],
)
def test_bad_commands_get_tagged_bad(line: bytes) -> None:
    events = CommandParser().receive_data(line)
    assert len(events) == 1 and isinstance(events[0], CommandRejected), events
    assert (events[0].tag, events[0].status) == ("a", "BAD")


def test_limits() -> None:
    limits = ImapLimits(
        max_line=1024,
        max_command=8192,
        max_literal=4096,
        max_append=10000,
        max_depth=5,
        max_ranges=10,
    )
    # A line too long: * BYE, then nothing more is read.
    parser = CommandParser(limits)
    assert parser.receive_data(b"a " + b"x" * 2000) == [ProtocolViolation(text="line too long")]
    assert parser.receive_data(b"\r\nb NOOP\r\n") == []
    # APPEND above the limit: NO [TOOBIG]; {4294967295} and a 30-digit size too.
    for size in (b"10001", b"4294967295", b"9" * 30):
        parser = CommandParser(limits)
        events = parser.receive_data(b"a APPEND INBOX {" + size + b"}\r\nb NOOP\r\n")
        assert events[0] == CommandRejected(
            tag="a", status="NO", text="message too big (limit 10000)", code="TOOBIG"
        )
        assert events[1] == CommandReceived(command=c.Noop(tag="b"))
    # A non-synchronizing one is read and dropped, never stored.
    parser = CommandParser(limits)
    events = parser.receive_data(b"a APPEND INBOX {20000+}\r\n" + b"x" * 20000)
    assert events == [] and parser.buffered == 0
    events = parser.receive_data(b"\r\nb NOOP\r\n")
    assert [type(e) for e in events] == [CommandRejected, CommandReceived]
    # Other literals have their own, smaller limit.
    events = CommandParser(limits).receive_data(b"a LOGIN {5000}\r\n")
    assert events == [CommandRejected(tag="a", status="BAD", text="literal too big (limit 4096)")]
    # Nesting and sequence-set size.
    deep = CommandParser(limits).receive_data(
        b"a SEARCH " + b"(" * 10 + b"ALL" + b")" * 10 + b"\r\n"
    )
    assert isinstance(deep[0], CommandRejected) and "nested" in deep[0].text
    many = CommandParser(limits).receive_data(b"a FETCH " + b",".join([b"1"] * 11) + b" UID\r\n")
    assert isinstance(many[0], CommandRejected) and "ranges" in many[0].text
    nots = CommandParser(limits).receive_data(b"a SEARCH " + b"NOT " * 10 + b"ALL\r\n")
    assert isinstance(nots[0], CommandRejected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_give_only_events(chunks: list[bytes]) -> None:
    limits = ImapLimits(max_line=1024, max_command=4096, max_literal=2048, max_append=4096)
    parser = CommandParser(limits)
    for chunk in chunks:
        for event in parser.receive_data(chunk):
            assert isinstance(event, ParserEvent)
        assert parser.buffered <= limits.max_line + 2 + limits.max_command + limits.max_append + 300


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_vectors_give_only_events(data: st.DataObject) -> None:
    raw = bytearray(data.draw(st.sampled_from(VECTORS))[0])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=0, max_size=4))
    events = CommandParser().receive_data(bytes(raw))
    assert all(isinstance(e, ParserEvent) for e in events)


# -- modified UTF-7 ---------------------------------------------------------------------


def test_mutf7_rfc_example() -> None:
    assert mutf7.decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert mutf7.encode("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert mutf7.encode("a&b") == "a&-b"


@pytest.mark.parametrize(
    "bad", ["&", "&U,BTFw", "&AGE-", "&U,BTFw-&ZeVnLIqe-", "&Zé-", "\x7f", "&U,BTF-"]
)
def test_mutf7_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        mutf7.decode(bad)


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_mutf7_round_trip(name: str) -> None:
    encoded = mutf7.encode(name)
    assert encoded.isascii()
    assert mutf7.decode(encoded) == name
