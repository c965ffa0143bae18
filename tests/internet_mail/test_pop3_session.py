"""The POP3 core (``internet_mail.pop3``) byte for byte: every command, RFC 1939's example
session, the maildrop lock and the deletions at QUIT, STLS, limits and hostile input.

Each conversation is fed whole, byte by byte and at random cuts (h11's ``tr()``); the
responses must be the same bytes. Authentication events are answered by ``Driver`` with
a password table, as the trio driver will with the directory.
"""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from internet_mail.pop3 import (
    Authenticated,
    AuthenticationRequested,
    CloseRequested,
    Event,
    Pop3Limits,
    Pop3Session,
    StartTLSRequested,
    State,
)
from internet_mail.pop3 import responses as r
from internet_mail.pop3.testing import MemoryBackend, MemoryStore

PASSWORDS = {"mrose": "tanstaaf", "alice": "secret"}
#: RFC 1939 section 10's maildrop: two messages of 120 and 200 octets, section 7's ids.
MSG1 = b"Subject: one\r\n\r\n" + b"x" * 102 + b"\r\n"
MSG2 = b"Subject: two\r\n\r\n" + b"y" * 182 + b"\r\n"
UID1, UID2 = "whqtswO00WBw418f9t5JxYwZ", "QhdPYR:00WBw1Ph7x7"
GREETING = b"+OK POP3 server ready\r\n"
LOGIN = b"USER mrose\r\nPASS tanstaaf\r\n"
LOGGED_IN = b"+OK send PASS\r\n+OK maildrop has 2 messages (320 octets)\r\n"


def make_store() -> MemoryStore:
    assert (len(MSG1), len(MSG2)) == (120, 200)
    store = MemoryStore()
    store.maildrops["mrose"] = {UID1: MSG1, UID2: MSG2}
    return store


class Driver:
    """Feeds a session the way the trio driver will: answers authentication from
    ``PASSWORDS``, fakes the TLS handshake, drains output, resumes after backlogs."""

    def __init__(self, store: MemoryStore, *, tls: bool = True, **kwargs: object) -> None:
        self.session = Pop3Session(MemoryBackend(store), tls=tls, **kwargs)  # type: ignore[arg-type]
        self.out = bytearray(self.session.data_to_send())
        self.events: list[Event] = []
        self.closed = False

    def _handle(self, events: list[Event]) -> None:
        while events:
            event = events.pop(0)
            self.events.append(event)
            if isinstance(event, AuthenticationRequested):
                ok = PASSWORDS.get(event.user) == event.password
                events += self.session.authentication_result(ok)
            elif isinstance(event, StartTLSRequested):
                self.out += self.session.data_to_send()
                self.session.tls_established()
            elif isinstance(event, CloseRequested):
                self.closed = True
            self.out += self.session.data_to_send()

    def feed(self, data: bytes) -> bytes:
        if not self.closed:
            self._handle(self.session.receive_data(data))
            self.out += self.session.data_to_send()
            while not self.session.wants_read and not self.session.closed:
                self._handle(self.session.resume())
                self.out += self.session.data_to_send()
        out = bytes(self.out)
        self.out.clear()
        return out


def three_ways(data: bytes, **kwargs: object) -> bytes:
    """The responses to ``data`` fed whole, byte by byte and at random cuts: all equal."""
    outs = []
    for cuts in ("whole", "bytes", "random"):
        driver = Driver(make_store(), **kwargs)
        out = bytes(driver.out)
        driver.out.clear()
        if cuts == "whole":
            out += driver.feed(data)
        elif cuts == "bytes":
            out += b"".join(driver.feed(data[i : i + 1]) for i in range(len(data)))
        else:
            rng = random.Random(len(data))
            at = 0
            while at < len(data):
                step = rng.randrange(1, 9)
                out += driver.feed(data[at : at + step])
                at += step
        outs.append(out)
    assert outs[0] == outs[1] == outs[2]
    return outs[0]


def converse(data: bytes, **kwargs: object) -> bytes:
    out = three_ways(data, **kwargs)
    assert out.startswith(GREETING)
    return out[len(GREETING) :]


# -- RFC 1939's example session (section 10, APOP replaced by USER/PASS) -------------------


def test_rfc1939_example_session() -> None:
    store = make_store()
    driver = Driver(store)
    out = driver.feed(LOGIN + b"STAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\nRETR 2\r\nDELE 2\r\nQUIT\r\n")
    assert out == (
        GREETING + LOGGED_IN + b"+OK 2 320\r\n"
        b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"
        b"+OK 120 octets\r\n" + MSG1 + b".\r\n"
        b"+OK message 1 marked for removal\r\n"
        b"+OK 200 octets\r\n" + MSG2 + b".\r\n"
        b"+OK message 2 marked for removal\r\n"
        b"+OK POP3 server signing off (0 messages left)\r\n"
    )
    assert driver.closed and store.maildrops["mrose"] == {}
    assert store.locked == set()
    assert [type(e) for e in driver.events] == [
        AuthenticationRequested,
        Authenticated,
        CloseRequested,
    ]


def test_rfc1939_command_examples() -> None:
    """The examples of RFC 1939 sections 5 and 7, reply text aside."""
    out = converse(
        LOGIN + b"LIST 2\r\nLIST 3\r\nUIDL\r\nUIDL 2\r\nDELE 1\r\nDELE 1\r\nLIST 1\r\n"
        b"STAT\r\nNOOP\r\nRSET\r\nSTAT\r\nTOP 1 0\r\nTOP 2 1\r\nQUIT\r\n"
    )
    assert out == (
        LOGGED_IN + b"+OK 2 200\r\n"
        b"-ERR no such message\r\n"
        b"+OK 2 messages (320 octets)\r\n1 " + UID1.encode() + b"\r\n2 " + UID2.encode()
        + b"\r\n.\r\n"
        b"+OK 2 " + UID2.encode() + b"\r\n"
        b"+OK message 1 marked for removal\r\n"
        b"-ERR message 1 already deleted\r\n"
        b"-ERR message 1 already deleted\r\n"
        b"+OK 1 200\r\n"
        b"+OK\r\n"
        b"+OK maildrop has 2 messages (320 octets)\r\n"
        b"+OK 2 320\r\n"
        b"+OK top of message follows\r\nSubject: one\r\n\r\n.\r\n"
        b"+OK top of message follows\r\nSubject: two\r\n\r\n" + b"y" * 182 + b"\r\n.\r\n"
        b"+OK POP3 server signing off (2 messages left)\r\n"
    )  # fmt: skip


# -- every command, byte vectors ----------------------------------------------------------


def test_capa_before_tls_offers_stls_not_credentials() -> None:
    out = converse(b"CAPA\r\n", tls=False)
    assert out == (
        b"+OK Capability list follows\r\n"
        b"TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n.\r\n"
    )


def test_capa_after_tls_and_in_transaction() -> None:
    caps = b"TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    out = converse(b"CAPA\r\n" + LOGIN + b"capa\r\n")
    assert out == (
        b"+OK Capability list follows\r\n" + caps + b"USER\r\nSASL PLAIN\r\n.\r\n"
        + LOGGED_IN + b"+OK Capability list follows\r\n" + caps + b".\r\n"
    )  # fmt: skip


def test_credentials_refused_before_tls() -> None:
    out = converse(
        b"USER mrose\r\nPASS tanstaaf\r\nAUTH PLAIN AG1yb3NlAHRhbnN0YWFm\r\nAUTH\r\nSTAT\r\n",
        tls=False,
    )
    assert out == (
        b"-ERR [AUTH] USER needs TLS: use STLS first\r\n"
        b"-ERR [AUTH] PASS needs TLS: use STLS first\r\n"
        b"-ERR [AUTH] AUTH needs TLS: use STLS first\r\n"
        b"-ERR [AUTH] AUTH needs TLS: use STLS first\r\n"
        b"-ERR command not valid in this state\r\n"
    )


def test_stls_then_login() -> None:
    out = converse(b"STLS\r\n", tls=False)
    assert out == b"+OK Begin TLS negotiation\r\n"
    driver = Driver(make_store(), tls=False)
    out = driver.feed(b"STLS\r\n")
    assert out == GREETING + b"+OK Begin TLS negotiation\r\n"
    assert driver.session.tls
    assert (
        driver.feed(LOGIN + b"STLS\r\n") == LOGGED_IN + b"-ERR command not valid in this state\r\n"
    )


def test_stls_injection_discarded() -> None:
    """Commands pipelined behind STLS in clear are dropped, not run after the handshake
    ([RFC 2595] 3); so are bytes fed before ``tls_established``."""
    session = Pop3Session(MemoryBackend(make_store()), tls=False)
    session.data_to_send()
    events = session.receive_data(b"STLS\r\nUSER mrose\r\nPASS tanstaaf\r\n")
    assert events == [StartTLSRequested()]
    assert session.data_to_send() == b"+OK Begin TLS negotiation\r\n"
    assert session.receive_data(b"STAT\r\n") == []
    assert not session.wants_read
    session.tls_established()
    assert session.buffered == 0 and session.data_to_send() == b""
    assert session.receive_data(b"STAT\r\n") == []
    assert session.data_to_send() == b"-ERR command not valid in this state\r\n"
    assert session.state is State.AUTHORIZATION
    assert session.receive_data(b"STLS\r\n") == []
    assert session.data_to_send() == b"-ERR TLS already active\r\n"


def test_stls_not_offered_without_tls_support() -> None:
    out = converse(b"STLS\r\nCAPA\r\n", tls=False, starttls=False)
    assert out.startswith(b"-ERR STLS not available\r\n")
    assert b"STLS\r\n" not in out[25:]


def test_auth_plain_initial_response_and_challenge() -> None:
    good = base64.b64encode(b"\x00mrose\x00tanstaaf")
    same_authz = base64.b64encode(b"mrose\x00mrose\x00tanstaaf")
    out = converse(b"AUTH PLAIN " + good + b"\r\nQUIT\r\n")
    assert (
        out == b"+OK maildrop has 2 messages (320 octets)\r\n"
        b"+OK POP3 server signing off (2 messages left)\r\n"
    )
    out = converse(b"AUTH plain\r\n" + same_authz + b"\r\nSTAT\r\n")
    assert out == b"+ \r\n+OK maildrop has 2 messages (320 octets)\r\n+OK 2 320\r\n"


def test_auth_refusals() -> None:
    other = base64.b64encode(b"alice\x00mrose\x00tanstaaf")
    wrong = base64.b64encode(b"\x00mrose\x00nope")
    out = converse(
        b"AUTH\r\nAUTH CRAM-MD5\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n!!!\r\nAUTH PLAIN =\r\n"
        b"AUTH PLAIN " + other + b"\r\nAUTH PLAIN " + wrong + b"\r\nAUTH PLAIN a b\r\n"
    )
    assert out == (
        b"+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n"
        b"-ERR unsupported mechanism\r\n"
        b"+ \r\n-ERR authentication cancelled\r\n"
        b"+ \r\n-ERR [AUTH] malformed PLAIN response\r\n"
        b"-ERR [AUTH] malformed PLAIN response\r\n"
        b"-ERR [AUTH] invalid credentials\r\n"
        b"-ERR [AUTH] invalid credentials\r\n"
        b"-ERR AUTH takes a mechanism and an initial response\r\n"
    )


def test_user_pass_refusals() -> None:
    out = converse(
        b"PASS tanstaaf\r\nUSER\r\nUSER mrose\r\nPASS wrong\r\nPASS tanstaaf\r\n"
        b"USER nobody\r\nPASS x y\r\nUSER \xff\r\n"
    )
    assert out == (
        b"-ERR send USER first\r\n"
        b"-ERR USER needs a name\r\n"
        b"+OK send PASS\r\n-ERR [AUTH] invalid credentials\r\n"
        b"-ERR send USER first\r\n"
        b"+OK send PASS\r\n-ERR [AUTH] invalid credentials\r\n"
        b"-ERR [AUTH] user name is not UTF-8\r\n"
    )


def test_password_with_spaces_is_the_rest_of_the_line() -> None:
    PASSWORDS["spacey"] = "two words "
    try:
        out = converse(b"USER spacey\r\nPASS two words \r\n")
    finally:
        del PASSWORDS["spacey"]
    assert out == b"+OK send PASS\r\n+OK maildrop has 0 messages (0 octets)\r\n"


def test_transaction_argument_errors() -> None:
    out = converse(
        LOGIN + b"LIST x\r\nLIST 0\r\nLIST 1 2\r\nRETR\r\nRETR 99999999999\r\nTOP 1\r\n"
        b"TOP 1 -1\r\nDELE 3\r\nSTAT 1\r\nNOOP x\r\nRSET x\r\nUSER mrose\r\nFOO\r\n\r\n"
    )
    assert out == LOGGED_IN + (
        b"-ERR invalid message number\r\n"
        b"-ERR no such message\r\n"
        b"-ERR wrong number of arguments\r\n"
        b"-ERR wrong number of arguments\r\n"
        b"-ERR invalid message number\r\n"
        b"-ERR wrong number of arguments\r\n"
        b"-ERR invalid line count\r\n"
        b"-ERR no such message\r\n"
        + b"-ERR wrong number of arguments\r\n" * 3
        + b"-ERR command not valid in this state\r\n"
        + b"-ERR unknown command\r\n" * 2
    )


def test_quit_in_authorization_and_bare_lf_commands() -> None:
    out = converse(b"NOOP\nquit\n")
    assert out == b"-ERR command not valid in this state\r\n+OK POP3 server signing off\r\n"


# -- the maildrop: lock, snapshot, deletions at QUIT only ---------------------------------


def test_deletions_applied_only_at_quit() -> None:
    store = make_store()
    driver = Driver(store)
    driver.feed(LOGIN + b"DELE 1\r\n")
    assert set(store.maildrops["mrose"]) == {UID1, UID2}
    driver.feed(b"QUIT\r\n")
    assert set(store.maildrops["mrose"]) == {UID2}
    assert store.locked == set()


def test_dropped_connection_applies_no_deletion() -> None:
    store = make_store()
    driver = Driver(store)
    driver.feed(LOGIN + b"DELE 1\r\nDELE 2\r\n")
    assert driver.session.receive_data(b"") == [CloseRequested()]
    assert set(store.maildrops["mrose"]) == {UID1, UID2}
    assert store.locked == set()
    assert driver.session.receive_data(b"QUIT\r\n") == []
    assert set(store.maildrops["mrose"]) == {UID1, UID2}


def test_rset_unmarks() -> None:
    store = make_store()
    Driver(store).feed(LOGIN + b"DELE 1\r\nDELE 2\r\nRSET\r\nQUIT\r\n")
    assert set(store.maildrops["mrose"]) == {UID1, UID2}


def test_second_session_of_same_user_in_use() -> None:
    store = make_store()
    first = Driver(store)
    assert first.feed(LOGIN).endswith(LOGGED_IN)
    second = Driver(store)
    out = second.feed(LOGIN + b"STAT\r\n")
    assert out == GREETING + (
        b"+OK send PASS\r\n-ERR [IN-USE] maildrop already locked\r\n"
        b"-ERR command not valid in this state\r\n"
    )
    first.feed(b"QUIT\r\n")
    assert second.feed(LOGIN).endswith(LOGGED_IN)


def test_snapshot_fixed_and_uids_stable_across_sessions() -> None:
    store = MemoryStore()
    a = store.add("alice", b"Subject: a\r\n\r\na\r\n")
    b = store.add("alice", b"Subject: b\r\n\r\nb\r\n")
    login = b"USER alice\r\nPASS secret\r\n"
    driver = Driver(store)
    driver.feed(login)
    c = store.add("alice", b"Subject: c\r\n\r\nc\r\n")  # arrives mid-session
    out = driver.feed(b"UIDL\r\nDELE 1\r\nQUIT\r\n")
    assert out.startswith(f"+OK 2 messages (34 octets)\r\n1 {a}\r\n2 {b}\r\n.\r\n".encode())
    out = Driver(store).feed(login + b"UIDL\r\n")
    assert out.endswith(f"1 {b}\r\n2 {c}\r\n.\r\n".encode())


def test_message_gone_from_store() -> None:
    store = make_store()
    driver = Driver(store)
    driver.feed(LOGIN)
    del store.maildrops["mrose"][UID1]
    assert driver.feed(b"RETR 1\r\nTOP 1 0\r\n") == (
        b"-ERR [SYS/TEMP] message no longer available\r\n" * 2
    )


def test_authentication_result_temporary_and_alias() -> None:
    store = make_store()
    session = Pop3Session(MemoryBackend(store), tls=True)
    session.data_to_send()
    events = session.receive_data(b"USER postmaster\r\nPASS x\r\nSTAT\r\n")
    assert events == [AuthenticationRequested(user="postmaster", password="x", mechanism="USER")]
    assert not session.wants_read
    session.authentication_result(False, temporary=True)
    assert session.errors == 1  # STAT, not the temporary failure
    session.receive_data(b"USER postmaster\r\nPASS x\r\n")
    events = session.authentication_result(True, user="mrose")
    assert events == [Authenticated(user="mrose", messages=2)]
    assert session.data_to_send() == (
        b"+OK send PASS\r\n-ERR [SYS/TEMP] authentication unavailable, try later\r\n"
        b"-ERR command not valid in this state\r\n"
        b"+OK send PASS\r\n+OK maildrop has 2 messages (320 octets)\r\n"
    )
    with pytest.raises(RuntimeError):
        session.authentication_result(True)
    with pytest.raises(RuntimeError):
        session.tls_established()


# -- byte-stuffing, line endings, TOP -----------------------------------------------------


def test_byte_stuffing_and_bare_lf() -> None:
    store = MemoryStore()
    store.add("alice", b"Subject: dots\n\n.\n..x\n.\r\nend")
    out = Driver(store).feed(b"USER alice\r\nPASS secret\r\nLIST\r\nRETR 1\r\nTOP 1 1\r\n")
    body = b"Subject: dots\r\n\r\n..\r\n...x\r\n..\r\nend\r\n.\r\n"
    assert out.endswith(
        b"1 33\r\n.\r\n+OK 33 octets\r\n" + body
        + b"+OK top of message follows\r\nSubject: dots\r\n\r\n..\r\n.\r\n"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("message", "count", "expected"),
    [
        (b"A: 1\r\n\r\nl1\r\nl2\r\n", 0, b"A: 1\r\n\r\n"),
        (b"A: 1\r\n\r\nl1\r\nl2\r\n", 1, b"A: 1\r\n\r\nl1\r\n"),
        (b"A: 1\r\n\r\nl1\r\nl2\r\n", 9, b"A: 1\r\n\r\nl1\r\nl2\r\n"),
        (b"A: 1\r\nB: 2\r\n", 3, b"A: 1\r\nB: 2\r\n"),
        (b"\r\nbody\r\n", 0, b"\r\n"),
        (b"\r\nbody\r\n", 5, b"\r\nbody\r\n"),
    ],
)
def test_top(message: bytes, count: int, expected: bytes) -> None:
    assert r.top(message, count) == expected


def test_normalize_and_stuff() -> None:
    assert r.normalize(b"") == b""
    assert r.normalize(b"a\nb\r\nc") == b"a\r\nb\r\nc\r\n"
    assert r.stuff(b"") == b".\r\n"
    assert r.stuff(b".a\r\n.\r\nb.\r\n") == b"..a\r\n..\r\nb.\r\n.\r\n"
    assert r.err("bad\r\nline", "SYS/TEMP") == b"-ERR [SYS/TEMP] bad  line\r\n"


def unstuff(data: bytes) -> bytes:
    """A client's reading of a multi-line body (up to the terminator)."""
    lines = []
    for line in data.split(b"\r\n"):
        if line == b".":
            break
        lines.append(line[1:] if line.startswith(b".") else line)
    return b"".join(line + b"\r\n" for line in lines)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b".", b"..", b".x", b"a", b"", b"\r", b" ."]), max_size=12))
def test_stuffing_round_trip(lines: list[bytes]) -> None:
    message = r.normalize(b"\r\n".join(lines))
    assert unstuff(r.stuff(message)) == message


# -- limits -------------------------------------------------------------------------------


def test_long_lines() -> None:
    limits = Pop3Limits(max_line=255, max_hard_line=1024, max_input_buffer=4096)
    long = b"NOOP " + b"x" * 250 + b"\r\n"  # 257 octets
    out = converse(LOGIN + b"NOOP" + b" " * 0 + b"\r\n" + long + b"NOOP\r\n", limits=limits)
    assert out == LOGGED_IN + b"+OK\r\n-ERR line too long\r\n+OK\r\n"
    driver = Driver(make_store(), limits=limits)
    out = driver.feed(b"A" * 1025)
    assert out == GREETING + b"-ERR line too long\r\n"
    assert driver.closed and driver.session.buffered == 0
    driver = Driver(make_store(), limits=limits)
    assert driver.feed(b"A" * 2000 + b"\r\n").endswith(b"-ERR line too long\r\n")
    assert driver.closed


def test_too_many_errors_close_and_unlock() -> None:
    store = make_store()
    limits = Pop3Limits(max_errors=3)
    driver = Driver(store, limits=limits)
    out = driver.feed(LOGIN + b"BAD\r\nBAD\r\nBAD\r\nNOOP\r\n")
    assert out == GREETING + LOGGED_IN + b"-ERR unknown command\r\n" * 3
    assert driver.closed and store.locked == set()


def test_output_backpressure_pauses_pipelined_commands() -> None:
    store = MemoryStore()
    store.add("alice", b"Subject: big\r\n\r\n" + b"z" * 5000 + b"\r\n")
    limits = Pop3Limits(max_pending_output=1000)
    session = Pop3Session(MemoryBackend(store), limits, tls=True)
    session.receive_data(b"USER alice\r\nPASS secret\r\n")
    session.authentication_result(True)
    session.data_to_send()
    session.receive_data(b"RETR 1\r\n" * 50 + b"QUIT\r\n")
    assert not session.wants_read
    first = session.data_to_send()
    assert first.count(b"+OK 5018 octets") == 1
    total = first
    while not session.closed:
        assert session.buffered <= 50 * 8 + 6
        session.resume()
        chunk = session.data_to_send()
        assert len(chunk) < 2 * 5100
        total += chunk
    assert total.count(b"+OK 5018 octets") == 50
    assert total.endswith(b"+OK POP3 server signing off (1 messages left)\r\n")


def test_input_buffer_bounded_while_waiting_for_auth() -> None:
    limits = Pop3Limits(max_line=255, max_hard_line=1024, max_input_buffer=2048)
    store = make_store()
    session = Pop3Session(MemoryBackend(store), limits, tls=True)
    session.receive_data(LOGIN)
    assert session.receive_data(b"NOOP\r\n" * 400) == [CloseRequested()]
    assert session.closed and session.buffered == 0
    assert session.authentication_result(True) == []
    assert store.locked == set()


def test_limits_validate() -> None:
    for bad in ({"max_line": 100}, {"max_errors": 0}, {"max_hard_line": 300},
                {"max_input_buffer": 100}, {"max_line": True}):  # fmt: skip
        with pytest.raises(ValueError):
            Pop3Limits(**bad)  # type: ignore[arg-type]


# -- pipelining and hostile input ---------------------------------------------------------

SCRIPT = [
    b"CAPA\r\n", b"USER mrose\r\n", b"PASS tanstaaf\r\n", b"PASS nope\r\n", b"STAT\r\n",
    b"LIST\r\n", b"LIST 2\r\n", b"UIDL\r\n", b"UIDL 1\r\n", b"RETR 1\r\n", b"TOP 2 3\r\n",
    b"DELE 1\r\n", b"DELE 2\r\n", b"RSET\r\n", b"NOOP\r\n", b"AUTH PLAIN\r\n",
    b"AGFsaWNlAHNlY3JldA==\r\n", b"XYZZY\r\n", b"QUIT\r\n",
]  # fmt: skip
# (No STLS: what follows it depends, by design, on whether it arrived before the
# handshake; test_stls_injection_discarded covers it.)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(SCRIPT), max_size=25), st.booleans(), st.randoms())
def test_pipelined_same_responses_however_cut(
    commands: list[bytes], tls: bool, rnd: random.Random
) -> None:
    data = b"".join(commands)
    whole = Driver(make_store(), tls=tls).feed(data)
    cut = Driver(make_store(), tls=tls)
    out = bytes(cut.out)
    cut.out.clear()
    at = 0
    while at < len(data):
        step = rnd.randrange(1, 40)
        out += cut.feed(data[at : at + step])
        at += step
    assert out == whole
    assert three_ways(data, tls=tls) == whole


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.booleans())
def test_arbitrary_bytes_only_give_responses(chunks: list[bytes], tls: bool) -> None:
    limits = Pop3Limits(max_line=255, max_hard_line=512, max_input_buffer=4096)
    store = make_store()
    driver = Driver(store, tls=tls, limits=limits)
    for chunk in chunks:
        out = driver.feed(chunk)
        assert driver.session.buffered <= limits.max_input_buffer
        for line in out.split(b"\r\n"):
            assert b"\n" not in line and b"\r" not in line
        if driver.closed:
            break
    driver.session.receive_data(b"")
    assert store.locked == set()
    assert set(store.maildrops["mrose"]) <= {UID1, UID2}
