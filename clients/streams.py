"""Streams: a large property read and written in chunks, with the write-behind and
read-ahead engine that pipelines those calls (see :class:`Stream`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from clients.calls import Call, MapiObject, T, _none, _raise_for, _value

if TYPE_CHECKING:
    from clients.session import Session


class _Pending:
    """One stream call running in the background: its answer or its error, once done."""

    __slots__ = ("at", "done", "error", "size", "value")

    def __init__(self, at: int, size: int) -> None:
        self.at = at
        self.size = size
        self.done = trio.Event()
        self.value: Any = None
        self.error: Exception | None = None


class _StreamCall(Call[T]):
    """A stream call: in a batch it runs at the server's position like any call; awaited
    on its own it goes through the stream's pipelined path (see :class:`Stream`)."""

    def __init__(
        self,
        stream: Stream,
        name: str,
        args: dict[str, Any],
        decode: Callable[[int, Any], T],
        run: Callable[[], Awaitable[T]],
    ) -> None:
        super().__init__(stream.session, name, {"h": stream.handle, **args}, decode)
        self.stream = stream
        self._direct = run

    def resolve(self, hresult: int, value: Any) -> T:
        result = super().resolve(hresult, value)
        self.stream._moved(self.name, value)  # a batch ran it at the server's position
        return result

    async def _run(self) -> T:
        value = await self._direct()
        self._value, self._done = value, True
        return value


class Stream(MapiObject):
    """A large property opened as a stream; read and write it in chunks.

    Awaited on their own, :meth:`write` and :meth:`read` are pipelined in sessions from
    :func:`connect`: a write returns at once and is sent in the background, with up to
    :attr:`window` writes in flight (write-behind); a read that continues the previous
    one finds the next ``window - 1`` reads already asked for (read-ahead). Both name
    their offset (``at``), so the server gives the same result in whatever order it
    runs them, and the stream keeps its position on this side. Order and errors stay
    as if every call had run in turn: any other call on the stream (``commit``,
    ``seek``, ``size``, ``set_size``, a read after writes, a batch holding a call of
    the stream, its release) first waits for the writes in flight; a read-ahead is
    discarded by any change. A write that failed raises its error from the next call on
    the stream, and from every call after that (the content is then unknown: release
    the stream). In a batch, calls run in order at the server's position, as any call
    does.
    """

    #: Most writes (or reads: the one asked for and those read ahead) in flight at once;
    #: 1 makes every call wait for its answer.
    window = 4

    def __init__(self, session: Session, handle: int) -> None:
        super().__init__(session, handle)
        self._pos = 0  # the position, as this side keeps it
        self._server_pos = 0  # the server's (moved only by calls at the position)
        self._writes: list[_Pending] = []
        self._ahead: list[_Pending] = []
        self._error: Exception | None = None  # a failed write-behind: sticky

    # -- the calls -------------------------------------------------------------------------

    def read(self, size: int) -> Call[bytes]:
        return _StreamCall(self, "read_stream", {"size": size}, _value, lambda: self._read(size))

    def write(self, data: bytes) -> Call[int]:
        return _StreamCall(self, "write_stream", {"data": data}, _value, lambda: self._write(data))

    def seek(self, offset: int, origin: int = 0) -> Call[int]:
        return _StreamCall(
            self,
            "seek_stream",
            {"offset": offset, "origin": origin},
            _value,
            lambda: self._seek(offset, origin),
        )

    def size(self) -> Call[int]:
        return _StreamCall(self, "stream_size", {}, _value, lambda: self._settled("stream_size"))

    def set_size(self, size: int) -> Call[None]:
        return _StreamCall(
            self,
            "set_stream_size",
            {"size": size},
            _none,
            lambda: self._settled("set_stream_size", size=size),
        )

    def commit(self) -> Call[None]:
        return _StreamCall(self, "commit_stream", {}, _none, lambda: self._settled("commit_stream"))

    # -- the pipelined path ----------------------------------------------------------------

    async def _one(self, op: str, **args: Any) -> Any:
        (result,) = await self.session.execute([[op, {"h": self.handle, **args}]])
        _raise_for(*result)
        return result[1]

    def _start(self, op: str, at: int, length: int, **args: Any) -> _Pending:
        pending = _Pending(at, length)
        nursery = self.session.nursery
        assert nursery is not None
        nursery.start_soon(self._complete, pending, op, {"at": at, **args})
        return pending

    async def _complete(self, pending: _Pending, op: str, args: dict[str, Any]) -> None:
        try:
            pending.value = await self._one(op, **args)
        except Exception as exc:  # kept for the caller (MAPI errors, a closed connection)
            pending.error = exc
        finally:
            pending.done.set()

    def _pipelined(self) -> bool:
        return self.window > 1 and self.session.nursery is not None

    async def _write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        await self._drop_reads()
        data = bytes(data)  # sent later: never a buffer the caller may reuse
        if not self._pipelined():
            await self._settle()
            written = int(await self._one("write_stream", data=data, at=self._pos))
            self._pos += written
            return written
        if len(self._writes) < self.window:
            await trio.lowlevel.checkpoint()  # an async call always checkpoints
        while len(self._writes) >= self.window:
            await self._wait_write(self._writes.pop(0))
        self._writes.append(self._start("write_stream", self._pos, len(data), data=data))
        self._pos += len(data)
        return len(data)

    async def _wait_write(self, pending: _Pending) -> None:
        await pending.done.wait()
        if pending.error is not None and self._error is None:
            self._error = pending.error
        if self._error is not None:
            raise self._error

    async def _read(self, size: int) -> bytes:
        await self._settle_writes()
        if not self._pipelined():
            data: bytes = await self._one("read_stream", size=size, at=self._pos)
            self._pos += len(data)
            return data
        if self._ahead and (self._ahead[0].at, self._ahead[0].size) == (self._pos, size):
            pending = self._ahead.pop(0)
            await pending.done.wait()
            if pending.error is not None:
                await self._drop_reads()
                raise pending.error
            data = pending.value
        else:
            await self._drop_reads()
            data = await self._one("read_stream", size=size, at=self._pos)
        self._pos += len(data)
        if len(data) < size or size == 0:  # the end: nothing to read ahead
            await self._drop_reads()
            return data
        at = self._ahead[-1].at + size if self._ahead else self._pos
        while len(self._ahead) < self.window - 1:
            self._ahead.append(self._start("read_stream", at, size, size=size))
            at += size
        return data

    async def _seek(self, offset: int, origin: int) -> int:
        await self._settle()
        if origin == 1:  # from the position: ours, which the server may not share
            offset, origin = self._pos + offset, 0
        pos = int(await self._one("seek_stream", offset=offset, origin=origin))
        self._pos = self._server_pos = pos
        return pos

    async def _settled(self, op: str, **args: Any) -> Any:
        await self._settle()
        return await self._one(op, **args)

    async def _settle_writes(self) -> None:
        """Wait for every write in flight; raise the first error (and keep it)."""
        writes, self._writes = self._writes, []
        for pending in writes:
            await pending.done.wait()
            if pending.error is not None and self._error is None:
                self._error = pending.error
        if self._error is not None:
            raise self._error

    async def _drop_reads(self) -> None:
        """Discard the reads ahead (once answered: their results are stale now)."""
        ahead, self._ahead = self._ahead, []
        for pending in ahead:
            await pending.done.wait()

    async def _settle(self) -> None:
        await self._drop_reads()
        await self._settle_writes()

    async def _sync(self) -> list[list[Any]]:
        """Before a batch holding a call of this stream: settle, and the operation that
        brings the server's position to ours, if they differ."""
        await self._settle()
        if self._server_pos == self._pos:
            return []
        return [["seek_stream", {"h": self.handle, "offset": self._pos, "origin": 0}]]

    def _moved(self, op: str, value: Any) -> None:
        """A call ran at the server's position in a batch: follow it."""
        if op == "read_stream" and isinstance(value, bytes):
            self._server_pos += len(value)
        elif op == "write_stream" and isinstance(value, int):
            self._server_pos += value
        elif op == "seek_stream" and isinstance(value, int):
            self._server_pos = value
        self._pos = self._server_pos
