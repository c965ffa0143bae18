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

This module is the trio driver: the protocol (what each PDU means, what may be sent,
the order of the recycling steps) is the sans-IO core :class:`tunnel.client_vc.ClientVc`,
and each channel's HTTP/1.1 connection is a :class:`tunnel.client_channel.ClientChannel`.
The driver owns the TLS connections, the tasks (the OUT reader, the recycles, the IN
watchers), the locks and the timeouts, and writes what the core returns.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import h11
import trio

from dcerpc.errors import DecodeError, RemoteProtocolError
from dcerpc.framing import PduFramer
from dcerpc.trio_util import acquire, finish_shielded, single_errors
from tunnel.client_channel import ClientChannel, channel_request, error_from
from tunnel.client_vc import (
    OUT_WINDOW,
    AckApplied,
    ClientVc,
    Established,
    InSuccessorAccepted,
    OutEvent,
    OutPredecessorEnded,
    OutRecycleConfirmed,
    OutRecycleRequested,
    RpcReceived,
)
from tunnel.config import TunnelConfig
from tunnel.drivers.tls_stream import TLSStream
from tunnel.errors import TunnelError

OUT_REQUEST_LENGTH = 76
#: A successor OUT channel's request body: OUT_R2/A3 (96) + OUT_R2/C1 (24).
OUT_SUCCESSOR_LENGTH = 120

Connector = Callable[[], Awaitable[TLSStream]]


class _Channel:
    """One TLS connection with a :class:`~tunnel.client_channel.ClientChannel` on it:
    this driver reads and writes, the core says what the bytes are. A channel's
    connection carries nothing after its body (MS-RPCH recycles channels on new
    connections)."""

    def __init__(self, stream: TLSStream, size: int) -> None:
        self.stream = stream
        self.core = ClientChannel()
        self.size = size
        self.lock = trio.Lock()
        #: Replaced by a successor: its end is expected, not an error.
        self.retired = False

    async def send(self, event: h11.Event) -> None:
        data = self.core.send(event)
        if data:
            await self._send_raw(data)

    async def send_body(self, data: bytes) -> None:
        """Bytes of the request body.

        Raises:
            TunnelError: more than the request's Content-Length.
        """
        await self._send_raw(self.core.send_body(data))

    async def _send_raw(self, data: bytes) -> None:
        await acquire(self.lock)
        try:
            await self.stream.send_all(data)
        finally:
            self.lock.release()

    async def next_event(self) -> h11.Event:
        while (event := self.core.next_event()) is None:
            self.core.receive_data(await self._receive())
        return event

    async def receive_body(self) -> bytes:
        """The next bytes of the response body (after :meth:`next_event` gave its head),
        ``b""`` at its end.

        Raises:
            TunnelError: bad HTTP, or the connection ended inside the body.
        """
        while (data := self.core.next_body()) is None:
            self.core.receive_data(await self._receive())
        return data

    async def _receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(self.size))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TunnelError(f"the proxy connection broke: {exc}") from exc


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
                channel_request(method, self.path, self.authority, self.authorization, length)
            )
            event = await channel.next_event()
            if isinstance(event, h11.Response):
                raise error_from(event)
            if not (isinstance(event, h11.InformationalResponse) and event.status_code == 100):
                raise TunnelError(f"{method}: expected 100 Continue, got {event!r}")
            if method == "RPC_IN_DATA":  # OUT requests end with EndOfMessage: h11 sends those
                channel.core.send_body_directly(length)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return channel


class H1TunnelStream(trio.abc.Stream):
    """The client's end of an MS-RPCH virtual connection. Create it with :func:`h1_tunnel`.

    The protocol state and its decisions are the core's (:class:`ClientVc`); this class
    owns the channels, the tasks that read OUT and run the recycles, and the waits.
    """

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
        self.vc = ClientVc(
            vc_cookie=os.urandom(16),
            in_cookie=os.urandom(16),
            out_cookie=os.urandom(16),
            assoc_group=os.urandom(16),
            lifetime=config.channel_lifetime,
            recycle_threshold=config.in_recycle_threshold,
            max_fragment=config.max_fragment,
        )
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
        self._in_successor: _Channel | None = None
        self._out_successor: _Channel | None = None
        self._in_switched = trio.Event()
        self._out_switched = trio.Event()
        #: Predecessor IN channels the proxy has not closed yet.
        self._retiring: set[_Channel] = set()

    @property
    def vc_cookie(self) -> bytes:
        return self.vc.vc_cookie

    @property
    def in_cookie(self) -> bytes:
        """The current IN channel's cookie."""
        return self.vc.in_cookie

    @property
    def out_cookie(self) -> bytes:
        """The current OUT channel's cookie."""
        return self.vc.out_cookie

    @property
    def in_recycles(self) -> int:
        """Completed IN channel recycles, for logs and tests."""
        return self.vc.in_recycles

    @property
    def out_recycles(self) -> int:
        """Completed OUT channel recycles, for logs and tests."""
        return self.vc.out_recycles

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

    async def _write_in(self, channel: _Channel, data: bytes) -> None:
        """Write bytes the core counted on ``channel``."""
        try:
            await channel.send_body(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(exc)
            raise trio.BrokenResourceError("IN channel broke") from exc

    def _maybe_recycle_in(self, size: int) -> None:
        if self.vc.in_recycle_due(size):
            self._spawn(self._recycle_in)

    async def _send_control(self, data: bytes, *, ack: bool = False) -> None:
        """An RTS PDU on IN; on a full channel the core keeps it for the successor."""
        await acquire(self._in_lock)
        try:
            if self.vc.send_control(data, ack=ack):
                await self._write_in(self.in_ch, data)
            self._maybe_recycle_in(0)
        finally:
            self._in_lock.release()

    async def _send_rpc(self, pdu: bytes) -> None:
        """One RPC PDU on IN, within the window and the channel's budget (waiting for an
        acknowledgement or for the successor IN channel as needed)."""
        if not self.vc.check_rpc_size(len(pdu)):
            raise trio.BrokenResourceError("an RPC PDU larger than the IN channel lifetime")
        deadline: float | None = None
        while True:
            if self._error is not None:
                raise trio.BrokenResourceError(str(self._error))
            await acquire(self._in_lock)
            try:
                self._maybe_recycle_in(len(pdu))
                if self.vc.send_rpc(len(pdu)):
                    await self._write_in(self.in_ch, pdu)
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
        await self.out_ch.send(h11.Data(data=self.vc.conn_a1()))
        await self.out_ch.send(h11.EndOfMessage())
        await self._write_in(self.in_ch, self.vc.conn_b1())
        event = await self.out_ch.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.out_ch.next_event()
        if not isinstance(event, h11.Response):
            raise TunnelError(f"expected the OUT channel response, got {event!r}")
        if event.status_code != 200:
            raise error_from(event)
        while not isinstance(self.vc.next_out_event(), Established):
            data = await self.out_ch.receive_body()
            if not data:
                raise TunnelError("the OUT channel ended during establishment")
            self.vc.receive_out(data)

    # -- background readers ------------------------------------------------------------------

    async def _out_reader(self) -> None:
        try:
            while True:
                data = await self.out_ch.receive_body()
                if not data:
                    self._eof = True
                    self._notify()
                    return
                self.vc.receive_out(data)
                while (event := self.vc.next_out_event()) is not None:
                    if await self._out_event(event):
                        break  # OUT_R2/B3: the rest of the predecessor is not read
                while self._buffered > 2 * OUT_WINDOW and self._error is None:
                    await self._changed.wait()  # the caller is not reading: stop too
        except (TunnelError, RemoteProtocolError, trio.BrokenResourceError) as exc:
            self._fail(exc)

    async def _out_event(self, event: OutEvent) -> bool:
        """Act on what a PDU from OUT asks; True when the OUT channel was switched."""
        if isinstance(event, RpcReceived):
            self._inbox.append(event.data)
            self._buffered += len(event.data)
            self._notify()
            await self._acknowledge()
        elif isinstance(event, AckApplied):
            self._notify()
        elif isinstance(event, InSuccessorAccepted):
            self._spawn(lambda: self._in_handover(event.window))
        elif isinstance(event, OutRecycleRequested):
            self._spawn(self._recycle_out)
        elif isinstance(event, OutRecycleConfirmed):
            self._spawn(self._confirm_out)
        elif isinstance(event, OutPredecessorEnded):
            await self._switch_out()
            return True
        return False

    async def _watch_in(self, channel: _Channel) -> None:
        """The proxy never answers on IN unless it fails; notice that (or a close) unless
        the channel was recycled."""
        error: TunnelError
        try:
            event = await channel.next_event()
            if isinstance(event, h11.Response):
                error = error_from(event)
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
            channel = await self.opener.open("RPC_IN_DATA", self.vc.lifetime)
            if self._closed:
                await trio.aclose_forcefully(channel.stream)
                return
            a1 = self.vc.in_successor_opened(os.urandom(16))
            self._in_successor = channel
            switched = self._in_switched = trio.Event()
            await channel.send_body(a1)
            assert self._nursery is not None
            self._nursery.start_soon(self._watch_in, channel)
            await switched.wait()

    async def _in_handover(self, window: int | None) -> None:
        """IN_R2/A4 arrived: IN_R2/A5 ends the predecessor, the successor takes over."""
        channel = self._in_successor
        assert channel is not None
        await acquire(self._in_lock)
        try:
            old = self.in_ch
            old.retired = True
            handover = self.vc.in_handover(window)
            await self._write_in(old, handover.a5)
            self.in_ch, self._in_successor = channel, None
            for data in handover.then:
                await self._write_in(channel, data)
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
            a3 = self.vc.out_successor_opened(os.urandom(16))
            self._out_successor = channel
            switched = self._out_switched = trio.Event()
            await channel.send(h11.Data(data=a3))
            await switched.wait()

    async def _confirm_out(self) -> None:
        """OUT_R2/A6 arrived: OUT_R2/A7 on IN, OUT_R2/C1 ends the successor's request."""
        channel = self._out_successor
        assert channel is not None
        a7, c1 = self.vc.out_confirm()
        await self._send_control(a7)
        await channel.send(h11.Data(data=c1))
        await channel.send(h11.EndOfMessage())

    async def _switch_out(self) -> None:
        """OUT_R2/B3 arrived: read the successor from its ``200 Success`` on."""
        channel = self._out_successor
        assert channel is not None
        old = self.out_ch
        old.retired = True
        event = await channel.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await channel.next_event()
        if not isinstance(event, h11.Response):
            raise TunnelError(f"expected the successor OUT channel's response, got {event!r}")
        if event.status_code != 200:
            raise error_from(event)
        self.out_ch, self._out_successor = channel, None
        self.vc.out_switched()
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
        """Send the acknowledgement of OUT data that is due, if any (see
        :meth:`ClientVc.acknowledgement`)."""
        message = self.vc.acknowledgement(self._buffered)
        if message is None:
            return
        if not await finish_shielded(partial(self._send_control, message, ack=True)):
            self._fail(trio.TooSlowError("the IN channel stopped taking data"))

    async def aclose(self) -> None:
        self._closed = True
        self._fail(trio.ClosedResourceError("closed"))
        channels = [self.in_ch, self.out_ch, *self._retiring]
        if self._in_successor is not None:
            channels.append(self._in_successor)
        if self._out_successor is not None:
            channels.append(self._out_successor)
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
