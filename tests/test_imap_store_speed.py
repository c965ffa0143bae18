"""The IMAP fast paths over the real store (bench/imap_bench.py measures them) still give
the right answers: folder listings shared between a user's connections and kept while
nothing commits (a logon commits nothing); the session's skipped comparison when the
store's listing is the same, and its reports when it is not (another connection's
flags, EXISTS, expunges, expunges held back during FETCH); sequence and UID sets
resolved by bisection (overlapping, unordered, ``*``); ENVELOPE and header searches from
the header alone (inline and streamed originals, a header longer than the first read,
a message made through MAPI) and from the shared cache, which a MAPI edit invalidates;
BODY searches still read the body; the cache's bound."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from internet_mail.imap import ImapSession
from internet_mail.imap.message import Part
from internet_mail.mime import ConvertedMessage, mime_to_mapi
from internet_mail.store import ImapStoreBackend, ImapStoreBackends
from internet_mail.store.imap import DerivedCache
from internet_mail.store.mailbox import HEAD_READ
from mapi.access.logon import KdfParams
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects.delivery import deliver_mime
from mapi.store import ObjectStore

FAST_KDF = KdfParams(n=16, r=1, p=1)


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


def _mail(n: int, subject: str = "hello", body: bytes = b"", extra: str = "") -> bytes:
    return (
        f"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <m{n}@example.org>\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n{extra}"
        f"\r\nbody {n}\r\n"
    ).encode() + body


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    s.add_user("alice", "secret", email="alice@example.com")
    yield s
    s.close()


def _deliver(store: ObjectStore, raw: bytes) -> None:
    deliver_mime(store, ["alice@example.com"], raw, convert=_convert)


class Client:
    """One IMAP connection: the session core over a store backend."""

    def __init__(self, factory: ImapStoreBackends) -> None:
        self.backend: ImapStoreBackend = factory.new("192.0.2.1")
        self.session = ImapSession(self.backend, tls=True)
        self.session.data_to_send()
        self.n = 0

    def say(self, line: str) -> bytes:
        self.n += 1
        tag = f"t{self.n}".encode()
        self.session.receive_data(tag + b" " + line.encode() + b"\r\n")
        out = self.session.data_to_send()
        assert re.search(rb"(^|\r\n)" + tag + rb" OK", out), out
        return out

    def login(self) -> Client:
        self.say("LOGIN alice secret")
        return self


def _uids(out: bytes) -> list[int]:
    return [int(u) for u in re.findall(rb"UID (\d+)", out)]


def _untagged(out: bytes) -> list[bytes]:
    return [line for line in out.split(b"\r\n") if line.startswith(b"* ")]


def test_connections_share_listings_and_a_logon_commits_nothing(store: ObjectStore) -> None:
    for n in range(30):
        _deliver(store, _mail(n))
    factory = ImapStoreBackends(store)
    first = Client(factory).login()
    first.say("SELECT INBOX")
    view = first.backend.view
    folder = view.box("INBOX").folder_id
    listing = view.entries(folder)[1]
    generation = view.db.generation
    second = Client(factory).login()
    assert view.db.generation == generation  # the logon wrote nothing
    assert b"* 30 EXISTS" in second.say("SELECT INBOX")
    assert second.backend.view.entries(folder)[1] is listing  # not read again
    assert first.backend.messages("INBOX") is second.backend.messages("INBOX")
    # A delivery makes both stale: each sees it.
    _deliver(store, _mail(30))
    assert b"* 31 EXISTS" in first.say("NOOP")
    assert b"* 31 EXISTS" in second.say("NOOP")
    assert b"* 31 EXISTS" in Client(factory).login().say("EXAMINE INBOX")


def test_other_connections_changes_are_reported_after_skipped_comparisons(
    store: ObjectStore,
) -> None:
    for n in range(10):
        _deliver(store, _mail(n))
    factory = ImapStoreBackends(store)
    watcher = Client(factory).login()
    watcher.say("SELECT INBOX")
    assert _untagged(watcher.say("NOOP")) == []  # nothing changed: nothing said
    assert _untagged(watcher.say("NOOP")) == []
    actor = Client(factory).login()
    actor.say("SELECT INBOX")
    actor.say("STORE 3 +FLAGS (\\Seen)")
    assert _untagged(watcher.say("NOOP")) == [b"* 3 FETCH (FLAGS (\\Seen))"]
    assert _untagged(watcher.say("NOOP")) == []
    actor.say("STORE 5 +FLAGS.SILENT (\\Deleted)")
    actor.say("EXPUNGE")
    # FETCH may not report an expunge (RFC 9051 7.5.1): it is held back, not lost.
    out = watcher.say("FETCH 1 (UID)")
    assert b"EXPUNGE" not in out
    assert b"* 5 EXPUNGE" in watcher.say("NOOP")
    assert _untagged(watcher.say("NOOP")) == []
    assert b"* 9 EXISTS" in watcher.say("SELECT INBOX")


@settings(max_examples=40, deadline=None)
@given(
    ranges=st.lists(
        st.tuples(st.integers(1, 14) | st.just(0), st.integers(1, 14) | st.just(0)),
        min_size=1,
        max_size=4,
    ),
    uid=st.booleans(),
)
def test_sequence_sets_pick_what_they_name(
    sets: _Sets, ranges: list[tuple[int, int]], uid: bool
) -> None:
    text = ",".join(
        (str(a) if a else "*") + ("" if a == b else ":" + (str(b) if b else "*")) for a, b in ranges
    )
    got = sets.fetch(text, uid)
    # Messages 1..10 had uids 1..10; 4 and 7 are expunged.
    uids = sets.uids
    largest = uids[-1] if uid else len(uids)
    named: set[int] = set()
    for a, b in ranges:
        low, high = sorted((a or largest, b or largest))
        named.update(range(low, high + 1))
    if uid:
        assert got == [u for u in uids if u in named]
    elif max(named) > len(uids):
        assert got is None  # BAD: a sequence number past the mailbox
    else:
        assert got == [uids[s - 1] for s in sorted(named)]


class _Sets:
    """One selected mailbox for the sequence-set property test (made once)."""

    def __init__(self, store: ObjectStore) -> None:
        for n in range(10):
            _deliver(store, _mail(n))
        self.client = Client(ImapStoreBackends(store)).login()
        self.client.say("SELECT INBOX")
        self.client.say("STORE 4,7 +FLAGS.SILENT (\\Deleted)")
        self.client.say("EXPUNGE")
        self.uids = _uids(self.client.say("FETCH 1:* (UID)"))
        assert self.uids == [1, 2, 3, 5, 6, 8, 9, 10]

    def fetch(self, text: str, uid: bool) -> list[int] | None:
        client = self.client
        client.n += 1
        tag = f"t{client.n}".encode()
        command = f"{'UID ' if uid else ''}FETCH {text} (UID)".encode()
        client.session.receive_data(tag + b" " + command + b"\r\n")
        out = client.session.data_to_send()
        if re.search(rb"(^|\r\n)" + tag + rb" BAD", out):
            return None
        assert re.search(rb"(^|\r\n)" + tag + rb" OK", out), out
        return _uids(out)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Sets]:
    store = ObjectStore(tmp_path_factory.mktemp("sets") / "data", kdf=FAST_KDF)
    store.add_user("alice", "secret", email="alice@example.com")
    yield _Sets(store)
    store.close()


def _envelope_of(client: Client, seq: int) -> bytes:
    out = client.say(f"FETCH {seq} (ENVELOPE)")
    match = re.search(rb"ENVELOPE (\(.*\))\)\r\n", out)
    assert match is not None, out
    return match.group(1)


def _body_of(client: Client, seq: int) -> bytes:
    out = client.say(f"FETCH {seq} BODY.PEEK[]")
    match = re.search(rb"BODY\[\] \{(\d+)\}\r\n", out)
    assert match is not None, out
    return out[match.end() : match.end() + int(match.group(1))]


def test_envelope_and_header_searches_read_headers_only(store: ObjectStore) -> None:
    long_header = "".join(f"X-Filler-{i}: {'y' * 70}\r\n" for i in range(2 * HEAD_READ // 80))
    mails = [
        _mail(1, "small inline"),
        _mail(2, "streamed", body=b"needle in the body\r\n" + b"z" * 20_000 + b"\r\n"),
        _mail(3, "long header", body=b"q" * 20_000 + b"\r\n", extra=long_header),
    ]
    for raw in mails:
        _deliver(store, raw)
    ms = store.logon_with_password("alice", "secret").open_store()
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    made = inbox.create_message()
    made.set_props([(pt.PR_SUBJECT_W, "made through MAPI"), (pt.PR_BODY_W, "hi")])
    made.save_changes()
    factory = ImapStoreBackends(store)
    client = Client(factory).login()
    client.say("SELECT INBOX")
    view = client.backend.view
    entries = view.entries(view.box("INBOX").folder_id)[1]
    assert [e.stream_length >= 0 for e in entries] == [False, True, True, False]
    for seq in range(1, 5):
        expected = Part.parse(_body_of(client, seq)).envelope()
        assert _envelope_of(client, seq) == expected  # computed from the header
        assert _envelope_of(client, seq) == expected  # from the cache
        assert Client(factory).login().say("EXAMINE INBOX")  # another connection...
    other = Client(factory).login()
    other.say("EXAMINE INBOX")
    assert _envelope_of(other, 3) == Part.parse(_body_of(other, 3)).envelope()  # ...shares it
    assert b"long header 3" in _envelope_of(other, 3)
    for key, found in [
        ("SUBJECT streamed", [2]),
        ("SUBJECT MAPI", [4]),
        ("HEADER X-Filler-3 yyy", [3]),
        ("BODY needle", [2]),
        ("TEXT needle", [2]),
        ("OR SUBJECT inline BODY needle", [1, 2]),
        ("NOT SUBJECT long", [1, 2, 4]),
    ]:
        out = client.say(f"UID SEARCH {key}")
        assert re.findall(rb"\* SEARCH([ \d]*)", out) == [b"".join(b" %d" % n for n in found)], key


def test_a_mapi_edit_shows_in_envelope_despite_the_cache(store: ObjectStore) -> None:
    _deliver(store, _mail(1, "as it arrived", body=b"x" * 8000 + b"\r\n"))
    factory = ImapStoreBackends(store)
    client = Client(factory).login()
    client.say("SELECT INBOX")
    assert b"as it arrived 1" in _envelope_of(client, 1)
    assert _untagged(client.say("UID SEARCH SUBJECT arrived")) == [b"* SEARCH 1"]
    ms = store.logon_with_password("alice", "secret").open_store()
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    table = inbox.contents_table()
    table.set_columns([pt.PR_ENTRYID])
    [row] = table.query_rows(10)
    assert isinstance(row[0].value, bytes)
    message = ms.open_message(row[0].value, writable=True)
    message.set_props([(pt.PR_SUBJECT_W, "Edited in Outlook")])
    message.save_changes()
    client.say("NOOP")  # the new MODSEQ is reported and taken
    assert b"Edited in Outlook" in _envelope_of(client, 1)
    assert _untagged(client.say("UID SEARCH SUBJECT arrived")) == [b"* SEARCH"]
    fresh = Client(factory).login()
    fresh.say("EXAMINE INBOX")
    assert b"Edited in Outlook" in _envelope_of(fresh, 1)


def test_derived_cache_is_bounded() -> None:
    cache = DerivedCache(100)
    cache.put("a", b"1", 40)
    cache.put("b", b"2", 40)
    cache.put("too big", b"3", 101)
    assert cache.get("too big") is None
    cache.put("c", b"4", 40)  # over the bound: the oldest goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, b"2", b"4")
    assert cache.used == 80
    cache.put("b", b"5", 10)  # replacing counts the new size only
    assert cache.used == 50
    assert cache.get("b") == b"5"


def test_shared_maps_count_in_the_cache_bound() -> None:
    cache = DerivedCache(1000)
    headers = cache.shared_map("inbox")
    assert cache.shared_map("inbox") is headers
    headers.put((1, 1), b"a", 300)
    headers.put((2, 1), b"b", 300)
    assert headers.get((1, 1)) == b"a"
    assert cache.used == 600 + 64
    headers.reset()  # emptied, and counted as empty
    assert len(headers) == 0 and cache.used == 64
    headers.put((1, 1), b"a", 300)
    cache.put("envelope", b"e", 500)
    cache.put("other", b"o", 300)  # over the bound: the map was stored first, it goes
    assert len(headers) == 0 and cache.get("envelope") == b"e"
    headers.put((3, 1), b"c", 10)  # a dropped map keeps nothing
    assert len(headers) == 0
    fresh = cache.shared_map("inbox")
    assert fresh is not headers and len(fresh) == 0
    assert cache.used == 500 + 300 + 64
