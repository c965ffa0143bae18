"""The SMTP client core (RFC 5321), sans-IO: one mail transaction over one connection.

Theory of operation
-------------------
An :class:`SmtpClient` is made for one :class:`Transaction` (reverse path, forward
paths, message bytes) and driven like the server core: the driver feeds what it reads
to :meth:`~SmtpClient.receive_data` (``b""`` at end of stream), sends what
:meth:`~SmtpClient.data_to_send` returns, and asks :meth:`~SmtpClient.next_event`
what happened:

* :class:`NeedData`: read more (the driver's timeout for the wait is the one of
  :attr:`~SmtpClient.stage`, RFC 5321 4.5.3.2);
* :class:`StartTls`: the peer said 220 to ``STARTTLS``; wrap the stream in TLS, then
  call :meth:`~SmtpClient.tls_started` (the core then says ``EHLO`` again);
* :class:`Finished`: the transaction's outcome, one reply per recipient. It comes as
  soon as the reply after the data is read; ``QUIT`` is queued only when the driver
  takes the event, so nothing reaches the peer before the driver has recorded a
  ``250``.

The dialogue: greeting; ``EHLO`` (``HELO`` when EHLO is refused with 5xx); ``STARTTLS``
when offered, unless TLS is off (required with ``tls="required"``: a peer that does not
offer it gets no mail); ``AUTH PLAIN`` when credentials are set, only under TLS;
``MAIL FROM`` with ``SIZE=``, ``BODY=8BITMIME`` and ``SMTPUTF8`` as the message needs
and the peer offers (a message the peer cannot take is refused here with a permanent
5.3.4 / 5.6.3 / 5.6.7 instead of being sent broken); ``RCPT TO`` for each forward path;
``DATA`` and the dot-stuffed message (line ends normalised to CRLF: a bare CR or LF
never reaches the wire, so no ``<LF>.<LF>`` hides a second message). With
``PIPELINING`` offered, ``MAIL``, the ``RCPT``s and ``DATA`` go in one write (RFC 2920).

Outcomes: a recipient refused at ``RCPT`` has that reply; the others have the reply to
the data (or to ``DATA``, or to ``MAIL``). A failure before ``MAIL`` (greeting, EHLO,
TLS, AUTH) is reported as temporary for every recipient (:attr:`Finished.session`),
whatever its code: a peer that will not talk is no verdict on the addresses.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from typing import Final, Literal

from internet_mail.smtp.replies import Reply, ReplyError, ReplyReader

TlsMode = Literal["required", "opportunistic", "none", "implicit"]


class Stage(enum.Enum):
    """What the client waits for (each has its RFC 5321 4.5.3.2 timeout)."""

    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    BODY = "body"  # the reply after the final dot
    QUIT = "quit"
    CLOSED = "closed"


#: RFC 5321 4.5.3.2 timeouts (seconds) by stage; sending the data uses BODY_BLOCK.
TIMEOUTS: Final = {
    Stage.GREETING: 300.0, Stage.EHLO: 300.0, Stage.STARTTLS: 300.0, Stage.AUTH: 300.0,
    Stage.MAIL: 300.0, Stage.RCPT: 300.0, Stage.DATA: 120.0, Stage.BODY: 600.0,
    Stage.QUIT: 30.0, Stage.CLOSED: 30.0,
}  # fmt: skip
BODY_BLOCK_TIMEOUT: Final = 180.0


class ClientProtocolError(Exception):
    """The peer broke the protocol (the driver drops the connection)."""


@dataclass(frozen=True, slots=True)
class Transaction:
    sender: str
    recipients: tuple[str, ...]
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    helo_name: str
    tls: TlsMode = "opportunistic"
    username: str | None = None
    password: str | None = None
    pipelining: bool = True


@dataclass(frozen=True, slots=True)
class NeedData:
    pass


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Finished:
    #: The final reply for each forward path of the transaction.
    results: dict[str, Reply]
    #: The peer took the message (a positive reply after the data) for the
    #: recipients whose result is positive.
    acknowledged: bool = False
    #: The session failed before MAIL: every result is temporary.
    session: bool = False


Event = NeedData | StartTls | Finished


def local_reply(code: int, enhanced: str, text: str) -> Reply:
    """A reply the client makes itself (a check before sending, a lost connection)."""
    return Reply(code, (f"{enhanced} {text}",), enhanced)


def dot_stuff(data: bytes) -> bytes:
    """``data`` for the wire after DATA: CRLF line ends, leading dots doubled, the
    terminating ``.CRLF`` appended."""
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."
        out += line + b"\r\n"
    return bytes(out) + b".\r\n"


def _xtext_safe(address: str) -> bool:
    return address.isascii()


@dataclass(slots=True)
class _Extensions:
    names: set[str] = field(default_factory=set)
    size: int = 0


def _extensions(reply: Reply) -> _Extensions:
    ext = _Extensions()
    for line in reply.lines[1:]:
        words = line.upper().split()
        if not words:
            continue
        ext.names.add(words[0])
        if words[0] == "SIZE" and len(words) > 1 and words[1].isdigit() and len(words[1]) < 19:
            ext.size = int(words[1])
        if words[0] == "AUTH":
            ext.names.update(f"AUTH={w}" for w in words[1:])
    return ext


class SmtpClient:
    """One transaction's SMTP dialogue (see the module docstring)."""

    def __init__(self, options: ClientOptions, transaction: Transaction) -> None:
        self.options = options
        self.transaction = transaction
        self.stage = Stage.GREETING
        self._reader = ReplyReader()
        self._out = bytearray()
        self._events: list[Event] = []
        self._tls = options.tls == "implicit"
        self._ext = _Extensions()
        self._helo = False  # EHLO was refused, HELO sent
        #: Replies still expected, in order: ("mail",), ("rcpt", i), ("data",), ...
        self._expect: list[tuple[str, int]] = []
        self._pending_cmds: list[tuple[str, int, bytes]] = []
        self._rcpt: dict[str, Reply] = {}
        self._accepted: list[str] = []
        self._mail_reply: Reply | None = None
        self._finished = False

    # --- The driver's side -------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` when the stream ended.

        Raises:
            ClientProtocolError: a malformed reply, one out of turn, or the stream
            ended while a reply was expected.
        """
        if self._finished and self.stage in (Stage.QUIT, Stage.CLOSED):
            return  # what follows the outcome (221) changes nothing
        if not data:
            raise ClientProtocolError("the connection closed in the middle of the dialogue")
        try:
            self._reader.feed(data)
            while (reply := self._reader.next_reply()) is not None:
                self._on_reply(reply)
        except ReplyError as exc:
            raise ClientProtocolError(str(exc)) from None

    def next_event(self) -> Event:
        """The next event. Taking :class:`Finished` queues ``QUIT``: the driver records
        the outcome before the peer hears anything more (so a 250 is on disk first)."""
        if self._events:
            event = self._events.pop(0)
            if isinstance(event, Finished):
                self._command("QUIT")
            return event
        return NeedData()

    def tls_started(self) -> None:
        """The stream is now TLS: greet again (RFC 3207 4.2: forget what was said)."""
        self._tls = True
        self._ext = _Extensions()
        self._send_ehlo()

    def failure(self, reply: Reply) -> Finished:
        """The outcome when the connection is lost or times out now (the driver's):
        ``reply`` for every recipient without a final verdict."""
        results = {r: self._rcpt.get(r, reply) for r in self.transaction.recipients}
        for r in self._accepted:
            results[r] = reply
        return Finished(results, session=self.stage.value in _SESSION_STAGES)

    # --- The dialogue ------------------------------------------------------------------

    def _command(self, line: str) -> None:
        self._out += line.encode("utf-8") + b"\r\n"

    def _finish(self, outcome: Finished) -> None:
        self._finished = True
        self._events.append(outcome)  # QUIT is queued when the driver takes it
        self.stage = Stage.QUIT

    def _fail_session(self, reply: Reply) -> None:
        if reply.code < 400 or reply.code >= 500:
            enhanced = "4" + reply.enhanced[1:] if reply.enhanced else "4.0.0"
            reply = Reply(451, (f"{enhanced} peer refused: {reply}",), enhanced)
        self._finish(Finished(dict.fromkeys(self.transaction.recipients, reply), session=True))

    def _fail_all(self, reply: Reply) -> None:
        self._finish(Finished(dict.fromkeys(self.transaction.recipients, reply)))

    def _send_ehlo(self) -> None:
        self._command(f"EHLO {self.options.helo_name}")
        self.stage = Stage.EHLO

    def _on_reply(self, reply: Reply) -> None:
        if self._finished:
            return
        if self._expect:
            self._on_transaction_reply(reply)
            return
        if self.stage is Stage.GREETING:
            if reply.code != 220:
                return self._fail_session(reply)
            self._send_ehlo()
        elif self.stage is Stage.EHLO:
            if reply.code == 250:
                if not self._helo:
                    self._ext = _extensions(reply)
                return self._after_hello()
            if reply.permanent and not self._helo:
                self._helo = True
                self._command(f"HELO {self.options.helo_name}")
                return
            self._fail_session(reply)
        elif self.stage is Stage.STARTTLS:
            if reply.code == 220:
                if self._reader.buffered:
                    raise ClientProtocolError("data after the 220 to STARTTLS (injection)")
                self._events.append(StartTls())
                return
            if self.options.tls == "required":
                return self._fail_session(reply)
            self._tls_refused = True
            self._after_hello()
        elif self.stage is Stage.AUTH:
            if reply.code != 235:
                return self._fail_session(reply)
            self._authenticated = True
            self._after_hello()
        else:
            raise ClientProtocolError(f"unexpected reply {reply}")

    _tls_refused = False
    _authenticated = False

    def _after_hello(self) -> None:
        opts = self.options
        if (
            not self._tls
            and opts.tls != "none"
            and "STARTTLS" in self._ext.names
            and not self._tls_refused
        ):
            self._command("STARTTLS")
            self.stage = Stage.STARTTLS
            return
        if opts.tls == "required" and not self._tls:
            return self._fail_session(local_reply(421, "4.7.0", "the peer offers no STARTTLS"))
        if opts.username is not None and not self._authenticated:
            if not self._tls:
                return self._fail_session(
                    local_reply(454, "4.7.0", "credentials are never sent without TLS")
                )
            if "AUTH=PLAIN" not in self._ext.names:
                return self._fail_session(
                    local_reply(454, "4.7.0", "the peer offers no AUTH PLAIN")
                )
            token = f"\0{opts.username}\0{opts.password or ''}".encode()
            self._command("AUTH PLAIN " + base64.b64encode(token).decode("ascii"))
            self.stage = Stage.AUTH
            return
        self._start_transaction()

    def _start_transaction(self) -> None:
        tx = self.transaction
        ext = self._ext
        if ext.size and len(tx.data) > ext.size:
            return self._fail_all(local_reply(552, "5.3.4", "message larger than the peer takes"))
        eight_bit = any(b >= 0x80 for b in tx.data)
        if eight_bit and "8BITMIME" not in ext.names:
            return self._fail_all(local_reply(554, "5.6.3", "8-bit message, peer lacks 8BITMIME"))
        utf8 = not all(_xtext_safe(a) for a in (tx.sender, *tx.recipients))
        if utf8 and "SMTPUTF8" not in ext.names:
            return self._fail_all(local_reply(553, "5.6.7", "non-ASCII address, no SMTPUTF8"))
        params = ""
        if "SIZE" in ext.names:
            params += f" SIZE={len(tx.data)}"
        if eight_bit:
            params += " BODY=8BITMIME"
        if utf8:
            params += " SMTPUTF8"
        cmds: list[tuple[str, int, bytes]] = [
            ("mail", 0, f"MAIL FROM:<{tx.sender}>{params}\r\n".encode()),
            *(("rcpt", i, f"RCPT TO:<{r}>\r\n".encode()) for i, r in enumerate(tx.recipients)),
            ("data", 0, b"DATA\r\n"),
        ]
        if self.options.pipelining and "PIPELINING" in ext.names:
            for kind, i, line in cmds:
                self._out += line
                self._expect.append((kind, i))
        else:
            self._pending_cmds = cmds
            self._send_next()
        self.stage = Stage.MAIL

    def _send_next(self) -> None:
        kind, i, line = self._pending_cmds.pop(0)
        self._out += line
        self._expect.append((kind, i))

    def _on_transaction_reply(self, reply: Reply) -> None:
        kind, i = self._expect.pop(0)
        tx = self.transaction
        if kind == "mail":
            self._mail_reply = reply
            self.stage = Stage.RCPT
            if not reply.positive and not self._expect:  # not pipelined: stop here
                return self._fail_all(reply)
        elif kind == "rcpt":
            address = tx.recipients[i]
            if self._mail_reply is not None and not self._mail_reply.positive:
                pass  # refused already at MAIL
            elif reply.positive:
                self._accepted.append(address)
            else:
                self._rcpt[address] = reply
        elif kind == "data":
            self.stage = Stage.DATA
            mail = self._mail_reply
            if mail is not None and not mail.positive:
                if reply.code == 354:
                    self._out += b".\r\n"
                    self._expect.append(("ignore", 0))
                    return
                return self._fail_all(mail)
            if reply.code == 354 and self._accepted:
                self._out += dot_stuff(tx.data)
                self._expect.append(("body", 0))
                self.stage = Stage.BODY
                return
            if reply.code == 354:  # nobody accepted; a pipelined DATA got 354 anyway
                self._out += b".\r\n"
                self._expect.append(("ignore", 0))
                return
            return self._outcome(reply)
        elif kind == "ignore":
            mail = self._mail_reply
            if mail is not None and not mail.positive:
                return self._fail_all(mail)
            return self._outcome(reply)
        elif kind == "body":
            return self._outcome(reply, acknowledged=reply.positive)
        if self._pending_cmds and not self._expect:
            nxt = self._pending_cmds[0]
            if nxt[0] == "data" and not self._accepted:
                self._pending_cmds.clear()
                return self._outcome(None)
            self._send_next()

    def _outcome(self, reply: Reply | None, *, acknowledged: bool = False) -> None:
        results = dict(self._rcpt)
        none = local_reply(554, "5.5.0", "no recipient was accepted")
        for address in self.transaction.recipients:
            if address not in results:
                results[address] = reply if reply is not None else none
        self._finish(Finished(results, acknowledged=acknowledged))


_SESSION_STAGES: Final = frozenset(
    s.value for s in (Stage.GREETING, Stage.EHLO, Stage.STARTTLS, Stage.AUTH)
)

__all__ = [
    "BODY_BLOCK_TIMEOUT", "TIMEOUTS", "ClientOptions", "ClientProtocolError", "Event",
    "Finished", "NeedData", "SmtpClient", "Stage", "StartTls", "TlsMode", "Transaction",
    "dot_stuff", "local_reply",
]  # fmt: skip
