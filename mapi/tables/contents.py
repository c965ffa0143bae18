"""Contents tables: message rows and the storage fast path.

Theory of operation
-------------------
[MS-OXCTABL] 3.2.5 over [MS-OXCFOLD] 3.2.5.14 (RopGetContentsTable). A contents table
whose sort keys and restriction the storage backend can evaluate itself gets a plan from
it (:meth:`~mapi.storage.contents.SqliteContents.plan`) and runs entirely in storage:
the row count, a page of message ids from an offset, the rows of those ids and the
position of a row are each one storage call; only the page's rows are ever built. (How
SQLite does it, over its indexes, is in :mod:`mapi.storage.contents`.)

Otherwise the table is evaluated in Python (:class:`~mapi.tables.table.MemoryTable`): the
part of the restriction storage can evaluate still pre-filters the candidate rows there
(:meth:`~mapi.storage.contents.SqliteContents.prefilter`), the remainder is evaluated per
row (sub-restrictions load recipients and attachments lazily; content tests on large
values read them from storage), and the result is sorted with the same ordering
(``NULL`` first, NOCASE strings).

Both paths agree: storage keeps MAPI's two-valued logic (``NOT`` of a test on a missing
property is true) and the content test of :func:`mapi.model.restrictions.content_match`.
"""

from __future__ import annotations

from mapi.access import permissions
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.entryid import change_key, instance_key
from mapi.model.properties import PropData, from_stream_bytes
from mapi.objects.context import StoreContext
from mapi.storage.api import ContentsPlan, MessageRecord, Txn
from mapi.tables.table import Key, MemoryTable, Table

DEFAULT_COLUMNS = (
    pt.PR_ENTRYID,
    pt.PR_INSTANCE_KEY,
    pt.PR_SUBJECT_W,
    pt.PR_MESSAGE_DELIVERY_TIME,
    pt.PR_MESSAGE_FLAGS,
    pt.PR_MESSAGE_SIZE,
    pt.PR_MESSAGE_CLASS_W,
)


def message_computed(ctx: StoreContext, record: MessageRecord) -> dict[int, PropData]:
    """Server-owned properties of a message."""
    db_id, folder_id = record.id, record.folder_id
    out: dict[int, PropData] = {
        pt.PR_INSTANCE_KEY: instance_key(db_id),
        pt.PR_MESSAGE_SIZE: record.size,
        pt.PR_MESSAGE_SIZE_EXTENDED: record.size,
        pt.PR_CREATION_TIME: record.created,
        pt.PR_LAST_MODIFICATION_TIME: record.modified,
        pt.PR_CHANGE_KEY: change_key(ctx.uid, record.change_num),
        pt.PR_HASATTACH: record.has_attach,
        pt.PR_OBJECT_TYPE: pt.MAPI_MESSAGE,
        pt.PR_STORE_ENTRYID: ctx.store_eid(),
        pt.PR_STORE_RECORD_KEY: ctx.uid,
        pt.PR_MAPPING_SIGNATURE: ctx.uid,
    }
    if folder_id is not None:
        eid = ctx.message_eid(db_id)
        out[pt.PR_ENTRYID] = eid
        out[pt.PR_RECORD_KEY] = eid
        out[pt.PR_PARENT_ENTRYID] = ctx.folder_eid(folder_id)
    return out


def message_row(ctx: StoreContext, txn: Txn, record: MessageRecord) -> rs.DictRow:
    """A table row for a message: stored, hot and computed properties. Recipients,
    attachments and large values are read through ``txn`` when a restriction asks."""
    props = record.props
    props.update(message_computed(ctx, record))
    db_id = record.id
    contents = ctx.db.contents

    def sub(which: int) -> list[rs.DictRow]:
        if which == pt.PR_MESSAGE_RECIPIENTS:
            return [rs.DictRow(r) for r in contents.recipients(txn, db_id)]
        return [rs.DictRow(a) for a in contents.attachments(txn, db_id)]

    def large(tag: int) -> PropData | None:
        data = contents.read_large(txn, db_id, tag, ctx.limits.max_value_bytes)
        return None if data is None else from_stream_bytes(tag, data)

    return rs.DictRow(props, sub, large)


class ContentsTable(MemoryTable):
    """The contents table of one folder (storage fast path when possible)."""

    def __init__(self, ctx: StoreContext, folder_id: int, *, checked: bool = True) -> None:
        """``checked``: every call checks the user's READ_ANY on the folder (a table a
        client holds); False for the store's own tables (the notification renderer,
        which filters what it sends by each subscriber's rights)."""
        super().__init__(ctx, DEFAULT_COLUMNS, self._load, lambda: self._ctx.db.generation)
        self._folder_id = folder_id
        self._checked = checked
        self._plan: ContentsPlan | None = self._make_plan()

    def _authorize(self) -> None:
        if self._checked:
            permissions.check_read_contents(self._ctx, self._folder_id)

    def _make_plan(self) -> ContentsPlan | None:
        return self._ctx.db.contents.plan(self._restriction, self._sort)

    def _changed(self) -> None:
        super()._changed()
        self._plan = self._make_plan()

    @property
    def uses_sql(self) -> bool:
        """True when the current sort and restriction run entirely in storage (SQLite)."""
        return self._plan is not None

    # Python path: load candidates with the part of the restriction storage evaluates.
    def _load(self) -> list[tuple[Key, rs.DictRow]]:
        db = self._ctx.db
        prefilter, _ = db.contents.prefilter(self._restriction)
        limit = self._ctx.limits.max_materialized_rows
        with db.reading() as txn:
            records = db.contents.candidates(txn, self._folder_id, prefilter, limit)
            if len(records) > limit:
                raise errors.TableTooBig("too many rows to evaluate this table")
            return [(r.id, message_row(self._ctx, txn, r)) for r in records]

    # Storage path overrides.
    def _count(self) -> int:
        if self._plan is None:
            return super()._count()
        db = self._ctx.db
        with db.reading() as txn:
            return db.contents.count(txn, self._folder_id, self._plan)

    def _keys(self, offset: int, limit: int) -> list[Key]:
        if self._plan is None:
            return super()._keys(offset, limit)
        if limit <= 0:
            return []
        db = self._ctx.db
        with db.reading() as txn:
            return db.contents.keys(txn, self._folder_id, self._plan, offset, limit)

    def _rows(self, keys: list[Key]) -> list[rs.DictRow]:
        if self._plan is None:
            return super()._rows(keys)
        if not keys:
            return []
        db = self._ctx.db
        with db.reading() as txn:
            fetched = db.contents.records(txn, keys)
            large = db.contents.large_tags(txn, keys)
            out = []
            for key in keys:
                record = fetched.get(key)
                if record is None:  # deleted between the two reads
                    out.append(rs.DictRow({}))
                    continue
                dict_row = message_row(self._ctx, txn, record)
                dict_row.large_tags = large.get(key, frozenset())
                out.append(dict_row)
            return out

    def _position_of(self, key: Key) -> int | None:
        if self._plan is None:
            return super()._position_of(key)
        db = self._ctx.db
        with db.reading() as txn:
            return db.contents.position(txn, self._folder_id, self._plan, key)


__all__ = ["ContentsTable", "Table", "message_computed", "message_row"]
