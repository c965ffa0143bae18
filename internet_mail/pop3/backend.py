"""What the POP3 session needs from a mail store: the ``Backend`` protocol and its data.

One ``Backend`` object serves one connection (the driver makes it over the shared
store). The session calls it synchronously; the trio driver runs the core's calls in a
worker thread when the store blocks. A refusal raises ``BackendError`` (answered
``-ERR [SYS/TEMP] ...``) or ``MaildropInUse`` (``-ERR [IN-USE] ...``, [RFC 2449] 8.1.1).

Unique ids ([RFC 1939] 7, UIDL) are the store's: 1 to 70 characters in 0x21..0x7E,
never reused for another message of the maildrop, the same in every session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Backend", "BackendError", "MaildropInUse", "MessageEntry"]


class BackendError(Exception):
    """The store cannot do it now: ``-ERR [SYS/TEMP] text``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class MaildropInUse(BackendError):
    """Another session holds the maildrop's lock: ``-ERR [IN-USE] text``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEntry:
    """One message of the maildrop snapshot.

    Attributes:
        uid: the unique id UIDL reports (stable across sessions).
        size: octets of the message as RETR sends it (CRLF line endings, before
            byte-stuffing), what STAT and LIST report ([RFC 1939] 5).
    """

    uid: str
    size: int


class Backend(Protocol):
    """One connection's access to the maildrops (each user's Inbox)."""

    def lock_maildrop(self, user: str) -> Sequence[MessageEntry]:
        """Lock ``user``'s maildrop for this session and return its messages in order
        (message numbers 1..n). Raises ``MaildropInUse`` when another session holds the
        lock, ``BackendError`` when the store fails."""
        ...

    def message_bytes(self, uid: str) -> bytes:
        """The message as stored (RFC 5322 bytes; bare LF line endings allowed).
        Raises ``BackendError`` when it is gone (removed through another protocol)."""
        ...

    def delete(self, uids: Sequence[str]) -> None:
        """Remove these messages from the locked maildrop (the UPDATE state); ids that
        are already gone are ignored. Raises ``BackendError`` when the store fails."""
        ...

    def unlock(self) -> None:
        """Release the lock taken by ``lock_maildrop`` (at QUIT or when the connection
        ends). Called at most once per successful lock."""
        ...
