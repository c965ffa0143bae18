"""The IMAP connection state machine ([RFC 9051] 3): bytes in, events and bytes out.

Theory of operation: ``ImapSession`` owns a ``CommandParser`` and a ``Backend``. The
driver feeds ``receive_data(chunk)``, sends ``data_to_send()`` after every call, and
acts on the returned events (``StartTLSRequested``: run the TLS handshake, then call
``tls_established()``; ``IdleStarted``: subscribe to the store and call ``poll()`` when
it changes; ``CloseRequested``: flush and close). The greeting is queued at creation.

States (RFC 9051 3): NOT_AUTHENTICATED -> AUTHENTICATED (LOGIN, AUTHENTICATE) ->
SELECTED (SELECT, EXAMINE) -> back by CLOSE/UNSELECT/failed SELECT; LOGOUT from any.
``_ALLOWED`` says which commands each state takes; another gets ``BAD``. Credentials
are refused before TLS (``LOGINDISABLED``, no ``AUTH=``, DESIGN.md "Security").

Backpressure: commands the client pipelined are parsed at once but run one by one;
once more than ``max_pending_output`` bytes are queued the rest wait (``wants_read``
turns false) until the driver has sent ``data_to_send()`` and calls ``resume()``, so a
client that pipelines many FETCHes and never reads holds one command's answer at a
time. ``STARTTLS`` drops whatever the client sent after it in clear (the STARTTLS
command injection, [RFC 9051] 11.1).

The selected mailbox is a snapshot (UIDs in sequence order, flags, modseqs); after each
command the session compares it with the store and reports the differences (EXISTS,
EXPUNGE or VANISHED, FETCH FLAGS), expunges only where RFC 9051 7.5.1 allows.
"""

from __future__ import annotations

import binascii
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Protocol

from . import commands as c
from . import mutf7
from . import responses as r
from .backend import Backend, BackendError, MailboxInfo, MessageInfo
from .config import ImapLimits
from .message import Part, transfer_decoded
from .parser import (
    CommandParser,
    CommandReceived,
    CommandRejected,
    ContinuationNeeded,
    IdleDone,
    LineReceived,
    ParserEvent,
    ProtocolViolation,
)
from .search import Context, matches

__all__ = [
    "Authenticated",
    "CloseRequested",
    "Event",
    "IdleEnded",
    "IdleStarted",
    "ImapSession",
    "StartTLSRequested",
    "State",
]


class State(Enum):
    NOT_AUTHENTICATED = auto()
    AUTHENTICATED = auto()
    SELECTED = auto()
    LOGOUT = auto()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something the driver must act on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTLSRequested(Event):
    """Flush ``data_to_send()``, run the TLS handshake, then ``tls_established()``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticated(Event):
    """The client logged in as ``user`` (for throttling and logs)."""

    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleStarted(Event):
    """The client idles: call ``poll()`` when the selected mailbox
    (``ImapSession.selected``) may have changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleEnded(Event):
    """The client ended IDLE."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseRequested(Event):
    """Flush ``data_to_send()`` and close the connection."""


_ANY = {c.Capability, c.Noop, c.Logout, c.Id}
_NOT_AUTH = {c.StartTLS, c.Authenticate, c.Login}
_AUTH = {
    c.Enable, c.Select, c.Create, c.Delete, c.Rename, c.Subscribe, c.Unsubscribe, c.List,
    c.Namespace, c.Status, c.Append, c.Idle, c.GetQuota, c.GetQuotaRoot,
}  # fmt: skip
_SELECTED = {
    c.Close, c.Unselect, c.Expunge, c.Search, c.Sort, c.Thread, c.Fetch, c.Store, c.Copy,
    c.Move, c.Check,
}  # fmt: skip
_ALLOWED: dict[State, set[type[c.Command]]] = {
    State.NOT_AUTHENTICATED: _ANY | _NOT_AUTH,
    State.AUTHENTICATED: _ANY | _AUTH,
    State.SELECTED: _ANY | _AUTH | _SELECTED,
    State.LOGOUT: set(),
}
#: Commands during which EXPUNGE responses may not be sent (RFC 9051 7.5.1).
_NO_EXPUNGE = {c.Fetch, c.Store, c.Search}
_BASE_CAPS = ["IMAP4rev2", "IMAP4rev1", "LITERAL+", "ENABLE", "ID", "IDLE", "SASL-IR"]
_AUTH_CAPS = [
    "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "ESEARCH",
    "SEARCHRES", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE",
    "STATUS=SIZE", "BINARY", "UTF8=ACCEPT", "QUOTA",
]  # fmt: skip
_ENABLEABLE = {"UTF8=ACCEPT", "CONDSTORE", "QRESYNC", "IMAP4REV2"}


@dataclass(slots=True)
class _Selected:
    name: str
    read_only: bool
    uidvalidity: int
    messages: list[MessageInfo]
    #: The backend's list ``messages`` last matched whole (nothing left to report),
    #: or None: when the backend hands out that same list again, nothing changed.
    synced: list[MessageInfo] | None = None
    #: Parsed headers of this mailbox's messages by (UID, MODSEQ): the backend's
    #: shared map when it has a ``fetch_cache``, else the session's own.
    headers: HeaderMap = field(default_factory=lambda: _OwnHeaders())
    #: The code of a refused change: READ-ONLY after EXAMINE, NOPERM when the
    #: backend said the user may not change the mailbox (another user's, shared).
    refusal: str = "READ-ONLY"


def _uid_of(m: MessageInfo) -> int:
    return m.uid


class ImapSession:
    """One IMAP connection's server side, sans-IO."""

    def __init__(
        self,
        backend: Backend,
        limits: ImapLimits | None = None,
        *,
        tls: bool = False,
        greeting: str = "IMAP4rev2 server ready",
    ) -> None:
        self.limits = limits or ImapLimits()
        self.backend = backend
        self.tls = tls
        self.state = State.NOT_AUTHENTICATED
        self.enabled: set[str] = set()
        self.user: str | None = None
        self._parser = CommandParser(self.limits)
        self._out = bytearray()
        self._selected: _Selected | None = None
        self._idle_tag: str | None = None
        self._auth_tag: str | None = None
        self._saved: list[int] = []
        #: The backend's optional ``fetch_cache`` (looked up once logged in), or None.
        self._cache: FetchCache | None = None
        self._cache_known = False
        self._backlog: deque[ParserEvent] = deque()
        self._out += r.untagged_status("OK", greeting, self._capability_code())

    # -- driver API ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the client (``b""`` at EOF); returns events to act on."""
        if self.state is State.LOGOUT:
            return []
        if not data:
            self.state = State.LOGOUT
            self._backlog.clear()
            return [CloseRequested()]
        self._backlog.extend(self._parser.receive_data(data))
        return self.resume()

    def resume(self) -> list[Event]:
        """Run the pipelined commands held back while output was pending (call it,
        after sending ``data_to_send()``, instead of reading while ``wants_read`` is
        false); returns events to act on."""
        events: list[Event] = []
        while self._backlog and self.state is not State.LOGOUT:
            if len(self._out) > self.limits.max_pending_output:
                break
            item = self._backlog.popleft()
            if isinstance(item, CommandReceived):
                self._dispatch(item.command, events)
            elif isinstance(item, CommandRejected):
                self._out += r.tagged(item.tag, item.status, item.text, item.code)
            elif isinstance(item, ContinuationNeeded):
                self._out += r.continuation("Ready for literal data")
            elif isinstance(item, LineReceived):
                self._sasl_response(item.line, events)
            elif isinstance(item, IdleDone):
                tag, self._idle_tag = self._idle_tag or "*", None
                events.append(IdleEnded())
                if item.ok:
                    self._out += r.tagged(tag, "OK", "IDLE terminated")
                else:
                    self._out += r.tagged(tag, "BAD", "expected DONE")
            elif isinstance(item, ProtocolViolation):
                self._out += r.untagged_status("BYE", item.text)
                self.state = State.LOGOUT
                events.append(CloseRequested())
        if self.state is State.LOGOUT:
            self._backlog.clear()
        return events

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def wants_read(self) -> bool:
        """False while more than ``max_pending_output`` bytes wait to be sent or
        pipelined commands wait their turn: the driver sends ``data_to_send()`` and
        calls ``resume()`` instead of reading more."""
        return not self._backlog and len(self._out) <= self.limits.max_pending_output

    @property
    def buffered(self) -> int:
        """Bytes of client input held (unparsed, or a command being assembled)."""
        return self._parser.buffered

    @property
    def selected(self) -> str | None:
        """The selected mailbox's name (what IDLE watches), None when none is."""
        return self._selected.name if self._selected is not None else None

    def tls_established(self) -> None:
        """The driver finished the TLS handshake that STARTTLS asked for."""
        self.tls = True

    def poll(self) -> None:
        """The store may have changed: queue the untagged updates (used while idling)."""
        if self._selected is not None:
            self._sync(expunges=True)

    # -- helpers -----------------------------------------------------------------------

    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    def capabilities(self) -> list[str]:
        caps = list(_BASE_CAPS)
        if self.state is State.NOT_AUTHENTICATED:
            if self.tls:
                caps.append("AUTH=PLAIN")
            else:
                caps += ["STARTTLS", "LOGINDISABLED"]
        else:
            caps += [*_AUTH_CAPS, f"APPENDLIMIT={self.limits.max_append}"]
        return caps

    def _capability_code(self) -> str:
        return "CAPABILITY " + " ".join(self.capabilities())

    def _name(self, raw: bytes) -> str:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BackendError("mailbox name is not UTF-8", "CANNOT") from None
        if text.upper() == "INBOX":
            return "INBOX"
        if self.utf8:
            return text
        try:
            return mutf7.decode(text)
        except ValueError:
            raise BackendError("bad modified UTF-7 mailbox name", "CANNOT") from None

    def _ok(self, tag: str, text: str, code: str | None = None) -> None:
        self._out += r.tagged(tag, "OK", text, code)

    # -- dispatch -------------------------------------------------------------------------

    def _dispatch(self, cmd: c.Command, events: list[Event]) -> None:
        if type(cmd) not in _ALLOWED[self.state]:
            self._out += r.tagged(cmd.tag, "BAD", f"{cmd.name} not allowed now")
            return
        handler = getattr(self, "_cmd_" + type(cmd).__name__.lower())
        start = len(self._out)
        try:
            handler(cmd, events)
        except BackendError as exc:
            self._out += r.tagged(cmd.tag, "NO", exc.text, exc.code)
        if (
            self._selected is not None
            and self.state is State.SELECTED
            and self._idle_tag is None
            and not isinstance(cmd, c.Select | c.Close | c.Unselect | c.Logout)
        ):
            # The mailbox's changes go before the tagged completion: after it no command
            # is in progress, and EXPUNGE may then not be sent (RFC 9051 7.5.1).
            end = len(self._out)
            last = self._out.rfind(b"\r\n", start, max(start, end - 2))
            tail = last + 2 if last >= 0 else start
            if not self._out.startswith(cmd.tag.encode() + b" ", tail):
                tail = end
            completion = bytes(self._out[tail:])
            del self._out[tail:]
            self._sync(expunges=type(cmd) not in _NO_EXPUNGE or getattr(cmd, "uid", False))
            self._out += completion

    def _cmd_capability(self, cmd: c.Capability, events: list[Event]) -> None:
        self._out += r.untagged(("CAPABILITY " + " ".join(self.capabilities())).encode())
        self._ok(cmd.tag, "CAPABILITY completed")

    def _cmd_noop(self, cmd: c.Command, events: list[Event]) -> None:
        self._ok(cmd.tag, f"{cmd.name} completed")

    _cmd_check = _cmd_noop

    def _cmd_logout(self, cmd: c.Logout, events: list[Event]) -> None:
        self._out += r.untagged_status("BYE", "logging out")
        self._ok(cmd.tag, "LOGOUT completed")
        self.state = State.LOGOUT
        events.append(CloseRequested())

    def _cmd_id(self, cmd: c.Id, events: list[Event]) -> None:
        self._out += r.untagged(b'ID ("name" "internet_mail")')
        self._ok(cmd.tag, "ID completed")

    def _cmd_starttls(self, cmd: c.StartTLS, events: list[Event]) -> None:
        if self.tls:
            self._out += r.tagged(cmd.tag, "BAD", "TLS already active")
            return
        self._ok(cmd.tag, "Begin TLS negotiation now")
        # Whatever followed STARTTLS came in clear: drop it, never run it under TLS.
        self._backlog.clear()
        self._parser = CommandParser(self.limits)
        events.append(StartTLSRequested())

    def _login_done(self, tag: str, user: str, password: str, events: list[Event]) -> None:
        if not self.backend.authenticate(user, password):
            self._out += r.tagged(tag, "NO", "invalid credentials", "AUTHENTICATIONFAILED")
            return
        self.user = user
        self.state = State.AUTHENTICATED
        events.append(Authenticated(user=user))
        self._ok(tag, "logged in", self._capability_code())

    def _cmd_login(self, cmd: c.Login, events: list[Event]) -> None:
        if not self.tls:
            self._out += r.tagged(cmd.tag, "NO", "LOGIN needs TLS", "PRIVACYREQUIRED")
            return
        try:
            user, password = cmd.user.decode("utf-8"), cmd.password.decode("utf-8")
        except UnicodeDecodeError:
            self._out += r.tagged(cmd.tag, "NO", "invalid credentials", "AUTHENTICATIONFAILED")
            return
        self._login_done(cmd.tag, user, password, events)

    def _cmd_authenticate(self, cmd: c.Authenticate, events: list[Event]) -> None:
        if cmd.mechanism != "PLAIN":
            self._out += r.tagged(cmd.tag, "NO", "unsupported mechanism", "CANNOT")
            return
        if not self.tls:
            self._out += r.tagged(cmd.tag, "NO", "AUTHENTICATE needs TLS", "PRIVACYREQUIRED")
            return
        if cmd.initial_response is None:
            self._auth_tag = cmd.tag
            self._parser.expect_line()
            self._out += b"+ \r\n"
            return
        self._plain(cmd.tag, cmd.initial_response, events)

    def _sasl_response(self, line: bytes, events: list[Event]) -> None:
        tag, self._auth_tag = self._auth_tag or "*", None
        if line == b"*":
            self._out += r.tagged(tag, "BAD", "authentication cancelled")
            return
        try:
            data = binascii.a2b_base64(line, strict_mode=True) if line else b""
        except binascii.Error:
            self._out += r.tagged(tag, "BAD", "bad base64")
            return
        self._plain(tag, data, events)

    def _plain(self, tag: str, data: bytes, events: list[Event]) -> None:
        parts = data.split(b"\x00")
        try:
            if len(parts) != 3:
                raise UnicodeDecodeError("utf-8", b"", 0, 1, "not PLAIN")
            authz, user, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            self._out += r.tagged(tag, "NO", "invalid credentials", "AUTHENTICATIONFAILED")
            return
        if authz and authz != user:
            self._out += r.tagged(tag, "NO", "no proxy authorization", "AUTHORIZATIONFAILED")
            return
        self._login_done(tag, user, password, events)

    def _cmd_enable(self, cmd: c.Enable, events: list[Event]) -> None:
        new = [cap for cap in cmd.capabilities if cap in _ENABLEABLE and cap not in self.enabled]
        self.enabled.update(new)
        if "QRESYNC" in new:
            self.enabled.add("CONDSTORE")
        self._out += r.untagged(" ".join(["ENABLED", *new]).encode())
        self._ok(cmd.tag, "ENABLE completed")

    # -- mailboxes ------------------------------------------------------------------------

    def _cmd_select(self, cmd: c.Select, events: list[Event]) -> None:
        if cmd.qresync is not None and "QRESYNC" not in self.enabled:
            # RFC 7162 3.2.5: the parameter is refused unless QRESYNC was enabled.
            self._out += r.tagged(cmd.tag, "BAD", "ENABLE QRESYNC first")
            return
        if self._selected is not None and "QRESYNC" in self.enabled:
            # RFC 7162 3.2.11: the mailbox selected so far is closed.
            self._out += r.untagged_status("OK", "previous mailbox closed", "CLOSED")
        self._selected = None
        self.state = State.AUTHENTICATED
        name = self._name(cmd.mailbox)
        state = self.backend.state(name)
        listed = self.backend.messages(name)
        messages = list(listed)  # ours to change; the backend's list stays as it was
        if cmd.condstore:
            self.enabled.add("CONDSTORE")
        read_only = cmd.read_only or state.read_only
        self._selected = _Selected(name, read_only, state.uidvalidity, messages, listed)
        if state.read_only:
            self._selected.refusal = "NOPERM"
        cache = self._fetch_cache()
        if cache is not None:
            self._selected.headers = cache.headers(name, state.uidvalidity)
        self.state = State.SELECTED
        self._out += r.untagged(b"%d EXISTS" % len(messages))
        self._out += r.untagged(b"FLAGS " + r.flag_list(state.flags))
        perm = () if read_only else (*state.flags, "\\*")
        self._out += r.untagged_status(
            "OK", "permanent flags", "PERMANENTFLAGS " + r.flag_list(perm).decode()
        )
        self._out += r.untagged_status("OK", "UIDs valid", f"UIDVALIDITY {state.uidvalidity}")
        self._out += r.untagged_status("OK", "predicted next UID", f"UIDNEXT {state.uidnext}")
        self._out += r.untagged_status("OK", "highest", f"HIGHESTMODSEQ {state.highestmodseq}")
        if cmd.qresync and cmd.qresync.uidvalidity == state.uidvalidity:
            since = cmd.qresync.modseq
            self._vanished_earlier(name, since, cmd.qresync.known_uids, messages)
            for seq, m in enumerate(messages, 1):
                if m.modseq > since:
                    self._fetch_one(seq, m, [c.FetchAttribute("UID"), c.FetchAttribute("FLAGS"),
                                             c.FetchAttribute("MODSEQ")])  # fmt: skip
        mode = "READ-ONLY" if read_only else "READ-WRITE"
        self._ok(cmd.tag, f"{'EXAMINE' if cmd.read_only else 'SELECT'} completed", mode)

    def _vanished_earlier(
        self,
        name: str,
        since: int,
        wanted: c.SequenceSet | None,
        present: list[MessageInfo],
    ) -> None:
        """``* VANISHED (EARLIER)`` for the UIDs that left mailbox ``name`` after modseq
        ``since`` and that ``wanted`` names (all when None; RFC 7162 3.2.5, 3.2.6)."""
        gone = self.backend.vanished(name, since)
        if wanted is not None and wanted.saved:
            saved = set(self._saved)
            gone = [u for u in gone if u in saved]
        elif wanted is not None and gone:
            # "*" is the largest UID the mailbox has used, gone or present.
            largest = max(gone[-1], present[-1].uid if present else 0)
            spans = wanted.resolve(largest)
            gone = [u for u in gone if any(a <= u <= b for a, b in spans)]
        if gone:
            self._out += r.untagged(b"VANISHED (EARLIER) " + r.sequence_text(gone).encode())

    def _cmd_close(self, cmd: c.Command, events: list[Event]) -> None:
        sel = self._selected
        assert sel is not None
        if isinstance(cmd, c.Close) and not sel.read_only:
            self.backend.expunge(sel.name, None)
        self._selected = None
        self.state = State.AUTHENTICATED
        self._ok(cmd.tag, f"{cmd.name} completed")

    _cmd_unselect = _cmd_close

    def _cmd_create(self, cmd: c.Create, events: list[Event]) -> None:
        name = self._name(cmd.mailbox).rstrip("/")
        if name == "INBOX":
            raise BackendError("INBOX exists", "ALREADYEXISTS")
        self.backend.create(name, cmd.special_use)
        self._ok(cmd.tag, "mailbox created")

    def _cmd_delete(self, cmd: c.Delete, events: list[Event]) -> None:
        name = self._name(cmd.mailbox)
        if name == "INBOX":
            raise BackendError("INBOX cannot be deleted", "CANNOT")
        self.backend.delete(name)
        self._ok(cmd.tag, "mailbox deleted")

    def _cmd_rename(self, cmd: c.Rename, events: list[Event]) -> None:
        self.backend.rename(self._name(cmd.old), self._name(cmd.new))
        self._ok(cmd.tag, "RENAME completed")

    def _cmd_subscribe(self, cmd: c.Subscribe | c.Unsubscribe, events: list[Event]) -> None:
        self.backend.subscribe(self._name(cmd.mailbox), isinstance(cmd, c.Subscribe))
        self._ok(cmd.tag, f"{cmd.name} completed")

    _cmd_unsubscribe = _cmd_subscribe

    def _cmd_namespace(self, cmd: c.Namespace, events: list[Event]) -> None:
        # RFC 9051 7.3.1: personal, other users', shared. A backend that shows other
        # users' mailboxes names its prefix (optional ``other_users_prefix``).
        other: str | None = getattr(self.backend, "other_users_prefix", None)
        others = b"NIL" if not other else b"((" + r.mailbox_name(other, utf8=self.utf8) + b' "/"))'
        self._out += r.untagged(b'NAMESPACE (("" "/")) ' + others + b" NIL")
        self._ok(cmd.tag, "NAMESPACE completed")

    def _cmd_list(self, cmd: c.List, events: list[Event]) -> None:
        reference = self._name(cmd.reference) if cmd.reference else ""
        patterns = [reference + self._name(p) if p else "" for p in cmd.patterns]
        if patterns == [""]:
            self._out += r.untagged(b'LIST (\\Noselect) "/" ""')
            self._ok(cmd.tag, "LIST completed")
            return
        boxes = self.backend.list_mailboxes()
        subscribed_only = "SUBSCRIBED" in cmd.selection or cmd.lsub
        special_only = "SPECIAL-USE" in cmd.selection
        for box in boxes:
            if not any(_match(p, box.name) for p in patterns):
                continue
            if (subscribed_only and not box.subscribed) or (special_only and not box.special_use):
                continue
            self._out += r.list_response(
                self._attributes(box, cmd), "/", box.name, utf8=self.utf8, lsub=cmd.lsub
            )
            if cmd.status_items and "\\Noselect" not in box.attributes:
                self._status(box.name, cmd.status_items)
        self._ok(cmd.tag, f"{'LSUB' if cmd.lsub else 'LIST'} completed")

    def _attributes(self, box: MailboxInfo, cmd: c.List) -> list[str]:
        attrs = list(box.attributes)
        if box.subscribed and ("SUBSCRIBED" in cmd.selection or "SUBSCRIBED" in cmd.returns):
            attrs.append("\\Subscribed")
        if not cmd.lsub:
            attrs += box.special_use
        return attrs

    def _status(self, name: str, items: tuple[str, ...]) -> None:
        state = self.backend.state(name)
        values = {
            "MESSAGES": state.messages,
            "UIDNEXT": state.uidnext,
            "UIDVALIDITY": state.uidvalidity,
            "UNSEEN": state.unseen,
            "DELETED": state.deleted,
            "SIZE": state.size,
            "RECENT": 0,
            "HIGHESTMODSEQ": state.highestmodseq,
            "APPENDLIMIT": self.limits.max_append,
        }
        self._out += r.status_response(name, {k: values[k] for k in items}, utf8=self.utf8)

    def _cmd_status(self, cmd: c.Status, events: list[Event]) -> None:
        self._status(self._name(cmd.mailbox), cmd.items)
        self._ok(cmd.tag, "STATUS completed")

    def _cmd_append(self, cmd: c.Append, events: list[Event]) -> None:
        name = self._name(cmd.mailbox)
        try:
            self.backend.state(name)
        except BackendError:
            raise BackendError("no such mailbox", "TRYCREATE") from None
        validity, uid = self.backend.append(
            name, cmd.message, frozenset(f for f in cmd.flags if f != "\\Recent"), cmd.date
        )
        self._ok(cmd.tag, "APPEND completed", f"APPENDUID {validity} {uid}")

    def _cmd_idle(self, cmd: c.Idle, events: list[Event]) -> None:
        self._idle_tag = cmd.tag
        self._parser.expect_done()
        self._out += r.continuation("idling")
        events.append(IdleStarted())

    def _cmd_getquota(self, cmd: c.GetQuota | c.GetQuotaRoot, events: list[Event]) -> None:
        root = "" if isinstance(cmd, c.GetQuotaRoot) else self._name(cmd.root)
        if isinstance(cmd, c.GetQuotaRoot):
            mailbox = self._name(cmd.mailbox)
            self._out += r.untagged(
                b"QUOTAROOT " + r.mailbox_name(mailbox, utf8=self.utf8) + b' ""'
            )
        quota = self.backend.quota(root)
        if quota is None:
            if isinstance(cmd, c.GetQuota):
                raise BackendError("no such quota root", "NONEXISTENT")
        else:
            body = b" ".join(f"{res} {use} {lim}".encode() for res, use, lim in quota)
            self._out += r.untagged(b'QUOTA "" (' + body + b")")
        self._ok(cmd.tag, f"{cmd.name} completed")

    _cmd_getquotaroot = _cmd_getquota

    # -- selected state -------------------------------------------------------------------

    def _sel(self) -> _Selected:
        assert self._selected is not None
        return self._selected

    def _targets(self, seqset: c.SequenceSet, uid: bool) -> list[tuple[int, MessageInfo]]:
        """(sequence number, message) pairs the set names, ascending."""
        msgs = self._sel().messages
        if seqset.saved:
            saved = set(self._saved)
            return [(i + 1, m) for i, m in enumerate(msgs) if m.uid in saved]
        # The snapshot is in ascending uid order (sequence order), so each range is one
        # slice of it, found by bisection: a command names a few messages of a big
        # mailbox without a pass over all of them.
        slices: list[tuple[int, int]] = []  # [start, stop) indexes into msgs
        if uid:
            largest = msgs[-1].uid if msgs else 0
            for a, b in seqset.resolve(largest):
                slices.append(
                    (bisect_left(msgs, a, key=_uid_of), bisect_right(msgs, b, key=_uid_of))
                )
        else:
            for a, b in seqset.resolve(len(msgs)):
                if b > len(msgs) or a < 1:
                    raise _BadSequence()
                slices.append((a - 1, b))
        if len(slices) == 1:
            start, stop = slices[0]
            return [(i + 1, msgs[i]) for i in range(start, stop)]
        picked = sorted({i for start, stop in slices for i in range(start, stop)})
        return [(i + 1, msgs[i]) for i in picked]

    def _cmd_fetch(self, cmd: c.Fetch, events: list[Event]) -> None:
        sel = self._sel()
        try:
            targets = self._targets(cmd.sequence, cmd.uid)
        except _BadSequence:
            self._out += r.tagged(cmd.tag, "BAD", "invalid sequence number")
            return
        attrs = list(cmd.attributes)
        if cmd.vanished:
            if "QRESYNC" not in self.enabled:
                # RFC 7162 3.2.6: VANISHED is refused unless QRESYNC was enabled.
                self._out += r.tagged(cmd.tag, "BAD", "ENABLE QRESYNC first")
                return
            assert cmd.changed_since is not None  # the grammar asks for it
            self._vanished_earlier(sel.name, cmd.changed_since, cmd.sequence, sel.messages)
        if cmd.changed_since is not None:
            self.enabled.add("CONDSTORE")
            targets = [(s, m) for s, m in targets if m.modseq > cmd.changed_since]
            if not any(a.name == "MODSEQ" for a in attrs):
                attrs.append(c.FetchAttribute("MODSEQ"))
        sets_seen = not sel.read_only and any(
            a.name in ("BODY", "BINARY", "RFC822", "RFC822.TEXT")
            and (a.section or a.name != "BODY")
            and not a.peek
            for a in attrs
        )
        if sets_seen:
            unseen = [m.uid for _, m in targets if "\\Seen" not in m.flags]
            if unseen:
                self.backend.store(sel.name, unseen, "+", frozenset({"\\Seen"}))
                fresh = {m.uid: m for m in self.backend.messages(sel.name)}
                targets = [(s, fresh.get(m.uid, m)) for s, m in targets]
                if not any(a.name == "FLAGS" for a in attrs):
                    attrs.append(c.FetchAttribute("FLAGS"))
        for seq, info in targets:
            self._fetch_one(seq, info, attrs)
            # Flags just reported need no second report from _sync.
            sel.messages[seq - 1] = info
        self._ok(cmd.tag, "FETCH completed")

    def _fetch_one(self, seq: int, info: MessageInfo, attrs: list[c.FetchAttribute]) -> None:
        sel = self._sel()
        items: list[bytes] = []
        part: Part | None = None
        raw: bytes | None = None
        for a in attrs:
            name = a.name
            if name == "UID":
                items.append(b"UID %d" % info.uid)
            elif name == "FLAGS":
                items.append(b"FLAGS " + r.flag_list(sorted(info.flags)))
            elif name == "RFC822.SIZE":
                items.append(b"RFC822.SIZE %d" % info.size)
            elif name == "INTERNALDATE":
                items.append(b"INTERNALDATE " + r.date_time(info.internal_date))
            elif name == "MODSEQ":
                items.append(b"MODSEQ (%d)" % info.modseq)
            elif name == "ENVELOPE":
                items.append(b"ENVELOPE " + self._envelope(info, part))
            else:
                if raw is None:
                    raw = self.backend.body(sel.name, info.uid)
                if part is None and not _whole_message(a):
                    part = Part.parse(raw)  # the whole message needs no parsing
                items.append(self._fetch_body_item(a, raw, part))
        self._out += r.untagged(b"%d FETCH " % seq + r.paren(items))

    def _derived(
        self, info: MessageInfo, what: str
    ) -> tuple[FetchCache | None, tuple[object, ...]]:
        """The backend's optional cache and the key of ``what`` derived from ``info``'s
        message: (mailbox, UIDVALIDITY, UID) name the message, MODSEQ its version."""
        sel = self._sel()
        return self._fetch_cache(), (sel.name, sel.uidvalidity, info.uid, info.modseq, what)

    def _fetch_cache(self) -> FetchCache | None:
        """The backend's optional cache (looked up once, after login: by user)."""
        if not self._cache_known:
            self._cache = getattr(self.backend, "fetch_cache", None)
            self._cache_known = True
        return self._cache

    def _header_part(self, info: MessageInfo) -> Part:
        """The message's header as a part (from the cache, the backend's optional header
        read, or the whole message)."""
        sel = self._sel()
        headers = sel.headers
        found = headers.get((info.uid, info.modseq))
        if isinstance(found, Part):
            return found
        read: Callable[[str, int], bytes] | None = getattr(self.backend, "header", None)
        part = Part.parse_header((read or self.backend.body)(sel.name, info.uid))
        if len(headers) > 2 * len(sel.messages) + 100:  # versions of changed messages
            headers.reset()
        headers.put((info.uid, info.modseq), part, 256 + 3 * len(part.header))
        return part

    def _envelope(self, info: MessageInfo, part: Part | None) -> bytes:
        cache, key = self._derived(info, "ENVELOPE")
        if cache is not None:
            found = cache.get(key)
            if isinstance(found, bytes):
                return found
        envelope = (part or self._header_part(info)).envelope()
        if cache is not None:
            cache.put(key, envelope, 64 + len(envelope))
        return envelope

    def _fetch_body_item(self, a: c.FetchAttribute, raw: bytes, part: Part | None) -> bytes:
        """One item that reads the message; ``part`` is ``raw`` parsed, None only for
        the items that take the whole message (:func:`_whole_message`)."""
        name = a.name
        if name == "RFC822":
            return b"RFC822 " + r.literal(raw)
        if _whole_message(a):  # header and body together are the bytes as stored
            return self._section_answer(a, _section_label(name, c.Section()), raw)
        assert part is not None
        if name == "BODYSTRUCTURE":
            return b"BODYSTRUCTURE " + part.body_structure(True)
        if name == "BODY" and a.section is None:
            return b"BODY " + part.body_structure(False)
        if name == "RFC822.HEADER":
            return b"RFC822.HEADER " + r.literal(part.header)
        if name == "RFC822.TEXT":
            return b"RFC822.TEXT " + r.literal(part.body)
        if name in ("SAVEDATE", "EMAILID", "THREADID"):
            return name.encode() + b" NIL"
        section = a.section or c.Section()
        label = _section_label(name, section)
        if name.startswith("BINARY"):  # a part's content, transfer encoding removed
            found = part.find(section.part)
            data = None if found is None else transfer_decoded(found)
            if found is not None and data is None:
                raise BackendError("unknown Content-Transfer-Encoding", "UNKNOWN-CTE")
            return self._section_answer(a, label, data)
        return self._section_answer(a, label, part.section(section))

    def _section_answer(self, a: c.FetchAttribute, label: bytes, data: bytes | None) -> bytes:
        name = a.name
        if name == "BINARY.SIZE":
            return label + b" %d" % len(data or b"")
        if data is None:
            return label + b" NIL"
        if a.partial is not None:
            origin, length = a.partial
            data = data[origin : origin + length]
            label += b"<%d>" % origin
        return label + b" " + r.literal(data, binary=name == "BINARY" and b"\x00" in data)

    def _cmd_store(self, cmd: c.Store, events: list[Event]) -> None:
        sel = self._sel()
        if sel.read_only:
            raise BackendError("mailbox is read-only", sel.refusal)
        try:
            targets = self._targets(cmd.sequence, cmd.uid)
        except _BadSequence:
            self._out += r.tagged(cmd.tag, "BAD", "invalid sequence number")
            return
        if cmd.unchanged_since is not None:
            self.enabled.add("CONDSTORE")
        failed = self.backend.store(
            sel.name,
            [m.uid for _, m in targets],
            cmd.mode,
            frozenset(f for f in cmd.flags if f != "\\Recent"),
            cmd.unchanged_since,
        )
        fresh = {m.uid: m for m in self.backend.messages(sel.name)}
        attrs = [c.FetchAttribute("FLAGS")]
        if cmd.uid:
            attrs.append(c.FetchAttribute("UID"))
        if "CONDSTORE" in self.enabled:
            attrs.append(c.FetchAttribute("MODSEQ"))
        for seq, info in targets:
            now = fresh.get(info.uid)
            if now is None or info.uid in failed:
                continue
            if not cmd.silent or (now.modseq != info.modseq and cmd.unchanged_since is not None):
                self._fetch_one(seq, now, attrs)
            sel.messages[seq - 1] = now
        code = None
        if failed:
            code = "MODIFIED " + r.sequence_text(sorted(failed))
        self._ok(cmd.tag, "STORE completed", code)

    def _cmd_copy(self, cmd: c.Copy | c.Move, events: list[Event]) -> None:
        sel = self._sel()
        move = isinstance(cmd, c.Move)
        if move and sel.read_only:
            raise BackendError("mailbox is read-only", sel.refusal)
        try:
            targets = self._targets(cmd.sequence, cmd.uid)
        except _BadSequence:
            self._out += r.tagged(cmd.tag, "BAD", "invalid sequence number")
            return
        target = self._name(cmd.mailbox)
        try:
            self.backend.state(target)
        except BackendError:
            raise BackendError("no such mailbox", "TRYCREATE") from None
        uids = [m.uid for _, m in targets]
        if not uids:
            self._ok(cmd.tag, f"{cmd.name} completed")
            return
        validity, new = self.backend.copy(sel.name, uids, target, move=move)
        code = f"COPYUID {validity} {r.sequence_text(uids)} {','.join(map(str, new))}"
        if move:
            self._out += r.untagged_status("OK", "moved", code)
            self._sync(expunges=True)  # RFC 6851 3.3: EXPUNGEs before the tagged OK
            self._ok(cmd.tag, "MOVE completed")
        else:
            self._ok(cmd.tag, "COPY completed", code)

    _cmd_move = _cmd_copy

    def _cmd_expunge(self, cmd: c.Expunge, events: list[Event]) -> None:
        sel = self._sel()
        if sel.read_only:
            raise BackendError("mailbox is read-only", sel.refusal)
        uids = None
        if cmd.uids is not None:
            uids = [m.uid for _, m in self._targets(cmd.uids, True)]
        self.backend.expunge(sel.name, uids)
        self._sync(expunges=True)
        self._ok(cmd.tag, "EXPUNGE completed")

    def _search_uids(self, criteria: c.SearchKey) -> list[tuple[int, MessageInfo]]:
        sel = self._sel()
        msgs = sel.messages
        largest_uid = msgs[-1].uid if msgs else 0
        found: list[tuple[int, MessageInfo]] = []
        backend, name = self.backend, sel.name

        def loader(uid: int) -> Callable[[], Part]:
            return lambda: Part.parse(backend.body(name, uid))

        def header_loader(info: MessageInfo) -> Callable[[], Part]:
            return lambda: self._header_part(info)

        whole = _reads_body(criteria)
        for i, m in enumerate(msgs):
            load = loader(m.uid) if whole else header_loader(m)
            ctx = Context(m, i + 1, len(msgs), largest_uid, load, self._saved)
            if matches(criteria, ctx):
                found.append((i + 1, m))
        return found

    def _cmd_search(self, cmd: c.Search, events: list[Event]) -> None:
        if cmd.charset not in (None, "UTF-8", "US-ASCII"):
            raise BackendError("unsupported charset", "BADCHARSET (UTF-8)")
        found = self._search_uids(cmd.criteria)
        numbers = [m.uid if cmd.uid else seq for seq, m in found]
        if cmd.returns is None:
            line = " ".join(["SEARCH", *map(str, numbers)])
            if "CONDSTORE" in self.enabled and _uses_modseq(cmd.criteria) and found:
                line += f" (MODSEQ {max(m.modseq for _, m in found)})"
            self._out += r.untagged(line.encode())
        else:
            opts = set(cmd.returns) or {"ALL"}
            parts = [f'ESEARCH (TAG "{cmd.tag}")']
            if cmd.uid:
                parts.append("UID")
            if numbers and "MIN" in opts:
                parts.append(f"MIN {numbers[0]}")
            if numbers and "MAX" in opts:
                parts.append(f"MAX {numbers[-1]}")
            if numbers and "ALL" in opts:
                parts.append(f"ALL {r.sequence_text(numbers)}")
            if "COUNT" in opts:
                parts.append(f"COUNT {len(numbers)}")
            if "SAVE" in opts:
                self._saved = [m.uid for _, m in found]
            if opts - {"SAVE"}:
                self._out += r.untagged(" ".join(parts).encode())
        self._ok(cmd.tag, "SEARCH completed")

    def _cmd_sort(self, cmd: c.Command, events: list[Event]) -> None:
        self._out += r.tagged(cmd.tag, "NO", f"{cmd.name} is not served yet", "CANNOT")

    _cmd_thread = _cmd_sort

    # -- mailbox updates ------------------------------------------------------------------

    def _sync(self, *, expunges: bool) -> None:
        sel = self._sel()
        try:
            now = self.backend.messages(sel.name)
        except BackendError:
            self._out += r.untagged_status("BYE", "mailbox was deleted")
            self.state = State.LOGOUT
            return
        if now is sel.synced:
            return  # the very list matched last time, and the backend never changes one
        current = {m.uid: m for m in now}
        if expunges:
            if "QRESYNC" in self.enabled:  # RFC 7162 3.2.10: VANISHED, not EXPUNGE
                gone = [m.uid for m in sel.messages if m.uid not in current]
                if gone:
                    sel.messages = [m for m in sel.messages if m.uid in current]
                    self._out += r.untagged(b"VANISHED " + r.sequence_text(gone).encode())
            else:
                for seq in range(len(sel.messages), 0, -1):
                    if sel.messages[seq - 1].uid not in current:
                        del sel.messages[seq - 1]
                        self._out += r.untagged(b"%d EXPUNGE" % seq)
        kept = {m.uid for m in sel.messages}
        for seq, old in enumerate(sel.messages, 1):
            new = current.get(old.uid)
            if new is not None and (new.flags != old.flags or new.modseq != old.modseq):
                sel.messages[seq - 1] = new
                attrs = [c.FetchAttribute("FLAGS")]
                if "CONDSTORE" in self.enabled:
                    attrs += [c.FetchAttribute("UID"), c.FetchAttribute("MODSEQ")]
                self._fetch_one(seq, new, attrs)
        added = [m for m in now if m.uid not in kept and m.uid > (max(kept) if kept else 0)]
        if added:
            sel.messages.extend(added)
            self._out += r.untagged(b"%d EXISTS" % len(sel.messages))
        # Everything reported (no expunge held back): the same list next time needs no pass.
        sel.synced = now if len(sel.messages) == len(now) else None


class _BadSequence(Exception):
    pass


class HeaderMap(Protocol):
    """One mailbox's parsed headers by (UID, MODSEQ) (:meth:`FetchCache.headers`)."""

    def get(self, key: tuple[int, int], /) -> object | None: ...

    def put(self, key: tuple[int, int], value: object, size: int) -> None: ...

    def reset(self) -> None: ...

    def __len__(self) -> int: ...


class FetchCache(Protocol):
    """What a backend may offer as ``fetch_cache`` (optional): a bounded cache of what the
    session derives from messages (ENVELOPE answers, parsed headers), shared between
    the connections of one user. Keys name the message and its MODSEQ; ``size`` is an
    estimate of the value's memory."""

    def get(self, key: tuple[object, ...]) -> object | None: ...

    def put(self, key: tuple[object, ...], value: object, size: int) -> None: ...

    def headers(self, mailbox: str, uidvalidity: int) -> HeaderMap: ...


class _OwnHeaders(dict[tuple[int, int], object]):
    """A session's own :class:`HeaderMap` (a backend without ``fetch_cache``)."""

    def put(self, key: tuple[int, int], value: object, size: int) -> None:
        self[key] = value

    def reset(self) -> None:
        self.clear()


def _reads_body(key: c.SearchKey) -> bool:
    """Whether a search key needs a message's body (BODY, TEXT), not just its header."""
    if isinstance(key, c.And):
        return any(_reads_body(k) for k in key.keys)
    if isinstance(key, c.Or):
        return _reads_body(key.left) or _reads_body(key.right)
    if isinstance(key, c.Not):
        return _reads_body(key.key)
    return key.name in ("BODY", "TEXT")


def _uses_modseq(key: c.SearchKey) -> bool:
    if isinstance(key, c.And):
        return any(_uses_modseq(k) for k in key.keys)
    if isinstance(key, c.Or):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, c.Not):
        return _uses_modseq(key.key)
    return key.name == "MODSEQ"


def _whole_message(a: c.FetchAttribute) -> bool:
    """Whether a FETCH item is the whole message as stored (``RFC822``, ``BODY[]``,
    ``BINARY[]``, ``BINARY.SIZE[]``): no parsing needed."""
    if a.name == "RFC822":
        return True
    section = a.section
    return (
        a.name in ("BODY", "BINARY", "BINARY.SIZE")
        and section is not None
        and not section.part
        and not section.text
    )


def _section_label(name: str, section: c.Section) -> bytes:
    spec = ".".join(str(n) for n in section.part)
    if section.text:
        spec = f"{spec}.{section.text}" if spec else section.text
    if section.fields:
        spec += " (" + " ".join(section.fields) + ")"
    return f"{name}[{spec}]".encode("latin-1", "replace")


def _match(pattern: str, name: str) -> bool:
    """LIST wildcards ([RFC 9051] 6.3.9): ``*`` any, ``%`` any but the delimiter."""
    if pattern.upper().startswith("INBOX") and name == "INBOX":
        pattern = "INBOX" + pattern[5:]
    p, n = 0, 0
    star_p, star_n, pct = -1, -1, False
    while n < len(name):
        if p < len(pattern) and pattern[p] in "*%":
            star_p, star_n, pct = p, n, pattern[p] == "%"
            p += 1
        elif p < len(pattern) and pattern[p] == name[n]:
            p += 1
            n += 1
        elif star_p >= 0 and not (pct and name[star_n] == "/"):
            star_n += 1
            n = star_n
            p = star_p + 1
        else:
            return False
    while p < len(pattern) and pattern[p] in "*%":
        p += 1
    return p == len(pattern)
