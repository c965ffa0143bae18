"""An in-memory ``Backend`` for tests and fuzzing (never used by ``serve``).

``MemoryStore`` holds every user's maildrop and the locks; ``MemoryBackend(store)`` is
one connection's view, as the store-backed one will be. Unique ids come from a counter
of the store, so they survive sessions and are never reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from . import responses as r
from .backend import BackendError, MaildropInUse, MessageEntry

__all__ = ["MemoryBackend", "MemoryStore"]


@dataclass
class MemoryStore:
    """Users' maildrops: ``maildrops[user]`` maps unique id to message bytes, in order."""

    maildrops: dict[str, dict[str, bytes]] = field(default_factory=dict)
    locked: set[str] = field(default_factory=set)
    next_id: int = 1

    def add(self, user: str, message: bytes) -> str:
        """Deliver ``message`` to ``user``; returns its unique id."""
        uid = f"m{self.next_id:06d}"
        self.next_id += 1
        self.maildrops.setdefault(user, {})[uid] = message
        return uid


class MemoryBackend:
    """Implements ``backend.Backend`` over a ``MemoryStore`` for one connection."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.user: str | None = None

    def lock_maildrop(self, user: str) -> Sequence[MessageEntry]:
        if user in self.store.locked:
            raise MaildropInUse("maildrop already locked")
        self.store.locked.add(user)
        self.user = user
        drop = self.store.maildrops.setdefault(user, {})
        return [MessageEntry(uid=uid, size=len(r.normalize(m))) for uid, m in drop.items()]

    def message_bytes(self, uid: str) -> bytes:
        drop = self.store.maildrops.get(self.user or "", {})
        if uid not in drop:
            raise BackendError("no such message")
        return drop[uid]

    def delete(self, uids: Sequence[str]) -> None:
        drop = self.store.maildrops.get(self.user or "", {})
        for uid in uids:
            drop.pop(uid, None)

    def unlock(self) -> None:
        if self.user is not None:
            self.store.locked.discard(self.user)
            self.user = None
