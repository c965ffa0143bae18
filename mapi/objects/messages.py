"""Messages and attachments: transacted objects with recipients and embedded messages.

Theory of operation
-------------------
[MS-OXCMSG] 3.2.5: a message is opened (or created) as a private working copy; every
change (properties, streams, recipients, attachments) stays in that copy until
``save_changes``, which commits it to the mailbox in one transaction
(``MailboxDB.messages.save``, :func:`mapi.storage.messages.save_message`). Nobody else
sees unsaved changes; a message discarded without saving leaves no trace.

Attachments nest the same way one level down ([MS-OXCMSG] 3.2.5.5-3.2.5.8): an
attachment object is a working copy too, and its ``save_changes`` hands its state
to the parent message's pending changes (still invisible to others); only the
message's save reaches the disk. An embedded message (ATTACH_EMBEDDED_MSG, opened
with ``open_embedded``) saves into its attachment the same way.

Committed saves and read-flag changes are recorded for notifications
(:mod:`mapi.notify.changes`) and incremental sync (:mod:`mapi.storage.tombstones`).
Submission ([MS-OXOMSG]) lives in :mod:`mapi.objects.submit`.

Recipients ([MS-OXCMSG] 2.2.3, RopModifyRecipients): rows of properties keyed by
PR_ROWID; ``modify_recipients`` adds (fresh PR_ROWID), modifies, removes or replaces
them. PR_DISPLAY_TO / _CC / _BCC, PR_HASATTACH, PR_MESSAGE_SIZE, times, entry ids and
change keys are computed by the server (MAPI_E_COMPUTED on write).

Times: PR_CREATION_TIME is the moment the message object was created, and
PR_LAST_MODIFICATION_TIME that of its last save; PR_MESSAGE_DELIVERY_TIME is set at
delivery and submission (:mod:`mapi.objects.submit`). A client's new message saved in a
folder without one (a draft, a note) gets its first save's time
(:meth:`Message.stamp_delivery_time`, called by the RPC service's ``save_changes``),
so sorting a folder newest first holds for every message a client made; a delivery
time the client sets (an importer's) is kept. In-process callers (tools, tests)
decide for themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final, Generic, TypeVar

from mapi.access import permissions
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.entryid import change_key, instance_key
from mapi.model.limits import Limits
from mapi.model.properties import PropData, PropValue, validate, value_size
from mapi.model.restrictions import DictRow
from mapi.notify.changes import Change, Op, record
from mapi.objects.base import MapiObject
from mapi.objects.context import StoreContext
from mapi.objects.streams import PropStream
from mapi.storage.api import AttachState, MessageState, Txn
from mapi.storage.propbag import PropBag
from mapi.tables.table import MemoryTable

# RopModifyRecipients / IMessage::ModifyRecipients flags.
MODRECIP_ADD: Final = 0x2
MODRECIP_MODIFY: Final = 0x4
MODRECIP_REMOVE: Final = 0x8
# SaveChanges flags.
KEEP_OPEN_READWRITE: Final = 0x2
FORCE_SAVE: Final = 0x4

RECIPIENT_COLUMNS: Final = (
    pt.PR_ROWID,
    pt.PR_DISPLAY_NAME_W,
    pt.PR_EMAIL_ADDRESS_W,
    pt.PR_ADDRTYPE_W,
    pt.PR_RECIPIENT_TYPE,
)
ATTACHMENT_COLUMNS: Final = (
    pt.PR_ATTACH_NUM,
    pt.PR_INSTANCE_KEY,
    pt.PR_ATTACH_METHOD,
    pt.PR_ATTACH_FILENAME_W,
    pt.PR_ATTACH_LONG_FILENAME_W,
    pt.PR_ATTACH_SIZE,
    pt.PR_RENDERING_POSITION,
)

_MESSAGE_COMPUTED: Final = (
    pt.PR_ENTRYID, pt.PR_RECORD_KEY, pt.PR_PARENT_ENTRYID, pt.PR_INSTANCE_KEY,
    pt.PR_STORE_ENTRYID, pt.PR_STORE_RECORD_KEY, pt.PR_MAPPING_SIGNATURE, pt.PR_OBJECT_TYPE,
    pt.PR_MESSAGE_SIZE, pt.PR_HASATTACH, pt.PR_DISPLAY_TO_W, pt.PR_DISPLAY_CC_W,
    pt.PR_DISPLAY_BCC_W, pt.PR_CREATION_TIME, pt.PR_LAST_MODIFICATION_TIME, pt.PR_CHANGE_KEY,
    pt.PR_ACCESS, pt.PR_ACCESS_LEVEL,
)  # fmt: skip
_ATTACH_COMPUTED: Final = (
    pt.PR_ATTACH_NUM, pt.PR_ATTACH_SIZE, pt.PR_INSTANCE_KEY, pt.PR_OBJECT_TYPE,
    pt.PR_RECORD_KEY, pt.PR_ACCESS_LEVEL,
)  # fmt: skip


def recipient_address(row: dict[int, PropData]) -> str:
    """The address a recipient row names: its e-mail or SMTP address, else its display
    name (how delivery and the quota check read a recipient)."""
    for tag in (pt.PR_EMAIL_ADDRESS_W, pt.PR_SMTP_ADDRESS_W, pt.PR_DISPLAY_NAME_W):
        value = row.get(tag)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _recipient_row(row: object, limits: Limits, *, keep_rowid: bool) -> dict[int, PropData]:
    if not isinstance(row, list | tuple):
        raise errors.InvalidParameter("a recipient row is a list of properties")
    if len(row) > limits.max_props_per_call:
        raise errors.InvalidParameter("too many recipient properties")
    props: dict[int, PropData] = {}
    for item in row:
        if isinstance(item, PropValue):
            tag, value = item.tag, item.value
        elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], int):
            tag, value = item[0], item[1]
        else:
            raise errors.InvalidParameter("recipient properties are (tag, value) pairs")
        if pt.prop_type(tag) == pt.PropType.PT_ERROR:
            continue  # rows read back from a table may carry PT_ERROR placeholders
        if tag == pt.PR_ROWID and not keep_rowid:
            continue
        props[pt.canonical_tag(tag)] = validate(tag, value, limits)
    return props


def _rowid(row: dict[int, PropData]) -> int:
    value = row.get(pt.PR_ROWID)
    return value if isinstance(value, int) else 0


StateT = TypeVar("StateT", "MessageState", "AttachState")


class _WorkingCopy(MapiObject, Generic[StateT]):
    """What messages and attachments share: a working copy over a property bag whose
    committed large values the storage reads by the object's db id
    (:meth:`_read_committed`)."""

    _noun: ClassVar[str]
    _state: StateT
    _writable: bool

    def _read_large(self, tag: int, length: int) -> bytes:
        return self.read_large_at(tag, 0, length)

    def read_large_at(self, tag: int, offset: int, size: int) -> bytes:
        """Bytes of a committed large value (for streams)."""
        assert self._state.db_id is not None
        with self._ctx.db.reading() as txn:
            return self._read_committed(txn, self._state.db_id, tag, offset, size)

    def _read_committed(self, txn: Txn, db_id: int, tag: int, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def _check_writable(self) -> None:
        if not self._writable:
            raise errors.NoAccess(f"the {self._noun} is open read-only")

    def _apply(self, sets: list[tuple[int, PropData]], deletes: list[int]) -> None:
        for tag, value in sets:
            self._state.bag.set(tag, value)
        for tag in deletes:
            self._state.bag.delete(tag)
        self._changed()

    def _changed(self) -> None:
        """Called after the working copy changed (messages count versions)."""


#: Properties that are a message's state in its mailbox, not its content: changing them
#: (a read mark, a follow-up flag, "replied", an IMAP flag) keeps the MIME original.
#: Named properties (categories, i.e. IMAP keywords, and the client's own bookkeeping)
#: count as state too.
_STATE_IDS = frozenset(
    pt.prop_id(tag)
    for tag in (
        pt.PR_MESSAGE_FLAGS, pt.PR_MSG_STATUS, pt.PR_FLAG_STATUS, pt.PR_FLAG_COMPLETE_TIME,
        pt.PR_FOLLOWUP_ICON, pt.PR_LAST_VERB_EXECUTED, pt.PR_LAST_VERB_EXECUTION_TIME,
        pt.PR_ICON_INDEX, pt.PR_MESSAGE_DELIVERY_TIME, pt.PR_MIME_ORIGINAL,
    )
)  # fmt: skip


def drop_stale_original(state: MessageState) -> bool:
    """Forget the MIME original of a message whose pending changes touch its content
    (a property other than state, its recipients or its attachments): the bytes that
    arrived no longer say what the message says, so IMAP, POP3 and export render it
    from its properties from now on, as they do a message made through MAPI. Returns
    True when it was dropped."""
    bag = state.bag
    if bag.lookup(pt.PR_MIME_ORIGINAL) is None:
        return False
    changed = [*bag.changes, *bag.temps, *bag.deleted]
    content = (
        state.recipients is not None
        or bool(state.attachments)
        or any(pt.prop_id(t) < 0x8000 and pt.prop_id(t) not in _STATE_IDS for t in changed)
    )
    if content:
        bag.delete(pt.PR_MIME_ORIGINAL)
    return content


class Message(_WorkingCopy["MessageState"]):
    """An open message (a transacted working copy)."""

    _noun = "message"

    computed_ids = frozenset(pt.prop_id(t) for t in _MESSAGE_COMPUTED)

    def __init__(
        self,
        ctx: StoreContext,
        state: MessageState,
        *,
        folder_id: int | None,
        writable: bool,
        parent: Attachment | None = None,
        depth: int = 0,
    ) -> None:
        super().__init__(ctx)
        self._state = state
        self.folder_id = folder_id
        self._writable = writable
        self._parent = parent
        self._depth = depth
        self._version = 0
        #: Made by this object (:meth:`new`): its saves need CREATE, not EDIT_ANY.
        self._created_here = False
        #: (mailbox generation, committed recipients, committed attachment sizes).
        self._committed_cache: tuple[int, list[dict[int, PropData]], dict[int, int]] | None = None

    @classmethod
    def new(cls, ctx: StoreContext, folder_id: int) -> Message:
        now = ctx.now()
        state = MessageState(None, 0, now, now, PropBag())
        state.bag.set(pt.PR_MESSAGE_FLAGS, pt.MSGFLAG_READ | pt.MSGFLAG_UNSENT)
        message = cls(ctx, state, folder_id=folder_id, writable=True)
        message._created_here = True
        return message

    @classmethod
    def open(cls, ctx: StoreContext, message_id: int, *, writable: bool) -> Message:
        """Open a saved message (permission checks are the caller's)."""
        with ctx.db.reading() as txn:
            state, folder_id = ctx.db.messages.load(txn, message_id)
        if folder_id is None:
            raise errors.NotFound("embedded messages are opened through their attachment")
        return cls(ctx, state, folder_id=folder_id, writable=writable)

    @property
    def entry_id(self) -> bytes | None:
        """The entry id once saved (embedded messages have none)."""
        if self._state.db_id is None or self._parent is not None:
            return None
        return self._ctx.message_eid(self._state.db_id)

    # --- MapiObject hooks -------------------------------------------------------------

    def _bag(self) -> PropBag:
        return self._state.bag

    def _read_committed(self, txn: Txn, db_id: int, tag: int, offset: int, size: int) -> bytes:
        return self._ctx.db.messages.read_value(txn, db_id, tag, offset, size)

    def _recipients(self) -> list[dict[int, PropData]]:
        """The recipients (callers copy before changing them: the list may be cached)."""
        if self._state.recipients is not None:
            return self._state.recipients
        return self._committed()[1]

    def _attachment_sizes(self) -> dict[int, int]:
        sizes = dict(self._committed()[2])
        for num, attach in self._state.attachments.items():
            if attach is None:
                sizes.pop(num, None)
            else:
                sizes[num] = attach.bag.size()
        return sizes

    def _committed(self) -> tuple[int, list[dict[int, PropData]], dict[int, int]]:
        """The saved recipients and attachment sizes, read again only after a commit in
        the mailbox (its generation moved), so repeated property reads of an open
        message (PR_MESSAGE_SIZE, PR_DISPLAY_TO) need no SQLite. Like the materialised
        tables, it sees commits made through this process's mailbox object only: a
        change by another process (none touches messages today) shows after the next."""
        generation = self._ctx.db.generation
        cached = self._committed_cache
        if cached is None or cached[0] != generation:
            stored = self._ctx.db.messages
            with self._ctx.db.reading() as txn:
                recipients = stored.recipients(txn, self._state.db_id)
                sizes = stored.attachment_sizes(txn, self._state.db_id)
            cached = self._committed_cache = (generation, recipients, sizes)
        return cached

    def _computed(self, tag: int) -> PropData | None:
        st = self._state
        if tag in (pt.PR_ENTRYID, pt.PR_RECORD_KEY):
            return self.entry_id
        if tag == pt.PR_PARENT_ENTRYID:
            return None if self.folder_id is None else self._ctx.folder_eid(self.folder_id)
        if tag == pt.PR_INSTANCE_KEY:
            return None if st.db_id is None else instance_key(st.db_id)
        if tag == pt.PR_STORE_ENTRYID:
            return self._ctx.store_eid()
        if tag in (pt.PR_STORE_RECORD_KEY, pt.PR_MAPPING_SIGNATURE):
            return self._ctx.uid
        if tag == pt.PR_OBJECT_TYPE:
            return pt.MAPI_MESSAGE
        if tag in (pt.PR_MESSAGE_SIZE, pt.PR_MESSAGE_SIZE_EXTENDED):
            recips = sum(value_size(t, v) for r in self._recipients() for t, v in r.items())
            size = st.bag.size() + recips + sum(self._attachment_sizes().values())
            return min(size, 0x7FFFFFFF) if tag == pt.PR_MESSAGE_SIZE else size
        if tag == pt.PR_HASATTACH:
            return bool(self._attachment_sizes())
        if tag in (pt.PR_DISPLAY_TO_W, pt.PR_DISPLAY_CC_W, pt.PR_DISPLAY_BCC_W):
            kind = {pt.PR_DISPLAY_TO_W: pt.MAPI_TO, pt.PR_DISPLAY_CC_W: pt.MAPI_CC}.get(
                tag, pt.MAPI_BCC
            )
            return "; ".join(
                str(r.get(pt.PR_DISPLAY_NAME_W, ""))
                for r in self._recipients()
                if r.get(pt.PR_RECIPIENT_TYPE) == kind
            )
        if tag == pt.PR_CREATION_TIME:
            return st.created
        if tag == pt.PR_LAST_MODIFICATION_TIME:
            return st.modified
        if tag == pt.PR_CHANGE_KEY:
            return None if st.db_id is None else change_key(self._ctx.uid, st.change_num)
        if tag in (pt.PR_ACCESS, pt.PR_ACCESS_LEVEL):
            if tag == pt.PR_ACCESS_LEVEL:
                return 1 if self._writable else 0
            access = pt.MAPI_ACCESS_READ
            return access | (pt.MAPI_ACCESS_MODIFY | pt.MAPI_ACCESS_DELETE) * self._writable
        return None

    def _computed_tags(self) -> list[int]:
        tags = [pt.PR_MESSAGE_SIZE, pt.PR_HASATTACH, pt.PR_OBJECT_TYPE, pt.PR_STORE_ENTRYID,
                pt.PR_STORE_RECORD_KEY, pt.PR_MAPPING_SIGNATURE, pt.PR_CREATION_TIME,
                pt.PR_LAST_MODIFICATION_TIME, pt.PR_ACCESS, pt.PR_ACCESS_LEVEL,
                pt.PR_DISPLAY_TO_W, pt.PR_DISPLAY_CC_W, pt.PR_DISPLAY_BCC_W]  # fmt: skip
        if self.entry_id is not None:
            tags += [pt.PR_ENTRYID, pt.PR_RECORD_KEY]
        if self.folder_id is not None:
            tags.append(pt.PR_PARENT_ENTRYID)
        if self._state.db_id is not None:
            tags += [pt.PR_INSTANCE_KEY, pt.PR_CHANGE_KEY]
        return tags

    def _changed(self) -> None:
        self._version += 1

    def touch(self) -> None:
        """Note a pending change made from outside (a stream commit)."""
        self._version += 1

    # --- Saving ---------------------------------------------------------------------------

    def save_changes(self, flags: int = KEEP_OPEN_READWRITE) -> None:
        """Commit the working copy (see the module docstring).

        Raises:
            NoAccess: read-only. ObjectChanged/ObjectDeleted: someone else saved or
            deleted the message since it was opened (FORCE_SAVE overrides the former).
        """
        with self._ctx.db.lock:
            self._check_open()
            if flags & ~(KEEP_OPEN_READWRITE | FORCE_SAVE | 0x1):
                raise errors.UnknownFlags(f"0x{flags:X}")
            self._check_writable()
            if self._parent is not None:
                self._parent.embedded_saved(self._state.snapshot())
            else:
                self._save_top(force=bool(flags & FORCE_SAVE))
            if not flags & (KEEP_OPEN_READWRITE | 0x1):
                self._closed = True

    def _save_top(self, *, force: bool) -> None:
        db = self._ctx.db
        with db.transaction() as txn:
            assert self.folder_id is not None
            if db.folders.get(txn, self.folder_id) is None:
                raise errors.ObjectDeleted("the folder of the message was deleted")
            now = self._ctx.now()
            is_new = self._state.db_id is None
            # Rights are checked again at the save, where the message is now: they may
            # have been revoked, or the message moved, since it was opened for writing.
            created = self._created_here
            if self._state.db_id is None:
                permissions.check_save_message(self._ctx, self.folder_id, created_here=created)
            else:
                where = db.messages.placement(txn, self._state.db_id)
                if where is not None:  # (a deleted message is the save's to report)
                    assert where.folder_id is not None
                    permissions.check_save_message(self._ctx, where.folder_id, created_here=created)
            if not is_new:
                drop_stale_original(self._state)
            db_id = db.messages.save(
                txn,
                self._state,
                limits=self._ctx.limits,
                change_num=db.next_change_number(txn),
                now=now,
                folder_id=self.folder_id,
                force=force,
                check_quota=True,  # a client's edit may not grow a full mailbox
            )
            state, folder_id = db.messages.load(txn, db_id)
            assert folder_id is not None
            op = Op.CREATED if is_new else Op.MODIFIED
            record(self._ctx, Change(op=op, folder=False, object_id=db_id, parent_id=folder_id))
        self._state = state
        self.folder_id = folder_id
        self._version += 1

    def stamp_delivery_time(self) -> None:
        """Give a new top-level message without PR_MESSAGE_DELIVERY_TIME the current time
        as one (pending until the save; see the module docstring). Idempotent."""
        with self._ctx.db.lock:
            self._check_open()
            st = self._state
            if (
                self._writable
                and st.db_id is None
                and self._parent is None
                and st.bag.lookup(pt.PR_MESSAGE_DELIVERY_TIME) is None
            ):
                st.bag.set(pt.PR_MESSAGE_DELIVERY_TIME, self._ctx.now())
                self._version += 1

    # --- Read flag ------------------------------------------------------------------------

    def set_read_flag(self, *, clear: bool = False) -> None:
        """Set or clear MSGFLAG_READ at once (not transacted, as IMessage::SetReadFlag)."""
        with self._ctx.db.lock:
            self._check_open()
            found = self._state.bag.lookup(pt.PR_MESSAGE_FLAGS)
            flags = found[1] if found and isinstance(found[1], int) else 0
            flags = flags & ~pt.MSGFLAG_READ if clear else flags | pt.MSGFLAG_READ
            if self._state.db_id is not None and self._parent is None:
                db = self._ctx.db
                with db.transaction() as txn:
                    folder_id = db.messages.set_flags(txn, self._state.db_id, flags)
                    if folder_id is not None:
                        db.messages.note_read(txn, [self._state.db_id], db.next_change_number(txn))
                        record(
                            self._ctx,
                            Change(
                                op=Op.MODIFIED, folder=False, object_id=self._state.db_id,
                                parent_id=folder_id,
                            ),
                        )  # fmt: skip
                self._state.bag.set_committed(pt.PR_MESSAGE_FLAGS, flags)
            if pt.PR_MESSAGE_FLAGS in self._state.bag.changes or self._state.db_id is None:
                self._state.bag.set(pt.PR_MESSAGE_FLAGS, flags)

    # --- Recipients -----------------------------------------------------------------------

    def modify_recipients(self, rows: Sequence[Sequence[object]], flags: int = 0) -> None:
        """Change the recipient list (pending until save).

        ``flags`` 0 replaces the list; MODRECIP_ADD appends rows (fresh PR_ROWID);
        MODRECIP_MODIFY replaces the rows with the same PR_ROWID; MODRECIP_REMOVE
        removes the rows with the given PR_ROWID.

        Raises:
            InvalidParameter: bad rows, or too many recipients.
            NotFound: MODIFY/REMOVE of an unknown PR_ROWID.
        """
        with self._ctx.db.lock:
            self._check_open()
            self._check_writable()
            if flags not in (0, MODRECIP_ADD, MODRECIP_MODIFY, MODRECIP_REMOVE):
                raise errors.UnknownFlags(f"0x{flags:X}")
            limits = self._ctx.limits
            current = [dict(r) for r in self._recipients()]
            keep = flags in (MODRECIP_MODIFY, MODRECIP_REMOVE)
            parsed = [_recipient_row(row, limits, keep_rowid=keep) for row in rows]
            if flags in (0, MODRECIP_ADD):
                if flags == 0:
                    current = []
                top = max((_rowid(r) for r in current), default=-1)
                for props in parsed:
                    top += 1
                    props[pt.PR_ROWID] = top
                    current.append(props)
            else:
                index = {r[pt.PR_ROWID]: i for i, r in enumerate(current)}
                doomed = set()
                for props in parsed:
                    rowid = props.get(pt.PR_ROWID)
                    if rowid not in index:
                        raise errors.NotFound(f"no recipient with PR_ROWID {rowid!r}")
                    if flags == MODRECIP_MODIFY:
                        current[index[rowid]] = props
                    else:
                        doomed.add(index[rowid])
                current = [r for i, r in enumerate(current) if i not in doomed]
            if len(current) > limits.max_recipients:
                raise errors.InvalidParameter("too many recipients")
            self._state.recipients = current
            self._version += 1

    def recipient_table(self) -> MemoryTable:
        """The recipients, including unsaved changes."""
        with self._ctx.db.lock:
            self._check_open()

            def load() -> list[tuple[int, DictRow]]:
                return [(_rowid(r), DictRow(dict(r))) for r in self._recipients()]

            return MemoryTable(self._ctx, RECIPIENT_COLUMNS, load, lambda: self._version)

    # --- Attachments ----------------------------------------------------------------------

    def attachment_table(self) -> MemoryTable:
        """The attachments, including unsaved changes."""
        with self._ctx.db.lock:
            self._check_open()

            def load() -> list[tuple[int, DictRow]]:
                nums = set(self._attachment_sizes())
                out = []
                for num in sorted(nums):
                    state = self._attach_state(num)
                    att = Attachment(self._ctx, self, state, writable=False)
                    out.append((num, DictRow(att.get_props().as_dict())))
                return out

            return MemoryTable(self._ctx, ATTACHMENT_COLUMNS, load, lambda: self._version)

    def _attach_state(self, num: int) -> AttachState:
        pending = self._state.attachments.get(num, False)
        if pending is None:
            raise errors.NotFound(f"attachment {num} was deleted")
        if pending is not False:
            assert isinstance(pending, AttachState)
            return pending.snapshot()
        if self._state.db_id is None:
            raise errors.NotFound(f"no attachment {num}")
        with self._ctx.db.reading() as txn:
            return self._ctx.db.messages.load_attachment(txn, self._state.db_id, num)

    def create_attach(self) -> Attachment:
        """A new attachment (pending until it and this message are saved)."""
        with self._ctx.db.lock:
            self._check_open()
            self._check_writable()
            if len(self._attachment_sizes()) >= self._ctx.limits.max_attachments:
                raise errors.TooBig("too many attachments")
            num = self._state.next_attach_num
            self._state.next_attach_num += 1
            return Attachment(self._ctx, self, AttachState(num, None, PropBag()), writable=True)

    def open_attach(self, num: int, *, writable: bool = False) -> Attachment:
        """Open attachment ``num``.

        Raises:
            NotFound: no such attachment.
        """
        with self._ctx.db.lock:
            self._check_open()
            if writable:
                self._check_writable()
            return Attachment(self._ctx, self, self._attach_state(num), writable=writable)

    def delete_attach(self, num: int) -> None:
        """Delete attachment ``num`` (pending until save)."""
        with self._ctx.db.lock:
            self._check_open()
            self._check_writable()
            self._attach_state(num)
            self._state.attachments[num] = None
            self._version += 1

    def attachment_saved(self, state: AttachState) -> None:
        """An attachment's save: its state becomes a pending change of this message."""
        self._state.attachments[state.num] = state
        self._version += 1

    # --- Streams ---------------------------------------------------------------------------

    def open_stream(self, tag: int, *, write: bool = False, create: bool = False) -> PropStream:
        """Open a PT_BINARY / PT_UNICODE property as a stream (see :mod:`mapi.objects.streams`)."""
        with self._ctx.db.lock:
            self._check_open()
            if write or create:
                self._check_writable()
            return PropStream(self, tag, write=write or create, create=create)

    def close(self) -> None:
        """Discard unsaved changes and release the object."""
        with self._ctx.db.lock:
            self._closed = True

    @property
    def embedding_depth(self) -> int:
        return self._depth


class Attachment(_WorkingCopy["AttachState"]):
    """An open attachment (a working copy saved into its message)."""

    _noun = "attachment"

    computed_ids = frozenset(pt.prop_id(t) for t in _ATTACH_COMPUTED)

    def __init__(
        self, ctx: StoreContext, message: Message, state: AttachState, *, writable: bool
    ) -> None:
        super().__init__(ctx)
        self._message = message
        self._state = state
        self._writable = writable
        self.num = state.num

    def _bag(self) -> PropBag:
        return self._state.bag

    def _read_committed(self, txn: Txn, db_id: int, tag: int, offset: int, size: int) -> bytes:
        return self._ctx.db.messages.read_attachment_value(txn, db_id, tag, offset, size)

    def _computed(self, tag: int) -> PropData | None:
        if tag == pt.PR_ATTACH_NUM:
            return self._state.num
        if tag == pt.PR_ATTACH_SIZE:
            return min(self._state.bag.size(), 0x7FFFFFFF)
        if tag in (pt.PR_INSTANCE_KEY, pt.PR_RECORD_KEY):
            return self._state.num.to_bytes(4, "big")
        if tag == pt.PR_OBJECT_TYPE:
            return pt.MAPI_ATTACH
        if tag == pt.PR_ACCESS_LEVEL:
            return 1 if self._writable else 0
        return None

    def _computed_tags(self) -> list[int]:
        return [pt.PR_ATTACH_NUM, pt.PR_ATTACH_SIZE, pt.PR_INSTANCE_KEY, pt.PR_RECORD_KEY,
                pt.PR_OBJECT_TYPE, pt.PR_ACCESS_LEVEL]  # fmt: skip

    def touch(self) -> None:
        """Note a pending change made from outside (a stream commit)."""

    def save_changes(self, flags: int = KEEP_OPEN_READWRITE) -> None:
        """Hand the attachment to its message's pending changes."""
        with self._ctx.db.lock:
            self._check_open()
            self._check_writable()
            self._message.attachment_saved(self._state.snapshot())
            if not flags & (KEEP_OPEN_READWRITE | 0x1):
                self._closed = True

    def open_embedded(self, *, create: bool = False) -> Message:
        """Open (or create) the embedded message of an ATTACH_EMBEDDED_MSG attachment.

        Raises:
            NotFound: no embedded message and not ``create``.
            TooComplex: embedded messages nested too deeply.
        """
        with self._ctx.db.lock:
            self._check_open()
            depth = self._message.embedding_depth + 1
            if depth > self._ctx.limits.max_embedding_depth:
                raise errors.TooComplex("embedded messages nested too deeply")
            if create:
                self._check_writable()
            state: MessageState | None = None
            if create:
                now = self._ctx.now()
                state = MessageState(None, 0, now, now, PropBag())
                self._state.bag.set(pt.PR_ATTACH_METHOD, pt.ATTACH_EMBEDDED_MSG)
            elif self._state.embedded is not None:
                state = self._state.embedded.snapshot()
            else:
                stored = self._ctx.db.messages
                with self._ctx.db.reading() as txn:
                    emb = stored.embedded_id(txn, self._state.db_id)
                    if emb is not None:
                        state = stored.load(txn, emb)[0]
            if state is None:
                raise errors.NotFound("the attachment has no embedded message")
            return Message(
                self._ctx, state, folder_id=None, writable=self._writable, parent=self, depth=depth
            )

    def embedded_saved(self, state: MessageState) -> None:
        """The embedded message's save: pending in this attachment."""
        self._state.embedded = state
        self._state.bag.set(pt.PR_ATTACH_METHOD, pt.ATTACH_EMBEDDED_MSG)

    def open_stream(self, tag: int, *, write: bool = False, create: bool = False) -> PropStream:
        """Open a PT_BINARY / PT_UNICODE property (e.g. PR_ATTACH_DATA_BIN) as a stream."""
        with self._ctx.db.lock:
            self._check_open()
            if write or create:
                self._check_writable()
            return PropStream(self, tag, write=write or create, create=create)

    def close(self) -> None:
        """Discard unsaved changes and release the object."""
        self._closed = True


def open_message_checked(ctx: StoreContext, message_id: int, *, writable: bool) -> Message:
    """Open a message after checking the user's rights on its folder."""
    with ctx.db.reading() as txn:
        where = ctx.db.messages.placement(txn, message_id)
    if where is None or where.folder_id is None:
        raise errors.NotFound("no such message")
    permissions.check_open_message(ctx, where.folder_id, writable=writable)
    return Message.open(ctx, message_id, writable=writable)


__all__ = ["Attachment", "Message", "open_message_checked"]
