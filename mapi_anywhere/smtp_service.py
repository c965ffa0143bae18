"""The SMTP doors of ``serve``: incoming mail (port 25) and submission (587 and 465).

Both run :func:`internet_mail.smtp.driver.serve_smtp`; this module answers the
driver's questions with the store:

* :class:`SmtpDelivery` (incoming): recipients are checked against the directory, and
  a message for local users goes into their Inboxes (:func:`deliver_mime`). Mail for
  other domains is refused (no open relay, and this listener offers no ``AUTH``).
* :class:`SmtpSubmission` (RFC 6409, RFC 8314): ``AUTH`` is checked with the shared
  :class:`~mapi_anywhere.authenticator.DirectoryAuthenticator` (throttled like every
  other logon); the envelope sender must be one of the user's addresses; a ``Date:``
  or ``Message-ID:`` the message lacks is added (RFC 6409 8). Then, in this order:
  the local recipients get their copies, the sender's copy is filed in their Sent
  Items, and the other recipients' message goes to the outbound queue. The first two
  are idempotent (a retry after a lost 250 makes no second copy), and the queue comes
  last, so a failure anywhere answers 4xx without queueing, and a retry queues once.

Store work runs in worker threads (never on the event loop), at most
:data:`SMTP_THREADS` at once per listener kind.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import trio

from internet_mail.mime import ConvertedMessage, MimeLimitExceeded, mime_to_mapi
from internet_mail.smtp import Address, RecipientVerdict, Role, SmtpConfig, StoreFailure
from internet_mail.smtp.driver import DeliveryFailed, DriverLimits, Envelope, serve_smtp
from internet_mail.smtp.submission import complete_headers
from mapi.model import errors as mapi_errors
from mapi.model.limits import Limits
from mapi.objects.delivery import (
    MimeDelivery,
    PreparedDelivery,
    commit_deliveries,
    file_sent_copy,
    local_domains,
    prepare_delivery,
)
from mapi.store import ObjectStore
from mapi_anywhere.authenticator import DirectoryAuthenticator
from mapi_anywhere.config import Config, SmtpSection
from mapi_anywhere.group_commit import GroupCommit
from mapi_anywhere.listening import listening, mail_tls_context, port_of, server_names

log = logging.getLogger("mapi_anywhere.smtp")

#: Worker threads for SMTP recipient checks and deliveries at once, per listener kind
#: (store work never runs on the event loop). Deliveries that wait for a mailbox share
#: its commits (:class:`~mapi_anywhere.group_commit.GroupCommit`), so more threads
#: than cores pay off: each waits on the disk, not the CPU.
SMTP_THREADS = 32


class OutboundQueue(Protocol):
    """Where submitted mail for other domains goes (``internet_mail.outbound``)."""

    def enqueue(
        self, sender: str, recipients: Sequence[str], data: bytes, *, key: bytes | None = None
    ) -> str:
        """Keep the message durably for delivery; returns its queue id. A message
        queued before with the same ``key`` is not queued again."""
        ...


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


class SmtpDelivery:
    """The store side of the incoming SMTP listener: the driver's callbacks.

    Local domains are ``[smtp] local_domains``, or when empty the domains of the users'
    e-mail addresses plus ``localhost`` (where a user is also reachable by login name).
    """

    def __init__(self, store: ObjectStore, section: SmtpSection) -> None:
        self.store = store
        self.configured = frozenset(d.lower() for d in section.local_domains)
        self.postmaster = section.postmaster
        self.limiter = trio.CapacityLimiter(SMTP_THREADS)
        self.commits: GroupCommit[PreparedDelivery, MimeDelivery] = GroupCommit(
            functools.partial(commit_deliveries, store)
        )
        self._domains: tuple[tuple[int, int], frozenset[str]] | None = None

    def domains(self) -> frozenset[str]:
        if self.configured:
            return self.configured
        # Listing the users costs milliseconds: read again only when the directory
        # changed (a user added, removed or given another address).
        version = self.store.directory.version()
        cached = self._domains
        if cached is not None and cached[0] == version:
            return cached[1]
        users = self.store.list_users()
        found = local_domains(u.email for u in users if u.email) | {"localhost"}
        self._domains = (version, found)
        return found

    def is_local(self, address: str) -> bool:
        """``address`` is ours: a local domain, or the bare ``postmaster`` (the only
        path without a domain the core accepts)."""
        at, domain = address.rpartition("@")[1:]
        return not at or domain.lower() in self.domains()

    def postmaster_login(self) -> str | None:
        """Who reads postmaster mail: ``[smtp] postmaster``, else a user named
        postmaster, else the first account by login name."""
        if self.postmaster:
            return self.postmaster
        users = self.store.list_users()
        named = [u.username for u in users if u.username.lower() == "postmaster"]
        everyone = named or [u.username for u in users]
        return everyone[0] if everyone else None

    def login_of(self, address: str) -> str | None:
        """The login name of the local user ``address`` reaches, or None. The bare
        ``postmaster`` (no domain, RFC 5321 4.5.1) and postmaster at a local domain
        always reach someone while there is a user."""
        if "@" not in address:  # the bare <postmaster>, the core's only such path
            return self.postmaster_login() if address.lower() == "postmaster" else None
        local, _, domain = address.rpartition("@")
        if domain.lower() not in self.domains():
            return None
        user = self.store.resolve(address)
        if user is None and domain.lower() == "localhost":
            user = self.store.resolve(local)
        if user is None and local.lower() == "postmaster":
            return self.postmaster_login()
        return None if user is None else user.username

    def verdict(self, address: Address) -> RecipientVerdict:
        if address.domain not in self.domains():
            return RecipientVerdict.REMOTE
        known = self.login_of(str(address)) is not None
        return RecipientVerdict.LOCAL if known else RecipientVerdict.UNKNOWN

    async def check_recipient(self, address: Address) -> RecipientVerdict:
        return await trio.to_thread.run_sync(self.verdict, address, limiter=self.limiter)

    def deliver_local(
        self, envelope: Envelope, recipients: Sequence[str], data: bytes,
        delivery_id: bytes | None = None,
    ) -> None:  # fmt: skip
        logins = [self.login_of(address) for address in recipients]
        found = [login for login in logins if login is not None]
        if not found:  # every recipient vanished since RCPT
            raise DeliveryFailed(StoreFailure.TEMPORARY, "no recipient is a user any more")
        prepared = prepare_delivery(
            self.store, found, data, envelope.received, convert=_convert,
            delivery_id=delivery_id,
        )  # fmt: skip
        result = self.commits.run(prepared)
        if result.defects:
            log.info("smtp %s: MIME repaired: %s", envelope.session_id, ", ".join(result.defects))

    def deliver_sync(self, envelope: Envelope, data: bytes) -> None:
        self.deliver_local(envelope, envelope.recipients, data)

    async def run(self, work: functools.partial[None]) -> None:
        """``work`` in a worker thread, store errors turned into SMTP replies."""
        try:
            await trio.to_thread.run_sync(work, limiter=self.limiter)
        except mapi_errors.NotEnoughDisk as exc:
            raise DeliveryFailed(StoreFailure.MAILBOX_FULL, str(exc)) from exc
        except (mapi_errors.TooBig, MimeLimitExceeded) as exc:
            raise DeliveryFailed(StoreFailure.TOO_BIG, str(exc)) from exc

    async def deliver(self, envelope: Envelope, data: bytes) -> None:
        await self.run(functools.partial(self.deliver_sync, envelope, data))


class SmtpSubmission(SmtpDelivery):
    """The store side of the submission listeners (see the module docstring)."""

    def __init__(
        self, store: ObjectStore, section: SmtpSection, authenticator: DirectoryAuthenticator,
        queue: OutboundQueue | None, hostname: str,
    ) -> None:  # fmt: skip
        super().__init__(store, section)
        self.authenticator = authenticator
        self.queue = queue
        self.hostname = hostname

    async def authenticate(self, username: str, password: str, peer: str) -> str | None:
        """The login name of the user these credentials are good for, or None. Mail
        programs log on with the login name or the e-mail address; both work."""
        user = await trio.to_thread.run_sync(self.store.resolve, username, limiter=self.limiter)
        login = user.username if user is not None else username
        ok = await self.authenticator(login, password, peer, door="submission")
        return login if ok else None

    def verdict(self, address: Address) -> RecipientVerdict:
        found = super().verdict(address)
        if found is RecipientVerdict.REMOTE and self.queue is None:
            return RecipientVerdict.NO_RELAY
        return found

    def deliver_sync(self, envelope: Envelope, data: bytes) -> None:
        login = envelope.authenticated_user
        user = None if login is None else self.store.resolve(login)
        if user is None:  # the core asks for AUTH first; the user was deleted since
            raise DeliveryFailed(StoreFailure.TEMPORARY, "the authenticated user is gone")
        if self.login_of(envelope.sender) != user.username:
            raise DeliveryFailed(
                StoreFailure.SENDER_NOT_ALLOWED,
                f"{login} may not send as <{envelope.sender}>",
            )
        # A client retrying after a lost 250 sends the same transaction again: this id
        # (taken before the headers we add, which differ each time) makes every step
        # below skip what the first attempt did.
        submission_id = hashlib.sha256(
            "\0".join([envelope.sender, *envelope.recipients]).encode() + b"\0" + data
        ).digest()
        data = complete_headers(
            data, now=datetime.now(UTC), domain=self.hostname, unique=secrets.token_hex(12)
        )
        local = [r for r in envelope.recipients if self.is_local(r)]
        remote = [r for r in envelope.recipients if not self.is_local(r)]
        if local:
            self.deliver_local(envelope, local, data, submission_id)
        file_sent_copy(self.store, user, data, convert=_convert, delivery_id=submission_id)
        if remote:
            if self.queue is None:  # refused at RCPT; outbound was turned off since
                raise DeliveryFailed(StoreFailure.TEMPORARY, "outbound mail is off")
            queue_id = self.queue.enqueue(
                envelope.sender, remote, envelope.received + data, key=b"smtp:" + submission_id
            )
            log.info(
                "smtp %s: queued %s for %d remote recipient(s)",
                envelope.session_id, queue_id, len(remote),
            )  # fmt: skip


async def start_smtp(nursery: trio.Nursery, config: Config, store: ObjectStore) -> int:
    """Start the incoming SMTP listener; returns its port."""
    section = config.smtp
    ctx = await mail_tls_context(config, section.host)
    delivery = SmtpDelivery(store, section)
    smtp_config = SmtpConfig(
        hostname=server_names().dns_computer or "localhost",
        tls_available=True,
        auth_enabled=False,  # AUTH is the submission listeners'
        max_message_size=section.max_message_bytes,
    )
    listeners = await listening(
        functools.partial(
            nursery.start,
            functools.partial(
                serve_smtp, smtp_config, section.port, section.host,
                check_recipient=delivery.check_recipient, deliver=delivery.deliver,
                ssl_context=ctx, limits=DriverLimits(max_connections=section.max_connections),
            ),
        ),
        "SMTP listener", section.host, section.port, "[smtp] port", "--smtp-port (or --no-smtp)",
    )  # fmt: skip
    port = port_of(listeners)
    log.info("SMTP (incoming mail) listening on %s:%d", section.host, port)
    return port


async def start_submission(
    nursery: trio.Nursery, config: Config, store: ObjectStore,
    authenticator: DirectoryAuthenticator, queue: OutboundQueue | None,
) -> tuple[int, int]:  # fmt: skip
    """Start the submission listeners (STARTTLS and implicit TLS); returns their ports."""
    section = config.submission
    ctx = await mail_tls_context(config, section.host)
    hostname = server_names().dns_computer or "localhost"
    submission = SmtpSubmission(store, config.smtp, authenticator, queue, hostname)
    limits = DriverLimits(max_connections=section.max_connections)
    ports = []
    for role, port, key, flag in (
        (Role.SUBMISSION, section.port, "[submission] port", "--submission-port"),
        (Role.SUBMISSIONS, section.tls_port, "[submission] tls_port", "--submissions-port"),
    ):
        smtp_config = SmtpConfig(
            hostname=hostname, role=role, tls_available=True, auth_enabled=True,
            max_message_size=config.smtp.max_message_bytes,
        )  # fmt: skip
        listeners = await listening(
            functools.partial(
                nursery.start,
                functools.partial(
                    serve_smtp, smtp_config, port, section.host,
                    check_recipient=submission.check_recipient, deliver=submission.deliver,
                    authenticate=submission.authenticate, ssl_context=ctx, limits=limits,
                ),
            ),
            f"SMTP {role.value} listener", section.host, port, key,
            f"{flag} (or --no-submission)",
        )  # fmt: skip
        ports.append(port_of(listeners))
    log.info(
        "SMTP submission listening on %s:%d (STARTTLS) and %d (TLS)%s",
        section.host, ports[0], ports[1], "" if queue else "; outbound mail is off",
    )  # fmt: skip
    return ports[0], ports[1]


__all__ = [
    "SMTP_THREADS", "OutboundQueue", "SmtpDelivery", "SmtpSubmission", "start_smtp",
    "start_submission",
]  # fmt: skip
