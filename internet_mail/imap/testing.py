"""An in-memory ``Backend`` for tests, fuzzing and examples (never used by ``serve``).

One user, a dict of mailboxes; UIDs, UIDVALIDITY and modseqs behave as the store's will
(UIDs strictly ascending, never reused; every change raises the modseq), so the session
core runs end to end without the MAPI store.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace

from .backend import BackendError, MailboxInfo, MailboxState, MessageInfo

__all__ = ["MemoryBackend"]


@dataclass
class _Box:
    uidvalidity: int
    special_use: tuple[str, ...] = ()
    subscribed: bool = True
    uidnext: int = 1
    messages: dict[int, tuple[MessageInfo, bytes]] = field(default_factory=dict)


class MemoryBackend:
    """Implements ``backend.Backend`` in memory for one user."""

    def __init__(self, user: str = "alice", password: str = "secret") -> None:
        self._user = user
        self._password = password
        self._validity = 1000
        self.modseq = 1
        self.boxes: dict[str, _Box] = {}
        for name, use in (("INBOX", ()), ("Sent", ("\\Sent",)), ("Trash", ("\\Trash",))):
            self.create(name, use)

    def authenticate(self, user: str, password: str) -> bool:
        return (user, password) == (self._user, self._password)

    def _box(self, name: str) -> _Box:
        box = self.boxes.get(name)
        if box is None:
            raise BackendError("no such mailbox", "NONEXISTENT")
        return box

    def list_mailboxes(self) -> list[MailboxInfo]:
        out = []
        for name in sorted(self.boxes, key=lambda n: (n != "INBOX", n)):
            box = self.boxes[name]
            kids = any(other.startswith(name + "/") for other in self.boxes)
            out.append(
                MailboxInfo(
                    name=name,
                    attributes=("\\HasChildren",) if kids else ("\\HasNoChildren",),
                    special_use=box.special_use,
                    subscribed=box.subscribed,
                )
            )
        return out

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        if name in self.boxes:
            raise BackendError("mailbox exists", "ALREADYEXISTS")
        self._validity += 1
        self.boxes[name] = _Box(self._validity, special_use)

    def delete(self, name: str) -> None:
        self._box(name)
        del self.boxes[name]

    def rename(self, old: str, new: str) -> None:
        if new in self.boxes:
            raise BackendError("mailbox exists", "ALREADYEXISTS")
        self.boxes[new] = self._box(old)
        del self.boxes[old]

    def subscribe(self, name: str, subscribed: bool) -> None:
        self._box(name).subscribed = subscribed

    def state(self, name: str) -> MailboxState:
        box = self._box(name)
        infos = [info for info, _ in box.messages.values()]
        return MailboxState(
            uidvalidity=box.uidvalidity,
            uidnext=box.uidnext,
            highestmodseq=max((i.modseq for i in infos), default=1),
            messages=len(infos),
            unseen=sum("\\Seen" not in i.flags for i in infos),
            deleted=sum("\\Deleted" in i.flags for i in infos),
            size=sum(i.size for i in infos),
        )

    def messages(self, name: str) -> list[MessageInfo]:
        box = self._box(name)
        return [box.messages[uid][0] for uid in sorted(box.messages)]

    def body(self, name: str, uid: int) -> bytes:
        entry = self._box(name).messages.get(uid)
        if entry is None:
            raise BackendError("message was expunged", "EXPUNGEISSUED")
        return entry[1]

    def _bump(self) -> int:
        self.modseq += 1
        return self.modseq

    def store(
        self,
        name: str,
        uids: list[int],
        mode: str,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> list[int]:
        box = self._box(name)
        failed = []
        for uid in uids:
            info, raw = box.messages[uid]
            if unchanged_since is not None and info.modseq > unchanged_since:
                failed.append(uid)
                continue
            new = (
                info.flags | flags if mode == "+" else info.flags - flags if mode == "-" else flags
            )
            if new != info.flags:
                box.messages[uid] = (replace(info, flags=new, modseq=self._bump()), raw)
        return failed

    def append(
        self, name: str, message: bytes, flags: frozenset[str], date: _dt.datetime | None
    ) -> tuple[int, int]:
        box = self._box(name)
        uid = box.uidnext
        box.uidnext += 1
        when = date or _dt.datetime(2024, 1, 1, tzinfo=_dt.UTC)
        info = MessageInfo(
            uid=uid, flags=flags, size=len(message), internal_date=when, modseq=self._bump()
        )
        box.messages[uid] = (info, message)
        return box.uidvalidity, uid

    def copy(self, name: str, uids: list[int], target: str, *, move: bool) -> tuple[int, list[int]]:
        src, dst = self._box(name), self._box(target)
        new = []
        for uid in uids:
            info, raw = src.messages[uid]
            _, added = self.append(target, raw, info.flags, info.internal_date)
            new.append(added)
            if move:
                del src.messages[uid]
        return dst.uidvalidity, new

    def expunge(self, name: str, uids: list[int] | None) -> list[int]:
        box = self._box(name)
        gone = [
            uid
            for uid, (info, _) in box.messages.items()
            if "\\Deleted" in info.flags and (uids is None or uid in uids)
        ]
        for uid in gone:
            del box.messages[uid]
        return gone

    def quota(self, root: str) -> list[tuple[str, int, int]] | None:
        if root != "":
            return None
        used = sum(i.size for b in self.boxes.values() for i, _ in b.messages.values())
        return [("STORAGE", used // 1024, 1024 * 1024)]
