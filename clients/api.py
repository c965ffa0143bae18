"""The client library: MAPI-style objects over the store's DCE/RPC interface.

::

    async with connect("ncacn_ip_tcp:mail.example[135]", "alice", "secret") as session:
        store = await session.open_store()
        inbox = await store.open_folder(await store.special_folder("inbox"))
        async for row in inbox.contents(["PR_SUBJECT", "PR_MESSAGE_DELIVERY_TIME"],
                                        sort=[("PR_MESSAGE_DELIVERY_TIME", True)]):
            print(row["PR_SUBJECT"])

Every method of an object returns a :class:`Call`: ``await`` it to run it at once,
or queue several in ``async with session.batch() as batch`` to send them in one
round trip (``batch.add(call)``); objects opened in a batch can be used by later
calls of the same batch, because the client picks their handle numbers. Properties
are named by tag (``0x0037001F``) or by MS-OXPROPS name (``"PR_SUBJECT"``). MAPI
errors are raised as the :mod:`mapi.model.errors` classes (``NotFound``, ``NoAccess``...).

The address chooses the transport: ``ncacn_ip_tcp:host[port]`` connects to an
endpoint mapper (port 135 by default) and asks it where the store is; it also works
when ``port`` is the store's own port. ``https://host:port/`` goes through the HTTPS
tunnel (HTTP/2, or RPC over HTTP v2 with ``http2=False``): it asks the endpoint
mapper behind the tunnel (port ``?epm=N`` in the URL, 1135 by default) where the store
is, then opens a second tunnelled connection to it. The certificate is verified with
the system's trust store or a pinned SHA-256 ``fingerprint``; there is no clear-text
fallback. The password never crosses the wire in clear: logon is a challenge-response
(:mod:`mapi.access.logon`), and the tunnel's HTTP Basic authentication runs inside TLS.
On the LAN the store connection authenticates with NTLM and is signed and sealed
(``auth_level="privacy"``, the default there; ``"integrity"``, ``"connect"``, ``"none"``;
``auth_type="spnego"`` wraps NTLM in SPNEGO); through the tunnel it adds no DCE/RPC
authentication unless asked (docs/security.md).

The library is split by job, and this module re-exports its public names:
:mod:`clients.calls` (calls, property values, the object base), :mod:`clients.objects`
(store, folders, messages, attachments, tables), :mod:`clients.streams` (streams and
their write-behind engine), :mod:`clients.session` (the session, batches, events) and
:mod:`clients.connecting` (addresses, transports, logon, :func:`connect`) and
:mod:`clients.addressbook` (the address book over NSPI: resolve names, browse and
search the GAL, a user's details; :func:`open_address_book`).
"""

from __future__ import annotations

from clients.addressbook import (
    AddressBook,
    Entry,
    GalPage,
    Resolution,
    TooManyMatches,
    address_book_for,
    open_address_book,
)
from clients.calls import (
    MAPI_W_ERRORS_RETURNED,
    MAX_INLINE_VALUE,
    Call,
    MapiObject,
    Props,
    Tag,
    tag_of,
)
from clients.calls import _problems as _problems  # private, reached from tests
from clients.connecting import (
    AUTH_LEVELS,
    AUTH_TYPES,
    DEFAULT_LAN_AUTH_LEVEL,
    DEFAULT_TUNNEL_AUTH_LEVEL,
    DEFAULT_TUNNEL_EPM_PORT,
    MAX_CLIENT_KDF_N,
    check_fingerprint,
    client_auth,
    connect,
    logon,
    parse_address,
    parse_tunnel_address,
)
from clients.connecting import _open_store_rpc as _open_store_rpc  # private, from tests
from clients.objects import Attachment, Folder, Message, Store, SyncPage, Table
from clients.session import Batch, Event, ResyncRequired, Session
from clients.streams import Stream

__all__ = [
    "AUTH_LEVELS",
    "AUTH_TYPES",
    "DEFAULT_LAN_AUTH_LEVEL",
    "DEFAULT_TUNNEL_AUTH_LEVEL",
    "DEFAULT_TUNNEL_EPM_PORT",
    "MAPI_W_ERRORS_RETURNED",
    "MAX_CLIENT_KDF_N",
    "MAX_INLINE_VALUE",
    "AddressBook",
    "Attachment",
    "Batch",
    "Call",
    "Entry",
    "Event",
    "Folder",
    "GalPage",
    "MapiObject",
    "Message",
    "Props",
    "Resolution",
    "ResyncRequired",
    "Session",
    "Store",
    "Stream",
    "SyncPage",
    "Table",
    "Tag",
    "TooManyMatches",
    "address_book_for",
    "check_fingerprint",
    "client_auth",
    "connect",
    "logon",
    "open_address_book",
    "parse_address",
    "parse_tunnel_address",
    "tag_of",
]
