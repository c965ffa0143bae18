"""What a client needs to speak to the store: its interface, opnums, limits, event bits.

The store's DCE/RPC interface (:mod:`mapi.rpc.service` serves it, :mod:`clients.api`
calls it) is described in :mod:`mapi.rpc.service`'s theory of operation. This module
holds only the constants both sides must agree on, so a client imports them without
loading the server, the store or sqlite3 (``tests/test_client_imports.py``).
"""

from __future__ import annotations

import enum
from typing import Final

from dcerpc.syntax import SyntaxId

#: The store interface (stub data in :data:`dcerpc.syntax.MSGPACK`).
STORE_SYNTAX: Final = SyntaxId.parse("6d617069-616e-7977-6865-726501000000", 1, 0)
OP_CONNECT: Final = 0
OP_DISCONNECT: Final = 1
OP_EXECUTE: Final = 2
OP_WAIT_FOR_EVENTS: Final = 3
OPNUM_COUNT: Final = 4

#: Longest a wait_for_events may park, in seconds (below the tunnel's idle timeouts).
MAX_WAIT: Final = 120.0
#: UDP wake-up datagrams: a fixed prefix, and at most one per session per interval.
WAKE_MAGIC: Final = b"MAPIWAKE"
WAKE_INTERVAL: Final = 0.25


class EventType(enum.IntFlag):
    """Event mask bits ([MS-OXCNOTIF] 2.2.1.4.1.1 NotificationType; mapidefs.h fnev*)."""

    NEW_MAIL = 0x00000002
    OBJECT_CREATED = 0x00000004
    OBJECT_DELETED = 0x00000008
    OBJECT_MODIFIED = 0x00000010
    OBJECT_MOVED = 0x00000020
    OBJECT_COPIED = 0x00000040
    SEARCH_COMPLETE = 0x00000080
    TABLE_MODIFIED = 0x00000100
