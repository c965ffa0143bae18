"""Client side of RPC over HTTP v2 on HTTP/1.1: the IN and OUT channels as one stream
([MS-RPCH] 3.2.2: client role).

Establishment (3.2.2.4.1): open the IN channel (``RPC_IN_DATA``, Content-Length 1 GiB)
and the OUT channel (``RPC_OUT_DATA``, Content-Length 76) on two TLS connections, each
with Basic credentials and ``Expect: 100-continue``; send CONN/A1 on OUT and CONN/B1
on IN; expect ``200`` on OUT, then CONN/A3 and CONN/C2 in its body.

Afterwards :class:`H1TunnelStream` behaves as a byte stream: ``send_all`` writes the
caller's PDUs into the IN body within the proxy's IN window (from CONN/C2, reopened by
its FlowControlAcks on OUT); ``receive_some`` returns RPC PDUs from the OUT body and
acknowledges them on IN with FlowControlAckWithDestination(OutProxy) each time half
our window has been consumed, so long transfers do not stall (3.2.2.1.4). Pings are
ignored, recycling is refused (the stream breaks), and a full IN Content-Length ends
the stream (no IN channel recycling).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import h11
import trio

from dcerpc.errors import DecodeError
from dcerpc.framing import PduFramer
from dcerpc.trio_util import acquire, single_errors
from tunnel import rts
from tunnel.config import DEFAULT_OUT_CONTENT_LENGTH, TunnelConfig
from tunnel.errors import TunnelError
from tunnel.vc import ReceiveWindow, SendWindow

#: Our OUT receive window, advertised in CONN/A1 (impacket and Windows use 256 KiB).
OUT_WINDOW = 262144
IN_CONTENT_LENGTH = DEFAULT_OUT_CONTENT_LENGTH
OUT_REQUEST_LENGTH = 76

Connector = Callable[[], Awaitable[trio.SSLStream[trio.SocketStream]]]


class _Channel:
    """One TLS connection with an h11 client on it."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], size: int) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.size = size
        self.lock = trio.Lock()

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
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
                return event  # type: ignore[return-value]
            try:
                data = await self.stream.receive_some(self.size)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise TunnelError(f"the proxy connection broke: {exc}") from exc
            self.h11.receive_data(bytes(data))


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


async def _open_channel(
    connect: Connector, method: str, authority: str, path: str, authorization: str, length: int
) -> _Channel:
    stream = await connect()
    channel = _Channel(stream, 65536)
    try:
        await channel.send(
            h11.Request(
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
        )
        event = await channel.next_event()
        if isinstance(event, h11.Response):
            raise _error_from(event)
        if not (isinstance(event, h11.InformationalResponse) and event.status_code == 100):
            raise TunnelError(f"{method}: expected 100 Continue, got {event!r}")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return channel


class H1TunnelStream(trio.abc.Stream):
    """The client's end of an MS-RPCH virtual connection. Create it with :func:`h1_tunnel`."""

    def __init__(self, in_ch: _Channel, out_ch: _Channel, config: TunnelConfig) -> None:
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.config = config
        self.vc_cookie = os.urandom(16)
        self.in_cookie = os.urandom(16)
        self.out_cookie = os.urandom(16)
        self.assoc_group = os.urandom(16)
        self.receive_window = ReceiveWindow(OUT_WINDOW)
        self.send_window = SendWindow(OUT_WINDOW, IN_CONTENT_LENGTH)
        self._out_framer = PduFramer(config.max_fragment)
        self._in_framer = PduFramer(config.max_fragment)
        self._inbox: deque[bytes] = deque()
        self._buffered = 0
        self._changed = trio.Event()
        self._error: BaseException | None = None
        self._eof = False
        self._send_guard = trio.Lock()
        self._closed = False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._notify()

    async def _send_in(self, data: bytes, *, rpc: bool) -> None:
        if not self.send_window.fits_body(len(data)):
            raise trio.BrokenResourceError("IN channel Content-Length exhausted")
        self.send_window.sent(len(data), rpc=rpc)
        try:
            await self.in_ch.send(h11.Data(data=data))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(exc)
            raise trio.BrokenResourceError("IN channel broke") from exc

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
        await self._send_in(
            rts.conn_b1(self.vc_cookie, self.in_cookie, self.assoc_group), rpc=False
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
                for cmd in message.commands:
                    if isinstance(cmd, rts.ReceiveWindowSize):
                        self.send_window.peer_window = cmd.value
        if kinds != [rts.Kind.CONN_A3, rts.Kind.CONN_C2]:
            raise TunnelError(f"unexpected establishment sequence {kinds}")

    async def _next_out_rts(self) -> rts.RtsMessage:
        while True:
            pdu = self._out_framer.next_pdu()
            if pdu is not None:
                if not rts.is_rts(pdu):
                    raise TunnelError("RPC data before CONN/C2")
                return rts.decode_rts(pdu)
            event = await self.out_ch.next_event()
            if isinstance(event, h11.Data):
                self._out_framer.feed(event.data)
            else:
                raise TunnelError(f"OUT channel ended during establishment: {event!r}")

    # -- background readers ------------------------------------------------------------------

    async def _out_reader(self) -> None:
        try:
            while True:
                event = await self.out_ch.next_event()
                if isinstance(event, h11.Data):
                    self._out_framer.feed(event.data)
                    while (pdu := self._out_framer.next_pdu()) is not None:
                        self._out_pdu(pdu)
                    while self._buffered > 2 * OUT_WINDOW and self._error is None:
                        await self._changed.wait()  # the caller is not reading: stop too
                else:
                    self._eof = True
                    self._notify()
                    return
        except (TunnelError, DecodeError, trio.BrokenResourceError) as exc:
            self._fail(exc)

    def _out_pdu(self, pdu: bytes) -> None:
        if not rts.is_rts(pdu):
            self._inbox.append(pdu)
            self._buffered += len(pdu)
            self._notify()
            return
        message = rts.decode_rts(pdu)
        kind = rts.classify(message)
        if kind is rts.Kind.FLOW_CONTROL_ACK:
            ack = rts.find_ack(message)
            assert ack is not None
            self.send_window.acknowledged(ack.bytes_received, ack.available_window)
            self._notify()
        elif kind is rts.Kind.RECYCLE:
            raise TunnelError("the proxy asked to recycle the OUT channel (not supported)")

    async def _in_watcher(self) -> None:
        """The proxy never answers on IN unless it fails; notice that (or a close)."""
        try:
            event = await self.in_ch.next_event()
            if isinstance(event, h11.Response):
                self._fail(_error_from(event))
                return
        except TunnelError as exc:
            self._fail(exc)
            return
        self._fail(TunnelError("the IN channel ended"))

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
                while not self.send_window.can_send(len(pdu)):
                    if self._error is not None:
                        raise trio.BrokenResourceError(str(self._error))
                    await self._changed.wait()
                await self._send_in(pdu, rpc=True)
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
        # Acknowledge what the caller consumed, counted per whole PDU as framed on OUT.
        ack = self.receive_window.received(len(pdu))
        self._notify()
        if ack is not None:
            async with self._send_guard:
                await self._send_in(
                    rts.flow_control_ack_to(
                        rts.ForwardDestination.OUT_PROXY,
                        ack.bytes_received,
                        ack.available_window,
                        self.out_cookie,
                    ),
                    rpc=False,
                )
        return pdu

    async def aclose(self) -> None:
        self._closed = True
        self._fail(trio.ClosedResourceError("closed"))
        try:
            await trio.aclose_forcefully(self.in_ch.stream)
        finally:
            # Runs even when the first close delivered a Cancelled (socket closes are
            # synchronous; only the checkpoint after them raises).
            await trio.aclose_forcefully(self.out_ch.stream)


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
    in_ch: _Channel | None = None
    out_ch: _Channel | None = None
    try:
        with trio.fail_after(open_timeout):
            in_ch = await _open_channel(
                connect, "RPC_IN_DATA", authority, path, authorization, IN_CONTENT_LENGTH
            )
            out_ch = await _open_channel(
                connect, "RPC_OUT_DATA", authority, path, authorization, OUT_REQUEST_LENGTH
            )
            stream = H1TunnelStream(in_ch, out_ch, config)
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
            nursery.start_soon(stream._out_reader)
            nursery.start_soon(stream._in_watcher)
            try:
                yield stream
            finally:
                # Close before cancelling: a checkpoint under the cancelled nursery scope
                # would raise Cancelled here and swallow the body's own exception.
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                nursery.cancel_scope.cancel()
