"""The operations of an ``execute`` batch, run against a session's handle table.

Theory of operation
-------------------
An ``execute`` call carries a list of operations, like the ROP buffers of
[MS-OXCROPS]: ``[name, args]`` pairs where ``args`` is a map. Objects the server
opens (stores, folders, messages, attachments, tables, streams) live in the
session's :class:`HandleTable` under a small integer that the *client* chooses
(``"out"``, like a ROP's OutputHandleIndex), so one batch can open a folder, get its
contents table, set columns, sort and read 50 rows in a single round trip: later
operations name earlier results by their handle (``"h"``).

Every operation answers ``[hresult, value]``. A failing operation reports its MAPI
error and the batch goes on (as ROPs do); an operation on a handle whose opening
failed gets MAPI_E_INVALID_OBJECT. Malformed arguments give
MAPI_E_INVALID_PARAMETER; nothing here raises anything but :class:`MapiError`.
``set_props`` on a message or attachment with a string or binary value larger than
:attr:`~mapi.model.limits.Limits.max_value_bytes` fails as a whole, nothing applied, with
MAPI_E_TOO_BIG "...; write it through a stream (open_stream)" (other per-property
failures are the call's problem array, as [MS-OXCPRPT] RopSetProperties reports them).

This module is synchronous and imports no networking: the service runs a whole
batch in one worker thread, under the session's lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from mapi import budget
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.limits import Limits
from mapi.model.named import PropName
from mapi.model.properties import PropProblem, PropValue
from mapi.objects import sync
from mapi.objects.base import MapiObject
from mapi.objects.folders import Folder
from mapi.objects.messages import KEEP_OPEN_READWRITE, Attachment, Message
from mapi.objects.streams import PropStream
from mapi.objects.submit import submit
from mapi.storage.api import MailboxStorage
from mapi.store import MsgStore, Session
from mapi.tables.table import BOOKMARK_CURRENT, Table

#: Most operations in one batch.
MAX_OPS: Final = 512
#: Most objects open at once in one session.
MAX_HANDLES: Final = 4096
#: Largest chunk one stream read returns.
MAX_READ: Final = 1 << 20
#: Largest total of the values one batch returns (the runtime's replies stay bounded);
#: the operation that crosses it, and those after it, answer MAPI_E_TOO_BIG.
MAX_RESULT_BYTES: Final = 16 << 20

Args = dict[str, Any]


class HandleTable:
    """The objects a session holds open, by client-chosen handle number."""

    def __init__(self, limit: int = MAX_HANDLES) -> None:
        self.limit = limit
        self._objects: dict[int, object] = {}

    def get(self, handle: object, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(handle, int) or isinstance(handle, bool):
            raise errors.InvalidParameter("handle must be an integer")
        obj = self._objects.get(handle)
        if obj is None:
            raise errors.InvalidObject(f"no object at handle {handle}")
        if not isinstance(obj, kind):
            raise errors.InvalidObject(f"handle {handle} is a {type(obj).__name__}")
        return obj

    def put(self, handle: object, obj: object) -> int:
        if not isinstance(handle, int) or isinstance(handle, bool) or handle < 0:
            raise errors.InvalidParameter("out must be a non-negative integer")
        if handle in self._objects:
            self.release(handle)  # reuse replaces, as a ROP output handle does
        elif len(self._objects) >= self.limit:
            _close(obj)
            raise errors.NotEnoughResources(f"more than {self.limit} open objects")
        self._objects[handle] = obj
        return handle

    def release(self, handle: int) -> None:
        obj = self._objects.pop(handle, None)
        if obj is not None:
            db: MailboxStorage | None = getattr(getattr(obj, "_ctx", None), "db", None)
            _close(obj)
            del obj  # pending stream data it alone held dies here
            if db is not None:
                db.release_dead_data()

    def clear(self) -> None:
        for handle in list(self._objects):
            self.release(handle)

    def __len__(self) -> int:
        return len(self._objects)


def _close(obj: object) -> None:
    close = getattr(obj, "close", None)
    if close is not None and not isinstance(obj, Session):
        with contextlib.suppress(errors.MapiError):  # releasing must always succeed
            close()


# -- argument checking ---------------------------------------------------------------------


def _arg(args: Args, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    value = args.get(name, default)
    if value is ...:
        raise errors.InvalidParameter(f"missing argument {name!r}")
    if value is default and default is not ...:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise errors.InvalidParameter(f"argument {name!r} has the wrong type")
    return value


def _ints(args: Args, name: str, default: Any = ...) -> Any:
    values = _arg(args, name, list, default)
    if values is None:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise errors.InvalidParameter(f"argument {name!r} must be a list of integers")
    return values


def _bytes_list(args: Args, name: str) -> list[bytes]:
    values = _arg(args, name, list)
    if not all(isinstance(v, bytes) for v in values):
        raise errors.InvalidParameter(f"argument {name!r} must be a list of entry ids")
    return values  # type: ignore[no-any-return]


def _props(args: Args) -> list[tuple[int, object]]:
    values = _arg(args, "props", list)
    out = []
    for item in values:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)):
            raise errors.InvalidParameter("props must be [tag, value] pairs")
        out.append((item[0], item[1]))
    return out


def _sort(args: Args) -> list[tuple[int, bool]]:
    keys = _arg(args, "keys", list)
    out = []
    for key in keys:
        if not (
            isinstance(key, list)
            and len(key) == 2
            and isinstance(key[0], int)
            and isinstance(key[1], bool)
        ):
            raise errors.InvalidParameter("sort keys must be [tag, descending] pairs")
        out.append((key[0], key[1]))
    return out


def _names(args: Args) -> list[PropName]:
    out = []
    for item in _arg(args, "names", list):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], bytes)):
            raise errors.InvalidParameter("names must be [guid, kind, lid-or-name] triples")
        guid, kind, value = item
        if kind == 0 and isinstance(value, int) and not isinstance(value, bool):
            out.append(PropName.by_id(guid, value))
        elif kind == 1 and isinstance(value, str):
            out.append(PropName.by_name(guid, value))
        else:
            raise errors.InvalidParameter("a name is [guid, 0, lid] or [guid, 1, name]")
    return out


# -- encoding of results -------------------------------------------------------------------


def _values(values: Sequence[PropValue]) -> list[list[Any]]:
    return [[v.tag, v.value] for v in values]


def _problems(problems: Sequence[PropProblem]) -> list[list[int]]:
    return [[p.index, p.tag, p.hresult] for p in problems]


# -- the operations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """What an operation runs against."""

    session: Session
    handles: HandleTable
    limits: Limits
    #: The notification hub's key for this session (its session id).
    subscriber: bytes = b""


@dataclass(frozen=True, slots=True)
class Result:
    """An operation's answer when it is not plain success (0)."""

    hresult: int
    value: Any


Op = Callable[[Context, Args], Any]
OPS: dict[str, Op] = {}
#: Operations without side effects: a batch of only these may be started again from
#: the top (the service tries such batches on the event loop, see :mod:`mapi.storage.guard`).
READ_ONLY: frozenset[str] = frozenset(
    {"get_props", "get_prop_list", "get_names_from_ids", "query_position", "get_row_count"}
)


def op(name: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        OPS[name] = fn
        return fn

    return register


def _target(ctx: Context, args: Args, kind: type | tuple[type, ...]) -> Any:
    return ctx.handles.get(args.get("h"), kind)


def _opened(ctx: Context, args: Args, obj: object) -> int:
    return ctx.handles.put(args.get("out"), obj)


@op("release")
def _release(ctx: Context, args: Args) -> None:
    for handle in _ints(args, "handles"):
        ctx.handles.release(handle)


@op("open_store")
def _open_store(ctx: Context, args: Args) -> int:
    owner = _arg(args, "owner", str, None)
    return _opened(ctx, args, ctx.session.open_store(owner))


# properties (any object)


@op("get_props")
def _get_props(ctx: Context, args: Args) -> Result:
    hresult, pairs = _target(ctx, args, MapiObject).get_prop_pairs(_ints(args, "tags", None))
    return Result(hresult, pairs)


@op("set_props")
def _set_props(ctx: Context, args: Args) -> list[list[int]]:
    target = _target(ctx, args, MapiObject)
    props = _props(args)
    if isinstance(target, Message | Attachment):
        _check_inline_sizes(props, ctx.limits)
    return _problems(target.set_props(props))


#: Property types a stream can carry (and so the types a stream hint applies to).
_STREAM_TYPES: Final = frozenset({pt.PropType.PT_BINARY, pt.PropType.PT_UNICODE,
                                  pt.PropType.PT_STRING8})  # fmt: skip


def _check_inline_sizes(props: Sequence[tuple[int, object]], limits: Limits) -> None:
    """Refuse the whole call (nothing applied) when a string or binary value is larger
    than one set_props carries, saying what to do instead: a value silently reported
    as a per-property problem would be data the client thinks it saved.

    Raises:
        TooBig: the first such value.
    """
    for tag, value in props:
        if pt.prop_type(tag) not in _STREAM_TYPES:
            continue
        if isinstance(value, str):
            size = 2 * len(value)  # UTF-16; astral characters take 4
            if size > limits.max_value_bytes // 2:
                size = len(value.encode("utf-16-le", "surrogatepass"))
        elif isinstance(value, bytes):
            size = len(value)
        else:
            continue  # the type check is set_props' own
        if size > limits.max_value_bytes:
            raise errors.TooBig(
                f"{pt.tag_name(tag)} ({size} bytes) is more than one set_props call carries"
                f" ({limits.max_value_bytes} bytes); write it through a stream (open_stream)"
            )


@op("delete_props")
def _delete_props(ctx: Context, args: Args) -> list[list[int]]:
    return _problems(_target(ctx, args, MapiObject).delete_props(_ints(args, "tags")))


@op("get_prop_list")
def _get_prop_list(ctx: Context, args: Args) -> list[int]:
    return _target(ctx, args, MapiObject).get_prop_list()  # type: ignore[no-any-return]


# the message store


@op("special_folder")
def _special_folder(ctx: Context, args: Args) -> bytes:
    store = _target(ctx, args, MsgStore)
    return store.special_folder_id(_arg(args, "role", str))  # type: ignore[no-any-return]


@op("open_folder")
def _open_folder(ctx: Context, args: Args) -> int:
    store = _target(ctx, args, MsgStore)
    return _opened(ctx, args, store.open_folder(_arg(args, "eid", bytes)))


@op("open_message")
def _open_message(ctx: Context, args: Args) -> int:
    store = _target(ctx, args, MsgStore)
    writable = _arg(args, "write", bool, False)
    return _opened(ctx, args, store.open_message(_arg(args, "eid", bytes), writable=writable))


@op("get_ids_from_names")
def _get_ids_from_names(ctx: Context, args: Args) -> list[int]:
    store = _target(ctx, args, MsgStore)
    create = _arg(args, "create", bool, False)
    if create and not store.context.is_owner:
        # Ids are never freed: a delegate creating them could exhaust the owner's space.
        raise errors.NoAccess("only the mailbox owner may create named properties")
    return store.get_ids_from_names(_names(args), create=create)  # type: ignore[no-any-return]


@op("get_names_from_ids")
def _get_names_from_ids(ctx: Context, args: Args) -> list[list[Any] | None]:
    store = _target(ctx, args, MsgStore)
    names = store.get_names_from_ids(_ints(args, "ids"))
    return [
        None if n is None else [n.guid, n.kind, n.lid if n.kind == 0 else n.name] for n in names
    ]


# notifications ([MS-OXCNOTIF]): events queue up per session; wait_for_events reads them


@op("advise")
def _advise(ctx: Context, args: Args) -> int:
    store = _target(ctx, args, MsgStore)
    eid = _arg(args, "eid", bytes, None)
    return store.advise(ctx.subscriber, _arg(args, "mask", int), eid)  # type: ignore[no-any-return]


@op("advise_table")
def _advise_table(ctx: Context, args: Args) -> int:
    store = _target(ctx, args, MsgStore)
    columns = _ints(args, "columns", None)
    sort = _sort(args) if args.get("keys") is not None else ()
    return store.advise_table(  # type: ignore[no-any-return]
        ctx.subscriber,
        _arg(args, "eid", bytes),
        _arg(args, "kind", str, "contents"),
        columns,
        sort,
    )


@op("unadvise")
def _unadvise(ctx: Context, args: Args) -> None:
    store = _target(ctx, args, MsgStore)
    store.unadvise(ctx.subscriber, _arg(args, "sub", int))


# incremental sync ([MS-OXCFXICS] in our own simple form)


def _sync_page(result: Any) -> dict[str, Any]:
    return {
        "changed": [
            [i.entry_id, i.change_key, _values(i.props)] for i in result.created_or_changed
        ],
        "deleted": result.deleted,
        "read": [[eid, read] for eid, read in result.read_changed],
        "state": result.state,
        "more": result.more,
    }


def _run_sync(ctx: Context, args: Args, fn: Callable[..., Any]) -> dict[str, Any]:
    folder = _target(ctx, args, Folder)
    result = fn(
        folder,
        _arg(args, "state", bytes, None),
        props=_ints(args, "props", None),
        max_items=_arg(args, "max", int, 1000),
    )
    return _sync_page(result)


@op("sync_contents")
def _sync_contents(ctx: Context, args: Args) -> dict[str, Any]:
    return _run_sync(ctx, args, sync.sync_contents)


@op("sync_hierarchy")
def _sync_hierarchy(ctx: Context, args: Args) -> dict[str, Any]:
    return _run_sync(ctx, args, sync.sync_hierarchy)


# folders


@op("create_folder")
def _create_folder(ctx: Context, args: Args) -> int:
    folder = _target(ctx, args, Folder).create_folder(
        _arg(args, "name", str),
        comment=_arg(args, "comment", str, None),
        container_class=_arg(args, "container_class", str, None),
        open_if_exists=_arg(args, "open_if_exists", bool, False),
    )
    return _opened(ctx, args, folder)


@op("delete_folder")
def _delete_folder(ctx: Context, args: Args) -> None:
    _target(ctx, args, Folder).delete_folder(_arg(args, "eid", bytes), _arg(args, "flags", int, 0))


@op("copy_folder")
def _copy_folder(ctx: Context, args: Args) -> bytes:
    folder = _target(ctx, args, Folder)
    dest = ctx.handles.get(args.get("dest"), Folder)
    copied: Folder = folder.copy_folder(
        _arg(args, "eid", bytes),
        dest,
        _arg(args, "name", str, None),
        move=_arg(args, "move", bool, False),
        recursive=_arg(args, "recursive", bool, True),
    )
    try:
        return copied.entry_id
    finally:
        copied.close()


@op("rename_folder")
def _rename_folder(ctx: Context, args: Args) -> None:
    _target(ctx, args, Folder).rename(_arg(args, "name", str))


@op("empty_folder")
def _empty_folder(ctx: Context, args: Args) -> None:
    _target(ctx, args, Folder).empty_folder(_arg(args, "flags", int, 0))


@op("create_message")
def _create_message(ctx: Context, args: Args) -> int:
    return _opened(ctx, args, _target(ctx, args, Folder).create_message())


# Bulk message operations answer 0 or MAPI_W_PARTIAL_COMPLETION (some ids were not
# in the folder): that warning is the operation's hresult.


@op("delete_messages")
def _delete_messages(ctx: Context, args: Args) -> Result:
    folder = _target(ctx, args, Folder)
    hard = _arg(args, "hard", bool, False)
    return Result(folder.delete_messages(_bytes_list(args, "eids"), hard=hard), None)


@op("copy_messages")
def _copy_messages(ctx: Context, args: Args) -> Result:
    folder = _target(ctx, args, Folder)
    dest = ctx.handles.get(args.get("dest"), Folder)
    move = _arg(args, "move", bool, False)
    return Result(folder.copy_messages(_bytes_list(args, "eids"), dest, move=move), None)


@op("set_read_flags")
def _set_read_flags(ctx: Context, args: Args) -> Result:
    folder = _target(ctx, args, Folder)
    eids = None if args.get("eids") is None else _bytes_list(args, "eids")
    return Result(folder.set_read_flags(eids, clear=_arg(args, "clear", bool, False)), None)


@op("contents_table")
def _contents_table(ctx: Context, args: Args) -> int:
    return _opened(ctx, args, _target(ctx, args, Folder).contents_table())


@op("hierarchy_table")
def _hierarchy_table(ctx: Context, args: Args) -> int:
    folder = _target(ctx, args, Folder)
    return _opened(ctx, args, folder.hierarchy_table(_arg(args, "flags", int, 0)))


@op("get_permissions")
def _get_permissions(ctx: Context, args: Args) -> list[list[Any]]:
    """``[member, rights, name]`` rows: the member's id (what older clients read), its
    rights, and its login name ("default"; None for an account deleted since)."""
    return [[m, r, name] for m, name, r in _target(ctx, args, Folder).permission_rows()]


@op("set_permission")
def _set_permission(ctx: Context, args: Args) -> None:
    folder = _target(ctx, args, Folder)
    folder.set_permission(_arg(args, "member", str), _arg(args, "rights", int))


# messages and attachments


@op("save_changes")
def _save_changes(ctx: Context, args: Args) -> bytes | None:
    obj = _target(ctx, args, (Message, Attachment))
    flags = _arg(args, "flags", int, KEEP_OPEN_READWRITE)
    if isinstance(obj, Message):
        obj.stamp_delivery_time()  # "newest first" holds for a client's drafts too
    obj.save_changes(flags)
    return obj.entry_id if isinstance(obj, Message) else None


@op("submit")
def _submit(ctx: Context, args: Args) -> dict[str, Any]:
    result = submit(_target(ctx, args, Message))
    return {
        "delivered": len(result.delivered),
        "undeliverable": result.undeliverable,
        "sent": result.sent_entry_id,
        "ndr": result.ndr_entry_id,
        "queued": result.queued,
    }


@op("set_read_flag")
def _set_read_flag(ctx: Context, args: Args) -> None:
    _target(ctx, args, Message).set_read_flag(clear=_arg(args, "clear", bool, False))


@op("modify_recipients")
def _modify_recipients(ctx: Context, args: Args) -> None:
    message = _target(ctx, args, Message)
    rows = _arg(args, "rows", list)
    if not all(isinstance(row, list) for row in rows):
        raise errors.InvalidParameter("rows must be lists of [tag, value] pairs")
    parsed = [[_pair(p) for p in row] for row in rows]
    message.modify_recipients(parsed, _arg(args, "flags", int, 0))


def _pair(item: object) -> tuple[int, object]:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)):
        raise errors.InvalidParameter("properties must be [tag, value] pairs")
    return (item[0], item[1])


@op("recipient_table")
def _recipient_table(ctx: Context, args: Args) -> int:
    return _opened(ctx, args, _target(ctx, args, Message).recipient_table())


@op("attachment_table")
def _attachment_table(ctx: Context, args: Args) -> int:
    return _opened(ctx, args, _target(ctx, args, Message).attachment_table())


@op("create_attach")
def _create_attach(ctx: Context, args: Args) -> int:
    return _opened(ctx, args, _target(ctx, args, Message).create_attach())


@op("open_attach")
def _open_attach(ctx: Context, args: Args) -> int:
    message = _target(ctx, args, Message)
    writable = _arg(args, "write", bool, False)
    return _opened(ctx, args, message.open_attach(_arg(args, "num", int), writable=writable))


@op("delete_attach")
def _delete_attach(ctx: Context, args: Args) -> None:
    _target(ctx, args, Message).delete_attach(_arg(args, "num", int))


@op("open_embedded")
def _open_embedded(ctx: Context, args: Args) -> int:
    attach = _target(ctx, args, Attachment)
    return _opened(ctx, args, attach.open_embedded(create=_arg(args, "create", bool, False)))


# streams


@op("open_stream")
def _open_stream(ctx: Context, args: Args) -> int:
    obj = _target(ctx, args, (Message, Attachment))
    stream = obj.open_stream(
        _arg(args, "tag", int),
        write=_arg(args, "write", bool, False),
        create=_arg(args, "create", bool, False),
    )
    return _opened(ctx, args, stream)


@op("read_stream")
def _read_stream(ctx: Context, args: Args) -> bytes:
    """At the position (which moves), or with ``at`` at that offset (the position is
    neither used nor moved, so reads in flight together may run in any order)."""
    size = _arg(args, "size", int)
    if not 0 <= size <= MAX_READ:
        raise errors.InvalidParameter(f"read size must be in [0, {MAX_READ}]")
    stream: PropStream = _target(ctx, args, PropStream)
    at = _arg(args, "at", int, None)
    return stream.read(size) if at is None else stream.read_at(at, size)


@op("write_stream")
def _write_stream(ctx: Context, args: Args) -> int:
    """At the position (which moves), or with ``at`` at that offset (the position is
    neither used nor moved, so writes in flight together may run in any order)."""
    stream: PropStream = _target(ctx, args, PropStream)
    data = _arg(args, "data", bytes)
    at = _arg(args, "at", int, None)
    return stream.write(data) if at is None else stream.write_at(at, data)


@op("seek_stream")
def _seek_stream(ctx: Context, args: Args) -> int:
    stream = _target(ctx, args, PropStream)
    return stream.seek(_arg(args, "offset", int), _arg(args, "origin", int, 0))  # type: ignore[no-any-return]


@op("stream_size")
def _stream_size(ctx: Context, args: Args) -> int:
    return _target(ctx, args, PropStream).size()  # type: ignore[no-any-return]


@op("set_stream_size")
def _set_stream_size(ctx: Context, args: Args) -> None:
    _target(ctx, args, PropStream).set_size(_arg(args, "size", int))


@op("commit_stream")
def _commit_stream(ctx: Context, args: Args) -> None:
    _target(ctx, args, PropStream).commit()


# tables


@op("set_columns")
def _set_columns(ctx: Context, args: Args) -> None:
    _target(ctx, args, Table).set_columns(_ints(args, "tags"))


@op("sort_table")
def _sort_table(ctx: Context, args: Args) -> None:
    _target(ctx, args, Table).sort_table(_sort(args))


@op("restrict")
def _restrict(ctx: Context, args: Args) -> None:
    plain = args.get("restriction")
    res = None if plain is None else rs.from_plain(plain, ctx.limits)
    _target(ctx, args, Table).restrict(res)


@op("query_rows")
def _query_rows(ctx: Context, args: Args) -> list[list[list[Any]]]:
    table = _target(ctx, args, Table)
    rows = table.query_rows(_arg(args, "count", int), _arg(args, "flags", int, 0))
    return [_values(row) for row in rows]


@op("seek_row")
def _seek_row(ctx: Context, args: Args) -> int:
    table = _target(ctx, args, Table)
    return table.seek_row(_arg(args, "origin", int), _arg(args, "count", int))  # type: ignore[no-any-return]


@op("seek_row_bookmark")
def _seek_row_bookmark(ctx: Context, args: Args) -> int:
    table = _target(ctx, args, Table)
    return table.seek_row_bookmark(_arg(args, "bookmark", int), _arg(args, "count", int))  # type: ignore[no-any-return]


@op("create_bookmark")
def _create_bookmark(ctx: Context, args: Args) -> int:
    return _target(ctx, args, Table).create_bookmark()  # type: ignore[no-any-return]


@op("free_bookmark")
def _free_bookmark(ctx: Context, args: Args) -> None:
    _target(ctx, args, Table).free_bookmark(_arg(args, "bookmark", int))


@op("find_row")
def _find_row(ctx: Context, args: Args) -> list[list[Any]]:
    table = _target(ctx, args, Table)
    res = rs.from_plain(args.get("restriction"), ctx.limits)
    row = table.find_row(
        res, _arg(args, "origin", int, BOOKMARK_CURRENT), _arg(args, "flags", int, 0)
    )
    return _values(row)


@op("query_position")
def _query_position(ctx: Context, args: Args) -> list[int]:
    return list(_target(ctx, args, Table).query_position())


@op("get_row_count")
def _get_row_count(ctx: Context, args: Args) -> int:
    return _target(ctx, args, Table).get_row_count()  # type: ignore[no-any-return]


# -- running a batch -----------------------------------------------------------------------


def error_detail(exc: errors.MapiError) -> str:
    """The message of ``exc`` without its ``MAPI_E_*:`` prefix (the wire carries the code,
    and the client's exception adds the name back)."""
    text, name = str(exc), errors.hresult_name(exc.hresult)
    if text == name:
        return ""
    return text.removeprefix(name + ": ")


def run_batch(ctx: Context, ops: object) -> list[list[Any]]:
    """Run every operation of a batch; one ``[hresult, value]`` per operation.

    Raises:
        InvalidParameter: the batch itself is malformed (not a list of [name, args]).
    """
    return [result for result, _ in _run_all(ctx, ops)]


def run_batch_packed(ctx: Context, ops: object) -> bytes:
    """:func:`run_batch`, its results as one msgpack array: each result is packed once,
    as it is measured against :data:`MAX_RESULT_BYTES`, not packed again for the reply."""
    packed = [data for _, data in _run_all(ctx, ops)]
    count = len(packed)  # at most MAX_OPS
    head = bytes([0x90 | count]) if count < 16 else b"\xdc" + count.to_bytes(2, "big")
    return head + b"".join(packed)


def _run_all(ctx: Context, ops: object) -> Iterator[tuple[list[Any], bytes]]:
    """Each operation's ``[hresult, value]`` and its msgpack encoding, in order; once the
    encoded results pass MAX_RESULT_BYTES, the rest are not run."""
    if not isinstance(ops, list):
        raise errors.InvalidParameter("ops must be a list")
    if len(ops) > MAX_OPS:
        raise errors.InvalidParameter(f"a batch holds at most {MAX_OPS} operations")
    total = 0
    work = budget.current()
    for item in ops:
        if total > MAX_RESULT_BYTES:
            result = [errors.Hresult.MAPI_E_TOO_BIG, "not run: the batch's results are full"]
            yield result, _packb(result)
            continue
        if work is not None and work.spent():  # out of time, or its caller went away
            if work.escalate is not None:  # the inline try: hand it to a worker
                raise work.escalate()
            exc = work.error()
            result = [exc.hresult, f"not run: {error_detail(exc)}"]
            yield result, _packb(result)
            continue
        result = _run_one(ctx, item)
        data = _packb(result)
        total += len(data)
        if total > MAX_RESULT_BYTES:
            result = [errors.Hresult.MAPI_E_TOO_BIG, f"results exceed {MAX_RESULT_BYTES} bytes"]
            data = _packb(result)
        yield result, data


_packers = threading.local()


def _packb(value: Any) -> bytes:
    """``msgpack.packb``, with one Packer per thread (batches run on the event loop and
    in workers): packb builds a Packer per call, half the cost of a small result."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)  # type: ignore[no-any-return]  # resets itself, even on errors


def _run_one(ctx: Context, item: object) -> list[Any]:
    try:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], dict)
        ):
            raise errors.InvalidParameter("an operation is [name, {args}]")
        name, args = item
        fn = OPS.get(name)
        if fn is None:
            raise errors.NoSupport(f"unknown operation {name!r}")
        value = fn(ctx, args)
    except errors.MapiError as exc:
        return [exc.hresult, error_detail(exc)]
    if isinstance(value, Result):
        return [value.hresult, value.value]
    return [0, value]
