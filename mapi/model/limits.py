"""Hard limits of the store core.

Every decoder and every object in :mod:`mapi` checks its input against these limits
before allocating (DESIGN.md, "Security"), and answers a violation with a MAPI error
(``MAPI_E_TOO_BIG``, ``MAPI_E_STRING_TOO_LONG``, ``MAPI_E_TOO_COMPLEX``,
``MAPI_E_TABLE_TOO_BIG`` or ``MAPI_E_INVALID_PARAMETER``), never a crash or a hang.
The quota fields (mailbox and message sizes, :mod:`mapi.objects.quota`) are the server's
configured defaults; 0 means no limit there.
The frozen dataclass validates itself, like aioquic's ``QuicConfiguration``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from mapi.model import errors

#: Limits for which 0 means "none".
_ZERO_MEANS_NONE: Final = frozenset({"max_mailbox_bytes", "max_message_bytes"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Limits of one store. All sizes are in bytes unless named otherwise."""

    #: Largest value set or got through set_props/get_props (strings: UTF-16 bytes).
    max_value_bytes: int = 1 << 20
    #: Values at most this large live in the object's property blob; larger ones in
    #: chunk rows (keeps table scans over large folders fast).
    inline_value_bytes: int = 4096
    #: Size of one chunk row of a large value or stream.
    chunk_bytes: int = 64 * 1024
    #: Largest stream (a body or an attachment's data).
    max_stream_bytes: int = 1 << 31
    #: Most values in one multi-valued property.
    max_mv_values: int = 4096
    #: Most properties in one get/set/delete call.
    max_props_per_call: int = 4096
    #: Most properties on one object.
    max_props_per_object: int = 8192
    #: Deepest restriction tree.
    max_restriction_depth: int = 32
    #: Most nodes in one restriction tree.
    max_restriction_nodes: int = 1024
    #: Most columns of a table.
    max_columns: int = 256
    #: Most sort keys of a table.
    max_sort_keys: int = 8
    #: Most rows one query_rows call returns.
    max_rows_per_query: int = 1000
    #: Most bookmarks alive on one table.
    max_bookmarks: int = 64
    #: Most rows a table evaluated in Python may hold (fast SQL tables are unbounded).
    max_materialized_rows: int = 1_000_000
    #: Deepest folder hierarchy (root is depth 0).
    max_folder_depth: int = 64
    #: Most recipients on one message.
    max_recipients: int = 4096
    #: Most attachments on one message.
    max_attachments: int = 1024
    #: Deepest nesting of embedded messages.
    max_embedding_depth: int = 8
    #: Most named properties mapped in one store (ids 0x8000..0xFFFE).
    max_named_props: int = 0x7FFF
    #: Longest string name of a named property, in characters.
    max_name_chars: int = 255
    #: Longest folder display name, in characters.
    max_folder_name_chars: int = 255
    #: Most sessions one user may hold at once.
    max_sessions_per_user: int = 64
    #: Most entry ids in one copy/move/delete call.
    max_ids_per_call: int = 10_000
    #: Size limit of every mailbox that has none of its own (:mod:`mapi.objects.quota`): the
    #: sum of its messages' PR_MESSAGE_SIZE, Deleted Items included. A save, copy or
    #: delivery past it fails with MAPI_E_NOT_ENOUGH_DISK. 0: no limit.
    max_mailbox_bytes: int = 0
    #: Share of a mailbox's limit, in percent, where the store starts warning
    #: (PR_STORAGE_QUOTA_LIMIT).
    mailbox_warning_percent: int = 90
    #: Largest message (PR_MESSAGE_SIZE, attachments included): a save or stream write
    #: past it fails with MAPI_E_TOO_BIG. 0: no limit.
    max_message_bytes: int = 0
    #: Deepest nesting of MIME entities (multiparts and message/* parts) that
    #: :mod:`internet_mail.mime` converts; the top-level message is depth 0. Deeper input is
    #: refused with ``MimeLimitExceeded`` (MAPI_E_TOO_COMPLEX).
    max_mime_depth: int = 32
    #: Most MIME entities (the message itself, every part and embedded message) in one
    #: converted message.
    max_mime_parts: int = 2000
    #: Most header fields in one MIME entity (the top-level header or a part's).
    max_mime_header_fields: int = 1000
    #: Largest header block of one MIME entity, in bytes (names and values).
    max_mime_header_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            floor = 0 if f.name in _ZERO_MEANS_NONE else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < floor:
                what = "a non-negative" if floor == 0 else "a positive"
                raise ValueError(f"limit {f.name} must be {what} integer, got {value!r}")
        if self.mailbox_warning_percent > 100:
            raise ValueError("limit mailbox_warning_percent must be at most 100")
        if self.inline_value_bytes > self.max_value_bytes:
            raise ValueError("inline_value_bytes must not exceed max_value_bytes")
        if self.max_named_props > 0x7FFF:
            raise ValueError("at most 0x7FFF named properties fit the id range")


DEFAULT_LIMITS = Limits()


def check_message_size(size: int, limits: Limits) -> None:
    """Raise TooBig if a message of ``size`` bytes passes the message size limit."""
    top = limits.max_message_bytes
    if top and size > top:
        raise errors.TooBig(
            f"the message is {size} bytes, more than the {top} bytes a message may hold"
        )


def full_mailbox(used: int, limit: int, needed: int | None) -> errors.NotEnoughDisk:
    """The error of a mailbox with no room (one text wherever it is raised)."""
    more = "" if needed is None else f", and this needs {needed} more"
    return errors.NotEnoughDisk(
        f"the mailbox is full: {used} of its {limit} bytes are used{more};"
        " delete items and empty Deleted Items to make room"
    )
