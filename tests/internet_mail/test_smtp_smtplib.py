"""An independent client: Python's ``smtplib`` against the core, through a tiny
blocking driver in the test (a socketpair and a thread that feeds the core).

TLS is faked: the core is told the connection is under TLS (as for port 465), so AUTH
can be exercised without certificates; the real TLS driver is a later step.
"""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import pytest
from test_smtp_helpers import Driver

from internet_mail.smtp import Role, SmtpConfig


def serve(sock: socket.socket, driver: Driver) -> None:
    """The blocking driver: read, feed the core (the helper answers its questions), send."""
    with sock:
        sent = 0
        try:
            while True:
                sock.sendall(bytes(driver.out[sent:]))
                sent = len(driver.out)
                if driver.conn.closed:
                    break
                driver.send(sock.recv(65536))
        except OSError:  # the client went away mid-reply
            driver.send(b"")


@contextmanager
def client(config: SmtpConfig | None = None) -> Iterator[tuple[smtplib.SMTP, Driver]]:
    ours, theirs = socket.socketpair()
    driver = Driver.make(config)
    thread = threading.Thread(target=serve, args=(ours, driver), daemon=True)
    thread.start()

    class Client(smtplib.SMTP):
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            theirs.settimeout(timeout)
            return theirs

    smtp = Client("in-process.test", 25, local_hostname="client.example", timeout=10)
    try:
        yield smtp, driver
    finally:
        smtp.close()
        thread.join(10)
        assert not thread.is_alive()


def message(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@far.example"
    msg["To"] = to
    msg["Subject"] = "Hello from smtplib"
    msg.set_content("line one\n.leading dot\n\nline three\n")
    return msg


def test_ehlo_mail_rcpt_data_quit() -> None:
    with client() as (smtp, driver):
        code, _ = smtp.ehlo()
        assert code == 250
        assert smtp.has_extn("pipelining") and smtp.has_extn("chunking")
        assert smtp.has_extn("8bitmime") and smtp.has_extn("smtputf8")
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        assert smtp.esmtp_features["size"] == str(32 * 1024 * 1024)
        refused = smtp.send_message(message("demo@localhost"), to_addrs=["demo@localhost"])
        assert refused == {}
        assert smtp.noop() == (250, b"2.0.0 OK")
        assert smtp.rset() == (250, b"2.0.0 OK")
        assert smtp.quit()[0] == 221
    [received] = driver.messages
    assert received.recipients == ("demo@localhost",)
    assert received.envelope_from == "sender@far.example"
    assert b"\r\n.leading dot\r\n" in received.data
    assert received.data.endswith(b"line three\r\n")


def test_partial_refusal_and_relay() -> None:
    with client() as (smtp, driver):
        refused = smtp.sendmail(
            "sender@far.example",
            ["demo@localhost", "nobody@localhost", "victim@other.example"],
            b"Subject: x\r\n\r\nbody\r\n",
        )
        assert refused == {
            "nobody@localhost": (550, b"5.1.1 No such user here"),
            "victim@other.example": (550, b"5.7.1 Relaying denied"),
        }
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("a@b.example", ["victim@other.example"], b"x\r\n")
        smtp.quit()
    assert [m.recipients for m in driver.messages] == [("demo@localhost",)]


def test_size_refused_up_front() -> None:
    with client(SmtpConfig(max_message_size=100)) as (smtp, driver):
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            smtp.sendmail("a@b.example", ["demo@localhost"], b"x" * 200)
        assert info.value.smtp_code == 552
        smtp.quit()
    assert driver.messages == []


def test_auth_plain_after_faked_tls_and_relay() -> None:
    with client(SmtpConfig(role=Role.SUBMISSIONS)) as (smtp, driver):
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            smtp.sendmail("demo@localhost", ["x@far.example"], b"x\r\n")
        assert info.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("demo", "wrong")
        assert smtp.login("demo", "secret")[0] == 235
        smtp.sendmail("demo@localhost", ["friend@far.example"], b"Subject: out\r\n\r\nhi\r\n")
        smtp.quit()
    [received] = driver.messages
    assert received.authenticated_user == "demo" and received.tls
    assert received.recipients == ("friend@far.example",)


def test_auth_login_mechanism() -> None:
    with client(SmtpConfig(role=Role.SUBMISSIONS)) as (smtp, _driver):
        smtp.ehlo()
        smtp.user, smtp.password = "demo", "secret"
        code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        assert code == 235
        smtp.quit()


def test_smtputf8_message() -> None:
    with client() as (smtp, driver):
        msg = message("demo@localhost")
        msg.replace_header("From", "jos\u00e9@far.example")
        smtp.send_message(msg)  # smtplib adds SMTPUTF8 for the non-ASCII sender
        smtp.quit()
    assert driver.messages[0].smtputf8
    assert driver.messages[0].envelope_from == "jos\u00e9@far.example"
