"""Helpers for the SMTP core tests (no tests here): a scripted driver that feeds bytes,
answers the core's questions from a small fake directory, and collects replies and messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from internet_mail.smtp import (
    AuthenticationRequested,
    ConnectionTerminated,
    Event,
    MessageReceived,
    RecipientCheckRequested,
    RecipientVerdict,
    SmtpConfig,
    SmtpServerConnection,
    StartTlsRequested,
)
from internet_mail.smtp.driver import received_header

LOCAL_DOMAINS = {"example.org", "localhost"}
USERS = {"demo@localhost", "alice@example.org", "bob@example.org"}
PASSWORDS = {"demo": "secret"}


def verdict(address: object) -> RecipientVerdict:
    """The fake directory: users, their domains, everything else remote."""
    text = str(address)
    domain = text.rpartition("@")[2]
    if domain not in LOCAL_DOMAINS:
        return RecipientVerdict.REMOTE
    local, _, domain = text.rpartition("@")
    return (
        RecipientVerdict.LOCAL
        if f"{local.lower()}@{domain}" in USERS
        else (RecipientVerdict.UNKNOWN)
    )


@dataclass
class Driver:
    """Runs one core; ``store_ok`` decides the answer to each MessageReceived."""

    conn: SmtpServerConnection
    out: bytearray = field(default_factory=bytearray)
    messages: list[MessageReceived] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    store_ok: bool = True
    tls_on_starttls: bool = True

    @classmethod
    def make(cls, config: SmtpConfig | None = None, *, tls: bool | None = None) -> Driver:
        driver = cls(SmtpServerConnection(config or SmtpConfig(), tls=tls))
        driver.out += driver.conn.data_to_send()
        return driver

    def feed(self, chunks: Iterable[bytes]) -> bytes:
        """Feed chunks in order; returns the replies they produced."""
        start = len(self.out)
        for chunk in chunks:
            self._handle(self.conn.receive_data(chunk))
        return bytes(self.out[start:])

    def send(self, data: bytes) -> bytes:
        return self.feed([data])

    def _handle(self, events: list[Event]) -> None:
        self.out += self.conn.data_to_send()
        while events:
            event = events.pop(0)
            self.events.append(event)
            more: list[Event] = []
            if isinstance(event, RecipientCheckRequested):
                more = self.conn.recipient_checked(verdict(event.address))
            elif isinstance(event, AuthenticationRequested):
                ok = PASSWORDS.get(event.username) == event.password
                more = self.conn.authentication_result(event.username if ok else None)
            elif isinstance(event, MessageReceived):
                self.messages.append(event)
                more = self.conn.message_stored(self.store_ok)
            elif isinstance(event, StartTlsRequested) and self.tls_on_starttls:
                self.out += self.conn.data_to_send()
                more = self.conn.tls_started()
            elif isinstance(event, ConnectionTerminated):
                pass
            self.out += self.conn.data_to_send()
            events.extend(more)


def codes(replies: bytes) -> list[str]:
    """The final reply lines' codes, with enhanced code when there is one."""
    found = []
    for line in replies.decode().split("\r\n"):
        if len(line) >= 4 and line[3] == " ":
            parts = line.split(" ")
            enhanced = (
                parts[1]
                if len(parts) > 1 and parts[1][:1] in "245" and parts[1].count(".") == 2
                else ""
            )
            found.append(f"{parts[0]} {enhanced}".strip())
    return found


def test_received_keeps_an_address_literal_helo() -> None:
    field = received_header(
        helo="[127.0.0.1]", peer="127.0.0.1", hostname="mx.example.org", protocol="ESMTP",
        session_id="abc", recipients=["bob@example.org"],
    )  # fmt: skip
    assert field.startswith(b"Received: from [127.0.0.1] ([127.0.0.1])\r\n")
    odd = received_header(
        helo="[a]b(c)", peer="::1", hostname="mx", protocol="SMTP", session_id="x", recipients=[]
    )
    assert odd.startswith(b"Received: from ?a?b?c? ([::1])")
