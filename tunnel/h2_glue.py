"""HTTP/2 glue: one ``h2.H2Connection`` turned into the tunnel's events ([RFC 9113]).

Theory of operation
-------------------
Over HTTP/2 a virtual connection is simply one stream: the client sends
``POST /rpc/rpcproxy.dll?<server>:<port>`` (after authentication), the request body
carries the client's DCE/RPC byte stream and the ``200`` response body
(``content-type: application/rpc``) carries the server's. None of the MS-RPCH RTS
machinery exists here: HTTP/2's own flow control replaces it ([MS-RPCH] 3.2.1.1.4
plays that role on HTTP/1.1). Many virtual connections share one TLS connection.

:class:`H2Glue` wraps the h2 core the way wsproto's handshake wraps h11: bytes in,
events out, frames queued for :meth:`H2Glue.data_to_send`. It owns two policies:

* **Receive side (backpressure towards the client).** We grant a large stream and
  connection window (``TunnelConfig.h2_window``, several MiB, for throughput) but hand
  credit back only when the driver calls :meth:`H2Glue.consumed`, i.e. after it has
  written the bytes to the backend. A client can therefore never make us hold more than
  one window of its data, whatever it does. Data for streams we no longer serve is
  acknowledged at once so the connection window does not leak.
* **Send side (backpressure towards the backend).** :meth:`H2Glue.sendable` is what the
  peer's windows allow now; the driver reads from the backend no more than that, so a
  client that never reads makes us stop reading the backend instead of buffering.

Protocol errors from h2 make the core queue a GOAWAY (h2 ``_terminate_connection``);
we report them as :class:`ConnectionEnded` so the driver flushes and closes.

**Rapid reset** (CVE-2023-44487). A client that opens a stream and resets it at once
makes us start the work of a request (a task, a credential check) while the stream
never counts against SETTINGS_MAX_CONCURRENT_STREAMS: HEADERS + RST_STREAM pairs can
start work at the rate of the wire, with no concurrency bound. The glue counts streams
the client reset before we answered them (:attr:`H2Glue.early_resets`), less one for
each stream we did answer (a budget, not a clock: cores read no time). Past
``TunnelConfig.h2_max_early_resets`` it queues GOAWAY(ENHANCE_YOUR_CALM) and reports
:class:`ConnectionEnded`; the events of the same read that follow are dropped.
"""

from __future__ import annotations

import binascii
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from tunnel.config import TunnelConfig

DEFAULT_WINDOW = 65535


def prefix_hex_repr(data: bytes | None) -> str:
    """hyperframe's repr of a frame body, the same string, from the bytes it shows.

    h2 formats ``repr(frame)`` for every frame it receives (the argument of a trace
    log call, built even when nothing logs), and hyperframe hexlifies the whole body
    to show its first 20 hex digits: for 256 KiB DATA frames that was a large share of
    a download's CPU in the client (docs/benchmarks.md).
    """
    if not data:
        return "None"
    shown = binascii.hexlify(data[:11]).decode("ascii")  # 22 digits: cut as before
    if len(shown) > 20:
        shown = shown[:20] + "..."
    return "<hex:" + shown + ">"


# The module-level helper hyperframe's ``_body_repr`` methods call (tests check that
# the output is unchanged); left alone if a hyperframe release renames it.
if hasattr(hyperframe.frame, "_raw_data_repr"):
    hyperframe.frame._raw_data_repr = prefix_hex_repr


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of the glue's events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived(Event):
    """A client opened a stream with a complete header block (server side)."""

    stream_id: int
    method: str
    path: str
    authority: str
    headers: dict[str, str] = field(default_factory=dict)
    ended: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived(Event):
    """The server answered our request (client side)."""

    stream_id: int
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    ended: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived(Event):
    """Body bytes on a stream; credit returns only through :meth:`H2Glue.consumed`."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded(Event):
    """The peer finished its half of the stream (END_STREAM)."""

    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset(Event):
    """The peer reset the stream (RST_STREAM), or h2 reset it for a stream error."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowOpened(Event):
    """Send credit may have grown (WINDOW_UPDATE or SETTINGS); ``stream_id`` 0 = all."""

    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEnded(Event):
    """GOAWAY received or a protocol error (a GOAWAY is then queued): close after flushing."""

    error_code: int
    reason: str = ""


def _headers(raw: list[tuple[bytes, bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw or []:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out and not key.startswith(":") else text
    return out


#: Frame types that open or continue a header block (RFC 9113 6.2, 6.6, 6.10).
_HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x1, 0x5, 0x9
_END_HEADERS = 0x4
#: The client connection preface, which precedes the server's first frame.
_PREFACE_SIZE = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


class HeaderBlockScan:
    """Follows frame boundaries in the received bytes to bound header blocks.

    h2 holds a header block's HEADERS and CONTINUATION frames until END_HEADERS (up to
    64 frames of the largest frame size we accept: 16 MiB with 256 KiB frames) and
    only then checks the decoded size. This scan reads the 9-byte frame heads as the
    bytes go by, so a block is refused once its encoded size passes ``limit``, before
    h2 has buffered it; it also tells whether a block is open, for the driver's head
    deadline. It skips payloads without reading them.
    """

    def __init__(self, limit: int, *, preface: int = 0) -> None:
        self.limit = limit
        self._skip = preface  # bytes still to pass: the preface, or a frame's payload
        self._head = b""  # a frame head cut by a read
        #: Encoded bytes of the open header block, or None when no block is open.
        self.block: int | None = None

    def feed(self, data: bytes) -> bool:
        """Scan ``data``; False once a header block has grown past the limit."""
        at, end = 0, len(data)
        while at < end:
            if self._skip:
                step = min(self._skip, end - at)
                self._skip -= step
                at += step
                continue
            need = 9 - len(self._head)
            self._head += data[at : at + need]
            at += need
            if len(self._head) < 9:
                break
            length = int.from_bytes(self._head[:3], "big")
            kind, flags = self._head[3], self._head[4]
            self._head = b""
            self._skip = length
            if kind in (_HEADERS, _PUSH_PROMISE):
                self.block = length
            elif kind == _CONTINUATION and self.block is not None:
                self.block += length
            else:
                continue  # (any other frame inside a block is h2's protocol error)
            if self.block > self.limit:
                return False
            if flags & _END_HEADERS:
                self.block = None
        return True


class H2Glue:
    """One HTTP/2 connection's state; use one per TLS connection."""

    def __init__(self, config: TunnelConfig, *, client_side: bool = False) -> None:
        self.config = config
        self.client_side = client_side
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=client_side, header_encoding=None, validate_inbound_headers=True
            )
        )
        self.closed = False
        # Bytes received per stream and not yet handed back (padding included).
        self._unacked: dict[int, int] = {}
        self._served: set[int] = set()
        #: Requests received that we have not answered (no response head sent).
        self._unanswered: set[int] = set()
        #: Streams the client reset before we answered, net of the ones we answered.
        self.early_resets = 0
        self.conn.local_settings = h2.settings.Settings(
            client=client_side,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: config.h2_window,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.h2_max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_header_bytes,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: config.h2_max_frame,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # Settings given as initial values never pass through h2's "acknowledged" path,
        # which is what sets its inbound frame limit and its decoder's header list
        # limit: set them to what we advertise.
        self.conn.max_inbound_frame_size = config.h2_max_frame
        self.conn.decoder.max_header_list_size = config.max_header_bytes
        # Encoded blocks may exceed the decoded list a little (literal lengths, padding).
        self.scan = HeaderBlockScan(
            2 * config.max_header_bytes, preface=0 if client_side else _PREFACE_SIZE
        )
        # Response bodies waiting for the peer's window (``respond``): stream -> rest.
        self._pending: dict[int, bytes] = {}
        self.conn.initiate_connection()
        if config.h2_window > DEFAULT_WINDOW:
            self.conn.increment_flow_control_window(config.h2_window - DEFAULT_WINDOW)

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; ``b""`` means the peer closed the connection."""
        if self.closed:
            return []
        if not data:
            self.closed = True
            return [ConnectionEnded(error_code=0, reason="connection closed")]
        if not self.scan.feed(data):
            reason = f"a header block over {self.scan.limit} bytes"
            self.close(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            return [
                ConnectionEnded(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, reason=reason)
            ]
        try:
            raw_events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.closed = True
            return [ConnectionEnded(error_code=int(exc.error_code), reason=str(exc))]
        events: list[Event] = []
        for ev in raw_events:
            out = self._translate(ev)
            if out is not None:
                events.extend(out)
            if self.early_resets > self.config.h2_max_early_resets:
                self.close(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
                reason = f"more than {self.config.h2_max_early_resets} streams reset early"
                events.append(
                    ConnectionEnded(
                        error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, reason=reason
                    )
                )
                return events
        if self._pending and any(isinstance(ev, WindowOpened) for ev in events):
            self._send_pending()
        return events

    @property
    def header_block_open(self) -> bool:
        """Whether the peer has started a header block it has not finished."""
        return self.scan.block is not None

    def _translate(self, ev: h2.events.Event) -> list[Event] | None:
        if isinstance(ev, h2.events.RequestReceived):
            sid = ev.stream_id or 0
            h = _headers(ev.headers)
            self._served.add(sid)
            self._unanswered.add(sid)
            ended = ev.stream_ended is not None
            return [
                RequestReceived(
                    stream_id=sid,
                    method=h.get(":method", ""),
                    path=h.get(":path", ""),
                    authority=h.get(":authority", ""),
                    headers=h,
                    ended=ended,
                )
            ]
        if isinstance(ev, h2.events.ResponseReceived):
            sid = ev.stream_id or 0
            h = _headers(ev.headers)
            try:
                status = int(h.get(":status", "0"))
            except ValueError:
                status = 0
            return [
                ResponseReceived(
                    stream_id=sid, status=status, headers=h, ended=ev.stream_ended is not None
                )
            ]
        if isinstance(ev, h2.events.DataReceived):
            sid = ev.stream_id or 0
            size = ev.flow_controlled_length or 0
            data = ev.data or b""
            if sid not in self._served:
                self._ack(sid, size)
                return []
            # Padding is never delivered, so hand its credit back now.
            self._unacked[sid] = self._unacked.get(sid, 0) + len(data)
            self._ack(sid, size - len(data))
            out: list[Event] = [DataReceived(stream_id=sid, data=data)] if data else []
            if ev.stream_ended is not None:
                out.append(StreamEnded(stream_id=sid))
            return out
        if isinstance(ev, h2.events.StreamEnded):
            sid = ev.stream_id or 0
            return [StreamEnded(stream_id=sid)] if sid in self._served else []
        if isinstance(ev, h2.events.StreamReset):
            sid = ev.stream_id or 0
            if ev.remote_reset and sid in self._unanswered:
                self.early_resets += 1
            self._pending.pop(sid, None)
            self._forget(sid)
            return [StreamReset(stream_id=sid, error_code=int(ev.error_code or 0))]
        if isinstance(ev, h2.events.WindowUpdated):
            return [WindowOpened(stream_id=ev.stream_id or 0)]
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            return [WindowOpened(stream_id=0)]
        if isinstance(ev, h2.events.ConnectionTerminated):
            self.closed = True
            return [ConnectionEnded(error_code=int(ev.error_code or 0), reason="GOAWAY received")]
        return None

    # -- credit --------------------------------------------------------------------------

    def _ack(self, stream_id: int, size: int) -> None:
        if size > 0 and not self.closed:
            self.conn.acknowledge_received_data(size, stream_id)

    def consumed(self, stream_id: int, size: int) -> None:
        """The driver has passed ``size`` bytes of the stream on: return their credit."""
        held = self._unacked.get(stream_id, 0)
        size = min(size, held)
        if size <= 0:
            return
        self._unacked[stream_id] = held - size
        self._ack(stream_id, size)

    def may_send(self, stream_id: int) -> bool:
        """Whether DATA may still go on the stream (it is neither closed nor reset)."""
        stream = self.conn.streams.get(stream_id)
        return not self.closed and stream is not None and not stream.closed

    def sendable(self, stream_id: int) -> int:
        """Bytes of DATA the peer's stream and connection windows accept now."""
        if self.closed:
            return 0
        try:
            return max(0, self.conn.local_flow_control_window(stream_id))
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            return 0

    # -- output --------------------------------------------------------------------------

    def send_request(self, authority: str, path: str, headers: Sequence[tuple[str, str]]) -> int:
        """Open a stream with a POST (client side); returns its id."""
        sid = self.conn.get_next_available_stream_id()
        block = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
            *headers,
        ]
        self.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in block])
        self._served.add(sid)
        return sid

    def respond(
        self,
        stream_id: int,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> None:
        """Send a response head; with ``body`` (even empty) the stream ends with it.

        What the peer's windows do not take now is kept and sent as they open (a peer
        may start with a window of 0); a reset of the stream drops it.
        """
        if self.closed:
            return
        block = [(":status", str(status)), *headers]
        if body is not None:
            block.append(("content-length", str(len(body))))
        try:
            self.conn.send_headers(
                stream_id,
                [(k.encode(), v.encode()) for k, v in block],
                end_stream=body is not None and not body,
            )
        except (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError):
            # The client reset the stream (and may have opened higher ones since, which
            # h2 reports as StreamIDTooLowError): there is no one left to answer.
            self._forget(stream_id)
            return
        if stream_id in self._unanswered:
            self._unanswered.discard(stream_id)
            self.early_resets = max(0, self.early_resets - 1)
        if body:
            self._pending[stream_id] = body
            self._send_pending()
        if body is not None:
            self._stop_serving(stream_id)

    def _send_pending(self) -> None:
        for sid, rest in list(self._pending.items()):
            if not self.may_send(sid):
                del self._pending[sid]
                continue
            sent = self.send_data(sid, rest)
            if sent == len(rest):
                del self._pending[sid]
                self.end_stream(sid)
            elif sent:
                self._pending[sid] = rest[sent:]

    def send_data(self, stream_id: int, data: bytes) -> int:
        """Queue as much of ``data`` as the windows allow; returns how much was taken."""
        sent = 0
        while sent < len(data):
            room = min(self.sendable(stream_id), self.conn.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = data[sent : sent + room]
            try:
                self.conn.send_data(stream_id, chunk)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                break
            sent += len(chunk)
        return sent

    def end_stream(self, stream_id: int) -> None:
        """Finish our half of the stream (END_STREAM)."""
        try:
            self.conn.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._forget(stream_id)

    def reset(self, stream_id: int, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Abort a stream (RST_STREAM); its later DATA is acknowledged and dropped."""
        if not self.closed:
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.conn.reset_stream(stream_id, error_code)
        self._pending.pop(stream_id, None)
        self._forget(stream_id)

    def stream_finished(self, stream_id: int) -> None:
        """The driver is done with a stream: give back any credit it still held."""
        self._forget(stream_id)

    def close(self, error_code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Send GOAWAY; no new streams are accepted afterwards."""
        if not self.closed:
            self.closed = True
            self.conn.close_connection(error_code)

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send()

    def _stop_serving(self, stream_id: int) -> None:
        held = self._unacked.pop(stream_id, 0)
        self._served.discard(stream_id)
        self._ack(stream_id, held)

    def _forget(self, stream_id: int) -> None:
        self._unanswered.discard(stream_id)
        self._stop_serving(stream_id)
