"""What the parser produces: one frozen dataclass per IMAP command ([RFC 9051] 6).

Every command carries its ``tag``; commands that take a sequence set and have a ``UID``
form carry ``uid``. Arguments are decoded values: mailbox names as ``str`` (the session
decodes modified UTF-7 or takes UTF-8), literals and quoted strings as ``bytes`` where
they are opaque (passwords, messages, SASL responses), numbers as ``int``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass, field

#: ``*`` in a sequence set: the largest number in use (resolved against the mailbox).
STAR = 0


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence set ([RFC 9051] 9 ``sequence-set``): ranges of ``(low, high)`` with
    ``STAR`` (0) for ``*``, as written (``high`` may be below ``low``); or ``$``, the
    result saved by ``SEARCH RETURN (SAVE)`` ([RFC 5182]) when ``saved`` is true."""

    ranges: tuple[tuple[int, int], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """The ranges with ``*`` replaced by ``largest``, ordered low to high."""
        out = []
        for low, high in self.ranges:
            a = largest if low == STAR else low
            b = largest if high == STAR else high
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, number: int, largest: int) -> bool:
        return any(a <= number <= b for a, b in self.resolve(largest))

    def iter_in(self, present: list[int]) -> Iterator[int]:
        """The members of ``present`` (sorted ascending) that the set names."""
        largest = present[-1] if present else 0
        spans = self.resolve(largest)
        for number in present:
            if any(a <= number <= b for a, b in spans):
                yield number


# -- search keys ([RFC 9051] 6.4.4) -------------------------------------------------------

SearchArg = str | bytes | int | _dt.date | SequenceSet


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search key by its upper-case name (``SEEN``, ``FROM``, ``HEADER``, ``UID``,
    ``BEFORE``, ``LARGER``, ``MODSEQ``...), with its arguments; a bare sequence set is
    ``Criterion("SEQ", (set,))``."""

    name: str
    args: tuple[SearchArg, ...] = ()


@dataclass(frozen=True, slots=True)
class Not:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Or:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class And:
    """A parenthesised list, or the top-level list of keys: all must match."""

    keys: tuple[SearchKey, ...]


SearchKey = Criterion | Not | Or | And


# -- fetch attributes ([RFC 9051] 6.4.5) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """``[part.part.TEXT]``: ``part`` numbers, then ``HEADER``, ``HEADER.FIELDS``,
    ``HEADER.FIELDS.NOT``, ``TEXT``, ``MIME`` or nothing; ``fields`` for the header
    field lists (upper case)."""

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    """One fetch item: a plain name (``FLAGS``, ``ENVELOPE``, ``BODYSTRUCTURE``, ``UID``,
    ``RFC822.SIZE``, ``MODSEQ``...) or ``BODY``/``BINARY``/``BINARY.SIZE`` with a
    section and an optional ``<origin.length>`` partial."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False


# -- commands -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    tag: str

    @property
    def name(self) -> str:
        return _NAMES[type(self)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Capability(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Noop(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Check(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Logout(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTLS(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticate(Command):
    mechanism: str
    #: The SASL-IR initial response, base64-decoded (``=`` is an empty one).
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Login(Command):
    user: bytes
    password: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Enable(Command):
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Id(Command):
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class QresyncParams:
    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Select(Command):
    mailbox: bytes
    read_only: bool = False
    condstore: bool = False
    qresync: QresyncParams | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Create(Command):
    mailbox: bytes
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete(Command):
    mailbox: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Rename(Command):
    old: bytes
    new: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe(Command):
    mailbox: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsubscribe(Command):
    mailbox: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class List(Command):
    reference: bytes
    patterns: tuple[bytes, ...]
    #: LIST-EXTENDED selection options (upper case): SUBSCRIBED, REMOTE, RECURSIVEMATCH,
    #: SPECIAL-USE.
    selection: tuple[str, ...] = ()
    #: Return options: SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS.
    returns: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()
    lsub: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Command):
    mailbox: bytes
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Append(Command):
    mailbox: bytes
    flags: tuple[str, ...] = ()
    date: _dt.datetime | None = None
    message: bytes = b""
    binary: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Idle(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Close(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Unselect(Command): ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Expunge(Command):
    #: ``UID EXPUNGE``'s set ([RFC 4315]); None for plain EXPUNGE.
    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Search(Command):
    uid: bool = False
    charset: str | None = None
    criteria: SearchKey = field(default_factory=lambda: And(()))
    #: ESEARCH return options (MIN MAX ALL COUNT SAVE); None: a plain SEARCH.
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sort(Command):
    uid: bool = False
    keys: tuple[str, ...] = ()
    charset: str = "UTF-8"
    criteria: SearchKey = field(default_factory=lambda: And(()))
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Thread(Command):
    uid: bool = False
    algorithm: str = "ORDEREDSUBJECT"
    charset: str = "UTF-8"
    criteria: SearchKey = field(default_factory=lambda: And(()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch(Command):
    uid: bool = False
    sequence: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    changed_since: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Store(Command):
    uid: bool = False
    sequence: SequenceSet
    #: "+" add, "-" remove, "" replace.
    mode: str
    silent: bool = False
    flags: tuple[str, ...] = ()
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy(Command):
    uid: bool = False
    sequence: SequenceSet
    mailbox: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Move(Command):
    uid: bool = False
    sequence: SequenceSet
    mailbox: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GetQuota(Command):
    root: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GetQuotaRoot(Command):
    mailbox: bytes


_NAMES: dict[type[Command], str] = {
    Capability: "CAPABILITY",
    Noop: "NOOP",
    Check: "CHECK",
    Logout: "LOGOUT",
    StartTLS: "STARTTLS",
    Authenticate: "AUTHENTICATE",
    Login: "LOGIN",
    Enable: "ENABLE",
    Id: "ID",
    Select: "SELECT",
    Create: "CREATE",
    Delete: "DELETE",
    Rename: "RENAME",
    Subscribe: "SUBSCRIBE",
    Unsubscribe: "UNSUBSCRIBE",
    List: "LIST",
    Namespace: "NAMESPACE",
    Status: "STATUS",
    Append: "APPEND",
    Idle: "IDLE",
    Close: "CLOSE",
    Unselect: "UNSELECT",
    Expunge: "EXPUNGE",
    Search: "SEARCH",
    Sort: "SORT",
    Thread: "THREAD",
    Fetch: "FETCH",
    Store: "STORE",
    Copy: "COPY",
    Move: "MOVE",
    GetQuota: "GETQUOTA",
    GetQuotaRoot: "GETQUOTAROOT",
}
