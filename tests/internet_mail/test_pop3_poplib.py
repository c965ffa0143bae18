"""An independent client (Python's ``poplib``) drives the POP3 core end to end.

The core is sans-IO; this test's driver is a tiny blocking loop in a thread over a
socketpair: it sends ``data_to_send()``, reads only while ``wants_read``, answers
authentication from a password table and fakes the TLS handshake (``STLS`` is answered,
then ``tls_established()`` without TLS). The backend is the in-memory one.
"""

from __future__ import annotations

import poplib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from internet_mail.pop3 import AuthenticationRequested, Pop3Session, StartTLSRequested
from internet_mail.pop3.testing import MemoryBackend, MemoryStore

PASSWORDS = {"alice": "secret"}
MESSAGES = [
    b"From: fred@example.org\r\nSubject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nend\r\n",
    b"From: fred@example.org\nSubject: bare LF\n\nline 1\nline 2\n.\nline 4\n",
    b"Subject: third\r\n\r\n" + b"body line\r\n" * 50,
]
SIZES = [len(m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) for m in MESSAGES]
TOTAL = sum(SIZES)


class _Poplib(poplib.POP3):
    """poplib over an already connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock_given = sock
        super().__init__("in-process", timeout=10)

    def _create_socket(self, timeout: float) -> socket.socket:
        return self._sock_given


def _serve(sock: socket.socket, session: Pop3Session) -> None:
    with sock:
        try:
            _loop(sock, session)
        except OSError:  # the client went away mid-write: no QUIT, no deletion
            session.connection_lost()


def _loop(sock: socket.socket, session: Pop3Session) -> None:
    while True:
        sock.sendall(session.data_to_send())
        if session.closed:
            return
        # Read only while the core wants input; otherwise run what it held back.
        events = session.receive_data(sock.recv(65536)) if session.wants_read else session.resume()
        while events:
            event = events.pop(0)
            if isinstance(event, AuthenticationRequested):
                ok = PASSWORDS.get(event.user) == event.password
                events += session.authentication_result(ok)
            elif isinstance(event, StartTLSRequested):
                sock.sendall(session.data_to_send())
                session.tls_established()  # the faked handshake


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    for message in MESSAGES:
        store.add("alice", message)
    return store


@pytest.fixture
def connect(store: MemoryStore) -> Iterator[object]:
    threads: list[threading.Thread] = []
    clients: list[_Poplib] = []

    def open_client() -> _Poplib:
        ours, theirs = socket.socketpair()
        session = Pop3Session(MemoryBackend(store))
        thread = threading.Thread(target=_serve, args=(ours, session), daemon=True)
        thread.start()
        threads.append(thread)
        client = _Poplib(theirs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def _login(client: _Poplib) -> None:
    assert "STLS" in client.capa()
    assert client._shortcmd("STLS").startswith(b"+OK")
    caps = client.capa()
    assert "USER" in caps and "STLS" not in caps and caps["SASL"] == ["PLAIN"]
    assert client.user("alice").startswith(b"+OK")
    assert client.pass_("secret") == f"+OK maildrop has 3 messages ({TOTAL} octets)".encode()


def _expected(message: bytes) -> list[bytes]:
    return message.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")


def test_poplib_full_session(connect, store: MemoryStore) -> None:  # type: ignore[no-untyped-def]
    client = connect()
    assert client.getwelcome() == b"+OK POP3 server ready"
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.user("alice")
    _login(client)
    assert client.stat() == (3, TOTAL)
    sizes = SIZES
    assert client.list()[1] == [f"{i + 1} {s}".encode() for i, s in enumerate(sizes)]
    assert client.list(2) == f"+OK 2 {sizes[1]}".encode()
    uids = [uid.encode() for uid in store.maildrops["alice"]]
    assert client.uidl()[1] == [b"%d %s" % (i + 1, u) for i, u in enumerate(uids)]
    assert client.uidl(3) == b"+OK 3 " + uids[2]
    for number, message in enumerate(MESSAGES, 1):  # byte-stuffing round trip
        response, lines, _octets = client.retr(number)
        assert response == f"+OK {sizes[number - 1]} octets".encode()
        assert lines == _expected(message)
    assert client.top(1, 2)[1] == [
        b"From: fred@example.org", b"Subject: dots", b"", b".", b"..two",
    ]  # fmt: skip
    assert client.top(3, 0)[1] == [b"Subject: third", b""]
    client.dele(1)
    client.dele(2)
    with pytest.raises(poplib.error_proto, match="already deleted"):
        client.retr(1)
    assert client.stat() == (1, sizes[2])
    client.rset()
    assert client.stat() == (3, TOTAL)
    client.dele(2)
    assert client.noop() == b"+OK"
    assert len(store.maildrops["alice"]) == 3  # marked only
    assert client.quit() == b"+OK POP3 server signing off (2 messages left)"
    assert list(store.maildrops["alice"]) == [u.decode() for u in (uids[0], uids[2])]

    again = connect()
    caps = again.capa()
    assert "STLS" in caps
    again._shortcmd("STLS")
    again.user("alice")
    assert again.pass_("secret").startswith(b"+OK maildrop has 2 messages")
    assert again.uidl()[1] == [b"1 " + uids[0], b"2 " + uids[2]]  # stable ids
    again.quit()


def test_poplib_in_use_and_dropped_connection(connect, store: MemoryStore) -> None:  # type: ignore[no-untyped-def]
    first = connect()
    _login(first)
    first.dele(1)
    second = connect()
    second._shortcmd("STLS")
    second.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("secret")
    first.close()  # dropped without QUIT: no deletion, lock released
    for _ in range(1000):
        if not store.locked:
            break
        time.sleep(0.01)
    second.user("alice")
    second.pass_("secret")
    assert second.stat()[0] == 3
    second.quit()
