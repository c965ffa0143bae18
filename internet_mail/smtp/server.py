"""The SMTP server protocol core (RFC 5321 with ESMTP), sans-IO.

Theory of operation. :class:`SmtpServerConnection` is bytes in, replies and events out
(STYLE.md 2.2): the driver calls :meth:`~SmtpServerConnection.receive_data` with what
it read (``b""`` for EOF), handles the returned events, and sends
:meth:`~SmtpServerConnection.data_to_send` after every call. The greeting is queued
when the core is made.

Commands are read one CRLF line at a time and answered in order, so a pipelining
client (RFC 2920) gets the same replies whether its bytes come whole, one by one, or
cut anywhere. Four events are questions the core cannot answer alone; on each it
*pauses* (``waiting`` is true) and reads no further command until the driver answers:

==========================  ===============================  ==========================
event                       the driver answers with          replies it leads to
==========================  ===============================  ==========================
``StartTlsRequested``       ``tls_started()``                (state reset, RFC 3207)
``AuthenticationRequested`` ``authentication_result(user)``  235 / 535 5.7.8 / 454
``RecipientCheckRequested`` ``recipient_checked(verdict)``   250 / 550 5.1.1 / 550 5.7.1
``MessageReceived``         ``message_stored(ok)``           250 2.0.0 / 451 / 452 / 552
==========================  ===============================  ==========================

So nothing is acknowledged before the driver says it is durable, and the checks that
need a directory or a clock (password hashes, throttling) stay out of the core. Bytes
pipelined while the core waits are held (at most ``max_pending_input``), except after
``STARTTLS``: there they are discarded, as RFC 3207 6 requires, and the session starts
afresh once TLS is up (no HELO, no AUTH, no transaction).

Every reply carries its RFC 3463 enhanced code (RFC 2034) except those RFC 2034 and
RFC 4954 exempt: the greeting, the replies to ``HELO``/``EHLO``, ``334`` challenges and
``354`` (class 3 has no enhanced codes). The relay policy lives here: a recipient the
driver calls ``REMOTE`` (or one with ``%``, ``!`` or a quoted ``@`` in its local part,
see :mod:`.addresses`) is accepted only from an authenticated client.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from internet_mail.smtp.addresses import Address, PathError, parse_path, split_path
from internet_mail.smtp.config import SmtpConfig
from internet_mail.smtp.data import TOO_BIG, ChunkReader, DataReader, Refusal, check_message
from internet_mail.smtp.events import (
    AuthenticationRequested,
    ConnectionTerminated,
    Event,
    MessageReceived,
    RecipientCheckRequested,
    StartTlsRequested,
)
from internet_mail.smtp.params import decode_auth_response, parse_mail_params, parse_plain


class LocalProtocolError(RuntimeError):
    """The driver used the core wrongly (answered a question that was not asked)."""


class RecipientVerdict(enum.Enum):
    """The driver's answer to :class:`RecipientCheckRequested`."""

    LOCAL = "local"  #: a user (or alias) of ours: 250 2.1.5
    UNKNOWN = "unknown"  #: a local domain but no such user: 550 5.1.1
    REMOTE = "remote"  #: not a local domain: relay, for authenticated clients only
    TEMPORARY = "temporary"  #: the directory could not be asked: 451 4.3.0
    #: not a local domain, and this server sends no mail out (outbound is off): 550
    #: 5.7.1 whoever asks, authenticated or not.
    NO_RELAY = "no relay"


class StoreFailure(enum.Enum):
    """Why the driver could not store a message; each maps to one reply."""

    TEMPORARY = (451, "4.3.0", "Temporary failure storing the message, try again later")
    NO_SPACE = (452, "4.3.1", "Insufficient system storage")
    MAILBOX_FULL = (552, "5.2.2", "Mailbox full")
    TOO_BIG = (552, "5.3.4", "Message too big for system")
    #: A submission whose reverse path is not an address of the authenticated user
    #: (RFC 6409 4.3 lets the MSA refuse it; checked once the message is in, as
    #: Exchange does, since the core has no question at MAIL).
    SENDER_NOT_ALLOWED = (550, "5.7.1", "Sender address not allowed for this user")


class _Phase(enum.Enum):
    COMMAND = enum.auto()
    DATA = enum.auto()
    BDAT = enum.auto()
    AUTH_PLAIN = enum.auto()  # waiting for the client's PLAIN response line
    AUTH_LOGIN_USER = enum.auto()
    AUTH_LOGIN_PASS = enum.auto()
    WAIT_TLS = enum.auto()  # the driver: tls_started()
    WAIT_AUTH = enum.auto()  # the driver: authentication_result()
    WAIT_RCPT = enum.auto()  # the driver: recipient_checked()
    WAIT_STORE = enum.auto()  # the driver: message_stored()
    CLOSED = enum.auto()


_WAITING = {_Phase.WAIT_TLS, _Phase.WAIT_AUTH, _Phase.WAIT_RCPT, _Phase.WAIT_STORE}
_USERNAME = "VXNlcm5hbWU6"  # base64 "Username:"
_PASSWORD = "UGFzc3dvcmQ6"  # base64 "Password:"


@dataclass(slots=True)
class _Transaction:
    """One mail transaction: from ``MAIL`` to the end of its data or ``RSET``."""

    sender: str
    body: str
    smtputf8: bool
    size: int | None
    recipients: list[str] = field(default_factory=list)
    chunks: ChunkReader | None = None


class SmtpServerConnection:
    """One SMTP session, server side. See the module docstring for the protocol.

    Args:
        config: the listener's role and limits.
        tls: the connection is already under TLS (implicit TLS, port 465); defaults to
            ``config.implicit_tls``.
    """

    def __init__(self, config: SmtpConfig | None = None, *, tls: bool | None = None) -> None:
        self.config = config or SmtpConfig()
        self.tls = self.config.implicit_tls if tls is None else tls
        self.user: str | None = None
        self.helo: str | None = None
        self.esmtp = False
        self.errors = 0
        self._phase = _Phase.COMMAND
        self._input = bytearray()
        self._output = bytearray()
        self._events: list[Event] = []
        self._skipping = False  # inside an over-long command line
        self._txn: _Transaction | None = None
        self._data: DataReader | None = None
        self._bdat_last = False
        self._bdat_error: Refusal | None = None
        self._login_user = ""
        self._pending_rcpt: Address | None = None
        self._bdat_txn: _Transaction | None = None
        self._reply(220, "", f"{self.config.hostname} ESMTP ready")

    # -- the driver's interface ----------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """The core waits for the driver's answer to an event and reads no command."""
        return self._phase in _WAITING

    @property
    def closed(self) -> bool:
        """The session is over: flush ``data_to_send()`` and close the connection."""
        return self._phase is _Phase.CLOSED

    def data_to_send(self) -> bytes:
        """The replies queued since the last call."""
        out = bytes(self._output)
        self._output.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Take bytes from the client (``b""``: it closed); returns the events.

        Never raises for anything the client sends: every problem is an SMTP reply, and
        at worst a 421 with :class:`ConnectionTerminated`.
        """
        if self._phase is _Phase.CLOSED:
            return []
        if self._phase is _Phase.WAIT_TLS:
            return []  # plaintext after STARTTLS: injected, never read (RFC 3207 6)
        if not data:
            self._close("client closed the connection")
            return self._take_events()
        self._input += data
        if self.waiting and len(self._input) > self.config.max_pending_input:
            self._reply(421, "4.7.0", "Too much pipelined input, closing")
            self._close("too much pipelined input")
            return self._take_events()
        self._run()
        return self._take_events()

    def tls_started(self) -> list[Event]:
        """The TLS handshake after ``StartTlsRequested`` succeeded: a fresh session."""
        self._expect(_Phase.WAIT_TLS, "tls_started")
        self.tls = True
        self.helo, self.esmtp, self.user, self._txn = None, False, None, None
        self._input.clear()
        self._phase = _Phase.COMMAND
        return self._resume()

    def authentication_result(self, user: str | None, *, temporary: bool = False) -> list[Event]:
        """Answer :class:`AuthenticationRequested`.

        Args:
            user: the authenticated identity, or ``None`` when the credentials are bad.
            temporary: the check could not be made (throttled, directory down): 454.
        """
        if self._expect(_Phase.WAIT_AUTH, "authentication_result"):
            return []
        self._phase = _Phase.COMMAND
        if user is not None:
            self.user = user
            self._reply(235, "2.7.0", "Authentication successful")
        elif temporary:
            self._reply(454, "4.7.0", "Temporary authentication failure")
        else:
            self._reply(535, "5.7.8", "Authentication credentials invalid")
        return self._resume()

    def recipient_checked(self, verdict: RecipientVerdict) -> list[Event]:
        """Answer :class:`RecipientCheckRequested`; the core applies the relay policy."""
        if self._expect(_Phase.WAIT_RCPT, "recipient_checked"):
            return []
        address, self._pending_rcpt = self._pending_rcpt, None
        assert address is not None and self._txn is not None
        self._phase = _Phase.COMMAND
        if verdict is RecipientVerdict.LOCAL or (
            verdict is RecipientVerdict.REMOTE and self.user is not None
        ):
            self._txn.recipients.append(str(address))
            self._reply(250, "2.1.5", "Recipient OK")
        elif verdict is RecipientVerdict.UNKNOWN:
            self._reply(550, "5.1.1", "No such user here")
        elif verdict in (RecipientVerdict.REMOTE, RecipientVerdict.NO_RELAY):
            self._reply(550, "5.7.1", "Relaying denied")
        else:
            self._reply(451, "4.3.0", "Temporary failure checking the recipient")
        return self._resume()

    def message_stored(
        self, ok: bool = True, *, failure: StoreFailure = StoreFailure.TEMPORARY
    ) -> list[Event]:
        """Answer :class:`MessageReceived`: 250 once it is durable, else ``failure``."""
        if self._expect(_Phase.WAIT_STORE, "message_stored"):
            return []
        self._phase = _Phase.COMMAND
        self._txn = None
        if ok:
            self._reply(250, "2.0.0", "Message accepted for delivery")
        else:
            self._reply(*failure.value)
        return self._resume()

    # -- the machinery -------------------------------------------------------------------

    def _expect(self, phase: _Phase, method: str) -> bool:
        """True when the session closed meanwhile (the answer is moot); raises when the
        question was not asked."""
        if self._phase is _Phase.CLOSED:
            return True
        if self._phase is not phase:
            raise LocalProtocolError(f"{method}() called while the core is in {self._phase}")
        return False

    def _resume(self) -> list[Event]:
        self._run()
        return self._take_events()

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _reply(self, code: int, enhanced: str, text: str) -> None:
        sep = " " if enhanced else ""
        self._output += f"{code} {enhanced}{sep}{text}\r\n".encode()
        if code >= 500 and self._phase is not _Phase.CLOSED:
            self.errors += 1
            if self.errors >= self.config.max_errors:
                self._output += b"421 4.7.0 Too many errors, closing connection\r\n"
                self._close("too many errors")

    def _reply_lines(self, code: int, lines: list[str]) -> None:
        for line in lines[:-1]:
            self._output += f"{code}-{line}\r\n".encode()
        self._output += f"{code} {lines[-1]}\r\n".encode()

    def _close(self, reason: str) -> None:
        self._phase = _Phase.CLOSED
        self._input.clear()
        self._txn = self._data = None
        self._events.append(ConnectionTerminated(reason=reason))

    def _run(self) -> None:
        """Handle buffered input until more is needed or the core waits."""
        while self._phase not in _WAITING and self._phase is not _Phase.CLOSED:
            if self._phase is _Phase.DATA:
                assert self._data is not None
                rest = self._data.feed(self._input)
                self._input.clear()
                if rest is None:
                    return
                self._input += rest
                self._end_data()
            elif self._phase is _Phase.BDAT:
                assert self._bdat_txn is not None and self._bdat_txn.chunks is not None
                self._input = bytearray(self._bdat_txn.chunks.feed(self._input))
                if self._bdat_txn.chunks.remaining:
                    return
                self._end_chunk()
            else:
                line = self._next_line()
                if line is None:
                    return
                self._line(line)

    def _next_line(self) -> bytes | None:
        limit = self.config.max_command_line
        while True:
            end = self._input.find(b"\n")
            if end < 0:
                if len(self._input) > limit:
                    self._skipping = True  # keep nothing of an over-long line
                    self._input.clear()
                return None
            line = bytes(self._input[: end + 1])
            del self._input[: end + 1]
            if self._skipping or len(line) > limit:
                self._skipping = False
                self._reply(500, "5.5.2", f"Line too long (limit {limit} octets)")
                if self._phase is _Phase.CLOSED:
                    return None
                continue
            return line

    def _line(self, raw: bytes) -> None:
        if not raw.endswith(b"\r\n") or b"\r" in raw[:-2]:
            self._abort_auth()
            self._reply(500, "5.5.2", "Syntax error: bare CR or LF in command")
            return
        try:
            text = raw[:-2].decode("utf-8")
        except UnicodeDecodeError:
            self._abort_auth()
            self._reply(500, "5.5.2", "Syntax error: invalid UTF-8 in command")
            return
        if self._phase is not _Phase.COMMAND:
            self._auth_line(text)
            return
        if "\x00" in text:
            self._reply(500, "5.5.2", "Syntax error: NUL in command")
            return
        verb, _, arg = text.partition(" ")
        handler = _COMMANDS.get(verb.upper())
        if handler is None:
            self._reply(500, "5.5.2", "Command not recognized")
            return
        handler(self, arg.strip(" "))

    # -- commands ------------------------------------------------------------------------

    def _ehlo_lines(self) -> list[str]:
        lines = [
            f"{self.config.hostname} greets {self.helo}",
            "PIPELINING",
            f"SIZE {self.config.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ]
        if self.config.tls_available and not self.tls:
            lines.append("STARTTLS")
        if self.config.auth_enabled and self.tls and self.user is None:
            lines.append("AUTH PLAIN LOGIN")
        lines.append("HELP")
        return lines

    def _cmd_helo(self, arg: str, *, extended: bool = False) -> None:
        name = arg.split(" ")[0]
        if not name:
            verb = "EHLO" if extended else "HELO"
            self._reply(501, "5.5.4", f"Syntax: {verb} hostname")
            return
        self.helo, self.esmtp, self._txn = name, extended, None
        if extended:
            self._reply_lines(250, self._ehlo_lines())
        else:
            self._reply(250, "", f"{self.config.hostname} greets {name}")

    def _cmd_ehlo(self, arg: str) -> None:
        self._cmd_helo(arg, extended=True)

    def _cmd_mail(self, arg: str) -> None:
        if self.helo is None:
            self._reply(503, "5.5.1", "Send HELO or EHLO first")
        elif self._txn is not None:
            self._reply(503, "5.5.1", "Nested MAIL command")
        elif self.config.auth_required and self.user is None:
            self._reply(530, "5.7.0", "Authentication required")
        elif arg[:5].upper() != "FROM:":
            self._reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
        else:
            try:
                path, params_text = split_path(arg[5:])
                params = parse_mail_params(
                    params_text, esmtp=self.esmtp, max_size=self.config.max_message_size
                )
                sender = parse_path(path, utf8=params.smtputf8, what="sender", null_ok=True)
            except PathError as exc:
                self._reply(exc.code, exc.enhanced, exc.text)
                return
            self._txn = _Transaction(
                sender="" if sender is None else str(sender),
                body=params.body,
                smtputf8=params.smtputf8,
                size=params.size,
            )
            self._reply(250, "2.1.0", "Sender OK")

    def _cmd_rcpt(self, arg: str) -> None:
        txn = self._txn
        if txn is None:
            self._reply(503, "5.5.1", "Need MAIL command")
            return
        if txn.chunks is not None:
            self._reply(503, "5.5.1", "RCPT after BDAT")
            return
        if arg[:3].upper() != "TO:":
            self._reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
            return
        try:
            path, params = split_path(arg[3:])
            if params.strip():
                raise PathError(555, "5.5.4", "Unsupported RCPT parameter")
            address = parse_path(path, utf8=txn.smtputf8, what="recipient", null_ok=False)
        except PathError as exc:
            self._reply(exc.code, exc.enhanced, exc.text)
            return
        assert address is not None
        if len(txn.recipients) >= self.config.max_recipients:
            self._reply(452, "4.5.3", "Too many recipients")
        elif address.is_postmaster:
            txn.recipients.append(str(address))
            self._reply(250, "2.1.5", "Recipient OK")
        elif address.relay_syntax and self.user is None:
            self._reply(550, "5.7.1", "Relaying denied: routing characters in local part")
        else:
            self._pending_rcpt = address
            self._phase = _Phase.WAIT_RCPT
            self._events.append(RecipientCheckRequested(address=address))

    def _cmd_data(self, arg: str) -> None:
        txn = self._txn
        if arg:
            self._reply(501, "5.5.4", "Syntax: DATA")
        elif txn is None:
            self._reply(503, "5.5.1", "Need MAIL command")
        elif txn.chunks is not None:
            self._reply(503, "5.5.1", "DATA after BDAT")
        elif not txn.recipients:
            self._reply(554, "5.5.1", "No valid recipients")
        else:
            self._reply(354, "", "End data with <CR><LF>.<CR><LF>")
            self._data = DataReader(self.config.max_message_size)
            self._phase = _Phase.DATA

    def _end_data(self) -> None:
        assert self._data is not None
        message, self._data = self._data.message, None
        self._phase = _Phase.COMMAND
        self._finish(message, chunked=False)

    def _finish(self, message: bytes | None, *, chunked: bool) -> None:
        """A whole message arrived: refuse it, or hand it to the driver and wait."""
        txn = self._txn
        assert txn is not None
        refusal = TOO_BIG if message is None else self._check(message)
        if refusal is not None or message is None:
            assert refusal is not None
            self._txn = None
            self._reply(refusal.code, refusal.enhanced, refusal.text)
            return
        self._phase = _Phase.WAIT_STORE
        self._events.append(
            MessageReceived(
                envelope_from=txn.sender,
                recipients=tuple(txn.recipients),
                data=message,
                authenticated_user=self.user,
                tls=self.tls,
                helo=self.helo or "",
                esmtp=self.esmtp,
                body=txn.body,
                smtputf8=txn.smtputf8,
                declared_size=txn.size,
                chunked=chunked,
            )
        )

    def _check(self, message: bytes) -> Refusal | None:
        return check_message(
            message,
            max_line=self.config.max_data_line,
            max_header_count=self.config.max_header_count,
            max_header_bytes=self.config.max_header_bytes,
        )

    def _cmd_bdat(self, arg: str) -> None:
        parts = arg.split()
        last = len(parts) == 2 and parts[1].upper() == "LAST"
        if not (len(parts) == 1 or last) or not (parts[0].isdigit() and parts[0].isascii()):
            # The chunk's length is unknown, so the stream cannot be followed: close.
            self._reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
            if self._phase is not _Phase.CLOSED:
                self._close("unreadable BDAT")
            return
        size = int(parts[0]) if len(parts[0]) <= 20 else 10**20
        txn = self._txn
        self._bdat_last, self._bdat_error = last, None
        if txn is None:
            self._bdat_error = Refusal(503, "5.5.1", "Need MAIL command")
        elif txn.chunks is None and not txn.recipients:
            self._bdat_error = Refusal(554, "5.5.1", "No valid recipients")
        if txn is None or self._bdat_error is not None:
            # The chunk is read and dropped, so the commands after it stay in step.
            txn = _Transaction(sender="", body="7BIT", smtputf8=False, size=None)
            txn.chunks = ChunkReader(0)
        elif txn.chunks is None:
            txn.chunks = ChunkReader(self.config.max_message_size)
        assert txn.chunks is not None
        txn.chunks.start_chunk(size)
        self._bdat_txn = txn
        self._phase = _Phase.BDAT

    def _end_chunk(self) -> None:
        txn, self._bdat_txn = self._bdat_txn, None
        assert txn is not None and txn.chunks is not None
        self._phase = _Phase.COMMAND
        if self._bdat_error is not None:
            error, self._bdat_error = self._bdat_error, None
            self._reply(error.code, error.enhanced, error.text)
        elif txn.chunks.too_big:
            self._txn = None  # the transaction is abandoned; later chunks get 503
            self._reply(TOO_BIG.code, TOO_BIG.enhanced, TOO_BIG.text)
        elif self._bdat_last:
            self._finish(txn.chunks.message(), chunked=True)
        else:
            self._reply(250, "2.0.0", f"{txn.chunks.size} octets received")

    def _cmd_rset(self, arg: str) -> None:
        if arg:
            self._reply(501, "5.5.4", "Syntax: RSET")
            return
        self._txn = None
        self._reply(250, "2.0.0", "OK")

    def _cmd_noop(self, arg: str) -> None:
        self._reply(250, "2.0.0", "OK")

    def _cmd_quit(self, arg: str) -> None:
        self._reply(221, "2.0.0", f"{self.config.hostname} closing connection")
        self._close("quit")

    def _cmd_vrfy(self, arg: str) -> None:
        if not arg:
            self._reply(501, "5.5.4", "Syntax: VRFY address")
        else:  # RFC 5321 3.5.3: no address harvesting
            self._reply(
                252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"
            )

    def _cmd_expn(self, arg: str) -> None:
        self._reply(502, "5.5.1", "EXPN not available")

    def _cmd_help(self, arg: str) -> None:
        self._reply(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        )

    def _cmd_starttls(self, arg: str) -> None:
        if arg:
            self._reply(501, "5.5.4", "Syntax: STARTTLS")
        elif self.tls:
            self._reply(503, "5.5.1", "TLS already active")
        elif not self.config.tls_available:
            self._reply(454, "4.7.0", "TLS not available")
        elif self._txn is not None:
            self._reply(503, "5.5.1", "STARTTLS inside a mail transaction")
        else:
            self._reply(220, "2.0.0", "Ready to start TLS")
            self._input.clear()  # pipelined plaintext: the injection attack (RFC 3207 6)
            self._phase = _Phase.WAIT_TLS
            self._events.append(StartTlsRequested())

    def _cmd_auth(self, arg: str) -> None:
        mechanism, _, initial = arg.partition(" ")
        mechanism, initial = mechanism.upper(), initial.strip(" ")
        if not self.config.auth_enabled:
            self._reply(502, "5.5.1", "AUTH not available")
        elif not self.tls:
            self._reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
        elif not self.esmtp:
            self._reply(503, "5.5.1", "Send EHLO first")
        elif self.user is not None:
            self._reply(503, "5.5.1", "Already authenticated")
        elif self._txn is not None:
            self._reply(503, "5.5.1", "AUTH inside a mail transaction")
        elif mechanism == "PLAIN":
            if initial:
                self._phase = _Phase.AUTH_PLAIN
                self._auth_line(initial)
            else:
                self._phase = _Phase.AUTH_PLAIN
                self._reply(334, "", "")
        elif mechanism == "LOGIN":
            self._phase = _Phase.AUTH_LOGIN_USER
            if initial:
                self._auth_line(initial)
            else:
                self._reply(334, "", _USERNAME)
        else:
            self._reply(504, "5.5.4", "Unrecognized authentication mechanism")

    def _abort_auth(self) -> None:
        if self._phase in (_Phase.AUTH_PLAIN, _Phase.AUTH_LOGIN_USER, _Phase.AUTH_LOGIN_PASS):
            self._phase = _Phase.COMMAND

    def _auth_line(self, text: str) -> None:
        """A response line inside ``AUTH`` (RFC 4954 4): base64, or ``*`` to cancel."""
        phase = self._phase
        self._phase = _Phase.COMMAND
        try:
            value = decode_auth_response(text)
        except PathError as exc:
            self._reply(exc.code, exc.enhanced, exc.text)
            return
        if phase is _Phase.AUTH_LOGIN_USER:
            self._login_user = value
            self._phase = _Phase.AUTH_LOGIN_PASS
            self._reply(334, "", _PASSWORD)
            return
        if phase is _Phase.AUTH_LOGIN_PASS:
            mechanism, username, password = "LOGIN", self._login_user, value
            self._login_user = ""
        else:
            try:
                username, password = parse_plain(value)
            except PathError as exc:
                self._reply(exc.code, exc.enhanced, exc.text)
                return
            mechanism = "PLAIN"
        self._phase = _Phase.WAIT_AUTH
        self._events.append(
            AuthenticationRequested(mechanism=mechanism, username=username, password=password)
        )


_Handler = Callable[[SmtpServerConnection, str], None]
_COMMANDS: dict[str, _Handler] = {
    "HELO": SmtpServerConnection._cmd_helo,
    "EHLO": SmtpServerConnection._cmd_ehlo,
    "MAIL": SmtpServerConnection._cmd_mail,
    "RCPT": SmtpServerConnection._cmd_rcpt,
    "DATA": SmtpServerConnection._cmd_data,
    "BDAT": SmtpServerConnection._cmd_bdat,
    "RSET": SmtpServerConnection._cmd_rset,
    "NOOP": SmtpServerConnection._cmd_noop,
    "QUIT": SmtpServerConnection._cmd_quit,
    "VRFY": SmtpServerConnection._cmd_vrfy,
    "EXPN": SmtpServerConnection._cmd_expn,
    "HELP": SmtpServerConnection._cmd_help,
    "STARTTLS": SmtpServerConnection._cmd_starttls,
    "AUTH": SmtpServerConnection._cmd_auth,
}
