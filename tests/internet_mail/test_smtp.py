"""The SMTP core, command by command, as exact byte vectors (RFC 5321, ESMTP)."""

from __future__ import annotations

import base64

import pytest
from test_smtp_helpers import Driver, codes

from internet_mail.smtp import (
    AuthenticationRequested,
    ConnectionTerminated,
    LocalProtocolError,
    MessageReceived,
    RecipientCheckRequested,
    RecipientVerdict,
    Role,
    SmtpConfig,
    SmtpServerConnection,
    StartTlsRequested,
    StoreFailure,
)

EHLO_PLAIN = (
    b"250-localhost greets c.example\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 33554432\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-CHUNKING\r\n"
    b"250-STARTTLS\r\n"
    b"250 HELP\r\n"
)
EHLO_TLS = EHLO_PLAIN.replace(b"250-STARTTLS\r\n", b"250-AUTH PLAIN LOGIN\r\n")


def session(config: SmtpConfig | None = None, *, tls: bool | None = None) -> Driver:
    driver = Driver.make(config, tls=tls)
    driver.send(b"EHLO c.example\r\n")
    return driver


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


def test_greeting_and_ehlo() -> None:
    driver = Driver.make()
    assert bytes(driver.out) == b"220 localhost ESMTP ready\r\n"
    assert driver.send(b"EHLO c.example\r\n") == EHLO_PLAIN
    assert driver.send(b"HELO c.example\r\n") == b"250 localhost greets c.example\r\n"
    assert driver.send(b"EHLO\r\n") == b"501 5.5.4 Syntax: EHLO hostname\r\n"
    assert driver.send(b"HELO\r\n") == b"501 5.5.4 Syntax: HELO hostname\r\n"


def test_ehlo_under_tls_offers_auth_not_starttls() -> None:
    driver = Driver.make(tls=True)
    assert driver.send(b"EHLO c.example\r\n") == EHLO_TLS


def test_one_whole_transaction() -> None:
    driver = session()
    replies = driver.send(
        b"MAIL FROM:<sender@far.example> SIZE=20 BODY=8BITMIME\r\n"
        b"RCPT TO:<demo@localhost>\r\n"
        b"RCPT TO:<alice@example.org>\r\n"
        b"DATA\r\n"
        b"Subject: x\r\n\r\n..dot\r\n.\r\n"
        b"QUIT\r\n"
    )
    assert replies == (
        b"250 2.1.0 Sender OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 Message accepted for delivery\r\n"
        b"221 2.0.0 localhost closing connection\r\n"
    )
    [message] = driver.messages
    assert message == MessageReceived(
        envelope_from="sender@far.example",
        recipients=("demo@localhost", "alice@example.org"),
        data=b"Subject: x\r\n\r\n.dot\r\n",
        authenticated_user=None,
        tls=False,
        helo="c.example",
        esmtp=True,
        body="8BITMIME",
        smtputf8=False,
        declared_size=20,
        chunked=False,
    )
    assert driver.conn.closed
    assert isinstance(driver.events[-1], ConnectionTerminated)


def test_empty_message_and_null_sender() -> None:
    driver = session()
    driver.send(b"MAIL FROM:<>\r\nRCPT TO:<demo@localhost>\r\nDATA\r\n.\r\n")
    assert driver.messages[0].data == b""
    assert driver.messages[0].envelope_from == ""


def test_no_250_before_the_driver_stored_it() -> None:
    conn = SmtpServerConnection()
    conn.data_to_send()
    conn.receive_data(b"HELO c\r\nMAIL FROM:<a@b.c>\r\n")
    [check] = conn.receive_data(b"RCPT TO:<demo@localhost>\r\n")
    assert isinstance(check, RecipientCheckRequested)
    assert check.address.domain == "localhost"
    conn.recipient_checked(RecipientVerdict.LOCAL)
    conn.data_to_send()
    [received] = conn.receive_data(b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
    assert isinstance(received, MessageReceived)
    assert conn.data_to_send() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    assert conn.waiting  # NOOP is held until the message is stored
    assert conn.message_stored(True) == []
    assert conn.data_to_send() == b"250 2.0.0 Message accepted for delivery\r\n250 2.0.0 OK\r\n"


@pytest.mark.parametrize(
    ("failure", "reply"),
    [
        (StoreFailure.TEMPORARY, b"451 4.3.0"),
        (StoreFailure.NO_SPACE, b"452 4.3.1"),
        (StoreFailure.MAILBOX_FULL, b"552 5.2.2"),
        (StoreFailure.TOO_BIG, b"552 5.3.4"),
    ],
)
def test_store_failures(failure: StoreFailure, reply: bytes) -> None:
    conn = SmtpServerConnection()
    conn.receive_data(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<postmaster>\r\n")
    conn.receive_data(b"DATA\r\nhi\r\n.\r\n")
    conn.data_to_send()
    conn.message_stored(False, failure=failure)
    assert conn.data_to_send().startswith(reply)
    conn.receive_data(b"RCPT TO:<postmaster>\r\n")  # the transaction is over
    assert conn.data_to_send() == b"503 5.5.1 Need MAIL command\r\n"


def test_answers_not_asked_for_are_driver_bugs() -> None:
    conn = SmtpServerConnection()
    with pytest.raises(LocalProtocolError):
        conn.message_stored(True)
    with pytest.raises(LocalProtocolError):
        conn.recipient_checked(RecipientVerdict.LOCAL)
    with pytest.raises(LocalProtocolError):
        conn.authentication_result("x")
    with pytest.raises(LocalProtocolError):
        conn.tls_started()


def test_answers_after_close_are_ignored() -> None:
    conn = SmtpServerConnection()
    conn.receive_data(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\n")
    assert conn.receive_data(b"")[0] == ConnectionTerminated(reason="client closed the connection")
    assert conn.recipient_checked(RecipientVerdict.LOCAL) == []
    assert conn.receive_data(b"NOOP\r\n") == []


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"NOOP\r\n", b"250 2.0.0 OK\r\n"),
        (b"NOOP whatever\r\n", b"250 2.0.0 OK\r\n"),
        (b"RSET\r\n", b"250 2.0.0 OK\r\n"),
        (b"RSET x\r\n", b"501 5.5.4 Syntax: RSET\r\n"),
        (
            b"VRFY demo\r\n",
            b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
        ),
        (b"VRFY\r\n", b"501 5.5.4 Syntax: VRFY address\r\n"),
        (b"EXPN list\r\n", b"502 5.5.1 EXPN not available\r\n"),
        (
            b"HELP\r\n",
            b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"
            b" STARTTLS AUTH\r\n",
        ),
        (b"FOO\r\n", b"500 5.5.2 Command not recognized\r\n"),
        (b"noop\r\n", b"250 2.0.0 OK\r\n"),
        (b"DATA\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"DATA x\r\n", b"501 5.5.4 Syntax: DATA\r\n"),
        (b"RCPT TO:<demo@localhost>\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"MAIL <a@b.c>\r\n", b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"),
        (b"MAIL FROM:a@b.c\r\n", b"501 5.5.4 Syntax: angle brackets required around the path\r\n"),
        (b"MAIL FROM:<a@b.c\r\n", b"501 5.5.4 Syntax: unterminated path\r\n"),
        (b"MAIL FROM:<a@>\r\n", b"501 5.1.7 Bad sender address syntax\r\n"),
        (
            b"MAIL FROM:<a@b.c> SIZE=99999999999\r\n",
            b"552 5.3.4 Message size exceeds fixed maximum\r\n",
        ),
        (b"MAIL FROM:<a@b.c> SIZE=x\r\n", b"501 5.5.4 Bad value for parameter SIZE\r\n"),
        (b"MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n", b"501 5.5.4 Bad value for parameter BODY\r\n"),
        (b"MAIL FROM:<a@b.c> RET=FULL\r\n", b"555 5.5.4 Unsupported parameter RET\r\n"),
        (b"MAIL FROM:<a@b.c> BODY=7BIT BODY=7BIT\r\n", b"501 5.5.4 Duplicate parameter BODY\r\n"),
        (b"MAIL FROM: <a@b.c>\r\n", b"250 2.1.0 Sender OK\r\n"),
        (b"MAIL FROM:<a@b.c> AUTH=<>\r\n", b"250 2.1.0 Sender OK\r\n"),
        (b"STARTTLS now\r\n", b"501 5.5.4 Syntax: STARTTLS\r\n"),
        (b"BDAT 0\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"NOOP\x00\r\n", b"500 5.5.2 Syntax error: NUL in command\r\n"),
        (b"NO\xffOP\r\n", b"500 5.5.2 Syntax error: invalid UTF-8 in command\r\n"),
        (b"NOOP\n", b"500 5.5.2 Syntax error: bare CR or LF in command\r\n"),
        (b"NO\rOP\r\n", b"500 5.5.2 Syntax error: bare CR or LF in command\r\n"),
    ],
)
def test_single_commands(command: bytes, reply: bytes) -> None:
    assert session().send(command) == reply


def test_mail_before_helo_and_nested_mail() -> None:
    driver = Driver.make()
    assert driver.send(b"MAIL FROM:<a@b.c>\r\n") == b"503 5.5.1 Send HELO or EHLO first\r\n"
    driver.send(b"HELO c\r\n")
    assert driver.send(b"MAIL FROM:<a@b.c> SIZE=1\r\n") == (
        b"555 5.5.4 MAIL parameters need EHLO\r\n"
    )
    driver.send(b"MAIL FROM:<a@b.c>\r\n")
    assert driver.send(b"MAIL FROM:<a@b.c>\r\n") == b"503 5.5.1 Nested MAIL command\r\n"
    assert driver.send(b"RSET\r\nMAIL FROM:<a@b.c>\r\n") == (
        b"250 2.0.0 OK\r\n250 2.1.0 Sender OK\r\n"
    )


def test_data_without_valid_recipients() -> None:
    driver = session()
    replies = driver.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<nobody@localhost>\r\nDATA\r\n")
    assert codes(replies) == ["250 2.1.0", "550 5.1.1", "554 5.5.1"]


def test_rcpt_parameters_and_temporary_verdict() -> None:
    driver = session()
    driver.send(b"MAIL FROM:<a@b.c>\r\n")
    assert driver.send(b"RCPT TO:<demo@localhost> NOTIFY=NEVER\r\n") == (
        b"555 5.5.4 Unsupported RCPT parameter\r\n"
    )
    conn = driver.conn
    [check] = conn.receive_data(b"RCPT TO:<demo@localhost>\r\n")
    assert isinstance(check, RecipientCheckRequested)
    conn.recipient_checked(RecipientVerdict.TEMPORARY)
    assert conn.data_to_send() == b"451 4.3.0 Temporary failure checking the recipient\r\n"


# -- BDAT (RFC 3030) ----------------------------------------------------------------------


def test_bdat_chunks_and_last() -> None:
    driver = session()
    replies = driver.send(
        b"MAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\n"
        b"BDAT 9\r\nSubject: BDAT 5 LAST\r\nx\r\n\r\nNOOP\r\n"
    )
    assert replies == (
        b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
        b"250 2.0.0 9 octets received\r\n"
        b"250 2.0.0 Message accepted for delivery\r\n"
        b"250 2.0.0 OK\r\n"
    )
    assert driver.messages[0].data == b"Subject: x\r\n\r\n"
    assert driver.messages[0].chunked


def test_bdat_zero_last_ends_the_message() -> None:
    driver = session()
    replies = driver.send(
        b"MAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nBDAT 5\r\nx\r\n\r\nBDAT 0 LAST\r\n"
    )
    assert codes(replies)[-2:] == ["250 2.0.0", "250 2.0.0"]
    assert driver.messages[0].data == b"x\r\n\r\n"


def test_bdat_errors_consume_the_chunk() -> None:
    driver = session()
    # No transaction: the 5 octets "NOOP\n" are read as data, not as a command.
    assert driver.send(b"BDAT 5\r\nNOOP\nRSET\r\n") == (
        b"503 5.5.1 Need MAIL command\r\n250 2.0.0 OK\r\n"
    )
    driver.send(b"MAIL FROM:<a@b.c>\r\n")
    assert driver.send(b"BDAT 2 LAST\r\nab") == b"554 5.5.1 No valid recipients\r\n"
    driver.send(b"RCPT TO:<demo@localhost>\r\n")
    assert driver.send(b"BDAT 4\r\nab\r\nDATA\r\nRCPT TO:<demo@localhost>\r\n") == (
        b"250 2.0.0 4 octets received\r\n503 5.5.1 DATA after BDAT\r\n503 5.5.1 RCPT after BDAT\r\n"
    )


def test_bdat_syntax_error_closes() -> None:
    driver = session()
    assert driver.send(b"BDAT x\r\n") == b"501 5.5.4 Syntax: BDAT size [LAST]\r\n"
    assert driver.conn.closed


def test_bdat_over_size() -> None:
    driver = session(SmtpConfig(max_message_size=10))
    replies = driver.send(
        b"MAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nBDAT 8\r\n12345678BDAT 8 LAST\r\n"
        b"12345678BDAT 1 LAST\r\nxNOOP\r\n"
    )
    assert codes(replies) == ["250 2.1.0", "250 2.1.5", "250 2.0.0", "552 5.3.4", "503 5.5.1",
                              "250 2.0.0"]  # fmt: skip
    assert driver.messages == []


# -- STARTTLS (RFC 3207) ------------------------------------------------------------------


def test_starttls_resets_the_session() -> None:
    conn = SmtpServerConnection()
    conn.receive_data(b"EHLO c\r\n")
    conn.data_to_send()
    events = conn.receive_data(b"STARTTLS\r\n")
    assert events == [StartTlsRequested()]
    assert conn.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.waiting
    conn.tls_started()
    assert conn.tls
    conn.receive_data(b"MAIL FROM:<a@b.c>\r\n")
    assert conn.data_to_send() == b"503 5.5.1 Send HELO or EHLO first\r\n"
    conn.receive_data(b"EHLO c\r\n")
    assert b"AUTH PLAIN LOGIN" in conn.data_to_send()
    conn.receive_data(b"STARTTLS\r\n")
    assert conn.data_to_send() == b"503 5.5.1 TLS already active\r\n"


def test_starttls_injection_is_discarded() -> None:
    """Commands pipelined after STARTTLS in the clear must never run (CVE-2011-0411)."""
    conn = SmtpServerConnection()
    conn.receive_data(b"EHLO c\r\n")
    conn.data_to_send()
    events = conn.receive_data(
        b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<demo@localhost>\r\n"
    )
    assert events == [StartTlsRequested()]
    assert conn.receive_data(b"RSET\r\n") == []  # still before the handshake: dropped
    assert conn.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.tls_started() == []
    assert conn.data_to_send() == b""
    conn.receive_data(b"EHLO c\r\nRCPT TO:<demo@localhost>\r\n")
    assert conn.data_to_send().endswith(b"503 5.5.1 Need MAIL command\r\n")


def test_starttls_refusals() -> None:
    driver = session(SmtpConfig(tls_available=False))
    assert b"STARTTLS" not in bytes(driver.out)
    assert driver.send(b"STARTTLS\r\n") == b"454 4.7.0 TLS not available\r\n"
    driver = session()
    driver.send(b"MAIL FROM:<a@b.c>\r\n")
    assert driver.send(b"STARTTLS\r\n") == b"503 5.5.1 STARTTLS inside a mail transaction\r\n"


# -- AUTH (RFC 4954, 4616) -----------------------------------------------------------------


def test_auth_not_offered_nor_accepted_before_tls() -> None:
    driver = session()
    assert b"AUTH" not in bytes(driver.out)
    assert driver.send(b"AUTH PLAIN " + plain("demo", "secret") + b"\r\n") == (
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    )
    assert driver.conn.user is None


def test_auth_plain_initial_response() -> None:
    driver = session(tls=True)
    assert driver.send(b"AUTH PLAIN " + plain("demo", "secret") + b"\r\n") == (
        b"235 2.7.0 Authentication successful\r\n"
    )
    assert driver.conn.user == "demo"
    assert driver.events[-1] == AuthenticationRequested(
        mechanism="PLAIN", username="demo", password="secret"
    )
    assert driver.send(b"AUTH PLAIN\r\n") == b"503 5.5.1 Already authenticated\r\n"


def test_auth_plain_challenge_and_failures() -> None:
    driver = session(tls=True)
    assert driver.send(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert driver.send(plain("demo", "wrong") + b"\r\n") == (
        b"535 5.7.8 Authentication credentials invalid\r\n"
    )
    assert driver.send(b"AUTH PLAIN\r\n*\r\n") == b"334 \r\n501 5.0.0 Authentication cancelled\r\n"
    assert driver.send(b"AUTH PLAIN !!!\r\n") == b"501 5.5.2 Invalid base64 data\r\n"
    other = base64.b64encode(b"admin\0demo\0secret")
    assert driver.send(b"AUTH PLAIN " + other + b"\r\n") == (
        b"535 5.7.8 Authentication credentials invalid\r\n"
    )
    assert (
        driver.send(b"AUTH CRAM-MD5\r\n") == b"504 5.5.4 Unrecognized authentication mechanism\r\n"
    )


def test_auth_login() -> None:
    driver = session(tls=True)
    replies = driver.send(
        b"AUTH LOGIN\r\n"
        + base64.b64encode(b"demo")
        + b"\r\n"
        + base64.b64encode(b"secret")
        + b"\r\n"
    )
    assert replies == (
        b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
    )
    driver = session(tls=True)
    replies = driver.send(
        b"AUTH LOGIN " + base64.b64encode(b"demo") + b"\r\n" + base64.b64encode(b"x") + b"\r\n"
    )
    assert replies == b"334 UGFzc3dvcmQ6\r\n535 5.7.8 Authentication credentials invalid\r\n"


def test_auth_temporary_failure() -> None:
    conn = SmtpServerConnection(tls=True)
    conn.receive_data(b"EHLO c\r\n")
    conn.data_to_send()
    [event] = conn.receive_data(b"AUTH PLAIN " + plain("demo", "secret") + b"\r\n")
    assert isinstance(event, AuthenticationRequested)
    conn.authentication_result(None, temporary=True)
    assert conn.data_to_send() == b"454 4.7.0 Temporary authentication failure\r\n"


def test_submission_requires_auth() -> None:
    driver = session(SmtpConfig(role=Role.SUBMISSION))
    assert (
        driver.send(b"MAIL FROM:<demo@localhost>\r\n") == b"530 5.7.0 Authentication required\r\n"
    )
    driver.send(b"STARTTLS\r\n")
    driver.send(b"EHLO c\r\nAUTH PLAIN " + plain("demo", "secret") + b"\r\n")
    assert driver.send(b"MAIL FROM:<demo@localhost>\r\nRCPT TO:<x@far.example>\r\n") == (
        b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
    )


def test_submissions_is_implicit_tls() -> None:
    driver = Driver.make(SmtpConfig(role=Role.SUBMISSIONS))
    assert driver.conn.tls
    assert driver.send(b"EHLO c.example\r\n") == EHLO_TLS


def test_auth_disabled() -> None:
    driver = session(SmtpConfig(auth_enabled=False), tls=True)
    assert b"AUTH" not in bytes(driver.out)
    assert driver.send(b"AUTH PLAIN\r\n") == b"502 5.5.1 AUTH not available\r\n"


def test_every_non_exempt_reply_has_an_enhanced_code() -> None:
    driver = session(tls=True)
    driver.send(
        b"NOOP\r\nFOO\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<demo@localhost>\r\nRCPT TO:<x@y.example>\r\n"
        b"DATA\r\nx\r\n.\r\nVRFY a\r\nHELP\r\nRSET\r\nAUTH PLAIN\r\n*\r\nQUIT\r\n"
    )
    for line in bytes(driver.out).decode().split("\r\n"):
        if not line or line.startswith(("220 localhost", "250-", "250 localhost", "250 HELP")):
            continue
        if line.startswith(("334", "354")):
            continue
        code, enhanced = line.split(" ")[:2]
        assert enhanced[0] == code[0] and enhanced.count(".") == 2, line


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SmtpConfig(max_recipients=0)
    with pytest.raises(ValueError):
        SmtpConfig(max_command_line=100)
    with pytest.raises(ValueError):
        SmtpConfig(max_data_line=500)
    with pytest.raises(ValueError):
        SmtpConfig(hostname="a b")
    with pytest.raises(ValueError):
        SmtpConfig(max_pending_input=600)
    assert SmtpConfig(role=Role.SUBMISSION).auth_required
