"""The SMTP client core and its reply reader (internet_mail/smtp/client.py, replies.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from internet_mail.smtp.client import (
    ClientOptions,
    ClientProtocolError,
    Finished,
    NeedData,
    SmtpClient,
    StartTls,
    Transaction,
    dot_stuff,
)
from internet_mail.smtp.replies import Reply, ReplyError, ReplyReader

TX = Transaction("a@local.test", ("x@remote.test", "y@remote.test"), b"Subject: t\r\n\r\n.dot\r\n")


def _run(client: SmtpClient, replies: list[bytes]) -> tuple[list[bytes], Finished]:
    """Feed each reply; return what the client sent before each, and the outcome."""
    sent = []
    for reply in replies:
        sent.append(client.data_to_send())
        client.receive_data(reply)
        event = client.next_event()
        if isinstance(event, Finished):
            sent.append(client.data_to_send())
            return sent, event
        assert isinstance(event, NeedData)
    raise AssertionError("no outcome")


def test_plain_dialogue_with_per_recipient_results() -> None:
    client = SmtpClient(ClientOptions(helo_name="me.test", tls="none"), TX)
    sent, out = _run(
        client,
        [
            b"220 hi\r\n",
            b"250-there\r\n250-SIZE 1000\r\n250 8BITMIME\r\n",
            b"250 ok\r\n",
            b"550 5.1.1 no such user\r\n",
            b"250 ok\r\n",
            b"354 go\r\n",
            b"250 2.0.0 queued\r\n",
        ],
    )
    assert sent[1] == b"EHLO me.test\r\n"
    assert sent[2] == b"MAIL FROM:<a@local.test> SIZE=20\r\n"
    assert sent[3] == b"RCPT TO:<x@remote.test>\r\n"
    assert sent[5] == b"DATA\r\n"
    assert sent[6] == b"Subject: t\r\n\r\n..dot\r\n.\r\n"
    assert sent[7] == b"QUIT\r\n"
    assert out.acknowledged
    assert out.results["x@remote.test"].enhanced == "5.1.1"
    assert out.results["y@remote.test"].code == 250


def test_pipelining_sends_the_envelope_in_one_write() -> None:
    client = SmtpClient(ClientOptions(helo_name="me.test", tls="none"), TX)
    client.receive_data(b"220 hi\r\n")
    client.data_to_send()
    client.receive_data(b"250-x\r\n250 PIPELINING\r\n")
    assert client.data_to_send() == (
        b"MAIL FROM:<a@local.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<y@remote.test>\r\n"
        b"DATA\r\n"
    )
    client.receive_data(b"250 a\r\n450 4.2.0 busy\r\n250 b\r\n354 go\r\n")
    assert client.data_to_send().endswith(b"\r\n.\r\n")
    client.receive_data(b"451 4.3.0 try later\r\n")
    out = client.next_event()
    assert isinstance(out, Finished) and not out.acknowledged
    assert {r.code for r in out.results.values()} == {450, 451}


def test_ehlo_refused_falls_back_to_helo_and_starttls_when_offered() -> None:
    client = SmtpClient(ClientOptions(helo_name="me.test"), TX)
    client.receive_data(b"220 hi\r\n")
    client.data_to_send()
    client.receive_data(b"502 no\r\n")
    assert client.data_to_send() == b"HELO me.test\r\n"
    client = SmtpClient(ClientOptions(helo_name="me.test"), TX)
    client.receive_data(b"220 hi\r\n")
    client.data_to_send()
    client.receive_data(b"250-x\r\n250 STARTTLS\r\n")
    assert client.data_to_send() == b"STARTTLS\r\n"
    client.receive_data(b"220 go\r\n")
    assert isinstance(client.next_event(), StartTls)
    client.tls_started()
    assert client.data_to_send() == b"EHLO me.test\r\n"


def test_starttls_injection_is_refused() -> None:
    client = SmtpClient(ClientOptions(helo_name="me.test"), TX)
    client.receive_data(b"220 hi\r\n250-x\r\n250 STARTTLS\r\n")
    client.data_to_send()
    with pytest.raises(ClientProtocolError):
        client.receive_data(b"220 go\r\n250 injected\r\n")


def test_required_tls_and_auth_without_tls_fail_temporarily() -> None:
    for options in (
        ClientOptions(helo_name="h", tls="required"),
        ClientOptions(helo_name="h", tls="none", username="u", password="p"),
    ):
        client = SmtpClient(options, TX)
        client.receive_data(b"220 hi\r\n250 ok\r\n")
        out = client.next_event()
        assert isinstance(out, Finished) and out.session
        assert all(r.temporary for r in out.results.values())
        assert b"AUTH" not in client.data_to_send()


def test_size_and_8bit_checks_fail_permanently() -> None:
    big = Transaction("a@b.test", ("c@d.test",), b"x" * 2000)
    eight = Transaction("a@b.test", ("c@d.test",), "caf\u00e9".encode())
    for tx in (big, eight):
        client = SmtpClient(ClientOptions(helo_name="h", tls="none"), tx)
        client.receive_data(b"220 hi\r\n250-x\r\n250 SIZE 1000\r\n")
        out = client.next_event()
        assert isinstance(out, Finished) and all(r.permanent for r in out.results.values())


def test_greeting_refusal_is_temporary() -> None:
    client = SmtpClient(ClientOptions(helo_name="h"), TX)
    client.receive_data(b"554 5.7.1 go away\r\n")
    out = client.next_event()
    assert isinstance(out, Finished) and out.session
    assert all(r.temporary for r in out.results.values())


def test_dot_stuff_normalises_line_ends() -> None:
    assert dot_stuff(b"a\n.\r.b\r\n") == b"a\r\n..\r\n..b\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"


def test_reply_reader() -> None:
    reader = ReplyReader()
    reader.feed(b"250-a\r\n250-b\r\n25")
    assert reader.next_reply() is None
    reader.feed(b"0 c\r\n550 5.7.1 no\r\n")
    assert reader.next_reply() == Reply(250, ("a", "b", "c"))
    assert reader.next_reply() == Reply(550, ("5.7.1 no",), "5.7.1")
    for bad in (b"hello\r\n", b"250-a\r\n251 b\r\n", b"250x\r\n", b"1" * 5000):
        reader = ReplyReader()
        with pytest.raises(ReplyError):
            reader.feed(bad)
            reader.next_reply()
    reader = ReplyReader(max_lines=3)
    reader.feed(b"250-a\r\n" * 4)
    with pytest.raises(ReplyError):
        reader.next_reply()


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_reply_reader_takes_any_bytes(chunks: list[bytes]) -> None:
    reader = ReplyReader()
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while (reply := reader.next_reply()) is not None:
                assert 200 <= reply.code <= 599 and reply.lines
    except ReplyError:
        pass


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_client_takes_any_reply_bytes(chunks: list[bytes]) -> None:
    client = SmtpClient(ClientOptions(helo_name="h", tls="none"), TX)
    try:
        for chunk in chunks:
            client.receive_data(chunk or b"x")
            client.data_to_send()
            client.next_event()
    except ClientProtocolError:
        pass


def test_quit_waits_until_the_driver_takes_the_outcome() -> None:
    """The 250 after the data is recorded before the peer hears QUIT: nothing is queued
    until the driver has taken :class:`Finished` (was: QUIT went out with the next send,
    before the driver saw the outcome)."""
    client = SmtpClient(ClientOptions(helo_name="me.test", tls="none"), TX)
    for reply in (b"220 hi\r\n", b"250 there\r\n", b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n"):
        client.receive_data(reply)
        assert isinstance(client.next_event(), NeedData)
        client.data_to_send()
    client.receive_data(b"354 go\r\n")
    assert client.data_to_send().endswith(b"\r\n.\r\n")
    client.receive_data(b"250 2.0.0 queued\r\n")
    assert client.data_to_send() == b""
    outcome = client.next_event()
    assert isinstance(outcome, Finished) and outcome.acknowledged
    assert client.data_to_send() == b"QUIT\r\n"
