"""Properties of the SMTP core (hypothesis): how the bytes are cut never changes the
replies, and arbitrary input only ever gets SMTP replies, within bounded memory."""

from __future__ import annotations

import base64
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_smtp_helpers import Driver

from internet_mail.smtp import Role, SmtpConfig

SCRIPT = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<a@far.example> SIZE=100\r\n"
    b"RCPT TO:<demo@localhost>\r\n"
    b"RCPT TO:<x@other.example>\r\n"
    b"RCPT TO:<alice@example.org>\r\n"
    b"DATA\r\n"
    b"Subject: one\r\n\r\n..a\r\nb\r\n.\r\n"
    b"MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\n"
    b"BDAT 10\r\n0123456789BDAT 4 LAST\r\n\r\n\r\n"
    b"NOOP\r\nVRFY x\r\nRSET\r\nFOO\r\n"
    b"MAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\nbad\nbare\r\n.\r\n"
    b"STARTTLS\r\nNOOP\r\n"
)
AFTER_TLS = b"EHLO c\r\nAUTH PLAIN " + base64.b64encode(b"\0demo\0secret") + b"\r\nQUIT\r\n"


def run(chunks: list[bytes]) -> tuple[bytes, list[object]]:
    driver = Driver.make(SmtpConfig(max_message_size=1000))
    driver.tls_on_starttls = False  # what follows STARTTLS is plaintext, however cut
    driver.feed(chunks)
    return bytes(driver.out), [(m.recipients, m.data) for m in driver.messages]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


WHOLE = run([SCRIPT])


def test_script_whole() -> None:
    out, messages = WHOLE
    assert len(messages) == 2
    assert out.count(b"\r\n") == 29
    assert out.endswith(b"220 2.0.0 Ready to start TLS\r\n")  # the NOOP after it was dropped


def test_script_byte_by_byte() -> None:
    assert run([SCRIPT[i : i + 1] for i in range(len(SCRIPT))]) == WHOLE


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
@settings(max_examples=200, deadline=None)
def test_script_at_random_cuts(points: list[int]) -> None:
    assert run(cut(SCRIPT, points)) == WHOLE


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
@settings(max_examples=50, deadline=None)
def test_tls_session_at_random_cuts(points: list[int]) -> None:
    def session(chunks: list[bytes]) -> bytes:
        driver = Driver.make(SmtpConfig(role=Role.SUBMISSION))
        driver.send(b"EHLO c\r\nSTARTTLS\r\n")
        driver.feed(chunks)
        return bytes(driver.out)

    assert session(cut(AFTER_TLS, points)) == session([AFTER_TLS])


WORDS = [
    b"EHLO x", b"HELO x", b"MAIL FROM:<a@b.c>", b"MAIL FROM:<>", b"RCPT TO:<demo@localhost>",
    b"RCPT TO:<x@y.example>", b"DATA", b".", b"..", b"BDAT 3", b"BDAT 0 LAST", b"BDAT 2 LAST",
    b"RSET", b"NOOP", b"STARTTLS", b"AUTH PLAIN", b"AUTH LOGIN", b"*", b"QUIT", b"VRFY a",
    b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b"\n.\n", b"\x00", b"\xff", b"A" * 600,
]  # fmt: skip


@given(st.lists(st.sampled_from(WORDS) | st.binary(max_size=40), max_size=60), st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_input_gets_only_replies(parts: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(p + data.draw(st.sampled_from([b"\r\n", b""])) for p in parts)
    config = SmtpConfig(max_message_size=2000, max_errors=1000)
    driver = Driver.make(config)
    driver.feed(cut(stream, data.draw(st.lists(st.integers(0, 10_000), max_size=8))))
    conn = driver.conn
    assert len(conn._input) <= config.max_pending_input + 10_000
    for line in bytes(driver.out).split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line
    for message in driver.messages:
        rest = message.data.replace(b"\r\n", b"")
        assert b"\r" not in rest and b"\n" not in rest  # no bare CR or LF is ever accepted
        assert len(message.data) <= config.max_message_size


def test_endless_data_keeps_memory_bounded() -> None:
    driver = Driver.make(SmtpConfig(max_message_size=10_000))
    driver.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n")
    for _ in range(1000):
        driver.send(b"x" * 1000)
    reader = driver.conn._data
    assert reader is not None and len(reader._buffer) < 20_000
