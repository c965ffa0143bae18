"""Incremental synchronisation: "what changed in this folder since state S".

Theory of operation
-------------------
The idea of [MS-OXCFXICS] (ICS: RopSynchronizationConfigure, the contents and
hierarchy synchronisation download, PidTagCnsetSeen) in our own simple form:

* Every folder and message row carries the change number (CN) of its last change,
  from the mailbox-wide counter; moves give the object a fresh CN; objects that
  leave a folder (deleted, moved out) leave a *tombstone* with the CN of their
  leaving; read-flag changes get a CN of their own (:mod:`mapi.storage.tombstones`).
  The storage layer answers "what changed since CN c" (``MailboxDB.sync``; in SQLite
  :mod:`mapi.storage.sync`); this module holds the states, rights and rendering.
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
from mapi.objects.context import StoreContext
from mapi.objects.folders import Folder
from mapi.objects.hierarchy import folder_props
from mapi.storage.api import Txn
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


def _since(ctx: StoreContext, txn: Txn, state: bytes | None, kind: str, folder_id: int) -> int:
    """The CN a state holds (-1: the initial sync).

    Raises:
        InvalidParameter: a bad state. SyncStateTooOld: the state predates the horizon.
    """
    if state is None:
        return -1
    since = _unpack_state(state, kind, ctx.uid, folder_id)
    if since < ctx.db.sync.horizon(txn):
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
    db = ctx.db
    with db.lock:
        permissions.check_sync_contents(ctx, fid)
        with db.reading() as txn:
            if db.folders.get(txn, fid) is None:
                raise errors.ObjectDeleted("the folder was deleted")
            since = _since(ctx, txn, state, "contents", fid)
            page = db.sync.contents_page(txn, fid, since, max_items)
            items = []
            for mid in page.changed:
                record = db.contents.record(txn, mid)
                assert record is not None  # in this read snapshot's page
                data = message_row(ctx, txn, record)
                items.append(
                    SyncItem(
                        ctx.message_eid(mid),
                        change_key(ctx.uid, record.change_num),
                        tuple(build_row(data, tags)),
                    )
                )
            gone = [ctx.message_eid(m) for m in page.deleted]
            read_changed = [
                (ctx.message_eid(m), bool(flags & pt.MSGFLAG_READ)) for m, flags in page.read
            ]
        new_state = _pack_state("contents", ctx.uid, fid, page.upto)
    return SyncResult(items, gone, read_changed, new_state, page.more)


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
    db = ctx.db
    with db.lock:
        permissions.check_sync_hierarchy(ctx, fid)
        with db.reading() as txn:
            if db.folders.get(txn, fid) is None:
                raise errors.ObjectDeleted("the folder was deleted")
            since = _since(ctx, txn, state, "hierarchy", fid)
            page = db.sync.hierarchy_page(txn, fid, since, max_items)
            items = []
            for cid in page.changed:
                if not ctx.rights(cid) & permissions.FOLDER_VISIBLE:
                    continue
                row = db.folders.get(txn, cid)
                assert row is not None  # in this read snapshot's page
                fprops = folder_props(ctx, txn, row)
                items.append(
                    SyncItem(
                        ctx.folder_eid(cid),
                        change_key(ctx.uid, row.change_num),
                        tuple(build_row(rs.DictRow(fprops), tags)),
                    )
                )
            gone = [ctx.folder_eid(f) for f in page.deleted]
        new_state = _pack_state("hierarchy", ctx.uid, fid, page.upto)
    return SyncResult(items, gone, [], new_state, page.more)


def prune_tombstones(folder: Folder, now: int | None = None) -> int:
    """Prune the mailbox's old tombstones now (a maintenance task); return the count."""
    ctx = folder._ctx
    permissions.check_prune_tombstones(ctx, folder.folder_id)
    with ctx.db.transaction() as txn:
        return ctx.db.sync.prune(txn, ctx.now() if now is None else now)


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
