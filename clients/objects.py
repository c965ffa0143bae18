"""The objects a session opens: the store, folders, messages, attachments and tables
(streams: :mod:`clients.streams`). Every method returns a :class:`~clients.calls.Call`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from clients.calls import (
    Call,
    MapiObject,
    Props,
    Tag,
    _none,
    _status,
    tag_of,
)
from clients.streams import Stream
from mapi.model import proptags as pt


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
        eid-or-None, "queued": [addresses]}``; unknown local addresses get a
        non-delivery report in the Inbox, addresses of other domains go to the server's
        outbound queue (a report comes later if they cannot be delivered)."""
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
        """A restriction in its plain form (:func:`mapi.model.restrictions.to_plain`), or None."""
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
