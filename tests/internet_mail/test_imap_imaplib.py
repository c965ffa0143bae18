"""An independent client (Python's ``imaplib``) drives the IMAP core end to end.

The core is sans-IO; this test's driver is a tiny blocking loop in a thread that reads
a socketpair, feeds ``ImapSession.receive_data`` and writes ``data_to_send()``. TLS is
faked (``tls_established`` before LOGIN), the backend is the in-memory one.
"""

from __future__ import annotations

import imaplib
import socket
import threading
from collections.abc import Iterator

import pytest

from internet_mail.imap import CloseRequested, ImapSession
from internet_mail.imap.testing import MemoryBackend

MESSAGE = (
    b"From: Fred Foobar <foobar@example.org>\r\n"
    b"To: alice@example.net\r\n"
    b"Subject: afternoon meeting\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-Id: <B27397-0100000@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


class _Imaplib(imaplib.IMAP4):
    """imaplib over an already connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock_given = sock
        super().__init__("in-process")

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self.host = host
        self.port = port
        self.sock = self._sock_given
        self.file = self.sock.makefile("rb")


def _serve(sock: socket.socket, session: ImapSession) -> None:
    with sock:
        sock.sendall(session.data_to_send())
        while True:
            data = sock.recv(65536)
            events = session.receive_data(data)
            sock.sendall(session.data_to_send())
            if not data or any(isinstance(e, CloseRequested) for e in events):
                return


@pytest.fixture
def client() -> Iterator[tuple[_Imaplib, MemoryBackend]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    theirs.settimeout(10)
    backend = MemoryBackend()
    session = ImapSession(backend)
    session.tls_established()  # faked: the driver step brings real TLS
    thread = threading.Thread(target=_serve, args=(theirs, session), daemon=True)
    thread.start()
    imap = _Imaplib(ours)
    yield imap, backend
    ours.close()
    thread.join(10)
    assert not thread.is_alive()


def test_imaplib_session(client: tuple[_Imaplib, MemoryBackend]) -> None:
    imap, backend = client
    assert "IMAP4REV1" in imap.capabilities
    assert "AUTH=PLAIN" in imap.capabilities
    typ, _ = imap.login("alice", "secret")
    assert typ == "OK"
    imap.create("Entwürfe/2024".encode().decode("latin-1") if False else "Archive")
    typ, boxes = imap.list()
    assert typ == "OK"
    names = [b.decode() for b in boxes if isinstance(b, bytes)]
    assert any(n.endswith(" INBOX") for n in names), names
    assert any("\\Sent" in n and n.endswith(" Sent") for n in names), names
    assert any(n.endswith(" Archive") for n in names), names
    for i in range(3):
        typ, data = imap.append(
            "INBOX", "(\\Seen)" if i == 0 else "", None, MESSAGE.replace(b"Joe", b"Joe%d" % i)
        )
        assert typ == "OK"
    assert b"APPENDUID" in data[0]
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"3"])
    typ, data = imap.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)")
    assert typ == "OK"
    first = data[0]
    assert isinstance(first, bytes)
    assert b"UID 1" in first and b"FLAGS (\\Seen)" in first
    assert b'"afternoon meeting"' in first and b'"foobar" "example.org"' in first
    typ, data = imap.fetch("2", "(BODY.PEEK[TEXT] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    assert isinstance(data[0], tuple) and data[0][1].startswith(b"Hello Joe1")
    assert isinstance(data[1], tuple) and data[1][1] == b"Subject: afternoon meeting\r\n\r\n"
    typ, data = imap.search(None, "UNSEEN")
    assert (typ, data) == ("OK", [b"2 3"])
    typ, data = imap.uid("SEARCH", "TEXT", "Joe2")
    assert (typ, data) == ("OK", [b"3"])
    typ, data = imap.store("2", "+FLAGS", "(\\Deleted)")
    assert typ == "OK" and b"\\Deleted" in data[0]
    typ, data = imap.expunge()
    assert (typ, data) == ("OK", [b"2"])
    typ, data = imap.fetch("1:*", "(UID)")
    assert data == [b"1 (UID 1)", b"2 (UID 3)"]
    typ, data = imap.fetch("2", "(BODY[])")  # not PEEK: sets \Seen
    assert data[0][1] == MESSAGE.replace(b"Joe", b"Joe2")
    assert "\\Seen" in backend.messages("INBOX")[1].flags
    typ, data = imap.status("Archive", "(MESSAGES UIDNEXT)")
    assert data == [b"Archive (MESSAGES 0 UIDNEXT 1)"]
    typ, data = imap.uid("MOVE", "3", "Archive")
    assert typ == "OK"
    assert len(backend.messages("Archive")) == 1
    imap.close()
    typ, _ = imap.logout()
    assert typ == "BYE"


def test_imaplib_login_refused_before_tls() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    session = ImapSession(MemoryBackend())
    thread = threading.Thread(target=_serve, args=(theirs, session), daemon=True)
    thread.start()
    imap = _Imaplib(ours)
    assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        imap.login("alice", "secret")
    imap.logout()
    thread.join(10)
    ours.close()
