"""``serve``'s outbound mail: the queue, its runner, DKIM, and the store's hook.

:func:`start_outbound` opens ``<data_dir>/queue/``, makes (or loads) the DKIM key,
hands the store a :class:`~mapi.objects.context.RemoteMail` (MAPI submissions to other
domains are rendered to MIME with :func:`internet_mail.mime.mapi_to_mime` and queued),
and starts :func:`~internet_mail.outbound.runner.run_outbound` with the ``[outbound]``
settings. Reports for local senders are delivered into their Inbox with
:func:`mapi.objects.delivery.deliver_mime`, marked ``REPORT.IPM.Note.NDR``. The
returned queue is also the one SMTP submission enqueues into.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from internet_mail.mime import ConvertedAttachment, ConvertedMessage, mapi_to_mime, mime_to_mapi
from internet_mail.outbound import dkim_sign
from internet_mail.outbound.dsn import NDR_CLASS
from internet_mail.outbound.queue import OutboundQueue
from internet_mail.outbound.runner import OutboundSettings, Smarthost, run_outbound
from internet_mail.outbound.schedule import RetryPolicy
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects.context import OutgoingMessage
from mapi.objects.delivery import deliver_mime, local_domains
from mapi.store import ObjectStore
from mapi_anywhere.config import Config


def _converted(message: OutgoingMessage) -> ConvertedMessage:
    return ConvertedMessage(
        props=dict(message.props),
        recipients=[dict(r) for r in message.recipients],
        attachments=[
            ConvertedAttachment(
                props=dict(a.props),
                embedded=_converted(a.embedded) if a.embedded is not None else None,
            )
            for a in message.attachments
        ],
    )


class StoreRemoteMail:
    """The store's :class:`~mapi.objects.context.RemoteMail`: render and queue."""

    def __init__(self, queue: OutboundQueue, is_local: Callable[[str], bool]) -> None:
        self.queue = queue
        self._is_local = is_local

    def is_remote(self, address: str) -> bool:
        return "@" in address and not self._is_local(address)

    def send(
        self, sender: str, recipients: Sequence[str], message: OutgoingMessage, *, key: bytes
    ) -> None:
        self.queue.enqueue(sender, recipients, mapi_to_mime(_converted(message)), key=key)


def domains_of(store: ObjectStore, config: Config) -> frozenset[str]:
    """The local mail domains: ``[smtp] local_domains``, else the users' (and localhost)."""
    configured = frozenset(d.lower() for d in config.smtp.local_domains)
    if configured:
        return configured
    users = store.list_users()
    return local_domains(u.email for u in users if u.email) | {"localhost"}


def dkim_domain(store: ObjectStore, config: Config) -> str:
    if config.outbound.dkim_domain:
        return config.outbound.dkim_domain.lower()
    named = sorted(d for d in domains_of(store, config) if d != "localhost")
    return named[0] if named else "localhost"


def dkim_key(store: ObjectStore, config: Config) -> dkim_sign.DkimKey:
    """The server's DKIM key (made on first use)."""
    return dkim_sign.load_or_create_key(
        config.server.data_dir, config.outbound.dkim_selector, dkim_domain(store, config)
    )


def _ndr_convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    converted = mime_to_mapi(raw, limits=limits, received=received)
    converted.props[pt.PR_MESSAGE_CLASS_W] = NDR_CLASS
    return converted


def settings_of(config: Config, key: dkim_sign.DkimKey | None) -> OutboundSettings:
    section = config.outbound
    smarthost = None
    if section.smarthost:
        password = section.smarthost_password
        if section.smarthost_password_file is not None:
            password = Path(section.smarthost_password_file).read_text("utf-8").strip()
        context = None
        if section.smarthost_tls != "none":
            context = ssl.create_default_context(
                cafile=str(section.smarthost_ca_file) if section.smarthost_ca_file else None
            )
        smarthost = Smarthost(
            host=section.smarthost, port=section.smarthost_port,
            tls=section.smarthost_tls,  # type: ignore[arg-type]  # checked by the config
            username=section.smarthost_user or None, password=password or None,
            ssl_context=context,
        )  # fmt: skip
    return OutboundSettings(
        hostname=section.hostname or socket.getfqdn() or "localhost",
        smarthost=smarthost,
        policy=RetryPolicy(
            initial=section.retry_initial, maximum=section.retry_max, expiry=section.expiry
        ),
        sign=functools.partial(dkim_sign.sign, key=key) if key is not None else None,
    )


async def start_outbound(
    nursery: trio.Nursery, config: Config, store: ObjectStore
) -> OutboundQueue:
    """Start the runner (see the module docstring); returns the queue."""
    queue = await trio.to_thread.run_sync(OutboundQueue, config.server.data_dir / "queue")
    key = await trio.to_thread.run_sync(dkim_key, store, config)
    settings = await trio.to_thread.run_sync(settings_of, config, key)

    def is_local(address: str) -> bool:
        return address.rpartition("@")[2].lower() in domains_of(store, config)

    async def report_local(sender: str, dsn: bytes) -> None:
        work = functools.partial(deliver_mime, store, [sender], dsn, convert=_ndr_convert)
        await trio.to_thread.run_sync(work)

    store.remote_mail = StoreRemoteMail(queue, is_local)
    await nursery.start(
        functools.partial(
            run_outbound, queue, settings, report_local=report_local, is_local=is_local
        )
    )
    return queue


__all__ = ["StoreRemoteMail", "dkim_domain", "dkim_key", "settings_of", "start_outbound"]
