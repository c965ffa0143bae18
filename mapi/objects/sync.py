"""Incremental synchronisation: "what changed in this folder since state S".

Theory of operation
-------------------
The idea of [MS-OXCFXICS] (ICS: RopSynchronizationConfigure, the contents and
hierarchy synchronisation download, PidTagCnsetSeen) in our own simple form:

* Every folder and message row carries the change number (CN) of its last change,
  from the mailbox-wide counter; moves give the object a fresh CN; objects that
  leave a folder (deleted, moved out) leave a *tombstone* with the CN of their
  leaving; read-flag changes get a CN of their own (:mod:`mapi.storage.tombstones`).
* A sync *state* is opaque bytes (msgpack of a format version, the kind, the store's
  provider UID, the folder and the highest CN the client has fully seen), the
  equivalent of ICS's CnsetSeen for a single CN range starting at 0.
* :func:`sync_contents` returns the messages of the folder with a CN above the
  state's (created, changed or moved in), the ids of the messages that left it
  (tombstones above the state's CN, minus messages that are back in the folder), the
  read-flag changes of messages otherwise unchanged, and the new state.
  :func:`sync_hierarchy` does the same for the folders *below* a folder (the whole
  subtree, [MS-OXCFXICS] hierarchy sync scope); a deleted or moved-out folder is
  reported alone, its descendants are implied.
* A ``None`` state is the initial sync: everything, no deletions.
* Results are paged: at most ``max_items`` entries (changes, deletions, read
  changes together, in CN order) per call, never splitting one CN (a copy of many
  messages shares one CN), with ``more`` set; call again with the returned state.

Tombstones are pruned after :data:`~mapi.storage.tombstones.TOMBSTONE_RETENTION` or
beyond :data:`~mapi.storage.tombstones.MAX_TOMBSTONES`. A state whose CN is below
the pruning horizon cannot be answered incrementally: :class:`SyncStateTooOld` is
raised (MAPI_E_NOT_FOUND on the wire: "the state you hold is gone") and the client
starts again with a ``None`` state. Within a sync call nothing else answers
MAPI_E_NOT_FOUND (the folder is already open; a vanished one is MAPI_E_OBJECT_DELETED).
A state for another folder, kind or store, or a malformed one, is
MAPI_E_INVALID_PARAMETER.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from mapi.access import permissions
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.entryid import change_key
from mapi.model.properties import PropValue
from mapi.objects.folders import Folder
from mapi.objects.hierarchy import FOLDER_SELECT, folder_props
from mapi.storage import tombstones as tomb
from mapi.storage.schema import MESSAGE_SELECT
from mapi.tables.contents import message_row
from mapi.tables.table import build_row

STATE_VERSION: Final = 1
MAX_STATE_BYTES: Final = 256
DEFAULT_MAX_ITEMS: Final = 1000

DEFAULT_MESSAGE_PROPS: Final = (
    pt.PR_SUBJECT_W,
    pt.PR_MESSAGE_CLASS_W,
    pt.PR_MESSAGE_FLAGS,
    pt.PR_MESSAGE_DELIVERY_TIME,
    pt.PR_LAST_MODIFICATION_TIME,
    pt.PR_MESSAGE_SIZE,
    pt.PR_PARENT_ENTRYID,
)
DEFAULT_FOLDER_PROPS: Final = (
    pt.PR_DISPLAY_NAME_W,
    pt.PR_PARENT_ENTRYID,
    pt.PR_CONTAINER_CLASS_W,
    pt.PR_FOLDER_TYPE,
    pt.PR_LAST_MODIFICATION_TIME,
)

_CHANGED, _DELETED, _READ = 0, 1, 2


class SyncStateTooOld(errors.NotFound):
    """The state predates the tombstone pruning horizon: resynchronise from None.

    Carries MAPI_E_NOT_FOUND (0x8004010F) on the wire; see the module docstring.
    """


@dataclass(frozen=True, slots=True)
class SyncItem:
    """A created or changed object: its entry id, PR_CHANGE_KEY and selected props."""

    entry_id: bytes
    change_key: bytes
    props: tuple[PropValue, ...]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """One page of changes since a state."""

    created_or_changed: list[SyncItem]
    deleted: list[bytes]
    #: Read-flag changes of messages not otherwise changed: (entry id, is read).
    read_changed: list[tuple[bytes, bool]]
    #: The state to store and send next time.
    state: bytes
    #: True when more changes wait: call again with ``state`` at once.
    more: bool = False


def _pack_state(kind: str, uid: bytes, folder_id: int, cn: int) -> bytes:
    data = {"v": STATE_VERSION, "k": kind, "u": uid, "f": folder_id, "cn": cn}
    return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack_state(state: bytes, kind: str, uid: bytes, folder_id: int) -> int:
    if not isinstance(state, bytes) or len(state) > MAX_STATE_BYTES:
        raise errors.InvalidParameter("bad sync state")
    try:
        data: Any = msgpack.unpackb(
            state, raw=False, max_str_len=64, max_bin_len=64, max_array_len=8, max_map_len=8
        )
    except Exception:  # msgpack raises several unrelated types
        raise errors.InvalidParameter("bad sync state") from None
    if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
        raise errors.InvalidParameter("bad or unsupported sync state")
    if data.get("k") != kind or data.get("u") != uid or data.get("f") != folder_id:
        raise errors.InvalidParameter("the sync state belongs to another folder or store")
    cn = data.get("cn")
    if not isinstance(cn, int) or isinstance(cn, bool) or cn < 0:
        raise errors.InvalidParameter("bad sync state")
    return cn


def _check_props(props: Sequence[int] | None, default: Sequence[int], limit: int) -> list[int]:
    chosen = list(default if props is None else props)
    if len(chosen) > limit or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 0xFFFFFFFF for t in chosen
    ):
        raise errors.InvalidParameter("bad property list")
    return chosen


def _page(
    conn: sqlite3.Connection, sources: Sequence[tuple[int, str, list[Any]]], since: int,
    max_items: int,
) -> tuple[list[tuple[int, int, int]], int | None]:  # fmt: skip
    """Entries (cn, type, id) in CN order, at most ``max_items`` unless one CN is larger.

    Each source is (type, SQL selecting ``cn, id`` with a ``{cn}`` placeholder for the
    CN condition, params). Returns the entries and the CN they cover up to when cut
    (None: complete).
    """
    entries: list[tuple[int, int, int]] = []
    for kind, sql, params in sources:
        rows = conn.execute(
            sql.format(cn="> ?") + " ORDER BY 1 LIMIT ?", [*params, since, max_items + 1]
        )
        entries.extend((int(cn), kind, int(oid)) for cn, oid in rows)
    entries.sort()
    if len(entries) <= max_items:
        return entries, None
    boundary = entries[max_items - 1][0]
    out = [e for e in entries if e[0] < boundary]
    for kind, sql, params in sources:
        rows = conn.execute(sql.format(cn="= ?"), [*params, boundary])
        out.extend((int(cn), kind, int(oid)) for cn, oid in rows)
    return out, boundary


def _counter(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'change_num'").fetchone()[0])


def _since(
    conn: sqlite3.Connection, state: bytes | None, kind: str, uid: bytes, folder_id: int
) -> int:
    if state is None:
        return -1
    since = _unpack_state(state, kind, uid, folder_id)
    if since < tomb.horizon(conn):
        raise SyncStateTooOld("the sync state is older than the tombstones kept")
    return since


def sync_contents(
    folder: Folder, state: bytes | None, *, props: Sequence[int] | None = None,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> SyncResult:  # fmt: skip
    """Messages of ``folder`` created, changed, deleted or read since ``state``.

    Args:
        folder: an open folder. state: from a previous result, or None (initial).
        props: the properties to return per changed message.
        max_items: page size (see the module docstring).

    Raises:
        NoAccess: no READ_ANY. InvalidParameter: bad state, props or page size.
        SyncStateTooOld: the state predates the pruning horizon.
    """
    ctx = folder._ctx
    tags = _check_props(props, DEFAULT_MESSAGE_PROPS, ctx.limits.max_columns)
    if not 0 < max_items <= ctx.limits.max_rows_per_query * 10:
        raise errors.InvalidParameter("bad page size")
    fid = folder.folder_id
    with ctx.db.lock:
        ctx.require(fid, permissions.READ_ANY)
        with ctx.db.reading() as conn:
            if conn.execute("SELECT 1 FROM folders WHERE id = ?", (fid,)).fetchone() is None:
                raise errors.ObjectDeleted("the folder was deleted")
            since = _since(conn, state, "contents", ctx.uid, fid)
            sources: list[tuple[int, str, list[Any]]] = [
                (_CHANGED, "SELECT change_num, id FROM messages"
                 " WHERE folder_id = ? AND change_num {cn}", [fid]),
            ]  # fmt: skip
            if since >= 0:
                sources += [
                    (_DELETED, "SELECT change_num, object_id FROM tombstones"
                     " WHERE kind = ? AND folder_id = ? AND change_num {cn}", [tomb.MESSAGE, fid]),
                    (_READ, "SELECT r.change_num, m.id FROM read_state r"
                     " JOIN messages m ON m.id = r.message_id WHERE m.folder_id = ?"
                     " AND m.change_num <= ? AND r.change_num {cn}", [fid, since]),
                ]  # fmt: skip
            entries, cut = _page(conn, sources, since, max_items)
            changed, deleted, read = _split(entries)
            items = []
            for mid in changed:
                row = conn.execute(
                    f"SELECT {MESSAGE_SELECT} FROM messages WHERE id = ?", (mid,)
                ).fetchone()
                data = message_row(ctx, conn, row)
                items.append(
                    SyncItem(
                        ctx.message_eid(mid),
                        change_key(ctx.uid, int(row[10])),
                        tuple(build_row(data, tags)),
                    )
                )
            present = _present(
                conn, "SELECT id FROM messages WHERE folder_id = ? AND id IN", fid, deleted
            )
            gone = [ctx.message_eid(m) for m in deleted if m not in present]
            flags = {
                int(m): bool(f & pt.MSGFLAG_READ)
                for m, f in conn.execute(
                    f"SELECT id, flags FROM messages WHERE id IN ({','.join('?' * len(read))})",
                    read,
                )
            }
            read_changed = [(ctx.message_eid(m), flags[m]) for m in read if m in flags]
            upto = _counter(conn) if cut is None else cut
        new_state = _pack_state("contents", ctx.uid, fid, upto)
    return SyncResult(items, gone, read_changed, new_state, cut is not None)


def _split(entries: list[tuple[int, int, int]]) -> tuple[list[int], list[int], list[int]]:
    out: tuple[dict[int, None], dict[int, None], dict[int, None]] = ({}, {}, {})
    for _, kind, oid in entries:
        out[kind][oid] = None
    return list(out[0]), [i for i in out[1] if i not in out[0]], list(out[2])


def _present(conn: sqlite3.Connection, sql: str, scope: int, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    return {int(r[0]) for r in conn.execute(f"{sql} ({marks})", [scope, *ids])}


_SUBTREE: Final = (
    "WITH RECURSIVE down(id) AS (SELECT ?"
    " UNION ALL SELECT f.id FROM folders f JOIN down ON f.parent_id = down.id) "
)


def sync_hierarchy(
    folder: Folder, state: bytes | None, *, props: Sequence[int] | None = None,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> SyncResult:  # fmt: skip
    """Folders below ``folder`` created, changed, moved or deleted since ``state``.

    Args and Raises as :func:`sync_contents` (NoAccess: no FOLDER_VISIBLE). Folders
    the user cannot see are left out of ``created_or_changed``.
    """
    ctx = folder._ctx
    tags = _check_props(props, DEFAULT_FOLDER_PROPS, ctx.limits.max_columns)
    if not 0 < max_items <= ctx.limits.max_rows_per_query * 10:
        raise errors.InvalidParameter("bad page size")
    fid = folder.folder_id
    with ctx.db.lock:
        ctx.require(fid, permissions.FOLDER_VISIBLE)
        with ctx.db.reading() as conn:
            if conn.execute("SELECT 1 FROM folders WHERE id = ?", (fid,)).fetchone() is None:
                raise errors.ObjectDeleted("the folder was deleted")
            since = _since(conn, state, "hierarchy", ctx.uid, fid)
            sources: list[tuple[int, str, list[Any]]] = [
                (_CHANGED, _SUBTREE + "SELECT change_num, id FROM folders"
                 " WHERE id IN (SELECT id FROM down) AND id <> ? AND change_num {cn}",
                 [fid, fid]),
            ]  # fmt: skip
            if since >= 0:
                sources.append(
                    (_DELETED, _SUBTREE + "SELECT change_num, object_id FROM tombstones"
                     " WHERE kind = ? AND folder_id IN (SELECT id FROM down)"
                     " AND change_num {cn}", [fid, tomb.FOLDER]),
                )  # fmt: skip
            entries, cut = _page(conn, sources, since, max_items)
            changed, deleted, _ = _split(entries)
            items = []
            for cid in changed:
                if not ctx.rights(cid) & permissions.FOLDER_VISIBLE:
                    continue
                row = conn.execute(
                    f"SELECT {FOLDER_SELECT} FROM folders WHERE id = ?", (cid,)
                ).fetchone()
                fprops = folder_props(ctx, conn, row)
                items.append(
                    SyncItem(
                        ctx.folder_eid(cid),
                        change_key(ctx.uid, int(row[7])),
                        tuple(build_row(rs.DictRow(fprops), tags)),
                    )
                )
            present = _present(
                conn, _SUBTREE + "SELECT id FROM down WHERE id <> ?1 AND id IN", fid, deleted
            )
            gone = [ctx.folder_eid(f) for f in deleted if f not in present]
            upto = _counter(conn) if cut is None else cut
        new_state = _pack_state("hierarchy", ctx.uid, fid, upto)
    return SyncResult(items, gone, [], new_state, cut is not None)


def prune_tombstones(folder: Folder, now: int | None = None) -> int:
    """Prune the mailbox's old tombstones now (a maintenance task); return the count."""
    ctx = folder._ctx
    ctx.require(folder.folder_id, permissions.FOLDER_OWNER)
    with ctx.db.transaction() as conn:
        return tomb.prune(conn, ctx.now() if now is None else now)


__all__ = [
    "DEFAULT_FOLDER_PROPS",
    "DEFAULT_MESSAGE_PROPS",
    "SyncItem",
    "SyncResult",
    "SyncStateTooOld",
    "prune_tombstones",
    "sync_contents",
    "sync_hierarchy",
]
