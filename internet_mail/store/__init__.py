"""The IMAP and POP3 backends over the MAPI store: every mail client reads the mailbox.

``ImapStoreBackends(store, throttle=...)`` and ``Pop3StoreBackends(store, throttle=...)``
are made once by ``serve``; their ``new(address)`` makes one connection's backend
(``internet_mail.imap.backend.Backend``, ``internet_mail.pop3.backend.Backend``), whose
``close()`` the driver calls when the connection ends. The mapping between MAPI and
IMAP is in ``docs/imap.md``; the folder, UID and flag logic in :mod:`.mailbox`.
"""

from .imap import ImapStoreBackend, ImapStoreBackends
from .logons import Logons
from .mailbox import MailboxView
from .pop3 import Pop3StoreBackend, Pop3StoreBackends

__all__ = [
    "ImapStoreBackend",
    "ImapStoreBackends",
    "Logons",
    "MailboxView",
    "Pop3StoreBackend",
    "Pop3StoreBackends",
]
