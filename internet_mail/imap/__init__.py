"""IMAP4rev2 ([RFC 9051]) with IMAP4rev1 ([RFC 3501]) clients served too, sans-IO.

``parser.CommandParser`` frames and parses the client's bytes into ``commands``;
``session.ImapSession`` runs the connection state machine over a ``backend.Backend``
and serializes its answers with ``responses``. The trio driver and the MAPI store
mapping are separate steps (docs/imap.md).
"""

from .backend import Backend, BackendError, MailboxInfo, MailboxState, MessageInfo
from .config import ImapLimits
from .grammar import ParseError, parse_command
from .parser import (
    CommandParser,
    CommandReceived,
    CommandRejected,
    ContinuationNeeded,
    IdleDone,
    LineReceived,
    ParserEvent,
    ProtocolViolation,
)
from .session import (
    Authenticated,
    CloseRequested,
    Event,
    IdleEnded,
    IdleStarted,
    ImapSession,
    StartTLSRequested,
    State,
)

__all__ = [
    "Authenticated",
    "Backend",
    "BackendError",
    "CloseRequested",
    "CommandParser",
    "CommandReceived",
    "CommandRejected",
    "ContinuationNeeded",
    "Event",
    "IdleDone",
    "IdleEnded",
    "IdleStarted",
    "ImapLimits",
    "ImapSession",
    "LineReceived",
    "MailboxInfo",
    "MailboxState",
    "MessageInfo",
    "ParseError",
    "ParserEvent",
    "ProtocolViolation",
    "StartTLSRequested",
    "State",
    "parse_command",
]
