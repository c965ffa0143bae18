"""Client side of RPC over HTTP v2 on HTTP/1.1: the IN and OUT channels as one stream
([MS-RPCH] 3.2.2: client role).

Establishment (3.2.2.4.1): open the IN channel (``RPC_IN_DATA``, Content-Length
``config.channel_lifetime``, 1 GiB by default) and the OUT channel (``RPC_OUT_DATA``,
Content-Length 76) on two TLS connections, each with Basic credentials and
``Expect: 100-continue``; send CONN/A1 on OUT and CONN/B1 on IN; expect ``200`` on OUT,
then CONN/A3 and CONN/C2 in its body.

Afterwards :class:`H1TunnelStream` behaves as a byte stream: ``send_all`` writes the
caller's PDUs into the IN body within the proxy's IN window (from CONN/C2, reopened by
its FlowControlAcks on OUT); ``receive_some`` returns RPC PDUs from the OUT body and
acknowledges them on IN with FlowControlAckWithDestination(OutProxy) each time half
our window has been consumed, so long transfers do not stall (3.2.2.1.4). Pings are
ignored.

Channels are recycled (:mod:`tunnel.recycling`), so a VC lives past any Content-Length:

* IN (3.2.2.5.12): once fewer than ``config.in_recycle_threshold`` bytes of the IN
  channel would be left, a successor ``RPC_IN_DATA`` is opened in the background and
  sends IN_R2/A1. RPC PDUs go on the predecessor while they fit (leaving room for
  IN_R2/A5 and for control PDUs), else wait. On IN_R2/A4 (or IN_R1/A4) from OUT:
  IN_R2/A5 on the predecessor, then the successor is the IN channel (fresh flow-control
  counters, the same window) and the predecessor is closed.
* OUT (3.2.2.5.5-3.2.2.5.10): on OUT_R2/A2, a successor ``RPC_OUT_DATA``
  (Content-Length 120) with OUT_R2/A3 (our receive window); on OUT_R2/A6, OUT_R2/A7 on
  IN and OUT_R2/C1 on the successor; PDUs are read from the predecessor up to
  OUT_R2/B3, then from the successor after its ``200 Success``.

All writes on IN go through one lock, message by message, so IN_R2/A5 is the last PDU
of a predecessor and no RPC PDU can slip in behind it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import h11
import trio

from dcerpc.errors import DecodeError, RemoteProtocolError
from dcerpc.framing import PduFramer
from dcerpc.trio_util import acquire, finish_shielded, single_errors
from tunnel import rts, rts_recycling
from tunnel.config import TunnelConfig
from tunnel.drivers.tls_stream import TLSStream
from tunnel.errors import TunnelError
from tunnel.recycling import (
    CONTROL_HEADROOM,
    IN_R2_A1_SIZE,
    ClientInRecycler,
    ClientOutRecycler,
)
from tunnel.vc import ReceiveWindow, SendWindow

#: Our OUT receive window, advertised in CONN/A1 and OUT_R2/A3 (impacket and Windows
#: use 256 KiB).
OUT_WINDOW = 262144
#: We acknowledge OUT data every quarter of the window (Windows: every half). The spec
#: caps the window at 256 KiB, so in a download the proxy's credit must come back
#: while most of the window is still in flight.
OUT_ACK_AFTER = OUT_WINDOW // 4
OUT_REQUEST_LENGTH = 76
#: A successor OUT channel's request body: OUT_R2/A3 (96) + OUT_R2/C1 (24).
OUT_SUCCESSOR_LENGTH = 120

Connector = Callable[[], Awaitable[TLSStream]]


class _Channel:
    """One TLS connection with an h11 client on it.

    h11 writes and reads the heads. The long bodies (an IN channel's request, an OUT
    channel's response: Content-Length framed, 1 GiB) go around it once it is past the
    head, counted here against their Content-Length: h11 would only count them, at a
    few microseconds per read and per write, per small call. A channel's connection
    carries nothing after its body (MS-RPCH recycles channels on new connections).
    """

    def __init__(self, stream: TLSStream, size: int) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.size = size
        self.lock = trio.Lock()
        #: Replaced by a successor: its end is expected, not an error.
        self.retired = False
        #: Request body bytes we may still send without h11 (None: h11 sends the body).
        self._send_left: int | None = None
        #: The response's Content-Length, body bytes h11 delivered, and (once past h11's
        #: buffer) the body bytes still to come.
        self._response_length: int | None = None
        self._body_seen = 0
        self._receive_left: int | None = None

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self._send_raw(data)

    def send_body_directly(self, content_length: int) -> None:
        """From now on :meth:`send_body` writes the request body (``content_length``
        bytes in all) without h11; nothing may be sent through h11 after it."""
        self._send_left = content_length

    async def send_body(self, data: bytes) -> None:
        """Bytes of the request body.

        Raises:
            TunnelError: more than the request's Content-Length.
        """
        if self._send_left is None:
            await self.send(h11.Data(data=data))
            return
        if len(data) > self._send_left:
            raise TunnelError("the channel's request body is full")
        self._send_left -= len(data)
        await self._send_raw(data)

    async def _send_raw(self, data: bytes) -> None:
        await acquire(self.lock)
        try:
            await self.stream.send_all(data)
        finally:
            self.lock.release()

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise TunnelError(f"bad HTTP from the proxy: {exc}") from exc
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    self._response_length = _content_length(event)
                elif isinstance(event, h11.Data):
                    self._body_seen += len(event.data)
                return event  # type: ignore[return-value]
            self.h11.receive_data(await self._receive())

    async def receive_body(self) -> bytes:
        """The next bytes of the response body (after :meth:`next_event` gave its head),
        ``b""`` at its end.

        Raises:
            TunnelError: bad HTTP, or the connection ended inside the body.
        """
        while self._receive_left is None:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise TunnelError(f"bad HTTP from the proxy: {exc}") from exc
            if event is h11.NEED_DATA:
                if self.h11.their_state is h11.SEND_BODY and self._response_length is not None:
                    self._receive_left = self._response_length - self._body_seen
                    break
                self.h11.receive_data(await self._receive())
            elif isinstance(event, h11.Data):
                self._body_seen += len(event.data)
                return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return b""
            else:
                raise TunnelError(f"unexpected {event!r} in the response body")
        if self._receive_left == 0:
            return b""
        data = await self._receive()
        if not data:
            raise TunnelError("the proxy closed the connection inside the response body")
        if len(data) > self._receive_left:
            raise TunnelError("the proxy sent bytes after the response body")
        self._receive_left -= len(data)
        return data

    async def _receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(self.size))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TunnelError(f"the proxy connection broke: {exc}") from exc


def _content_length(response: h11.Response) -> int | None:
    """The Content-Length of a 200 response (the only ones whose body we stream), or
    None to leave the body to h11: with Transfer-Encoding too, h11 reads chunks (RFC 9112
    6.3), as the proxy's channel does (tunnel/channel.py)."""
    if response.status_code != 200:
        return None
    headers = dict(response.headers)
    length = headers.get(b"content-length", b"")
    if b"transfer-encoding" in headers or not length.isdigit():
        return None
    return int(length)


def _error_from(response: h11.Response) -> TunnelError:
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


@dataclass(frozen=True, slots=True)
class _Opener:
    """What it takes to open one more channel of the VC (establishment, recycling)."""

    connect: Connector
    authority: str
    path: str
    authorization: str

    async def open(self, method: str, length: int) -> _Channel:
        """A new TLS connection with the channel's request sent and ``100 Continue`` read.

        Raises:
            TunnelError: the proxy answered with a status instead.
        """
        stream = await self.connect()
        channel = _Channel(stream, 65536)
        try:
            await channel.send(
                h11.Request(
                    method=method,
                    target=self.path,
                    headers=[
                        ("Host", self.authority),
                        ("Accept", "application/rpc"),
                        ("User-Agent", "MSRPC"),
                        ("Cache-Control", "no-cache"),
                        ("Pragma", "No-cache"),
                        ("Connection", "Keep-Alive"),
                        ("Expect", "100-continue"),
                        ("Authorization", self.authorization),
                        ("Content-Length", str(length)),
                    ],
                )
            )
            event = await channel.next_event()
            if isinstance(event, h11.Response):
                raise _error_from(event)
            if not (isinstance(event, h11.InformationalResponse) and event.status_code == 100):
                raise TunnelError(f"{method}: expected 100 Continue, got {event!r}")
            if method == "RPC_IN_DATA":  # OUT requests end with EndOfMessage: h11 sends those
                channel.send_body_directly(length)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return channel


class H1TunnelStream(trio.abc.Stream):
    """The client's end of an MS-RPCH virtual connection. Create it with :func:`h1_tunnel`."""

    #: send_all waits for flow-control acks or the successor IN channel at most
    #: ``config.send_timeout`` (see dcerpc.client.UNBOUNDED_SEND).
    bounded_waits = True

    def __init__(
        self, opener: _Opener, in_ch: _Channel, out_ch: _Channel, config: TunnelConfig
    ) -> None:
        self.opener = opener
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.config = config
        self.lifetime = config.channel_lifetime
        self.vc_cookie = os.urandom(16)
        self.in_cookie = os.urandom(16)
        self.out_cookie = os.urandom(16)
        self.assoc_group = os.urandom(16)
        self.receive_window = ReceiveWindow(OUT_WINDOW, ack_after=OUT_ACK_AFTER)
        #: RPC bytes received on the current OUT channel, not yet counted as consumed.
        self._unaccounted = 0
        self.send_window = SendWindow(OUT_WINDOW, self.lifetime)
        #: Completed recycles, for logs and tests.
        self.in_recycles = 0
        self.out_recycles = 0
        self._out_framer = PduFramer(config.max_fragment)
        self._in_framer = PduFramer(config.max_fragment)
        #: RPC bytes waiting for the caller.
        self._inbox: deque[bytes] = deque()
        self._buffered = 0
        self._changed = trio.Event()
        self._error: BaseException | None = None
        self._eof = False
        self._send_guard = trio.Lock()
        #: Every write on the IN channel, message by message (see the module docstring).
        self._in_lock = trio.Lock()
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._in_recycle = ClientInRecycler(config.in_recycle_threshold)
        self._out_recycle = ClientOutRecycler()
        self._in_successor: tuple[_Channel, bytes, SendWindow] | None = None
        self._out_successor: tuple[_Channel, bytes] | None = None
        self._in_switched = trio.Event()
        self._out_switched = trio.Event()
        self._retired_in_cookies: deque[bytes] = deque(maxlen=4)
        #: Control PDUs that found no room on a full IN channel; they go on its successor.
        self._deferred: list[bytes] = []
        self._owed_ack: bytes | None = None
        #: Predecessor IN channels the proxy has not closed yet.
        self._retiring: set[_Channel] = set()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._notify()

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` beside the reader; its failure breaks the stream."""

        async def run() -> None:
            try:
                await work()
            except (TunnelError, RemoteProtocolError, trio.BrokenResourceError, OSError) as exc:
                self._fail(exc)
            except trio.TooSlowError:
                self._fail(TunnelError("channel recycling timed out"))

        if self._nursery is None:
            self._fail(TunnelError("the tunnel is not running"))
            return
        self._nursery.start_soon(run)

    # -- writing on IN (callers hold _in_lock) ----------------------------------------------

    async def _write_in(self, data: bytes, *, rpc: bool) -> None:
        self.send_window.sent(len(data), rpc=rpc)
        try:
            await self.in_ch.send_body(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(exc)
            raise trio.BrokenResourceError("IN channel broke") from exc

    def _room(self, size: int) -> int:
        """IN bytes left after ``size`` more, the IN_R2/A5 reserve and the headroom."""
        return self.send_window.remaining() - size - self._in_recycle.reserve() - CONTROL_HEADROOM

    def _maybe_recycle_in(self, size: int) -> None:
        if self._in_recycle.should_start(self._room(size)):
            self._in_recycle.started()
            self._spawn(self._recycle_in)

    async def _send_control(self, data: bytes, *, ack: bool = False) -> None:
        """An RTS PDU on IN; on a full channel it waits for the successor (the newest
        acknowledgement replacing an older one)."""
        await acquire(self._in_lock)
        try:
            if self.send_window.fits_body(len(data) + self._in_recycle.reserve()):
                await self._write_in(data, rpc=False)
            elif ack:
                self._owed_ack = data
            else:
                self._deferred.append(data)
            self._maybe_recycle_in(0)
        finally:
            self._in_lock.release()

    async def _send_rpc(self, pdu: bytes) -> None:
        """One RPC PDU on IN, within the window and the channel's budget (waiting for an
        acknowledgement or for the successor IN channel as needed)."""
        overhead = CONTROL_HEADROOM + self._in_recycle.reserve() + IN_R2_A1_SIZE
        if len(pdu) + overhead > self.lifetime:
            raise trio.BrokenResourceError("an RPC PDU larger than the IN channel lifetime")
        deadline: float | None = None
        while True:
            if self._error is not None:
                raise trio.BrokenResourceError(str(self._error))
            await acquire(self._in_lock)
            try:
                self._maybe_recycle_in(len(pdu))
                if self.send_window.can_send(len(pdu)) and self._room(len(pdu)) >= 0:
                    await self._write_in(pdu, rpc=True)
                    self._maybe_recycle_in(0)
                    return
            finally:
                self._in_lock.release()
            # No room: a flow-control ack or the successor IN channel must come. A proxy
            # that sends neither within send_timeout has stopped reading: the VC fails.
            if deadline is None:
                deadline = trio.current_time() + self.config.send_timeout
            with trio.move_on_at(deadline) as scope:
                await self._changed.wait()
            if scope.cancelled_caught:
                self._fail(trio.TooSlowError("the proxy acknowledged nothing in time"))
                raise trio.BrokenResourceError("the proxy stopped reading our requests")

    # -- establishment -----------------------------------------------------------------------

    async def establish(self) -> None:
        """CONN/A1, CONN/B1, then 200 + CONN/A3 + CONN/C2 on OUT.

        Raises:
            TunnelError: the proxy refused or answered something else.
        """
        await self.out_ch.send(
            h11.Data(data=rts.conn_a1(self.vc_cookie, self.out_cookie, OUT_WINDOW))
        )
        await self.out_ch.send(h11.EndOfMessage())
        await self._write_in(
            rts.conn_b1(self.vc_cookie, self.in_cookie, self.assoc_group, lifetime=self.lifetime),
            rpc=False,
        )
        event = await self.out_ch.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.out_ch.next_event()
        if not isinstance(event, h11.Response):
            raise TunnelError(f"expected the OUT channel response, got {event!r}")
        if event.status_code != 200:
            raise _error_from(event)
        kinds: list[rts.Kind] = []
        while len(kinds) < 2:
            message = await self._next_out_rts()
            kinds.append(rts.classify(message))
            if kinds[-1] is rts.Kind.CONN_C2:
                window = rts.find_window(message)
                if window is not None:
                    self.send_window.peer_window = window
        if kinds != [rts.Kind.CONN_A3, rts.Kind.CONN_C2]:
            raise TunnelError(f"unexpected establishment sequence {kinds}")

    async def _next_out_rts(self) -> rts.RtsMessage:
        while True:
            pdu = self._out_framer.next_pdu()
            if pdu is not None:
                if not rts.is_rts(pdu):
                    raise TunnelError("RPC data before CONN/C2")
                return rts.decode_rts(pdu)
            data = await self.out_ch.receive_body()
            if not data:
                raise TunnelError("the OUT channel ended during establishment")
            self._out_framer.feed(data)

    # -- background readers ------------------------------------------------------------------

    async def _out_reader(self) -> None:
        try:
            while True:
                data = await self.out_ch.receive_body()
                if not data:
                    self._eof = True
                    self._notify()
                    return
                self._out_framer.feed(data)
                while (pdu := self._out_framer.next_pdu()) is not None:
                    if await self._out_pdu(pdu):
                        break  # OUT_R2/B3: the rest of the predecessor is not read
                while self._buffered > 2 * OUT_WINDOW and self._error is None:
                    await self._changed.wait()  # the caller is not reading: stop too
        except (TunnelError, RemoteProtocolError, trio.BrokenResourceError) as exc:
            self._fail(exc)

    async def _out_pdu(self, pdu: bytes) -> bool:
        """Handle one PDU from OUT; True when the OUT channel was switched."""
        if not rts.is_rts(pdu):
            self._inbox.append(pdu)
            self._buffered += len(pdu)
            self._unaccounted += len(pdu)
            self._notify()
            await self._acknowledge()
            return False
        message = rts.decode_rts(pdu)
        kind = rts.classify(message)
        if kind is rts.Kind.FLOW_CONTROL_ACK:
            ack = rts.find_ack(message)
            assert ack is not None
            if ack.channel_cookie not in self._retired_in_cookies:
                self.send_window.acknowledged(ack.bytes_received, ack.available_window)
                self._notify()
        elif kind in (rts.Kind.IN_R2_A4, rts.Kind.IN_R1_A4):
            self._in_recycle.a4_received()
            self._spawn(lambda: self._in_handover(rts.find_window(message)))
        elif kind is rts.Kind.OUT_R2_A2:
            self._out_recycle.a2_received()
            self._spawn(self._recycle_out)
        elif kind is rts.Kind.OUT_R2_A6:
            self._out_recycle.a6_received()
            self._spawn(self._confirm_out)
        elif kind is rts.Kind.OUT_R2_B3:
            self._out_recycle.b3_received()
            await self._switch_out()
            return True
        elif kind in (rts.Kind.RECYCLE, rts.Kind.IN_R2_A1, rts.Kind.OUT_R2_A3):
            raise TunnelError(f"unexpected {kind.value} from the proxy")
        # Ping, and anything else a proxy may send (PingTrafficSentNotify...): ignored.
        return False

    async def _watch_in(self, channel: _Channel) -> None:
        """The proxy never answers on IN unless it fails; notice that (or a close) unless
        the channel was recycled."""
        error: TunnelError
        try:
            event = await channel.next_event()
            if isinstance(event, h11.Response):
                error = _error_from(event)
            else:
                error = TunnelError("the IN channel ended")
        except TunnelError as exc:
            error = exc
        if not channel.retired:
            self._fail(error)
            return
        self._retiring.discard(channel)
        await trio.aclose_forcefully(channel.stream)

    # -- IN channel recycling ----------------------------------------------------------------

    async def _recycle_in(self) -> None:
        """Open a successor IN channel with IN_R2/A1 and wait for the switch."""
        with trio.fail_after(self.config.recycle_timeout):
            channel = await self.opener.open("RPC_IN_DATA", self.lifetime)
            if self._closed:
                await trio.aclose_forcefully(channel.stream)
                return
            cookie = os.urandom(16)
            window = SendWindow(self.send_window.peer_window, self.lifetime)
            a1 = rts_recycling.in_r2_a1(self.vc_cookie, self.in_cookie, cookie)
            window.sent(len(a1), rpc=False)
            self._in_successor = (channel, cookie, window)
            switched = self._in_switched = trio.Event()
            self._in_recycle.a1_sent()
            await channel.send_body(a1)
            assert self._nursery is not None
            self._nursery.start_soon(self._watch_in, channel)
            await switched.wait()

    async def _in_handover(self, window: int | None) -> None:
        """IN_R2/A4 arrived: IN_R2/A5 ends the predecessor, the successor takes over."""
        assert self._in_successor is not None
        channel, cookie, successor_window = self._in_successor
        if window is not None:  # IN_R1/A4: the new inbound proxy's window
            successor_window.peer_window = window
        await acquire(self._in_lock)
        try:
            old = self.in_ch
            old.retired = True
            a5 = rts_recycling.in_r2_a5(cookie)
            if not self.send_window.fits_body(len(a5)):
                raise TunnelError("no room left for IN_R2/A5")  # a bug: it is reserved
            await self._write_in(a5, rpc=False)
            self._retired_in_cookies.append(self.in_cookie)
            self.in_ch, self.in_cookie, self.send_window = channel, cookie, successor_window
            self._in_successor = None
            self._in_recycle.switched()
            self.in_recycles += 1
            deferred, self._deferred = self._deferred, []
            owed, self._owed_ack = self._owed_ack, None
            for data in [*deferred, *([owed] if owed is not None else [])]:
                await self._write_in(data, rpc=False)
        finally:
            self._in_lock.release()
        self._in_switched.set()
        self._notify()
        # The proxy closes the predecessor once it has read IN_R2/A5; its watcher then
        # closes our end (closing first could reset the connection under IN_R2/A5).
        self._retiring.add(old)

    # -- OUT channel recycling ---------------------------------------------------------------

    async def _recycle_out(self) -> None:
        """OUT_R2/A2 arrived: open a successor OUT channel with OUT_R2/A3."""
        with trio.fail_after(self.config.recycle_timeout):
            channel = await self.opener.open("RPC_OUT_DATA", OUT_SUCCESSOR_LENGTH)
            if self._closed:
                await trio.aclose_forcefully(channel.stream)
                return
            cookie = os.urandom(16)
            self._out_successor = (channel, cookie)
            switched = self._out_switched = trio.Event()
            self._out_recycle.a3_sent()
            a3 = rts_recycling.out_r2_a3(self.vc_cookie, self.out_cookie, cookie, OUT_WINDOW)
            await channel.send(h11.Data(data=a3))
            await switched.wait()

    async def _confirm_out(self) -> None:
        """OUT_R2/A6 arrived: OUT_R2/A7 on IN, OUT_R2/C1 ends the successor's request."""
        assert self._out_successor is not None
        channel, cookie = self._out_successor
        await self._send_control(rts_recycling.out_r2_a7(cookie))
        await channel.send(h11.Data(data=rts_recycling.out_r2_c1()))
        await channel.send(h11.EndOfMessage())

    async def _switch_out(self) -> None:
        """OUT_R2/B3 arrived: read the successor from its ``200 Success`` on."""
        assert self._out_successor is not None
        channel, cookie = self._out_successor
        old = self.out_ch
        old.retired = True
        event = await channel.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await channel.next_event()
        if not isinstance(event, h11.Response):
            raise TunnelError(f"expected the successor OUT channel's response, got {event!r}")
        if event.status_code != 200:
            raise _error_from(event)
        self.out_ch, self.out_cookie = channel, cookie
        self.receive_window = ReceiveWindow(OUT_WINDOW, ack_after=OUT_ACK_AFTER)
        self._unaccounted = 0  # bytes of the predecessor are acknowledged to nobody
        self._out_framer = PduFramer(self.config.max_fragment)
        self._out_successor = None
        self.out_recycles += 1
        self._out_switched.set()
        await trio.aclose_forcefully(old.stream)

    # -- trio.abc.Stream -----------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await acquire(self._send_guard)
        try:
            await self._send_all_locked(data)
        finally:
            self._send_guard.release()

    async def _send_all_locked(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        self._in_framer.feed(bytes(data))
        try:
            while (pdu := self._in_framer.next_pdu()) is not None:
                await self._send_rpc(pdu)
        except DecodeError as exc:
            raise trio.BrokenResourceError(f"not a DCE/RPC byte stream: {exc}") from exc
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError
        while not self._inbox:
            if self._error is not None:
                raise trio.BrokenResourceError(str(self._error))
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            await self._changed.wait()
        pdu = self._inbox.popleft()
        self._buffered -= len(pdu)
        limit = max_bytes or len(pdu)
        if len(pdu) > limit:
            self._inbox.appendleft(pdu[limit:])
            self._buffered += len(pdu) - limit
            pdu = pdu[:limit]
        self._notify()
        await self._acknowledge()
        return pdu

    async def _acknowledge(self) -> None:
        """Count received RPC bytes as consumed while at most a window of them waits for
        the caller, and send the acknowledgement that is due.

        Acknowledging on receipt, not when the caller reads, keeps a whole window in
        flight during a download (the caller's processing no longer stalls the proxy);
        a caller that stops reading still stops the proxy one window later, by flow
        control rather than by a blocked socket.
        """
        if not self._unaccounted or self._buffered > OUT_WINDOW:
            return
        size, self._unaccounted = self._unaccounted, 0
        ack = self.receive_window.received(size)
        if ack is None:
            return
        message = rts.flow_control_ack_to(
            rts.ForwardDestination.OUT_PROXY,
            ack.bytes_received,
            ack.available_window,
            self.out_cookie,
        )
        if not await finish_shielded(partial(self._send_control, message, ack=True)):
            self._fail(trio.TooSlowError("the IN channel stopped taking data"))

    async def aclose(self) -> None:
        self._closed = True
        self._fail(trio.ClosedResourceError("closed"))
        channels = [self.in_ch, self.out_ch, *self._retiring]
        if self._in_successor is not None:
            channels.append(self._in_successor[0])
        if self._out_successor is not None:
            channels.append(self._out_successor[0])
        for channel in channels:
            channel.retired = True
        await _close_all([channel.stream for channel in channels])


async def _close_all(streams: list[TLSStream]) -> None:
    """Close every stream, even when a close delivers a Cancelled (socket closes are
    synchronous; only the checkpoint after them raises)."""
    if not streams:
        return
    try:
        await trio.aclose_forcefully(streams[0])
    finally:
        await _close_all(streams[1:])


@asynccontextmanager
async def h1_tunnel(
    connect: Connector,
    config: TunnelConfig,
    authority: str,
    path: str,
    authorization: str,
    open_timeout: float,
) -> AsyncIterator[H1TunnelStream]:
    """Open an MS-RPCH virtual connection through the proxy.

    Raises:
        TunnelError: refused (``status``, ``rpc_error``) or no answer within ``open_timeout``.
    """
    opener = _Opener(connect, authority, path, authorization)
    in_ch: _Channel | None = None
    out_ch: _Channel | None = None
    try:
        with trio.fail_after(open_timeout):
            in_ch = await opener.open("RPC_IN_DATA", config.channel_lifetime)
            out_ch = await opener.open("RPC_OUT_DATA", OUT_REQUEST_LENGTH)
            stream = H1TunnelStream(opener, in_ch, out_ch, config)
            await stream.establish()
    except BaseException as exc:
        for ch in (in_ch, out_ch):
            if ch is not None:
                ch.stream.transport_stream.socket.close()
        if isinstance(exc, trio.TooSlowError):
            raise TunnelError("the proxy did not establish the tunnel in time") from exc
        raise
    with single_errors():
        async with trio.open_nursery() as nursery:
            stream._nursery = nursery
            nursery.start_soon(stream._out_reader)
            nursery.start_soon(stream._watch_in, in_ch)
            try:
                yield stream
            finally:
                # Close before cancelling: a checkpoint under the cancelled nursery scope
                # would raise Cancelled here and swallow the body's own exception.
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                nursery.cancel_scope.cancel()
