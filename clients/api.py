"""The client library: MAPI-style objects over the store's DCE/RPC interface.

::

    async with connect("ncacn_ip_tcp:mail.example[135]", "alice", "secret") as session:
        store = await session.open_store()
        inbox = await store.open_folder(await store.special_folder("inbox"))
        async for row in inbox.contents(["PR_SUBJECT", "PR_MESSAGE_DELIVERY_TIME"],
                                        sort=[("PR_MESSAGE_DELIVERY_TIME", True)]):
            print(row["PR_SUBJECT"])

Every method of an object returns a :class:`Call`: ``await`` it to run it at once,
or queue several in ``async with session.batch() as batch`` to send them in one
round trip (``batch.add(call)``); objects opened in a batch can be used by later
calls of the same batch, because the client picks their handle numbers. Properties
are named by tag (``0x0037001F``) or by MS-OXPROPS name (``"PR_SUBJECT"``). MAPI
errors are raised as the :mod:`mapi.errors` classes (``NotFound``, ``NoAccess``...).

The address chooses the transport: ``ncacn_ip_tcp:host[port]`` connects to an
endpoint mapper (port 135 by default) and asks it where the store is; it also works
when ``port`` is the store's own port. ``https://host:port/`` goes through the HTTPS
tunnel (HTTP/2, or RPC over HTTP v2 with ``http2=False``): it asks the endpoint
mapper behind the tunnel (port ``?epm=N`` in the URL, 1135 by default) where the store
is, then opens a second tunnelled connection to it. The certificate is verified with
the system's trust store or a pinned SHA-256 ``fingerprint``; there is no clear-text
fallback. The password never crosses the wire in clear: logon is a challenge-response
(:mod:`mapi.logon`), and the tunnel's HTTP Basic authentication runs inside TLS.
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack
import trio

from clients.autodiscover import discover, parse_email_address
from dcerpc.client import RpcClient, open_rpc_client, open_tcp_rpc_client
from dcerpc.errors import BindRejected, ConnectionClosed, RpcFault
from dcerpc.pdu import ProviderReason
from dcerpc.syntax import MSGPACK
from dcerpc.trio_util import single_errors
from endpoint_mapper import EPM_SYNTAX, map_endpoint_on
from mapi import errors
from mapi import proptags as pt
from mapi.limits import DEFAULT_LIMITS
from mapi.logon import Challenge, KdfParams, client_response
from mapi.wire import (
    OP_CONNECT,
    OP_DISCONNECT,
    OP_EXECUTE,
    OP_WAIT_FOR_EVENTS,
    STORE_SYNTAX,
    WAKE_MAGIC,
)
from tunnel.errors import TunnelError
from tunnel.tls import normalize_fingerprint
from tunnel.transport import open_tunnel_stream

#: Largest scrypt cost (N) the client accepts from a server: 2**20 with r=8 is 1 GiB.
MAX_CLIENT_KDF_N = 1 << 20

T = TypeVar("T")
ObjT = TypeVar("ObjT", bound="MapiObject")
Tag = int | str
MAPI_W_ERRORS_RETURNED = 0x00040380
_PT_ERROR = int(pt.PropType.PT_ERROR)


def tag_of(tag: Tag) -> int:
    """A property tag from a tag or an MS-OXPROPS name (``"PR_SUBJECT"``)."""
    if isinstance(tag, int):
        return tag
    try:
        return pt.tag_from_name(tag)
    except KeyError:
        raise ValueError(f"unknown property name {tag!r}") from None


class Props(dict[int, Any]):
    """Property values by tag, also readable by name: ``props["PR_SUBJECT"]``.

    ``errors`` holds the per-property errors (tag -> HRESULT) of a ``get_props``.
    """

    def __init__(
        self, values: Iterable[tuple[int, Any]] = (), requested: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.errors: dict[int, int] = {}
        values = values if isinstance(values, list) else list(values)
        # Values come back in request order, so an error is reported under the tag asked
        # for (the wire carries it with type PT_ERROR, which loses the original type).
        asked = requested if requested is not None and len(requested) == len(values) else None
        for i, (tag, value) in enumerate(values):
            if tag & 0xFFFF == _PT_ERROR:
                self.errors[asked[i] if asked else pt.change_type(tag, 0)] = value
            else:
                dict.__setitem__(self, tag, value)

    def __getitem__(self, key: Tag) -> Any:
        return super().__getitem__(tag_of(key))

    def get(self, key: Tag, default: Any = None) -> Any:
        return super().get(tag_of(key), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int | str) and super().__contains__(tag_of(key))

    def named(self) -> dict[str, Any]:
        """The values keyed by property name (for display and JSON)."""
        return {pt.tag_name(tag): value for tag, value in self.items()}

    def __repr__(self) -> str:
        """``Props({'PR_SUBJECT': 'Hello', ...})``: names, not numeric tags, when printed;
        per-property errors follow by name too."""
        text = f"Props({self.named()!r})"
        if self.errors:
            failed = {pt.tag_name(t): errors.hresult_name(h) for t, h in self.errors.items()}
            text = f"Props({self.named()!r}, errors={failed!r})"
        return text

    __str__ = __repr__


def _raise_for(hresult: int, message: Any) -> None:
    if hresult & 0x80000000:
        raise errors.error_for(hresult, message if isinstance(message, str) else "")


class Call(Generic[T]):
    """One operation: ``await`` it, or ``batch.add()`` it."""

    def __init__(
        self,
        session: Session,
        name: str,
        args: dict[str, Any],
        decode: Callable[[int, Any], T],
    ) -> None:
        self.session = session
        self.name = name
        self.args = args
        self.decode = decode
        self._done = False
        self._value: T | None = None

    @property
    def result(self) -> T:
        """The value, once the batch holding this call has run."""
        if not self._done:
            raise RuntimeError("the call has not run yet")
        return self._value  # type: ignore[return-value]

    def resolve(self, hresult: int, value: Any) -> T:
        _raise_for(hresult, value)
        self._value = self.decode(hresult, value)
        self._done = True
        return self._value

    def __await__(self) -> Generator[Any, None, T]:
        return self._run().__await__()

    async def _run(self) -> T:
        (result,) = await self.session.execute([[self.name, self.args]])
        return self.resolve(*result)


def _value(hresult: int, value: Any) -> Any:
    return value


def _status(hresult: int, value: Any) -> int:
    """0, or a MAPI warning such as MAPI_W_PARTIAL_COMPLETION (0x00040680)."""
    return hresult


def _none(hresult: int, value: Any) -> None:
    return None


#: Largest string or binary value one ``set_props`` may carry: the server refuses
#: larger values of one call (its stub limit, ``max_value_bytes``: 1 MiB by default); a
#: value as large as a whole request fragment would cost the connection itself.
MAX_INLINE_VALUE = DEFAULT_LIMITS.max_value_bytes


def _inline_size(value: Any) -> int:
    """The size a value takes on the server (UTF-16 for strings), 0 for small types."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        # UTF-16: 2 bytes a character, 4 for astral ones. Short strings fit whatever
        # they hold, so only long ones are measured exactly.
        if 4 * len(value) <= MAX_INLINE_VALUE:
            return 2 * len(value)
        return len(value.encode("utf-16-le", "surrogatepass"))
    if isinstance(value, list | tuple):
        return sum(_inline_size(v) for v in value)
    return 0


def _too_big(tag: int, size: int | None = None) -> errors.MapiError:
    amount = f" ({size} bytes)" if size is not None else ""
    return errors.TooBig(
        f"{pt.tag_name(tag)}{amount} is too large for one set_props call: write it "
        f"through a stream, open_stream({pt.tag_name(tag)}, write=True, create=True)"
    )


def _problems(props: list[list[Any]]) -> Callable[[int, Any], list[list[int]]]:
    """Decode set_props' problem array; a MAPI_E_TOO_BIG problem is raised, not returned
    (a value silently not set is lost data), with a hint to use a stream."""

    def decode(hresult: int, value: Any) -> list[list[int]]:
        problems = value if isinstance(value, list) else []
        for problem in problems:
            if len(problem) >= 3 and problem[2] == errors.Hresult.MAPI_E_TOO_BIG:
                raise _too_big(int(problem[1]))
        return problems

    return decode


def _props_for(requested: Sequence[int] | None) -> Callable[[int, Any], Props]:
    return lambda hresult, value: Props(value, requested)


class MapiObject:
    """An object the server holds open for us under ``handle``."""

    def __init__(self, session: Session, handle: int) -> None:
        self.session = session
        self.handle = handle

    def _call(self, op: str, decode: Callable[[int, Any], T] = _value, /, **args: Any) -> Call[T]:
        return Call(self.session, op, {"h": self.handle, **args}, decode)

    def _open(self, op: str, cls: type[ObjT], /, **args: Any) -> Call[ObjT]:
        obj = cls(self.session, self.session.new_handle())
        return Call(
            self.session,
            op,
            {"h": self.handle, "out": obj.handle, **args},
            lambda hresult, value: obj,
        )

    def get_props(self, tags: Sequence[Tag] | None = None) -> Call[Props]:
        """Values of ``tags`` (all properties when None); missing ones land in ``.errors``."""
        wanted = None if tags is None else [tag_of(t) for t in tags]
        return self._call("get_props", _props_for(wanted), tags=wanted)

    def set_props(self, values: dict[Tag, Any]) -> Call[list[list[int]]]:
        """Set properties; returns the per-property problems ``[index, tag, hresult]``.

        Raises:
            TooBig: a value too large for one call (checked here before anything is
                sent, or answered MAPI_E_TOO_BIG by the server): write it through
                ``open_stream(tag, write=True, create=True)`` instead.
        """
        props = [[tag_of(t), v] for t, v in values.items()]
        for tag, value in props:
            if _inline_size(value) > MAX_INLINE_VALUE:
                raise _too_big(tag, _inline_size(value))
        return self._call("set_props", _problems(props), props=props)

    def delete_props(self, tags: Sequence[Tag]) -> Call[list[list[int]]]:
        return self._call("delete_props", tags=[tag_of(t) for t in tags])

    def get_prop_list(self) -> Call[list[int]]:
        return self._call("get_prop_list")

    async def release(self) -> None:
        """Let the server close the object (idempotent, never raises MAPI errors)."""
        await self.session.release(self)

    async def __aenter__(self: ObjT) -> ObjT:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Store(MapiObject):
    """A message store (a mailbox)."""

    def special_folder(self, role: str) -> Call[bytes]:
        """Entry id of a standard folder: ``inbox``, ``outbox``, ``sent``, ``deleted``,
        ``drafts``, ``calendar``, ``contacts``, ``tasks``, ``notes``, ``journal``,
        ``ipm_subtree`` or ``root``."""
        return self._call("special_folder", role=role)

    def open_folder(self, entry_id: bytes) -> Call[Folder]:
        return self._open("open_folder", Folder, eid=entry_id)

    def open_message(self, entry_id: bytes, *, write: bool = False) -> Call[Message]:
        return self._open("open_message", Message, eid=entry_id, write=write)

    def get_ids_from_names(
        self, names: Sequence[tuple[bytes, int | str]], *, create: bool = False
    ) -> Call[list[int]]:
        """Property ids of named properties: ``(guid, lid)`` or ``(guid, "name")``."""
        wire = [[g, 0, n] if isinstance(n, int) else [g, 1, n] for g, n in names]
        return self._call("get_ids_from_names", names=wire, create=create)

    def get_names_from_ids(self, ids: Sequence[int]) -> Call[list[Any]]:
        return self._call("get_names_from_ids", ids=list(ids))

    def advise(self, mask: int, entry_id: bytes | None = None) -> Call[int]:
        """Subscribe to events (``EventType`` bits, e.g. NEW_MAIL | OBJECT_CREATED) on the
        whole store, a folder or a message; returns the subscription id. Events arrive
        through :meth:`Session.wait_for_events` / :meth:`Session.events`."""
        return self._call("advise", mask=mask, eid=entry_id)

    def advise_table(
        self,
        folder_entry_id: bytes,
        kind: str = "contents",
        columns: Sequence[Tag] | None = None,
        sort: Sequence[tuple[Tag, bool]] = (),
    ) -> Call[int]:
        """Subscribe to row added/deleted/modified events of a folder's contents (or
        hierarchy) table, rendered with ``columns`` and positioned by ``sort``."""
        return self._call(
            "advise_table",
            eid=folder_entry_id,
            kind=kind,
            columns=None if columns is None else [tag_of(t) for t in columns],
            keys=[[tag_of(t), d] for t, d in sort] if sort else None,
        )

    def unadvise(self, subscription: int) -> Call[None]:
        return self._call("unadvise", _none, sub=subscription)


class Folder(MapiObject):
    """A folder."""

    def create_folder(
        self, name: str, *, comment: str | None = None, open_if_exists: bool = False
    ) -> Call[Folder]:
        return self._open(
            "create_folder", Folder, name=name, comment=comment, open_if_exists=open_if_exists
        )

    def delete_folder(self, entry_id: bytes, flags: int = 0) -> Call[None]:
        return self._call("delete_folder", _none, eid=entry_id, flags=flags)

    def copy_folder(
        self, entry_id: bytes, dest: Folder, *, name: str | None = None, move: bool = False
    ) -> Call[bytes]:
        return self._call("copy_folder", eid=entry_id, dest=dest.handle, name=name, move=move)

    def rename(self, name: str) -> Call[None]:
        return self._call("rename_folder", _none, name=name)

    def empty(self, flags: int = 0) -> Call[None]:
        return self._call("empty_folder", _none, flags=flags)

    def create_message(self) -> Call[Message]:
        return self._open("create_message", Message)

    def delete_messages(self, entry_ids: Sequence[bytes], *, hard: bool = False) -> Call[int]:
        return self._call("delete_messages", _status, eids=list(entry_ids), hard=hard)

    def copy_messages(
        self, entry_ids: Sequence[bytes], dest: Folder, *, move: bool = False
    ) -> Call[int]:
        return self._call(
            "copy_messages", _status, eids=list(entry_ids), dest=dest.handle, move=move
        )

    def set_read_flags(
        self, entry_ids: Sequence[bytes] | None = None, *, clear: bool = False
    ) -> Call[int]:
        eids = None if entry_ids is None else list(entry_ids)
        return self._call("set_read_flags", _status, eids=eids, clear=clear)

    def contents_table(self) -> Call[Table]:
        return self._open("contents_table", Table)

    def hierarchy_table(self, flags: int = 0) -> Call[Table]:
        return self._open("hierarchy_table", Table, flags=flags)

    def get_permissions(self) -> Call[list[list[Any]]]:
        return self._call("get_permissions")

    def set_permission(self, member: str, rights: int) -> Call[None]:
        return self._call("set_permission", _none, member=member, rights=rights)

    def sync_contents(
        self, state: bytes | None = None, props: Sequence[Tag] | None = None, max_items: int = 1000
    ) -> Call[SyncPage]:
        """Messages created, changed, deleted or read since ``state`` (None: everything).
        Keep the returned ``state``; call again at once while ``more`` is true."""
        return self._sync("sync_contents", state, props, max_items)

    def sync_hierarchy(
        self, state: bytes | None = None, props: Sequence[Tag] | None = None, max_items: int = 1000
    ) -> Call[SyncPage]:
        """Folders below this one created, changed, moved or deleted since ``state``."""
        return self._sync("sync_hierarchy", state, props, max_items)

    def _sync(
        self, op: str, state: bytes | None, props: Sequence[Tag] | None, max_items: int
    ) -> Call[SyncPage]:
        wanted = None if props is None else [tag_of(t) for t in props]
        return self._call(op, _sync_page, state=state, props=wanted, max=max_items)

    def contents(self, columns: Sequence[Tag], **query: Any) -> AsyncIterator[Props]:
        """Rows of the contents table: see :meth:`Table.rows` for ``sort``, ``restriction``."""
        return _rows_of(self, "contents_table", columns, **query)

    def subfolders(self, columns: Sequence[Tag], **query: Any) -> AsyncIterator[Props]:
        """Rows of the hierarchy table."""
        return _rows_of(self, "hierarchy_table", columns, **query)


@dataclass(frozen=True, slots=True)
class SyncPage:
    """One page of an incremental sync."""

    changed: list[tuple[bytes, bytes, Props]]  # entry id, change key, properties
    deleted: list[bytes]
    read_changed: list[tuple[bytes, bool]]
    state: bytes
    more: bool


def _sync_page(hresult: int, value: Any) -> SyncPage:
    return SyncPage(
        changed=[(eid, ck, Props((t, v) for t, v in props)) for eid, ck, props in value["changed"]],
        deleted=list(value["deleted"]),
        read_changed=[(eid, bool(read)) for eid, read in value["read"]],
        state=value["state"],
        more=bool(value["more"]),
    )


class Message(MapiObject):
    """A message; changes are invisible to others until :meth:`save`."""

    def submit(self) -> Call[dict[str, Any]]:
        """Send to the recipients on this server; the message is filed in Sent Items.
        Returns ``{"delivered": n, "undeliverable": [addresses], "sent": eid, "ndr":
        eid-or-None}``; unknown addresses get a non-delivery report in the Inbox."""
        return self._call("submit")

    def save(self, flags: int = 0x2) -> Call[bytes]:
        """SaveChanges: commit everything in one transaction; returns the entry id."""
        return self._call("save_changes", flags=flags)

    def set_read_flag(self, *, clear: bool = False) -> Call[None]:
        return self._call("set_read_flag", _none, clear=clear)

    def modify_recipients(self, rows: Sequence[dict[Tag, Any]], flags: int = 0x2) -> Call[None]:
        """Add (flags 2), modify (4) or remove (8) recipient rows."""
        wire = [[[tag_of(t), v] for t, v in row.items()] for row in rows]
        return self._call("modify_recipients", _none, rows=wire, flags=flags)

    def add_recipient(self, name: str, email: str, kind: int = pt.MAPI_TO) -> Call[None]:
        return self.modify_recipients(
            [
                {
                    "PR_DISPLAY_NAME": name,
                    "PR_EMAIL_ADDRESS": email,
                    "PR_ADDRTYPE": "SMTP",
                    "PR_RECIPIENT_TYPE": kind,
                }
            ]
        )

    def recipient_table(self) -> Call[Table]:
        return self._open("recipient_table", Table)

    def attachment_table(self) -> Call[Table]:
        return self._open("attachment_table", Table)

    def create_attachment(self) -> Call[Attachment]:
        return self._open("create_attach", Attachment)

    def open_attachment(self, num: int, *, write: bool = False) -> Call[Attachment]:
        return self._open("open_attach", Attachment, num=num, write=write)

    def delete_attachment(self, num: int) -> Call[None]:
        return self._call("delete_attach", _none, num=num)

    def open_stream(self, tag: Tag, *, write: bool = False, create: bool = False) -> Call[Stream]:
        return self._open("open_stream", Stream, tag=tag_of(tag), write=write, create=create)


class Attachment(MapiObject):
    """An attachment of a message; saved with :meth:`save`, then the message's save."""

    def save(self, flags: int = 0x2) -> Call[None]:
        return self._call("save_changes", _none, flags=flags)

    def open_stream(self, tag: Tag, *, write: bool = False, create: bool = False) -> Call[Stream]:
        return self._open("open_stream", Stream, tag=tag_of(tag), write=write, create=create)

    def open_embedded(self, *, create: bool = False) -> Call[Message]:
        return self._open("open_embedded", Message, create=create)


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


def _rows(hresult: int, value: Any) -> list[Props]:
    return [Props((tag, v) for tag, v in row) for row in value]


def _restriction(value: Any) -> Any:
    """Accept restrictions with names for tags: ``{"rt": 3, "tag": "PR_SUBJECT", ...}``."""
    if isinstance(value, dict):
        return {
            k: (tag_of(v) if k in ("tag", "tag1", "tag2") else _restriction(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_restriction(v) for v in value]
    return value


class Table(MapiObject):
    """A table: columns, sort order, restriction, a cursor and bookmarks."""

    def set_columns(self, tags: Sequence[Tag]) -> Call[None]:
        return self._call("set_columns", _none, tags=[tag_of(t) for t in tags])

    def sort(self, keys: Sequence[tuple[Tag, bool]]) -> Call[None]:
        """Sort by ``(tag, descending)`` keys."""
        return self._call("sort_table", _none, keys=[[tag_of(t), d] for t, d in keys])

    def restrict(self, restriction: dict[str, Any] | None) -> Call[None]:
        """A restriction in its plain form (:func:`mapi.restrictions.to_plain`), or None."""
        return self._call("restrict", _none, restriction=_restriction(restriction))

    def query_rows(self, count: int, flags: int = 0) -> Call[list[Props]]:
        """Up to ``count`` rows from the cursor (negative: backwards)."""
        return self._call("query_rows", _rows, count=count, flags=flags)

    def seek(self, origin: int, count: int) -> Call[int]:
        """Move the cursor ``count`` rows from BOOKMARK_BEGINNING (0), CURRENT (1), END (2)."""
        return self._call("seek_row", origin=origin, count=count)

    def create_bookmark(self) -> Call[int]:
        return self._call("create_bookmark")

    def free_bookmark(self, bookmark: int) -> Call[None]:
        return self._call("free_bookmark", _none, bookmark=bookmark)

    def seek_bookmark(self, bookmark: int, count: int = 0) -> Call[int]:
        return self._call("seek_row_bookmark", bookmark=bookmark, count=count)

    def find_row(self, restriction: dict[str, Any], origin: int = 1, flags: int = 0) -> Call[Props]:
        return self._call(
            "find_row",
            lambda h, v: Props((t, x) for t, x in v),
            restriction=_restriction(restriction),
            origin=origin,
            flags=flags,
        )

    def position(self) -> Call[list[int]]:
        """``[current row, row count]``."""
        return self._call("query_position")

    def row_count(self) -> Call[int]:
        return self._call("get_row_count")

    async def rows(self, page: int = 100) -> AsyncIterator[Props]:
        """Every row from the cursor on, ``page`` rows per round trip."""
        if page <= 0:
            raise ValueError("page must be positive")
        while True:
            batch = await self.query_rows(page)
            for row in batch:
                yield row
            if len(batch) < page:
                return


async def _rows_of(
    folder: Folder,
    opener: str,
    columns: Sequence[Tag],
    *,
    sort: Sequence[tuple[Tag, bool]] = (),
    restriction: dict[str, Any] | None = None,
    page: int = 100,
) -> AsyncIterator[Props]:
    if page <= 0:
        raise ValueError("page must be positive")
    session = folder.session
    table: Table = Table(session, -1)
    try:
        async with session.batch() as batch:
            table = batch.add(getattr(folder, opener)())
            batch.add(table.set_columns(columns))
            if sort:
                batch.add(table.sort(sort))
            if restriction is not None:
                batch.add(table.restrict(restriction))
            first = batch.add(table.query_rows(page))
        for row in first.result:
            yield row
        if len(first.result) == page:
            async for row in table.rows(page):
                yield row
    finally:
        await table.release()


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


_TCP_ADDRESS = re.compile(r"^ncacn_ip_tcp:(?P<host>[^\[\]]+)(?:\[(?P<port>\d+)\])?$")


def parse_address(address: str) -> tuple[str, int]:
    """``ncacn_ip_tcp:host[port]`` (port 135 when omitted) -> (host, port)."""
    match = _TCP_ADDRESS.match(address)
    if match is None:
        raise ValueError(
            f"not an ncacn_ip_tcp address: {address!r} (expected ncacn_ip_tcp:host[port])"
        )
    port = int(match["port"] or 135)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {address!r}: {port} is not a TCP port (1-65535)")
    return match["host"], port


@asynccontextmanager
async def _open_store_rpc(host: str, port: int) -> AsyncIterator[tuple[RpcClient, int]]:
    """A client bound to the store: at ``host:port`` directly, or via the EPM there."""
    async with open_tcp_rpc_client(host, port) as rpc:
        try:
            context_id = await rpc.bind(STORE_SYNTAX, (MSGPACK,))
        except BindRejected as exc:
            if exc.reason != ProviderReason.ABSTRACT_SYNTAX_NOT_SUPPORTED:
                raise
            context_id = None
        if context_id is not None:
            yield rpc, context_id
            return
        await rpc.bind(EPM_SYNTAX)  # not the store: ask the endpoint mapper there
        tower = await map_endpoint_on(rpc, STORE_SYNTAX)
    if tower is None or tower.port is None:
        raise ConnectionClosed(f"no store registered with the endpoint mapper at {host}[{port}]")
    async with open_tcp_rpc_client(host, tower.port) as rpc:
        yield rpc, await rpc.bind(STORE_SYNTAX, (MSGPACK,))


async def logon(
    rpc: RpcClient, context_id: int, user: str, password: str, *, wake_port: int | None = None
) -> Session:
    """Challenge-response logon on a bound connection (``wake_port``: see :func:`connect`)."""
    first = await _call(rpc, context_id, OP_CONNECT, {"user": user})
    kdf = first["kdf"]
    challenge = Challenge(
        user.strip().lower(),
        first["salt"],
        KdfParams(n=kdf["n"], r=kdf["r"], p=kdf["p"]),
        first["nonce"],
    )
    params = challenge.params
    if not (params.n <= MAX_CLIENT_KDF_N and params.r <= 32 and params.p <= 4):
        raise errors.LogonFailed("the server asks for a key derivation too costly to run")
    # scrypt is memory-hard and slow on purpose: keep it off the event loop.
    cnonce, response = await trio.to_thread.run_sync(client_response, password, challenge)
    request: dict[str, Any] = {
        "user": user,
        "nonce": challenge.server_nonce,
        "cnonce": cnonce,
        "response": response,
    }
    if wake_port is not None:
        request["wake_port"] = wake_port
    reply = await _call(rpc, context_id, OP_CONNECT, request)
    return Session(rpc, context_id, reply["session"], reply["user"])


#: Where the endpoint mapper listens behind a tunnel when the URL does not say.
DEFAULT_TUNNEL_EPM_PORT = 1135


def parse_tunnel_address(address: str) -> tuple[str, str, int]:
    """``https://host:port/[?epm=N]`` -> (tunnel URL, target server name, EPM port).

    Raises:
        ValueError: not an https:// URL, a bad port, or a bad ``?epm=`` (the message
            says which, in one line).
    """
    split = urllib.parse.urlsplit(address)
    if split.scheme != "https" or not split.hostname:
        raise ValueError(f"not an https:// tunnel address: {address!r}")
    try:
        split.port  # noqa: B018 - urllib checks the port when it is read
    except ValueError:
        raise ValueError(
            f"bad port in {address!r}: give https://host:PORT/ with PORT 1-65535"
        ) from None
    query = urllib.parse.parse_qs(split.query)
    epm = _epm_port(query.get("epm", [str(DEFAULT_TUNNEL_EPM_PORT)])[-1], address)
    url = urllib.parse.urlunsplit(("https", split.netloc, split.path or "/", "", ""))
    return url, split.hostname, epm


def _epm_port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(
            f"bad ?epm= in {address!r}: {text!r} is not a port number (the endpoint "
            "mapper's port behind the tunnel, 1-65535)"
        )
    return int(text)


def _names_epm(address: str) -> bool:
    """True when the tunnel address says where the endpoint mapper is (``?epm=``)."""
    return "epm" in urllib.parse.parse_qs(urllib.parse.urlsplit(address).query)


def check_fingerprint(fingerprint: str | None) -> None:
    """Refuse a malformed pin before connecting anywhere.

    Raises:
        ValueError: not a SHA-256 fingerprint (32 hex bytes, ``AB:CD:...``).
    """
    if fingerprint is None:
        return
    try:
        normalize_fingerprint(fingerprint)
    except ValueError:
        raise ValueError(
            f"bad fingerprint {fingerprint!r}: expected the certificate's SHA-256 as 32 hex "
            "bytes, AB:CD:... (the server logs it when it starts)"
        ) from None


@asynccontextmanager
async def _open_tunnel_store_rpc(
    address: str, user: str, password: str, *, fingerprint: str | None, http2: bool
) -> AsyncIterator[tuple[RpcClient, int]]:
    url, server, epm_port = parse_tunnel_address(address)
    tunnel = functools.partial(
        open_tunnel_stream,
        url,
        server,
        username=user,
        password=password,
        http2=http2,
        fingerprint=fingerprint,
    )
    try:
        async with tunnel(epm_port) as stream, open_rpc_client(stream) as rpc:
            await rpc.bind(EPM_SYNTAX)
            tower = await map_endpoint_on(rpc, STORE_SYNTAX)
    except TunnelError as exc:
        if exc.status == 401:  # the same answer as a refused logon on the LAN
            raise errors.LogonFailed("the tunnel refused the user name or password") from exc
        if exc.status in (403, 404, 502, 503) and not _names_epm(address):
            raise TunnelError(
                f"{exc} (the address names no endpoint mapper port, so port {epm_port} "
                "was tried: add ?epm=PORT to the URL with the port the server logs for "
                "its endpoint mapper)",
                status=exc.status,
                rpc_error=exc.rpc_error,
            ) from exc
        raise
    if tower is None or tower.port is None:
        raise ConnectionClosed(f"no store registered with the endpoint mapper behind {url}")
    async with tunnel(tower.port) as stream, open_rpc_client(stream) as rpc:
        yield rpc, await rpc.bind(STORE_SYNTAX, (MSGPACK,))


@asynccontextmanager
async def connect(
    address: str,
    user: str,
    password: str,
    *,
    fingerprint: str | None = None,
    http2: bool = True,
    resume: Session | None = None,
    wake_udp: bool = False,
) -> AsyncIterator[Session]:
    """Log on to the store at ``address``; the session is closed on exit.

    Args:
        address: ``ncacn_ip_tcp:host[port]`` (LAN), ``https://host:port/`` (tunnel), or
            an e-mail address ``user@domain`` (``user@domain:port`` for a server not on
            443): the tunnel is found by autodiscover (:mod:`clients.autodiscover`), and
            an empty ``user`` means the address's own (the part before the ``@``).
        fingerprint: SHA-256 of the tunnel's certificate to pin ("AB:CD:..."), for a
            self-signed server; None verifies with the system's trust store (with an
            e-mail address: the autodiscover host's, whose answer names the tunnel's).
        http2: through the tunnel, HTTP/2 (default) or RPC over HTTP v2 on HTTP/1.1.
        resume: a session whose connection was cut: take it up again (its server-side
            state, subscriptions and queued events; :attr:`Session.last_seq` carries on)
            instead of logging on anew. Raises LogonFailed when it has expired.
        wake_udp: on the LAN, also receive UDP wake-up datagrams when events are
            queued (:meth:`Session.wait_for_wakeup`); the long-poll stays the truth.

    Raises:
        LogonFailed: wrong user name or password.
        ConnectionClosed: the server could not be reached.
        TunnelError: the tunnel refused us (HTTP status and RPC error inside), or
            autodiscover found no server for an e-mail address.
        ValueError: a malformed address or fingerprint.
    """
    check_fingerprint(fingerprint)
    email = parse_email_address(address)
    if email is not None:  # find the tunnel first (see clients.autodiscover)
        if wake_udp:
            raise ValueError("UDP wake-ups are for the LAN (ncacn_ip_tcp addresses) only")
        user = user or email.local  # no user name given: the address's own
        found = await discover(email, user, password, fingerprint=fingerprint)
        address, fingerprint, http2 = found.url, found.fingerprint, http2 and found.http2
    if address.startswith("https://"):
        if wake_udp:
            raise ValueError("UDP wake-ups are for the LAN (ncacn_ip_tcp addresses) only")
        opener = _open_tunnel_store_rpc(
            address, user, password, fingerprint=fingerprint, http2=http2
        )
    else:
        opener = _open_store_rpc(*parse_address(address))
    async with contextlib.AsyncExitStack() as stack:
        wake_socket = None
        if wake_udp:
            wake_socket = stack.enter_context(trio.socket.socket(type=socket.SOCK_DGRAM))
            await wake_socket.bind(("0.0.0.0", 0))
        rpc, context_id = await stack.enter_async_context(opener)
        wake_port = wake_socket.getsockname()[1] if wake_socket is not None else None
        if resume is None:
            session = await logon(rpc, context_id, user, password, wake_port=wake_port)
        else:
            request: dict[str, Any] = {"resume": resume.session_id}
            if wake_port is not None:
                request["wake_port"] = wake_port
            reply = await _call(rpc, context_id, OP_CONNECT, request)
            session = Session(rpc, context_id, reply["session"], reply["user"])
            session.last_seq = resume.last_seq
        session.wake_socket = wake_socket
        try:
            with single_errors():  # the caller's own exception, not a group of one
                async with trio.open_nursery() as nursery:
                    session.nursery = nursery
                    try:
                        yield session
                    finally:
                        session.nursery = None
        finally:
            # Shielded and quiet: a failing goodbye must not mask the body's own error.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(5),
                contextlib.suppress(ConnectionClosed, RpcFault, errors.MapiError),
            ):
                await session.close()
