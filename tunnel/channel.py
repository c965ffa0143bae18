"""One HTTP/1.1 connection of RPC over HTTP v2: an ``h11.Connection`` whose request body,
once accepted, is a stream of RPC and RTS PDUs ([MS-RPCH] 2.1.2.1, 2.2.2, 3.2.3).

Theory of operation
-------------------
MS-RPCH tunnels each direction of a virtual connection in one enormous HTTP message:
the client's ``RPC_IN_DATA`` request body (Content-Length 1 GiB) carries client→server
PDUs, and the ``200 Success`` response to ``RPC_OUT_DATA`` (Content-Length 1 GiB)
carries server→client PDUs. :class:`ServerChannel` wraps an h11 server connection
(a core wrapping a core, as wsproto's handshake wraps h11) and runs this cycle:

``HEAD``
    h11 parses the request head; its ``max_incomplete_event_size`` bounds the head
    (``TunnelConfig.max_header_bytes``), so an oversized head is answered 431 and a
    malformed one 400 before the driver sees anything; so is a head with both
    Content-Length and Transfer-Encoding (400, then close: [RFC 9112] 6.1), which h11
    would accept and frame by Transfer-Encoding. A complete head becomes
    :class:`RequestReceived`; the channel then waits for the driver's decision.
``DECIDING``
    The driver authenticates and checks the target (asynchronously, outside the core),
    then calls exactly one of: :meth:`reject` (401 and the like; the connection stays
    usable when the rejected body is small enough to drain, as for impacket's
    Content-Length 0 NTLM leg), :meth:`refuse_rpc` (``HTTP/1.0 503 RPC Error: <hex>``,
    then close), :meth:`respond` (a complete answer: echo, autodiscover) or
    :meth:`accept_rpc` (``100 Continue`` if the client expects it; from then on the body
    is cut into PDUs). No body byte is interpreted before a decision.
``RPC``
    Body bytes go through :class:`dcerpc.framing.PduFramer` (a hostile ``frag_length`` is
    refused before its body is buffered) and come out as :class:`RtsReceived` or
    :class:`RpcPduReceived`. The driver sends the OUT response with
    :meth:`start_out_response` and PDUs with :meth:`send_body`. Both bodies are
    Content-Length framed and long (1 GiB), so past the heads (and what h11 buffered
    with them) the channel counts them itself (:mod:`tunnel.bodies`, shared with the
    client): it refuses body bytes past the announced length, ends the request body
    exactly at its Content-Length, and then expects only the EOF (MS-RPCH recycles
    channels on new connections; nothing follows a channel's body on its connection),
    also when h11 read the whole body with the head.

**HTTP/1.0 with keep-alive.** Some RPC over HTTP clients send their channel requests
as ``HTTP/1.0`` with ``Connection: Keep-Alive``, and the NTLM handshake needs the
connection kept across its 401. h11 closes every HTTP/1.0 connection after one
response, so for such a request (:attr:`RequestReceived.keep_alive`) the channel
writes a kept answer itself (``Connection: keep-alive`` and a Content-Length) and,
once the request is complete, reads the next request with a fresh h11 connection fed
what the old one had buffered. Without the header an HTTP/1.0 connection closes after
its answer, as before.

Receiving may queue an error answer (400/431) before raising
:class:`ChannelError`; the driver flushes :meth:`data_to_send` and closes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import h11

from dcerpc.errors import DecodeError, RemoteProtocolError
from dcerpc.framing import PduFramer
from tunnel.bodies import BodyReader, BodyWriter, framing_length
from tunnel.config import TunnelConfig
from tunnel.rts import RtsMessage, decode_rts, is_rts

#: A rejected request whose body is at most this large is drained, keeping the
#: connection (impacket's NTLM leg is Content-Length 0); larger ones close it.
MAX_DRAIN = 65536
RPC_METHODS = ("RPC_IN_DATA", "RPC_OUT_DATA")


class ChannelState(enum.Enum):
    HEAD = "head"
    DECIDING = "deciding"
    DRAIN = "drain"
    BODY = "body"
    RPC = "rpc"
    CLOSED = "closed"


class ChannelError(RemoteProtocolError):
    """The peer broke HTTP or MS-RPCH; an error answer may be queued. Close after flushing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of the channel's events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived(Event):
    """A complete request head; the driver must decide what to do with it."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None
    expects_continue: bool = False
    http_version: str = "1.1"

    @property
    def keep_alive(self) -> bool:
        """Whether the client asks to keep the connection after the answer (HTTP/1.1
        unless ``Connection: close``; HTTP/1.0 with ``Connection: keep-alive``)."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if "close" in tokens:
            return False
        return self.http_version == "1.1" or (self.http_version == "1.0" and "keep-alive" in tokens)

    @property
    def http10_keep_alive(self) -> bool:
        return self.http_version == "1.0" and self.keep_alive


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyReceived(Event):
    """Bytes of a body accepted with :meth:`ServerChannel.read_body` (not RPC)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RtsReceived(Event):
    """An RTS PDU from an accepted channel's body."""

    message: RtsMessage
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcPduReceived(Event):
    """A DCE/RPC PDU (not RTS) from an accepted channel's body, whole."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyEnded(Event):
    """The request body is complete."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerClosed(Event):
    """The client closed its side of the connection."""


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


class ServerChannel:
    """The server side of one HTTP/1.1 connection to the RPC proxy."""

    def __init__(self, config: TunnelConfig) -> None:
        self.config = config
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)
        self.state = ChannelState.HEAD
        self.request: RequestReceived | None = None
        self._framer = PduFramer(config.max_fragment)
        self._out = bytearray()
        self._partial_head = False
        #: True once an RPC channel's response head is queued (a refusal is then too late).
        self._response_started = False
        #: An accepted RPC channel's request body, read without h11 once h11's buffer is
        #: drained, or the body ended inside it (see :meth:`receive_data`).
        self._body: BodyReader | None = None
        #: The OUT response body, sent without h11 (see :meth:`send_body`).
        self._out_body: BodyWriter | None = None
        #: Headers for the next success answer (:meth:`respond`,
        #: :meth:`start_out_response`): Negotiate's last token.
        self.response_headers: list[tuple[str, str]] = []
        #: The answer to an HTTP/1.0 keep-alive request went out: start a fresh h11
        #: connection once its request is complete (see the module docstring).
        self._renew_after_request = False

    # -- input ---------------------------------------------------------------------------

    @property
    def has_partial_head(self) -> bool:
        """True while part of a request head is buffered (the driver bounds the wait)."""
        return self.state is ChannelState.HEAD and self._partial_head

    @property
    def is_draining(self) -> bool:
        """True while a rejected request's body is read and dropped (the driver bounds the
        wait: the client has not authenticated)."""
        return self.state is ChannelState.DRAIN and self.h11.their_state is h11.SEND_BODY

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes (``b""`` = EOF) and return the events they complete.

        Raises:
            ChannelError: malformed HTTP (an error answer is queued) or a bad PDU.
        """
        if self.state is ChannelState.CLOSED:
            return []
        if self._body is not None and self._body.bypassing:
            return self._raw_body(data, self._body)
        if self.state is ChannelState.HEAD and data:
            self._partial_head = True
        self.h11.receive_data(data)
        return self.next_events()

    def _raw_body(self, data: bytes, body: BodyReader) -> list[Event]:
        """An RPC body's bytes past what h11 buffered, cut into PDUs directly: the body is
        Content-Length framed, so h11 would only count it (at a few microseconds per
        read, per small call). h11 never sees those bytes, so no request may follow the
        body on this connection (MS-RPCH channels are recycled on new connections):
        after it, only the EOF is expected."""
        if not data:
            self.state = ChannelState.CLOSED  # the client is gone (inside the body or not)
            return [PeerClosed()]
        if body.left == 0:
            self.state = ChannelState.CLOSED
            raise ChannelError("bytes after the RPC channel's request body")
        part, extra = body.split(data)
        events = self._pdus(part)
        if body.left:
            return events
        if self._framer.has_partial:
            self.state = ChannelState.CLOSED
            raise ChannelError("the body ended inside a PDU")
        events.append(BodyEnded())
        if extra:
            self.state = ChannelState.CLOSED
            raise ChannelError("bytes after the RPC channel's request body")
        return events

    def next_events(self) -> list[Event]:
        """Events from bytes already received: call after each decision (a request's
        body, or a pipelined request, may be waiting).

        Raises:
            ChannelError: as :meth:`receive_data`.
        """
        if self.state is ChannelState.CLOSED or (self._body is not None and self._body.bypassing):
            return []  # past h11: the body's bytes come through receive_data only
        events: list[Event] = []
        while self.state not in (ChannelState.DECIDING, ChannelState.CLOSED):
            if self._waiting_to_renew():
                break  # h11 would refuse the next request's bytes: respond() renews it
            try:
                ev = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                return self._http_error(exc, events)
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                if ev is h11.NEED_DATA and self._can_read_raw():
                    break
                if ev is h11.PAUSED and self._can_cycle():
                    self.h11.start_next_cycle()
                    self.state = ChannelState.HEAD
                    self._partial_head = bool(self.h11.trailing_data[0])
                    continue
                break
            if isinstance(ev, h11.ConnectionClosed):
                self.state = ChannelState.CLOSED
                events.append(PeerClosed())
                break
            events.extend(self._handle(ev))
            if self._body is not None and self._body.bypassing:
                break  # the RPC body has ended: what follows is refused (see _handle)
        return events

    def _can_read_raw(self) -> bool:
        """Whether the rest of the RPC body goes around h11 from now on."""
        return (
            self.state is ChannelState.RPC
            and self._body is not None
            and self._body.bypass(self.h11)
        )

    def _http10_expects_continue(self) -> bool:
        request = self.request
        return (
            request is not None
            and request.http_version == "1.0"
            and "100-continue" in request.headers.get("expect", "").lower()
        )

    def _waiting_to_renew(self) -> bool:
        """An HTTP/1.0 keep-alive request whose body was read, waiting for its answer."""
        return (
            self.state is ChannelState.BODY
            and self.request is not None
            and self.request.http10_keep_alive
            and self.h11.their_state is h11.MUST_CLOSE
        )

    def _renew(self) -> None:
        """The next request of an HTTP/1.0 keep-alive connection: a fresh h11 connection,
        fed what the old one buffered past the request."""
        data, closed = self.h11.trailing_data
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.config.max_header_bytes
        )
        if data:
            self.h11.receive_data(data)
        if closed:
            self.h11.receive_data(b"")
        self._renew_after_request = False
        self.state = ChannelState.HEAD
        self._partial_head = bool(data)

    def _kept_answer(
        self, status: int, reason: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> None:
        """An answer to an HTTP/1.0 keep-alive request, written without h11 (which would
        close the connection)."""
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines += [f"Content-Length: {len(body)}", "Connection: keep-alive"]
        self._out += ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _can_cycle(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def _http_error(self, exc: h11.RemoteProtocolError, events: list[Event]) -> list[Event]:
        if self.state in (ChannelState.RPC, ChannelState.BODY) and self.h11.their_state in (
            h11.SEND_BODY,
            h11.ERROR,
        ):
            # The client went away in the middle of the (1 GiB) body: a normal close.
            self.state = ChannelState.CLOSED
            events.append(PeerClosed())
            return events
        status = exc.error_status_hint
        self._close_with(
            status, "Request Header Fields Too Large" if status == 431 else "Bad Request"
        )
        raise ChannelError(f"bad HTTP request: {exc}") from exc

    def _close_with(self, status: int, reason: str) -> None:
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._out += (
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ).encode("ascii")
        self.state = ChannelState.CLOSED

    def _handle(self, ev: object) -> list[Event]:
        if isinstance(ev, h11.Request):
            self._partial_head = False
            # h11 bounds a head only while it waits for more of it: a larger head that
            # arrived whole in one read passes its check, so measure it here as well.
            head_bytes = (
                len(ev.method)
                + len(ev.target)
                + 12
                + sum(len(name) + len(value) + 4 for name, value in ev.headers.raw_items())
            )
            if head_bytes > self.config.max_header_bytes:
                self._close_with(431, "Request Header Fields Too Large")
                raise ChannelError(f"a request head of {head_bytes} bytes")
            headers = _headers(ev.headers)
            if "content-length" in headers and "transfer-encoding" in headers:
                # h11 frames such a body by Transfer-Encoding alone (RFC 9112 6.3) while
                # our decisions read Content-Length; a front end that reads the other
                # one would see another request in the same bytes (request smuggling).
                # RFC 9112 6.1: reject it, or honour Transfer-Encoding, and close the
                # connection after answering either way: we answer 400 and close.
                self._close_with(400, "Bad Request")
                raise ChannelError("a request with both Content-Length and Transfer-Encoding")
            length_text = headers.get("content-length")
            length = int(length_text) if length_text and length_text.isdigit() else None
            self.request = RequestReceived(
                method=ev.method.decode("ascii", "replace"),
                path=ev.target.decode("ascii", "replace"),
                headers=headers,
                content_length=length,
                expects_continue=self.h11.they_are_waiting_for_100_continue,
                http_version=ev.http_version.decode("ascii", "replace"),
            )
            self.state = ChannelState.DECIDING
            return [self.request]
        if isinstance(ev, h11.Data):
            if self.state is ChannelState.DRAIN:
                return []
            if self.state is ChannelState.BODY:
                return [BodyReceived(data=bytes(ev.data))]
            if self._body is not None:
                self._body.delivered(len(ev.data))
            return self._pdus(bytes(ev.data))
        if isinstance(ev, h11.EndOfMessage):
            if self.state is ChannelState.DRAIN:
                if self._renew_after_request:
                    self._renew()
                return []
            if self._framer.has_partial:
                self.state = ChannelState.CLOSED
                raise ChannelError("the body ended inside a PDU")
            if self.state is ChannelState.RPC:
                # h11 read the whole body (it came with the head): nothing may follow it,
                # as in raw mode. h11 would buffer anything after it without bound (it
                # checks max_incomplete_event_size only when it needs data, and it
                # pauses here), so stop passing bytes to it: what is buffered already,
                # or comes later, is refused.
                if self._body is not None:
                    self._body.finish()
                if self.h11.trailing_data[0]:
                    self.state = ChannelState.CLOSED
                    raise ChannelError("bytes after the RPC channel's request body")
            return [BodyEnded()]
        return []

    def _pdus(self, data: bytes) -> list[Event]:
        self._framer.feed(data)
        out: list[Event] = []
        while True:
            try:
                pdu = self._framer.next_pdu()
                if pdu is None:
                    return out
                if is_rts(pdu):
                    out.append(RtsReceived(message=decode_rts(pdu), size=len(pdu)))
                else:
                    out.append(RpcPduReceived(data=pdu))
            except DecodeError as exc:
                self.state = ChannelState.CLOSED
                raise ChannelError(f"bad PDU in the channel body: {exc}") from exc

    # -- decisions -----------------------------------------------------------------------

    def _decided(self) -> RequestReceived:
        if self.state is not ChannelState.DECIDING or self.request is None:
            raise h11.LocalProtocolError("no request is waiting for a decision")
        return self.request

    def reject(
        self,
        status: int,
        reason: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        """Answer with an error; keep the connection when the request body can be drained."""
        request = self._decided()
        length = request.content_length or 0
        keep = (
            length <= MAX_DRAIN
            and request.keep_alive
            and "chunked" not in (request.headers.get("transfer-encoding", ""))
        )
        if keep and request.http10_keep_alive:
            self._kept_answer(status, reason, headers, body)
            self.state = ChannelState.DRAIN
            self._renew_after_request = True
            return
        all_headers = [*headers, ("Content-Length", str(len(body)))]
        if not keep:
            all_headers.append(("Connection", "close"))
        self._send(h11.Response(status_code=status, reason=reason.encode(), headers=all_headers))
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())
        self.state = ChannelState.DRAIN if keep else ChannelState.CLOSED

    def refuse_rpc(self, code: int, headers: Sequence[tuple[str, str]] = ()) -> None:
        """``HTTP/1.0 503 RPC Error: <hex>`` (the form impacket and Windows parse), then close.

        Allowed while the request awaits a decision, and on an accepted RPC channel whose
        response has not started (the OUT channel learns only after CONN/A1 that its
        backend is unreachable). ``headers`` (such as ``Retry-After``) go before ours.
        """
        accepted_unanswered = self.state is ChannelState.RPC and not self._response_started
        if not accepted_unanswered:
            self._decided()
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
        self._out += (
            f"HTTP/1.0 503 RPC Error: {code:x}\r\n{extra}"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        self.state = ChannelState.CLOSED

    def read_body(self) -> None:
        """Accept the request to read its (small) body as :class:`BodyReceived` events."""
        request = self._decided()
        if self.h11.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
        del request
        self.state = ChannelState.BODY

    def respond(
        self, status: int, reason: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> None:
        """A complete answer (echo, autodiscover); the connection cycles when both sides
        are done (the request body, if any, must have been read)."""
        if self.state is ChannelState.DECIDING:
            self._decided()
        headers = [*headers, *self.response_headers]
        self.response_headers = []
        request = self.request
        if request is not None and request.http10_keep_alive:
            self._kept_answer(status, reason, headers, body)
            self.state = ChannelState.DRAIN
            if self.h11.their_state is h11.SEND_BODY:
                self._renew_after_request = True  # after the rest of the request
            else:
                self._renew()
            return
        self._send(
            h11.Response(
                status_code=status,
                reason=reason.encode(),
                headers=[*headers, ("Content-Length", str(len(body)))],
            )
        )
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())
        self.state = ChannelState.DRAIN
        if self._can_cycle():
            self.h11.start_next_cycle()
            self.state = ChannelState.HEAD

    def accept_rpc(self) -> None:
        """Accept an RPC channel: ``100 Continue`` if expected; the body becomes PDUs."""
        self._decided()
        if self.h11.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
        elif self._http10_expects_continue():
            # RFC 9110 10.1.1 has servers ignore it from HTTP/1.0 clients (h11 does), but
            # an RPC over HTTP client that asks waits for it before it sends a PDU.
            self._out += b"HTTP/1.1 100 Continue\r\n\r\n"
        assert self.request is not None
        # With Transfer-Encoding too, h11 reads chunks (RFC 9112 6.3): the body stays with
        # h11 (framing_length is None); such a request was refused with 400 anyway.
        self._body = BodyReader(framing_length(self.request.headers))
        self.state = ChannelState.RPC

    def start_out_response(self, content_length: int) -> None:
        """The OUT channel's ``200 Success`` head ([MS-RPCH] 3.2.3.5.2)."""
        self._response_started = True
        self._send(
            h11.Response(
                status_code=200,
                reason=b"Success",
                headers=[
                    ("Content-Type", "application/rpc"),
                    ("Content-Length", str(content_length)),
                    ("Cache-Control", "no-cache"),
                    ("Pragma", "no-cache"),
                    *self.response_headers,
                ],
            )
        )
        self._out_body = BodyWriter(content_length)

    def send_body(self, data: bytes) -> None:
        """Queue bytes of the OUT response body.

        The body goes out without h11 (which would only count it): the OUT channel ends
        by closing, never with a further response on the connection.

        Raises:
            h11.LocalProtocolError: before the response head, or more than the announced
                Content-Length (a bug).
        """
        if self._out_body is None:
            raise h11.LocalProtocolError("the OUT response has not started")
        if not self._out_body.take(len(data)):
            raise h11.LocalProtocolError("more body than the announced Content-Length")
        self._out += data

    def close(self) -> None:
        self.state = ChannelState.CLOSED

    def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self._out += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out
