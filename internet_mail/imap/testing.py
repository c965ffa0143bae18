"""An in-memory ``Backend`` for tests, fuzzing and examples (never used by ``serve``).

One user, a dict of mailboxes; UIDs, UIDVALIDITY and modseqs behave as the store's will
(UIDs strictly ascending, never reused; every change raises the modseq), so the session
core runs end to end without the MAPI store.

Several connections share one user's mailboxes: ``MemoryBackend(share=first)`` (or
``first.connect()``) is another connection's view of the same mailboxes, and a change
made through any of them calls the ``watch`` subscribers of the mailbox (IDLE). It
takes no lock: connections used from several threads must be serialized by the
caller (the driver tests give the driver a ``CapacityLimiter`` of one thread).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
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
    #: UIDs that left the mailbox, with the modseq they left at.
    gone: dict[int, int] = field(default_factory=dict)


@dataclass
class _Shared:
    """What every connection of one user sees: the mailboxes and the subscribers."""

    user: str
    password: str
    validity: int = 1000
    modseq: int = 1
    boxes: dict[str, _Box] = field(default_factory=dict)
    watchers: dict[str, dict[int, Callable[[], None]]] = field(default_factory=dict)
    next_watch: int = 0


class MemoryBackend:
    """Implements ``backend.Backend`` in memory for one user (one connection's view;
    ``share`` another connection to see the same mailboxes)."""

    def __init__(
        self, user: str = "alice", password: str = "secret", *, share: MemoryBackend | None = None
    ) -> None:
        if share is not None:
            self._shared: _Shared = share._shared
            return
        self._shared = _Shared(user, password)
        for name, use in (("INBOX", ()), ("Sent", ("\\Sent",)), ("Trash", ("\\Trash",))):
            self.create(name, use)

    def connect(self) -> MemoryBackend:
        """Another connection's view of the same user's mailboxes."""
        return MemoryBackend(share=self)

    @property
    def boxes(self) -> dict[str, _Box]:
        return self._shared.boxes

    @property
    def modseq(self) -> int:
        return self._shared.modseq

    def authenticate(self, user: str, password: str) -> bool:
        return (user, password) == (self._shared.user, self._shared.password)

    def watch(self, mailbox: str, notify: Callable[[], None]) -> Callable[[], None]:
        self._box(mailbox)
        shared = self._shared
        key = shared.next_watch
        shared.next_watch += 1
        shared.watchers.setdefault(mailbox, {})[key] = notify

        def unsubscribe() -> None:
            subscribers = shared.watchers.get(mailbox, {})
            subscribers.pop(key, None)
            if not subscribers:
                shared.watchers.pop(mailbox, None)

        return unsubscribe

    def close(self) -> None:
        """Nothing to end: the mailboxes stay for the other connections."""

    def _changed(self, *names: str) -> None:
        for name in names:
            for notify in list(self._shared.watchers.get(name, {}).values()):
                notify()

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
        self._shared.validity += 1
        self.boxes[name] = _Box(self._shared.validity, special_use)

    def delete(self, name: str) -> None:
        self._box(name)
        del self.boxes[name]
        self._changed(name)

    def rename(self, old: str, new: str) -> None:
        if new in self.boxes:
            raise BackendError("mailbox exists", "ALREADYEXISTS")
        self.boxes[new] = self._box(old)
        del self.boxes[old]
        self._changed(old)

    def subscribe(self, name: str, subscribed: bool) -> None:
        self._box(name).subscribed = subscribed

    def state(self, name: str) -> MailboxState:
        box = self._box(name)
        infos = [info for info, _ in box.messages.values()]
        return MailboxState(
            uidvalidity=box.uidvalidity,
            uidnext=box.uidnext,
            highestmodseq=max([1, *(i.modseq for i in infos), *box.gone.values()]),
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
        self._shared.modseq += 1
        return self._shared.modseq

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
        self._changed(name)
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
        self._changed(name)
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
                src.gone[uid] = self._bump()
        if move:
            self._changed(name)
        return dst.uidvalidity, new

    def expunge(self, name: str, uids: list[int] | None) -> list[int]:
        box = self._box(name)
        gone = [
            uid
            for uid, (info, _) in box.messages.items()
            if "\\Deleted" in info.flags and (uids is None or uid in uids)
        ]
        modseq = self._bump() if gone else 0
        for uid in gone:
            del box.messages[uid]
            box.gone[uid] = modseq
        if gone:
            self._changed(name)
        return gone

    def vanished(self, name: str, since_modseq: int) -> list[int]:
        box = self._box(name)
        return sorted(uid for uid, modseq in box.gone.items() if modseq > since_modseq)

    def quota(self, root: str) -> list[tuple[str, int, int]] | None:
        if root != "":
            return None
        used = sum(i.size for b in self.boxes.values() for i, _ in b.messages.values())
        return [("STORAGE", used // 1024, 1024 * 1024)]
