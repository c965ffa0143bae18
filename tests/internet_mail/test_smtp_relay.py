"""No open relay: recipient forms a spammer tries, unauthenticated and authenticated.

The fake directory (test_smtp_helpers): local domains ``example.org`` and ``localhost``,
users ``demo@localhost``, ``alice@example.org``, ``bob@example.org``.
"""

from __future__ import annotations

import base64

import pytest
from test_smtp_helpers import Driver, codes

from internet_mail.smtp import PathError, Role, SmtpConfig, parse_path

RELAY_ATTEMPTS = [
    (b"<victim@other.example>", "550 5.7.1"),
    (b"<victim@OTHER.EXAMPLE>", "550 5.7.1"),
    (b"<user%other.example@localhost>", "550 5.7.1"),
    (b"<user%other.example@LOCALHOST>", "550 5.7.1"),
    (b"<other.example!user@localhost>", "550 5.7.1"),
    (b"<user@other.example@localhost>", "501 5.1.3"),
    (b'<"user@other.example"@localhost>', "550 5.7.1"),
    (b'<"user%other.example"@example.org>', "550 5.7.1"),
    (b"<@localhost:victim@other.example>", "550 5.7.1"),
    (b"<@localhost,@example.org:victim@other.example>", "550 5.7.1"),
    (b"<victim@other.example.>", "501 5.1.3"),
    (b"<demo@localhost.>", "501 5.1.3"),
    (b"<victim@[192.0.2.1]>", "550 5.7.1"),
    (b"<victim@[IPv6:2001:db8::1]>", "550 5.7.1"),
    (b"<victim@other..example>", "501 5.1.3"),
    (b"<victim@-other.example>", "501 5.1.3"),
    (b"<victim@other.example", "501 5.5.4"),
    (b"victim@other.example", "501 5.5.4"),
    (b"<@localhost:>", "501 5.1.3"),
    (b"<victim@localhost@other.example>", "501 5.1.3"),
    (b"<\xc3\xbcser@other.example>", "553 5.6.7"),
    (b"<nobody@localhost>", "550 5.1.1"),
]


@pytest.mark.parametrize(("path", "reply"), RELAY_ATTEMPTS)
def test_unauthenticated_relay_attempts_are_refused(path: bytes, reply: str) -> None:
    driver = Driver.make()
    driver.send(b"EHLO spam.example\r\nMAIL FROM:<spammer@spam.example>\r\n")
    assert codes(driver.send(b"RCPT TO:" + path + b"\r\nDATA\r\n")) == [reply, "554 5.5.1"]
    assert driver.messages == []


LOCAL_FORMS = [
    (b"<demo@localhost>", "demo@localhost"),
    (b"<demo@LOCALHOST>", "demo@localhost"),
    (b"<Alice@Example.ORG>", "Alice@example.org"),
    (b"<@relay.example:demo@localhost>", "demo@localhost"),  # the route is ignored
    (b"<postmaster>", "postmaster"),
    (b"<PostMaster>", "PostMaster"),
]


@pytest.mark.parametrize(("path", "recipient"), LOCAL_FORMS)
def test_local_delivery_forms(path: bytes, recipient: str) -> None:
    driver = Driver.make()
    driver.send(b"EHLO c\r\nMAIL FROM:<someone@far.example>\r\n")
    assert codes(driver.send(b"RCPT TO:" + path + b"\r\n")) == ["250 2.1.5"]
    driver.send(b"DATA\r\nx\r\n.\r\n")
    assert driver.messages[0].recipients == (recipient,)


def test_authenticated_submitter_may_relay() -> None:
    driver = Driver.make(SmtpConfig(role=Role.SUBMISSIONS))
    auth = base64.b64encode(b"\0demo\0secret")
    driver.send(b"EHLO c\r\nAUTH PLAIN " + auth + b"\r\nMAIL FROM:<demo@localhost>\r\n")
    replies = driver.send(
        b"RCPT TO:<victim@other.example>\r\nRCPT TO:<user%x.example@localhost>\r\n"
        b"RCPT TO:<nobody@localhost>\r\nDATA\r\nhi\r\n.\r\n"
    )
    # A % local part at a local domain, authenticated, goes to the directory like any
    # other local part (no such user here).
    assert codes(replies) == ["250 2.1.5", "550 5.1.1", "550 5.1.1", "354", "250 2.0.0"]
    assert driver.messages[0].authenticated_user == "demo"
    assert driver.messages[0].recipients == ("victim@other.example",)


def test_smtputf8_addresses_only_when_asked() -> None:
    driver = Driver.make()
    driver.send(b"EHLO c\r\n")
    assert codes(driver.send("MAIL FROM:<jos\u00e9@far.example>\r\n".encode())) == ["553 5.6.7"]
    assert codes(driver.send("MAIL FROM:<jos\u00e9@far.example> SMTPUTF8\r\n".encode())) == [
        "250 2.1.0"
    ]
    assert codes(driver.send("RCPT TO:<d\u00e9mo@\u00e9xample.org>\r\n".encode())) == ["550 5.7.1"]
    driver.send(b"RCPT TO:<demo@localhost>\r\nDATA\r\nx\r\n.\r\n")
    assert driver.messages[0].smtputf8
    assert driver.messages[0].envelope_from == "jos\u00e9@far.example"


@pytest.mark.parametrize(
    ("path", "local", "domain", "relay", "route"),
    [
        ("<a@b.example>", "a", "b.example", False, False),
        ('<"a b"@b.example>', '"a b"', "b.example", False, False),
        ('<"a\\"b"@b.example>', '"a\\"b"', "b.example", False, False),
        ('<"a>b"@B.example>', '"a>b"', "b.example", False, False),
        ("<a%b@c.example>", "a%b", "c.example", True, False),
        ("<a!b@c.example>", "a!b", "c.example", True, False),
        ('<"a@b"@c.example>', '"a@b"', "c.example", True, False),
        ("<@x.example,@y.example:a@c.example>", "a", "c.example", False, True),
    ],
)
def test_parse_path(path: str, local: str, domain: str, relay: bool, route: bool) -> None:
    address = parse_path(path, utf8=False, what="recipient", null_ok=False)
    assert address is not None
    assert (address.local_part, address.domain, address.relay_syntax, address.had_route) == (
        local,
        domain,
        relay,
        route,
    )


@pytest.mark.parametrize(
    "path",
    ["<>", "<a>", "<a@>", "<@b>", "<a.@b.example>", "<.a@b.example>", "<a..b@c.example>",
     "<a@b_c.example>", '<"a@b.example>', "<" + "a" * 65 + "@b.example>",
     "<a@" + "b" * 250 + ".example>", "<@:a@b.example>", "<@x,a@b.example>"],
)  # fmt: skip
def test_parse_path_refusals(path: str) -> None:
    with pytest.raises(PathError):
        parse_path(path, utf8=False, what="recipient", null_ok=False)
