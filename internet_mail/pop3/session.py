"""The POP3 connection state machine ([RFC 1939]): bytes in, events and bytes out.

Theory of operation: ``Pop3Session`` owns an input buffer, an output buffer and a
``Backend``. The greeting is queued at creation. The driver feeds ``receive_data(chunk)``
(``b""`` at end of input), sends ``data_to_send()`` after every call, and acts on the
returned events:

- ``StartTLSRequested``: flush, run the handshake, call ``tls_established()``;
- ``AuthenticationRequested``: check the password (and throttle), then call
  ``authentication_result(ok)``, which runs the commands pipelined behind it;
- ``CloseRequested``: flush and close.

When ``wants_read`` is false and no event is pending, the driver flushes and calls
``resume()`` instead of reading: the core stops running pipelined commands once more
than ``max_pending_output`` octets are queued, so a client that pipelines a thousand
``RETR`` and never reads holds one response's worth of memory, not a thousand.

A driver loop::

    while session.state is not State.CLOSED:
        await stream.send_all(session.data_to_send())
        if session.wants_read:
            events = session.receive_data(await stream.receive_some(65536))
        else:
            events = session.resume()
        ...act on events (their answers may return more events)...

States ([RFC 1939] 3): AUTHORIZATION -> TRANSACTION (credentials accepted and the
maildrop locked) -> UPDATE (QUIT: marked messages removed, lock released) -> CLOSED.
QUIT in AUTHORIZATION and any end of input go straight to CLOSED; the lock is then
released and no deletion is applied ([RFC 1939] 6). Credentials are refused before TLS
(``-ERR [AUTH]``, ``USER`` and ``SASL`` not in ``CAPA``), DESIGN.md "Security"; on an
implicit-TLS listener the session starts with ``tls=True``.

The maildrop is the snapshot ``lock_maildrop`` returned: message numbers 1..n stay
fixed for the session, ``DELE`` only marks, ``RSET`` unmarks, and ``QUIT`` hands the
marked unique ids to ``Backend.delete``.
"""

from __future__ import annotations

import binascii
import contextlib
from collections.abc import Callable
from enum import Enum, auto

from . import responses as r
from .backend import Backend, BackendError, MaildropInUse, MessageEntry
from .config import Pop3Limits
from .events import (
    Authenticated,
    AuthenticationRequested,
    CloseRequested,
    Event,
    StartTLSRequested,
)

__all__ = ["Pop3Session", "State"]


class State(Enum):
    AUTHORIZATION = auto()
    TRANSACTION = auto()
    UPDATE = auto()
    CLOSED = auto()


class _Wait(Enum):
    """What the core waits for from the driver before running more commands."""

    TLS = auto()
    AUTH = auto()


_Handler = Callable[["Pop3Session", bytes, list[bytes], list[Event]], None]
_AUTHORIZATION = frozenset({State.AUTHORIZATION})
_TRANSACTION = frozenset({State.TRANSACTION})
_BOTH = _AUTHORIZATION | _TRANSACTION


class Pop3Session:
    """One POP3 connection's server side, sans-IO.

    Args:
        backend: this connection's access to the maildrops.
        limits: the bounds (``Pop3Limits()`` by default).
        tls: the connection is already encrypted (an implicit-TLS listener, 995).
        starttls: the driver can start TLS, so ``STLS`` is offered.
        greeting: text of the ``+OK`` greeting.
    """

    def __init__(
        self,
        backend: Backend,
        limits: Pop3Limits | None = None,
        *,
        tls: bool = False,
        starttls: bool = True,
        greeting: str = "POP3 server ready",
    ) -> None:
        self.backend = backend
        self.limits = limits or Pop3Limits()
        self.tls = tls
        self.starttls = starttls
        self.state = State.AUTHORIZATION
        self.user: str | None = None
        self.errors = 0
        self._in = bytearray()
        self._scanned = 0  # octets of ``_in`` known to hold no LF
        self._out = bytearray()
        self._wait: _Wait | None = None
        self._sasl = False  # the next line answers AUTH's "+ " challenge
        self._user_arg: str | None = None  # USER's name, waiting for PASS
        self._locked = False
        self._entries: list[MessageEntry] = []
        self._marked: set[int] = set()  # 0-based indexes of DELE'd messages
        self._out += r.ok(greeting)

    # -- driver API ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the client (``b""`` at end of input); returns events.

        Bytes fed between ``STLS`` and ``tls_established()`` are dropped (they were
        sent in clear before the handshake: [RFC 2595] 3, the STARTTLS injection).
        """
        if self.state is State.CLOSED:
            return []
        if not data:
            self.connection_lost()
            return [CloseRequested()]
        if self._wait is _Wait.TLS:
            return []
        self._in += data
        events: list[Event] = []
        self._run(events)
        if not self.closed and len(self._in) > self.limits.max_input_buffer:
            self._close(events)
        return events

    def resume(self) -> list[Event]:
        """Run commands left buffered while output was backed up; returns events."""
        events: list[Event] = []
        if self.state is not State.CLOSED:
            self._run(events)
        return events

    def data_to_send(self) -> bytes:
        """The queued response bytes (and forget them)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def wants_read(self) -> bool:
        """True when the driver should read more input: not closed, waiting for no
        answer from the driver, no command left buffered behind an output backlog."""
        if self.state is State.CLOSED or self._wait is not None:
            return False
        return len(self._out) <= self.limits.max_pending_output and not self._complete_line()

    @property
    def closed(self) -> bool:
        """The session is over: the driver closes the connection."""
        return self.state is State.CLOSED

    @property
    def buffered(self) -> int:
        """Octets of client input held."""
        return len(self._in)

    def tls_established(self) -> None:
        """The handshake ``StartTLSRequested`` asked for succeeded; the client must send
        ``CAPA`` again ([RFC 2595] 4), so nothing is queued."""
        if self._wait is not _Wait.TLS:
            raise RuntimeError("tls_established() without a StartTLSRequested")
        self._wait = None
        self.tls = True
        self._in.clear()
        self._scanned = 0

    def authentication_result(
        self, ok: bool, *, user: str | None = None, temporary: bool = False
    ) -> list[Event]:
        """Answer the pending ``AuthenticationRequested``; returns the events of the
        commands pipelined behind it.

        Args:
            ok: the credentials are good; the core then locks the maildrop.
            user: the maildrop's owner when it differs from the name sent (an alias).
            temporary: with ``ok=False``: the check could not be made now (the directory
                is down): ``-ERR [SYS/TEMP]``, not counted as a client error.
        """
        if self.state is State.CLOSED:
            return []
        if self._wait is not _Wait.AUTH or self.user is None:
            raise RuntimeError("authentication_result() without an AuthenticationRequested")
        self._wait = None
        events: list[Event] = []
        name, self.user = user or self.user, None
        if not ok:
            if temporary:
                self._out += r.err("authentication unavailable, try later", "SYS/TEMP")
            else:
                self._error("invalid credentials", events, "AUTH")
        else:
            self._open(name, events)
        if not self.closed:
            self._run(events)
        return events

    def connection_lost(self) -> None:
        """The connection ended (end of input, a failed write): release the maildrop
        without applying deletions ([RFC 1939] 6)."""
        self.state = State.CLOSED
        self._wait = None
        self._in.clear()
        self._release()

    def capabilities(self) -> list[str]:
        """What ``CAPA`` lists now ([RFC 2449] 6)."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self.tls:
                caps += ["USER", "SASL PLAIN"]
            elif self.starttls:
                caps.append("STLS")
        return caps

    # -- input framing ------------------------------------------------------------------

    def _complete_line(self) -> bool:
        return self._in.find(b"\n", self._scanned) >= 0

    def _run(self, events: list[Event]) -> None:
        limits = self.limits
        while (
            self.state is not State.CLOSED
            and self._wait is None
            and len(self._out) <= limits.max_pending_output
        ):
            nl = self._in.find(b"\n", self._scanned)
            if nl < 0:
                self._scanned = len(self._in)
                if len(self._in) > limits.max_hard_line:
                    self._out += r.err("line too long")
                    self._close(events)
                break
            line = bytes(self._in[: nl + 1])
            del self._in[: nl + 1]
            self._scanned = 0
            if len(line) > limits.max_hard_line:
                self._out += r.err("line too long")
                self._close(events)
                break
            text = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if self._sasl:
                self._sasl = False
                self._sasl_response(text, events)
            elif len(line) > limits.max_line:
                self._error("line too long", events)
            else:
                self._command(text, events)

    def _command(self, text: bytes, events: list[Event]) -> None:
        keyword, _, rest = text.partition(b" ")
        entry = _COMMANDS.get(keyword.upper())
        if entry is None:
            self._error("unknown command", events)
            return
        states, handler = entry
        if self.state not in states:
            self._error("command not valid in this state", events)
            return
        handler(self, rest, rest.split(b" ") if rest else [], events)

    # -- replies ------------------------------------------------------------------------

    def _error(self, text: str, events: list[Event], code: str | None = None) -> None:
        """A ``-ERR`` the client earned; too many of them close the connection."""
        self._out += r.err(text, code)
        self.errors += 1
        if self.errors >= self.limits.max_errors:
            self._close(events)

    def _close(self, events: list[Event]) -> None:
        self.connection_lost()
        events.append(CloseRequested())

    def _release(self) -> None:
        if self._locked:
            self._locked = False
            with contextlib.suppress(BackendError):  # nothing to tell a client that is gone
                self.backend.unlock()

    # -- AUTHORIZATION ------------------------------------------------------------------

    def _cmd_capa(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if args:
            self._error("CAPA takes no argument", events)
            return
        lines = [cap.encode("ascii") for cap in self.capabilities()]
        self._out += r.multiline("Capability list follows", lines)

    def _cmd_stls(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if args:
            self._error("STLS takes no argument", events)
        elif self.tls:
            self._error("TLS already active", events)
        elif not self.starttls:
            self._error("STLS not available", events)
        else:
            self._out += r.ok("Begin TLS negotiation")
            self._wait = _Wait.TLS
            self._user_arg = None
            self._in.clear()
            self._scanned = 0
            events.append(StartTLSRequested())

    def _needs_tls(self, command: str, events: list[Event]) -> bool:
        if self.tls:
            return False
        self._error(f"{command} needs TLS: use STLS first", events, "AUTH")
        return True

    def _cmd_user(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if self._needs_tls("USER", events):
            return
        if not rest:
            self._error("USER needs a name", events)
            return
        try:
            self._user_arg = rest.decode("utf-8")
        except UnicodeDecodeError:
            self._error("user name is not UTF-8", events, "AUTH")
            return
        self._out += r.ok("send PASS")

    def _cmd_pass(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if self._needs_tls("PASS", events):
            return
        user, self._user_arg = self._user_arg, None
        if user is None:
            self._error("send USER first", events)
            return
        try:
            password = rest.decode("utf-8")
        except UnicodeDecodeError:
            self._error("invalid credentials", events, "AUTH")
            return
        self._ask(user, password, "USER", events)

    def _cmd_auth(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if not args:  # the mechanism list some clients ask for ([RFC 1734] practice)
            if self._needs_tls("AUTH", events):
                return
            self._out += r.multiline("SASL mechanisms follow", [b"PLAIN"])
            return
        if len(args) > 2:
            self._error("AUTH takes a mechanism and an initial response", events)
        elif args[0].upper() != b"PLAIN":
            self._error("unsupported mechanism", events)
        elif self._needs_tls("AUTH", events):
            return
        elif len(args) == 1:
            self._sasl = True
            self._out += b"+ \r\n"
        else:
            self._plain(b"" if args[1] == b"=" else args[1], events)

    def _sasl_response(self, text: bytes, events: list[Event]) -> None:
        if text == b"*":
            self._error("authentication cancelled", events)
        else:
            self._plain(text, events)

    def _plain(self, b64: bytes, events: list[Event]) -> None:
        """[RFC 4616]: authzid NUL authcid NUL passwd; an authzid other than the
        authcid (acting for someone else) is refused."""
        try:
            parts = binascii.a2b_base64(b64, strict_mode=True).split(b"\x00")
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except (binascii.Error, ValueError):
            self._error("malformed PLAIN response", events, "AUTH")
            return
        if not authcid or authzid not in ("", authcid):
            self._error("invalid credentials", events, "AUTH")
            return
        self._ask(authcid, password, "PLAIN", events)

    def _ask(self, user: str, password: str, mechanism: str, events: list[Event]) -> None:
        self.user = user
        self._wait = _Wait.AUTH
        events.append(AuthenticationRequested(user=user, password=password, mechanism=mechanism))

    def _open(self, user: str, events: list[Event]) -> None:
        try:
            entries = list(self.backend.lock_maildrop(user))
        except MaildropInUse:
            self._out += r.err("maildrop already locked", "IN-USE")
            return
        except BackendError as exc:
            self._out += r.err(f"maildrop unavailable: {exc.text}", "SYS/TEMP")
            return
        self._locked = True
        self._entries = entries
        self._marked = set()
        self.user = user
        self.state = State.TRANSACTION
        events.append(Authenticated(user=user, messages=len(entries)))
        self._out += r.ok(f"maildrop has {self._summary()}")

    def _cmd_quit(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if self.state is State.TRANSACTION:
            self.state = State.UPDATE
            gone = [self._entries[i].uid for i in sorted(self._marked)]
            try:
                if gone:
                    self.backend.delete(gone)
            except BackendError:
                self._out += r.err("some deleted messages not removed", "SYS/TEMP")
            else:
                left = len(self._entries) - len(gone)
                self._out += r.ok(f"POP3 server signing off ({left} messages left)")
        else:
            self._out += r.ok("POP3 server signing off")
        self._close(events)

    # -- TRANSACTION --------------------------------------------------------------------

    def _summary(self) -> str:
        live = [e for i, e in enumerate(self._entries) if i not in self._marked]
        return f"{len(live)} messages ({sum(e.size for e in live)} octets)"

    def _number(self, raw: bytes, events: list[Event]) -> int | None:
        """The 0-based index of a live message, or None after an ``-ERR``."""
        if not raw.isdigit() or len(raw) > 10:
            self._error("invalid message number", events)
            return None
        index = int(raw) - 1
        if not 0 <= index < len(self._entries):
            self._error("no such message", events)
            return None
        if index in self._marked:
            self._error(f"message {index + 1} already deleted", events)
            return None
        return index

    def _arity(self, args: list[bytes], low: int, high: int, events: list[Event]) -> bool:
        if low <= len(args) <= high:
            return True
        self._error("wrong number of arguments", events)
        return False

    def _cmd_stat(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if self._arity(args, 0, 0, events):
            live = [e for i, e in enumerate(self._entries) if i not in self._marked]
            self._out += r.ok(f"{len(live)} {sum(e.size for e in live)}")

    def _listing(
        self, args: list[bytes], events: list[Event], field: Callable[[MessageEntry], str]
    ) -> None:
        if not self._arity(args, 0, 1, events):
            return
        if args:
            index = self._number(args[0], events)
            if index is not None:
                self._out += r.ok(f"{index + 1} {field(self._entries[index])}")
            return
        lines = [
            f"{i + 1} {field(e)}".encode()
            for i, e in enumerate(self._entries)
            if i not in self._marked
        ]
        self._out += r.multiline(self._summary(), lines)

    def _cmd_list(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        self._listing(args, events, lambda e: str(e.size))

    def _cmd_uidl(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        self._listing(args, events, lambda e: e.uid)

    def _message(self, index: int) -> bytes | None:
        try:
            return r.normalize(self.backend.message_bytes(self._entries[index].uid))
        except BackendError:
            self._out += r.err("message no longer available", "SYS/TEMP")
            return None

    def _cmd_retr(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if not self._arity(args, 1, 1, events):
            return
        index = self._number(args[0], events)
        if index is not None and (data := self._message(index)) is not None:
            self._out += r.ok(f"{len(data)} octets") + r.stuff(data)

    def _cmd_top(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if not self._arity(args, 2, 2, events):
            return
        index = self._number(args[0], events)
        if index is None:
            return
        if not args[1].isdigit() or len(args[1]) > 10:
            self._error("invalid line count", events)
            return
        if (data := self._message(index)) is not None:
            self._out += r.ok("top of message follows") + r.stuff(r.top(data, int(args[1])))

    def _cmd_dele(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if not self._arity(args, 1, 1, events):
            return
        index = self._number(args[0], events)
        if index is not None:
            self._marked.add(index)
            self._out += r.ok(f"message {index + 1} marked for removal")

    def _cmd_noop(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if self._arity(args, 0, 0, events):
            self._out += r.ok()

    def _cmd_rset(self, rest: bytes, args: list[bytes], events: list[Event]) -> None:
        if self._arity(args, 0, 0, events):
            self._marked.clear()
            self._out += r.ok(f"maildrop has {self._summary()}")


_COMMANDS: dict[bytes, tuple[frozenset[State], _Handler]] = {
    b"CAPA": (_BOTH, Pop3Session._cmd_capa),
    b"QUIT": (_BOTH, Pop3Session._cmd_quit),
    b"STLS": (_AUTHORIZATION, Pop3Session._cmd_stls),
    b"USER": (_AUTHORIZATION, Pop3Session._cmd_user),
    b"PASS": (_AUTHORIZATION, Pop3Session._cmd_pass),
    b"AUTH": (_AUTHORIZATION, Pop3Session._cmd_auth),
    b"STAT": (_TRANSACTION, Pop3Session._cmd_stat),
    b"LIST": (_TRANSACTION, Pop3Session._cmd_list),
    b"UIDL": (_TRANSACTION, Pop3Session._cmd_uidl),
    b"RETR": (_TRANSACTION, Pop3Session._cmd_retr),
    b"TOP": (_TRANSACTION, Pop3Session._cmd_top),
    b"DELE": (_TRANSACTION, Pop3Session._cmd_dele),
    b"NOOP": (_TRANSACTION, Pop3Session._cmd_noop),
    b"RSET": (_TRANSACTION, Pop3Session._cmd_rset),
}
