"""A logged-on session: batches, the store's RPC calls, events and wake-ups
(:func:`clients.connecting.connect` makes one).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import trio

from clients.calls import Call, MapiObject, Props, T, _raise_for
from clients.objects import Store
from clients.streams import Stream, _StreamCall
from dcerpc.client import RpcClient
from mapi.model import errors
from mapi.wire import OP_DISCONNECT, OP_EXECUTE, OP_WAIT_FOR_EVENTS, WAKE_MAGIC


class ResyncRequired(Exception):
    """Events were lost: the client must re-read its view, then wait again."""


class Event(dict[str, Any]):
    """One notification ([MS-OXCNOTIF]): ``kind`` (an ``EventType`` bit), ``seq``,
    ``entry_id``, ``parent_id``, ... and for table events ``table_event``, ``row``."""

    @property
    def kind(self) -> int:
        return int(self["kind"])

    @property
    def seq(self) -> int:
        return int(self["seq"])

    @property
    def name(self) -> str:
        """``new_mail``, ``object_created``, ``table_modified``, ..."""
        return _EVENT_NAMES.get(self.kind, f"0x{self.kind:x}")

    def __repr__(self) -> str:
        """``Event(new_mail, {...})`` with a table row's columns by property name."""
        fields = dict(self)
        row = fields.get("row")
        if isinstance(row, list):
            fields["row"] = Props((int(t), v) for t, v in row)
        return f"Event({self.name}, {fields!r})"

    __str__ = __repr__


_EVENT_NAMES = {
    0x2: "new_mail", 0x4: "object_created", 0x8: "object_deleted", 0x10: "object_modified",
    0x20: "object_moved", 0x40: "object_copied", 0x80: "search_complete",
    0x100: "table_modified",
}  # fmt: skip


class Batch:
    """Calls queued to run in one round trip; see :meth:`Session.batch`."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.calls: list[Call[Any]] = []

    def add(self, call: Call[T]) -> Any:
        """Queue ``call``; returns the object it opens, or the call (read ``.result`` later)."""
        if call.session is not self.session:
            raise ValueError("a call of another session")
        self.calls.append(call)
        if "out" in call.args:
            return call.decode(0, None)
        return call

    async def run(self) -> None:
        calls, self.calls = self.calls, []
        if not calls:
            return
        # Streams with calls in flight settle first; the server's position must be ours.
        streams = {id(c.stream): c.stream for c in calls if isinstance(c, _StreamCall)}
        prefix: list[list[Any]] = []
        for stream in streams.values():
            prefix += await stream._sync()
        results = await self.session.execute(prefix + [[c.name, c.args] for c in calls])
        for hresult, value in results[: len(prefix)]:
            _raise_for(hresult, value)
        for stream in streams.values():
            stream._server_pos = stream._pos
        results = results[len(prefix) :]
        first_error: errors.MapiError | None = None
        for call, (hresult, value) in zip(calls, results, strict=True):
            try:
                call.resolve(hresult, value)
            except errors.MapiError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error


class Session:
    """A logged-on session. Create it with :func:`connect`."""

    def __init__(self, rpc: RpcClient, context_id: int, session_id: bytes, user: str) -> None:
        self.rpc = rpc
        self.context_id = context_id
        self.session_id = session_id
        self.user = user
        #: Sequence number of the last event received (resume from it after a reconnect).
        self.last_seq = 0
        #: The UDP socket wake-up datagrams arrive on (``connect(wake_udp=True)``).
        self.wake_socket: trio.socket.SocketType | None = None
        self._next_handle = 0
        self._free_handles: list[int] = []
        #: Where pipelined stream calls run (set by :func:`connect`; None: no pipelining).
        self.nursery: trio.Nursery | None = None
        #: What :func:`connect` was given (address after autodiscover, user, password,
        #: fingerprint, transport and auth options), so that
        #: :func:`clients.addressbook.address_book_for` can reach the address book.
        self.connect_params: dict[str, Any] | None = None

    async def wait_for_events(
        self, poll_seconds: float = 30.0, max_events: int = 256
    ) -> list[Event]:
        """The events after :attr:`last_seq`: at once if some are queued, else as soon as
        one arrives, else an empty list after ``poll_seconds`` (the server parks the call
        that long; at most 120).

        Raises:
            ResyncRequired: events were lost (queue overflow, or a session the server no
                longer knew): re-read what you show, then keep waiting.
        """
        reply = await _call(
            self.rpc,
            self.context_id,
            OP_WAIT_FOR_EVENTS,
            {
                "session": self.session_id,
                "after": self.last_seq,
                "timeout": poll_seconds,
                "max": max_events,
            },
        )
        events = [Event(e) for e in reply["events"]]
        if events:
            self.last_seq = events[-1].seq
        if reply["resync"]:
            self.last_seq = int(reply["last_seq"])
            raise ResyncRequired("events were lost; re-read the folders you show")
        return events

    async def wait_for_wakeup(self) -> None:
        """Return when the server's UDP wake-up datagram arrives (events are queued).

        A hint only (UDP may lose it): follow it with :meth:`wait_for_events`.
        """
        if self.wake_socket is None:
            raise RuntimeError("connect with wake_udp=True to receive wake-ups")
        while not (await self.wake_socket.recv(64)).startswith(WAKE_MAGIC):
            pass  # not ours: keep waiting

    async def events(self, poll_seconds: float = 30.0) -> AsyncIterator[Event]:
        """Every event as it arrives (a long-poll loop), until the caller stops."""
        while True:
            for event in await self.wait_for_events(poll_seconds):
                yield event

    def new_handle(self) -> int:
        if self._free_handles:
            return self._free_handles.pop()
        self._next_handle += 1
        return self._next_handle

    async def execute(self, ops: list[list[Any]]) -> list[list[Any]]:
        """Send a raw batch; returns one ``[hresult, value]`` per operation."""
        reply = await _call(
            self.rpc, self.context_id, OP_EXECUTE, {"session": self.session_id, "ops": ops}
        )
        return reply["results"]  # type: ignore[no-any-return]

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[Batch]:
        """Queue calls with ``batch.add(call)``; they run in one round trip at the end.

        Raises the first MAPI error among the calls (every call's ``.result`` or error
        is set either way).
        """
        batch = Batch(self)
        yield batch
        await batch.run()

    def open_store(self, owner: str | None = None) -> Call[Store]:
        """This user's mailbox, or ``owner``'s (needs a folder permission there)."""
        store = Store(self, self.new_handle())
        return Call(
            self, "open_store", {"owner": owner, "out": store.handle}, lambda hresult, value: store
        )

    async def release(self, obj: MapiObject) -> None:
        if obj.handle < 0:
            return
        if isinstance(obj, Stream):  # its calls in flight first (their errors dropped)
            with contextlib.suppress(Exception):
                await obj._settle()
        handle, obj.handle = obj.handle, -1
        await self.execute([["release", {"handles": [handle]}]])
        self._free_handles.append(handle)

    async def close(self) -> None:
        await _call(self.rpc, self.context_id, OP_DISCONNECT, {"session": self.session_id})


async def _call(rpc: RpcClient, context_id: int, opnum: int, request: dict[str, Any]) -> Any:
    stub = await rpc.call(context_id, opnum, msgpack.packb(request, use_bin_type=True))
    reply = msgpack.unpackb(stub, raw=False)
    if not isinstance(reply, dict):
        raise errors.CallFailed("malformed reply from the server")
    _raise_for(int(reply.get("hresult", 0)), reply.get("error"))
    return reply
