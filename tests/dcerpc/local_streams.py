"""A bounded in-memory byte-stream pair, for runtime tests that need a peer which
does not read (or reads slowly) without the kernel's socket buffers in between.

:func:`local_stream_pair` gives two connected ``trio.abc.HalfCloseableStream`` ends.
Each direction buffers at most ``limit`` bytes: a writer waits for the reader, so a
peer that never reads still cannot make either side buffer without bound.

(The tunnel once relayed to in-process services through it; it now attaches them
directly, see :mod:`tunnel.drivers.backend`.)
"""

from __future__ import annotations

import operator

import trio

DEFAULT_LIMIT = 256 * 1024


class _Pipe:
    """One direction: a bounded buffer with end-of-file and broken states."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.eof = False  # the writer sent EOF or closed
        self.reader_gone = False
        self._changed = trio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self) -> None:
        await self._changed.wait()


class LocalStream(trio.abc.HalfCloseableStream):
    """One end of a :func:`local_stream_pair`."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._out = outgoing
        self._in = incoming
        self._closed = False
        self._sending = False  # one writer and one reader at a time, as trio requires
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("this stream was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            view = memoryview(data)
            while view:
                if self._out.reader_gone:
                    raise trio.BrokenResourceError("the other end was closed")
                if self._out.eof:
                    raise trio.ClosedResourceError("send_eof was called")
                room = self._out.limit - len(self._out.buffer)
                if room <= 0:
                    await self._out.wait()
                    continue
                self._out.buffer += view[:room]
                view = view[room:]
                self._out.notify()
            await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("this stream was closed")
        while len(self._out.buffer) >= self._out.limit and not self._out.reader_gone:
            await self._out.wait()
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        if not self._out.eof:
            self._out.eof = True
            self._out.notify()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for a float, as sockets do
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            # A cancel point before anything is consumed, as trio's sockets have; after
            # consuming, only a shielded schedule point (cancelling then would lose data),
            # and none when waiting for the data already was one.
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while not self._in.buffer and not self._in.eof:
                await self._in.wait()
                waited = True
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
            buffered = len(self._in.buffer)
            size = buffered if max_bytes is None else min(max_bytes, buffered)
            data = bytes(self._in.buffer[:size])  # bytes, as SocketStream returns
            del self._in.buffer[:size]
            self._in.notify()
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.eof = True  # the other end reads what is buffered, then EOF
            self._in.reader_gone = True
            self._in.buffer.clear()
            self._out.notify()
            self._in.notify()
        await trio.lowlevel.checkpoint()


def local_stream_pair(limit: int = DEFAULT_LIMIT) -> tuple[LocalStream, LocalStream]:
    """Two connected stream ends, each direction bounded to ``limit`` buffered bytes."""
    a_to_b, b_to_a = _Pipe(limit), _Pipe(limit)
    return LocalStream(a_to_b, b_to_a), LocalStream(b_to_a, a_to_b)
