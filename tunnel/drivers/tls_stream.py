"""TLS over a trio stream, lean enough for one record per small RPC call.

The tunnel puts every DCE/RPC call through TLS twice (client and proxy each encrypt
one way and decrypt the other), so the per-record cost of the TLS wrapper is a large
part of a small call's round trip. ``trio.SSLStream`` is general (renegotiation, a
send and a receive that may each need the other's I/O, ``unwrap``); this stream keeps
only what the tunnel uses, with the same semantics as ``trio.SSLStream(...,
https_compatible=True)``:

- ``do_handshake()`` (also run by the first send or receive), ``selected_alpn_protocol()``,
  ``getpeercert()``;
- ``send_all`` encrypts into a memory BIO and sends the records under a send lock:
  every byte leaving the outgoing BIO (the handshake's too) is drained and sent under
  that lock, so records reach the transport in order;
- ``receive_some`` decrypts what is buffered, else reads the transport; an EOF with or
  without ``close_notify`` is an EOF (HTTP frames its own messages, as RFC 2818 allows).
  It never sends: what a read makes OpenSSL queue (a TLS 1.3 KeyUpdate answer, an
  alert) leaves with the next send, ahead of its records (RFC 8446 4.6.3);
- ``aclose`` closes the transport without sending ``close_notify``.

Renegotiation is refused by the contexts (``ssl.OP_NO_RENEGOTIATION``, see
:mod:`tunnel.drivers.tls`); a renegotiation request from a peer breaks the stream.

Cancellation: a cancelled receive loses nothing (records are decrypted only once read
whole). A send cancelled after its records were made leaves the TLS sequence broken,
so the stream is then broken for good (as ``trio.SSLStream``'s is).

Memory: OpenSSL's memory BIOs grow to the most they ever held and never shrink, so
neither is given more than :data:`BIO_SLICE` at a time. The transport is read
:data:`RECEIVE_SIZE` at a time (fewer reads, fewer passes through the reader's loop),
and the bytes wait in Python until OpenSSL asks for them; a send is encrypted a slice
at a time. An idle connection thus keeps about 64 KiB of BIO buffers, whatever it once
moved (about 350 KiB with whole 256 KiB reads fed at once).
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import trio

from dcerpc.trio_util import acquire

#: Bytes asked of the transport per read (a TLS record is at most ~16 KiB): 256 KiB
#: reads make tunnelled uploads faster than 64 KiB ones (docs/benchmarks.md).
RECEIVE_SIZE = 262144
#: Most bytes handed to a memory BIO at once (see "Memory" above).
BIO_SLICE = 65536
_NOTHING = memoryview(b"")


class TLSStream(trio.abc.Stream):
    """TLS client or server over ``transport_stream`` (see the module docstring)."""

    def __init__(
        self,
        transport_stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._send_lock = trio.Lock()
        self._handshake_lock = trio.Lock()
        self._handshook = False
        self._receiving = False
        self._sending = False
        self._broken: BaseException | None = None
        self._closed = False
        self._eof = False
        #: Bytes read from the transport that OpenSSL has not asked for yet.
        self._raw = _NOTHING
        #: A TLS error met after records a receive returned: the next receive raises it.
        self._failed: ssl.SSLError | None = None

    # -- the TLS session -------------------------------------------------------------------

    def selected_alpn_protocol(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._ssl.getpeercert(binary_form)

    async def do_handshake(self) -> None:
        """Complete the handshake (idempotent; concurrent callers wait for one).

        Raises:
            trio.BrokenResourceError: the handshake failed (its ``ssl.SSLError`` chained).
        """
        self._check_usable()
        if self._handshook:
            await trio.lowlevel.checkpoint()
            return
        async with self._handshake_lock:
            while not self._handshook:
                self._check_usable()  # a handshake another task broke or gave up on
                try:
                    self._ssl.do_handshake()
                    self._handshook = True
                except ssl.SSLWantReadError:
                    await self._flush()
                    await self._feed("the peer closed the connection during the handshake")
                except ssl.SSLError as exc:
                    await self._flush_quietly()  # the alert, so the peer learns why
                    raise self._break(exc) from exc
            await self._flush()  # our Finished, or a server's session tickets

    # -- trio.abc.Stream -------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            self._check_usable()
            if self._failed is not None:  # a receive met it first: it is the reason
                raise self._break(self._failed) from self._failed
            if not self._handshook:
                await self.do_handshake()
            if not data:
                await self._flush()  # what a read left queued (a KeyUpdate answer)
                await trio.lowlevel.checkpoint()  # as trio's streams: always a checkpoint
                return
            await acquire(self._send_lock)
            try:
                view = memoryview(data).cast("B")
                for start in range(0, len(view), BIO_SLICE):
                    try:
                        self._ssl.write(view[start : start + BIO_SLICE])
                    except ssl.SSLError as exc:  # no renegotiation: nothing can ask to wait
                        raise self._break(exc) from exc
                    await self._send_outgoing()
            finally:
                self._send_lock.release()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_usable()
            if not self._handshook:
                await self.do_handshake()
            size = RECEIVE_SIZE if max_bytes is None else max_bytes
            if size < 1:
                raise ValueError("max_bytes must be at least 1")
            if self._failed is not None:
                raise self._break(self._failed) from self._failed
            waited = False
            while True:
                if self._eof:
                    data = b""
                    break
                try:
                    data = self._ssl.read(size)
                    if len(data) < size and (self._incoming.pending or self._raw):
                        data = self._read_more(data, size)
                    break
                except ssl.SSLWantReadError:
                    if self._raw:
                        self._give_raw()  # read earlier: no wait
                        continue
                    waited = True
                    if not await self._feed(None):
                        self._eof = True  # a ragged EOF: an EOF for us (https_compatible)
                except ssl.SSLZeroReturnError:
                    self._eof = True  # close_notify
                except ssl.SSLError as exc:
                    raise self._break(exc) from exc
            # Whatever the read made OpenSSL queue (a KeyUpdate answer, an alert) goes out
            # with the next send, which drains the outgoing BIO first: RFC 8446 4.6.3 asks
            # for the KeyUpdate before our next application data, not sooner. Sending it
            # here could block, or be cancelled, with the data already taken.
            if not waited:
                # Served from the buffer: still a checkpoint, but cancelling it now would
                # lose the data read, so only a shielded one (as trio's SocketStream).
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    def _read_more(self, first: bytes, size: int) -> bytes:
        """``first`` and the plaintext of the whole records already in hand after it, up
        to ``size`` bytes: a read returns one record (16 KiB at most), and each read of
        this stream costs its reader a pass through its loop (the h2 parser, a flush)."""
        parts = [first]
        got = len(first)
        while got < size:
            if not self._incoming.pending:
                if not self._raw:
                    break
                self._give_raw()
            try:
                more = self._ssl.read(size - got)
            except ssl.SSLWantReadError:
                if self._raw:
                    self._give_raw()  # the rest of a record cut by a slice
                    continue
                break  # a record cut by the transport read: for the next call
            except ssl.SSLZeroReturnError:
                self._eof = True  # close_notify: the next call returns the EOF
                break
            except ssl.SSLError as exc:
                # An alert, a bad record: what came before it is the caller's now; the
                # next call raises (OpenSSL would not say it twice).
                self._failed = exc
                break
            if not more:
                break
            parts.append(more)
            got += len(more)
        return first if len(parts) == 1 else b"".join(parts)

    async def wait_send_all_might_not_block(self) -> None:
        self._check_usable()
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Close the transport (no close_notify: the HTTP layers frame their messages)."""
        self._closed = True
        await self.transport_stream.aclose()

    # -- internals -------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("the TLS stream is broken") from self._broken

    def _break(self, exc: BaseException) -> trio.BrokenResourceError:
        self._broken = exc
        return trio.BrokenResourceError(f"TLS failed: {exc}")

    async def _feed(self, eof_message: str | None) -> bool:
        """Give OpenSSL more input: the next slice of an earlier read (no wait), else a
        read of the transport; False at EOF (or raise when ``eof_message`` says an EOF
        is an error here)."""
        if self._raw:
            self._give_raw()
            return True
        try:
            chunk = await self.transport_stream.receive_some(RECEIVE_SIZE)
        except trio.BrokenResourceError as exc:
            raise self._break(exc) from exc
        if not chunk:
            if eof_message is not None:
                raise self._break(ConnectionResetError(eof_message))
            return False
        self._raw = memoryview(chunk)
        self._give_raw()
        return True

    def _give_raw(self) -> None:
        """Hand OpenSSL the next slice of what was read from the transport."""
        self._incoming.write(self._raw[:BIO_SLICE])
        self._raw = self._raw[BIO_SLICE:]
        if not self._raw:
            self._raw = _NOTHING  # an empty slice would still pin the whole read

    async def _flush(self) -> None:
        """Send what the outgoing BIO holds (under the send lock)."""
        if self._outgoing.pending:
            await acquire(self._send_lock)
            try:
                await self._send_outgoing()
            finally:
                self._send_lock.release()

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._flush()

    async def _send_outgoing(self) -> None:
        """Drain the outgoing BIO to the transport; the caller holds the send lock. Any
        failure, a cancellation included, breaks the stream: records made are lost."""
        out = self._outgoing.read()
        if not out:
            return
        try:
            await self.transport_stream.send_all(out)
        except BaseException as exc:
            self._broken = exc
            if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
                raise trio.BrokenResourceError(f"TLS transport failed: {exc}") from exc
            raise
