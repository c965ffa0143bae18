"""The client's end of one HTTP/1.1 channel of RPC over HTTP v2: an ``h11.Connection``
whose long body goes around it ([MS-RPCH] 2.1.2.1.1, 2.1.2.1.2, 3.2.2.4.1).

Theory of operation
-------------------
A client opens each channel of a virtual connection as one request on its own
connection: ``RPC_IN_DATA`` (the client's PDUs are its request body) or
``RPC_OUT_DATA`` (the proxy's PDUs are the body of its ``200 Success``). h11 writes
the request head and reads the answers (``100 Continue``, then, on OUT, the response
head). Past the heads the long bodies are counted by :mod:`tunnel.bodies`, as the
proxy's :class:`tunnel.channel.ServerChannel` counts its own: the IN request body once
:meth:`ClientChannel.send_body_directly` was called, the OUT response body once h11's
buffer is drained. An OUT request's short body (CONN/A1, or OUT_R2/A3 and OUT_R2/C1)
goes through h11, which also ends it.

The core is h11-shaped: commands return the bytes to send; :meth:`receive_data`
takes what was read (``b""`` at EOF); :meth:`next_event` gives the answers' heads and
:meth:`next_body` the response body, either of them ``None`` when more data is needed.
Errors are :class:`~tunnel.errors.TunnelError`, what a tunnel client raises.
"""

from __future__ import annotations

from contextlib import suppress

import h11

from tunnel.bodies import BodyReader, BodyWriter, framing_length
from tunnel.errors import TunnelError


def content_length(response: h11.Response) -> int | None:
    """The Content-Length of a 200 response (the only ones whose body goes around h11),
    or None to leave the body to h11: with Transfer-Encoding too, h11 reads chunks (RFC
    9112 6.3), as the proxy's channel does (tunnel/channel.py)."""
    if response.status_code != 200:
        return None
    return framing_length({k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers})


def error_from(response: h11.Response) -> TunnelError:
    """The error a refusal stands for: its status and, for ``503 RPC Error: <hex>``, the
    RPC status code."""
    reason = response.reason.decode("latin-1", "replace")
    rpc_error = None
    if reason.startswith("RPC Error:"):
        with suppress(ValueError):
            rpc_error = int(reason.removeprefix("RPC Error:").strip(), 16)
    return TunnelError(
        f"proxy answered {response.status_code} {reason}",
        status=response.status_code,
        rpc_error=rpc_error,
    )


def channel_request(
    method: str, path: str, authority: str, authorization: str, length: int
) -> h11.Request:
    """The head of a channel request, with the headers Windows clients send."""
    return h11.Request(
        method=method,
        target=path,
        headers=[
            ("Host", authority),
            ("Accept", "application/rpc"),
            ("User-Agent", "MSRPC"),
            ("Cache-Control", "no-cache"),
            ("Pragma", "No-cache"),
            ("Connection", "Keep-Alive"),
            ("Expect", "100-continue"),
            ("Authorization", authorization),
            ("Content-Length", str(length)),
        ],
    )


class ClientChannel:
    """The client side of one channel's HTTP/1.1 connection, without I/O."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        #: The request body, once it goes around h11.
        self._request_body: BodyWriter | None = None
        #: The response body (from its head on), and body bytes read around h11 that
        #: :meth:`next_body` has not returned yet.
        self._response_body: BodyReader | None = None
        self._unread = b""

    # -- sending -------------------------------------------------------------------------

    def send(self, event: h11.Event) -> bytes:
        """The bytes of a head, or of an OUT request's body or its end, through h11."""
        return self.h11.send(event) or b""

    def send_body_directly(self, content_length: int) -> None:
        """From now on :meth:`send_body` counts the request body (``content_length``
        bytes in all) without h11; nothing may be sent through h11 after it."""
        self._request_body = BodyWriter(content_length)

    def send_body(self, data: bytes) -> bytes:
        """Bytes of the request body, as they go on the wire.

        Raises:
            TunnelError: more than the request's Content-Length.
        """
        if self._request_body is None:
            return self.send(h11.Data(data=data))
        if not self._request_body.take(len(data)):
            raise TunnelError("the channel's request body is full")
        return data

    # -- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the connection (``b""``: it ended).

        Raises:
            TunnelError: the connection ended inside a body read around h11, or bytes
                came after it.
        """
        body = self._response_body
        if body is None or not body.bypassing:
            self.h11.receive_data(data)
            return
        if not data:
            raise TunnelError("the proxy closed the connection inside the response body")
        part, extra = body.split(data)
        if extra:
            raise TunnelError("the proxy sent bytes after the response body")
        self._unread = part

    def next_event(self) -> h11.Event | None:
        """The next answer from h11 (``InformationalResponse``, ``Response``...), or None
        when it needs data.

        Raises:
            TunnelError: bad HTTP.
        """
        event = self._h11_event()
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Response):
            self._response_body = BodyReader(content_length(event))
        elif isinstance(event, h11.Data) and self._response_body is not None:
            self._response_body.delivered(len(event.data))
        return event  # type: ignore[return-value]

    def next_body(self) -> bytes | None:
        """The next bytes of the response body (after :meth:`next_event` gave its head),
        ``b""`` at its end, None when more data is needed.

        Raises:
            TunnelError: bad HTTP, or an event that has no place in a body.
        """
        body = self._response_body
        while body is None or not body.bypassing:
            event = self._h11_event()
            if event is h11.NEED_DATA:
                if body is not None and body.bypass(self.h11):
                    break
                return None
            if isinstance(event, h11.Data):
                if body is not None:
                    body.delivered(len(event.data))
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return b""
            raise TunnelError(f"unexpected {event!r} in the response body")
        if self._unread:
            data, self._unread = self._unread, b""
            return data
        return b"" if body.left == 0 else None

    def _h11_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise TunnelError(f"bad HTTP from the proxy: {exc}") from exc
