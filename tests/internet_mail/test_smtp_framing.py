"""DATA framing that cannot be smuggled, and the limits (RFC 5321 4.5.2, 4.5.3).

The smuggling patterns are those published for SMTP smuggling (SEC Consult, 2023):
a message whose body holds a non-standard end of data (``<LF>.<LF>`` and friends)
followed by a second ``MAIL FROM``... ``DATA`` inside. A server that ends data on the
non-standard form sees two messages; we must see one refused transaction.
"""

from __future__ import annotations

import pytest
from test_smtp_helpers import Driver, codes

from internet_mail.smtp import SmtpConfig

HIDDEN = (
    b"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n"
    b"From: ceo@example.org\r\nSubject: smuggled\r\n\r\nwire the money\r\n"
)

#: The fake ends of data a vulnerable server (or one downstream) might honour.
FAKE_ENDS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\r\n.\r\r\n",
    b"\n.\r",
    b"\r\x00.\r\n",
]


def transaction() -> Driver:
    driver = Driver.make()
    driver.send(b"EHLO c\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n")
    return driver


@pytest.mark.parametrize("fake_end", FAKE_ENDS)
def test_smuggling_variants_never_give_two_messages(fake_end: bytes) -> None:
    driver = transaction()
    attack = b"Subject: first\r\n\r\nbody" + fake_end + HIDDEN + b".\r\n"
    replies = driver.send(attack + b"NOOP\r\n")
    assert driver.messages == []
    refusal = codes(replies)[0]
    assert refusal in ("550 5.6.11", "550 5.6.0", "500 5.5.2"), replies
    # The whole attack was one refused transaction: no second transaction is open.
    assert codes(replies)[1:] == ["250 2.0.0"]
    assert codes(driver.send(b"RCPT TO:<demo@localhost>\r\n")) == ["503 5.5.1"]


@pytest.mark.parametrize("fake_end", FAKE_ENDS)
def test_smuggling_variants_byte_by_byte(fake_end: bytes) -> None:
    driver = transaction()
    attack = b"Subject: first\r\n\r\nbody" + fake_end + HIDDEN + b".\r\n"
    driver.feed([attack[i : i + 1] for i in range(len(attack))])
    assert driver.messages == []


@pytest.mark.parametrize("bare", [b"\n", b"\r"])
def test_bare_cr_or_lf_anywhere_in_data_is_refused(bare: bytes) -> None:
    for body in (b"a" + bare + b"b\r\n", b"Subject: x" + bare + b"\r\n\r\nb\r\n", bare + b"\r\n"):
        driver = transaction()
        assert codes(driver.send(body + b".\r\n")) == ["550 5.6.11"]
        assert driver.messages == []


def test_bare_lf_in_bdat_is_refused_too() -> None:
    driver = Driver.make()
    replies = driver.send(
        b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nBDAT 7 LAST\r\na\n.\nb\r\n"
    )
    assert codes(replies)[-1] == "550 5.6.11"
    assert driver.messages == []
    driver = Driver.make()
    replies = driver.send(
        b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nBDAT 1 LAST\r\na"
    )
    assert codes(replies)[-1] == "550 5.6.11"  # must end with CRLF


def test_only_crlf_dot_crlf_ends_data_and_dots_are_unstuffed() -> None:
    driver = transaction()
    body = b"..\r\n...x\r\n.a\r\nx.\r\n\r\n"
    driver.send(body + b".\r\n")
    assert driver.messages[0].data == b".\r\n..x\r\na\r\nx.\r\n\r\n"


def test_terminator_split_across_reads() -> None:
    driver = transaction()
    for part in (b"line\r", b"\n", b".", b"\r", b"\nNO", b"OP\r\n"):
        driver.send(part)
    assert driver.messages[0].data == b"line\r\n"
    assert codes(bytes(driver.out))[-2:] == ["250 2.0.0", "250 2.0.0"]


# -- limits -------------------------------------------------------------------------------


def test_data_line_limit() -> None:
    driver = transaction()
    assert codes(driver.send(b"a" * 998 + b"\r\n.\r\n")) == ["250 2.0.0"]
    driver = transaction()
    assert codes(driver.send(b"a" * 999 + b"\r\n.\r\n")) == ["550 5.6.0"]


def test_command_line_limit() -> None:
    driver = Driver.make(SmtpConfig(max_command_line=512))
    assert driver.send(b"NOOP " + b"x" * 505 + b"\r\n") == b"250 2.0.0 OK\r\n"
    assert driver.send(b"NOOP " + b"x" * 506 + b"\r\n") == (
        b"500 5.5.2 Line too long (limit 512 octets)\r\n"
    )
    # An endless line is dropped as it comes; memory stays bounded.
    for _ in range(100):
        driver.send(b"y" * 1000)
    assert len(driver.conn._input) <= 1000
    assert (
        driver.send(b"\r\nNOOP\r\n")
        == b"500 5.5.2 Line too long (limit 512 octets)\r\n250 2.0.0 OK\r\n"
    )


def test_message_size_limit() -> None:
    driver = Driver.make(SmtpConfig(max_message_size=1000))
    assert b"250-SIZE 1000\r\n" in driver.send(b"EHLO c\r\n")
    assert codes(driver.send(b"MAIL FROM:<a@b.c> SIZE=1001\r\n")) == ["552 5.3.4"]
    driver.send(b"MAIL FROM:<a@b.c> SIZE=1000\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n")
    for _ in range(200):  # 200 kB: kept memory stays bounded, the end is still found
        driver.send((b"x" * 98 + b"\r\n") * 10)
    assert codes(driver.send(b".\r\nNOOP\r\n")) == ["552 5.3.4", "250 2.0.0"]
    assert driver.messages == []


def test_exact_size_limit_is_accepted() -> None:
    driver = Driver.make(SmtpConfig(max_message_size=1000))
    driver.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n")
    message = (b"." + b"x" * 97 + b"\r\n") * 10  # stuffed dots do not count
    assert codes(driver.send(message + b".\r\n")) == ["250 2.0.0"]
    assert len(driver.messages[0].data) == 990


def test_recipient_limit() -> None:
    driver = Driver.make(SmtpConfig(max_recipients=3))
    replies = driver.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + b"RCPT TO:<demo@localhost>\r\n" * 5)
    assert codes(replies)[-5:] == ["250 2.1.5"] * 3 + ["452 4.5.3"] * 2
    assert not driver.conn.closed  # 4xx does not count as an error


def test_header_limits() -> None:
    driver = Driver.make(SmtpConfig(max_header_count=3))
    driver.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n")
    assert codes(driver.send(b"A: 1\r\n\tfolded\r\nB: 2\r\nC: 3\r\n\r\nbody\r\n.\r\n")) == [
        "250 2.0.0"
    ]
    driver.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n")
    assert codes(driver.send(b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n.\r\n")) == ["552 5.3.4"]
    driver = Driver.make(SmtpConfig(max_header_bytes=100))
    driver.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n")
    assert codes(driver.send((b"X: " + b"y" * 60 + b"\r\n") * 2 + b"\r\n.\r\n")) == ["552 5.3.4"]


def test_error_limit_closes_with_421() -> None:
    driver = Driver.make(SmtpConfig(max_errors=3))
    replies = driver.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    assert replies == (
        b"500 5.5.2 Command not recognized\r\n" * 3
        + b"421 4.7.0 Too many errors, closing connection\r\n"
    )
    assert driver.conn.closed


def test_pipelined_input_while_waiting_is_bounded() -> None:
    from internet_mail.smtp import SmtpServerConnection

    conn = SmtpServerConnection(SmtpConfig(max_pending_input=4096))
    conn.receive_data(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\n")
    assert conn.waiting
    conn.data_to_send()
    events = conn.receive_data(b"NOOP\r\n" * 1000)
    assert conn.closed and events[-1].reason == "too much pipelined input"  # type: ignore[attr-defined]
    assert conn.data_to_send() == b"421 4.7.0 Too much pipelined input, closing\r\n"


def test_eof_inside_data_acknowledges_nothing() -> None:
    driver = transaction()
    driver.send(b"Subject: x\r\n\r\nhalf a message")
    driver.send(b"")
    assert driver.messages == []
    assert driver.conn.closed
