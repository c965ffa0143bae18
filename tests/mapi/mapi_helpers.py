"""Helpers shared by the store core tests."""

from __future__ import annotations

from mapi.access.logon import KdfParams
from mapi.model import proptags as pt
from mapi.objects.messages import Message
from mapi.store import MsgStore

FAST_KDF = KdfParams(n=16, r=1, p=1)  # tests only: real deployments use the default


class Clock:
    """A FILETIME clock advancing one second per reading."""

    def __init__(self) -> None:
        self.now = 133_000_000_000_000_000

    def __call__(self) -> int:
        self.now += 10_000_000
        return self.now


def contents_of(view: MsgStore, role: str) -> list[Message]:
    """The messages of a special folder (``"inbox"``, ``"sent"``...), opened, in row order."""
    folder = view.open_folder(view.special_folder_id(role))
    table = folder.contents_table()
    table.set_columns([pt.PR_ENTRYID])
    rows = table.query_rows(100)
    return [view.open_message(row[0].value) for row in rows]  # type: ignore[arg-type]
