"""The trio runner of the outbound queue: deliver what is due, record, report.

Theory of operation
-------------------
:func:`run_outbound` loads the queue (:class:`~internet_mail.outbound.queue.OutboundQueue`)
and loops: every message with due recipients (:mod:`~internet_mail.outbound.schedule`)
is tried, several at once (a limiter bounds how many); then it sleeps until the next
recipient is due or :meth:`OutboundQueue.enqueue` wakes it (the hook crosses threads
through the trio token).

A try: the message is signed (``sign``, DKIM), then sent to the smarthost, or, with
none, to the MX hosts of each recipient domain in turn (the next host on a failed
connection or a session failure). The moment a peer acknowledges the data (250), the
recipients it took are marked ``done`` and the envelope is saved (fsynced) before the
connection is even closed: a crash after that never sends it again. A crash before
leaves them pending: they are tried again. Then the other outcomes are recorded (4xx:
retry later, 5xx: failed) and saved; recipients that failed get one report
(:mod:`~internet_mail.outbound.dsn`): into the sender's mailbox through ``report_local``
when the sender is local, else queued to the sender with the null reverse path (and
none for a null sender). The report's bytes are a function of the failure, so one made
again after a crash is the same message (delivered or queued once). A message with
nothing left to do leaves the queue. Trouble with one message (a report the sender's
full mailbox refuses) is logged and leaves it queued for the next pass (a report is
tried again after ``policy.initial``); it never stops the runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import trio

from internet_mail.outbound import schedule
from internet_mail.outbound.dsn import build_dsn, wants_report
from internet_mail.outbound.queue import OutboundQueue
from internet_mail.outbound.state import FAILED, Envelope, RecipientState
from internet_mail.smtp.client import ClientOptions, Finished, TlsMode, Transaction
from internet_mail.smtp.client_driver import (
    ClientLimits,
    ConnectFailed,
    NoRoute,
    resolve_mx,
    send_message,
)
from internet_mail.smtp.replies import Reply

log = logging.getLogger("internet_mail.outbound")


@dataclass(frozen=True, slots=True, kw_only=True)
class Smarthost:
    host: str
    port: int = 587
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    #: For TLS to the smarthost (None: the system's CAs, host name checked).
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundSettings:
    #: Our name in EHLO and in reports.
    hostname: str
    smarthost: Smarthost | None = None
    policy: schedule.RetryPolicy = field(default_factory=schedule.RetryPolicy)
    limits: ClientLimits = field(default_factory=ClientLimits)
    #: The port of MX hosts (25; tests change it).
    mx_port: int = 25
    #: Messages tried at once.
    concurrency: int = 8
    #: ``sign(data) -> data`` (DKIM), or None.
    sign: Callable[[bytes], bytes] | None = None


#: ``report_local(sender, dsn_bytes)``: deliver a report into a local sender's Inbox.
ReportLocal = Callable[[str, bytes], Awaitable[None]]


def _opportunistic() -> ssl.SSLContext:
    """TLS to MX hosts is opportunistic (RFC 7435): encrypt, do not authenticate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Runner:
    def __init__(
        self, queue: OutboundQueue, settings: OutboundSettings, report_local: ReportLocal,
        is_local: Callable[[str], bool], clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.queue = queue
        self.settings = settings
        self.report_local = report_local
        self.is_local = is_local
        self.clock = clock
        self.wake = trio.Event()
        self.limiter = trio.CapacityLimiter(max(1, settings.concurrency))
        self.mx_context = _opportunistic()

    async def save(self, envelope: Envelope) -> None:
        await trio.to_thread.run_sync(self.queue.save, envelope)

    async def pass_once(self) -> float | None:
        envelopes = await trio.to_thread.run_sync(self.queue.load)
        now = self.clock()
        async with trio.open_nursery() as nursery:
            for envelope in envelopes:
                nursery.start_soon(self.handle, envelope, now)
        wakeup = schedule.next_wakeup(envelopes)
        if any(r.status == FAILED and not r.reported for e in envelopes for r in e.recipients):
            # A report could not be made (the sender's mailbox full...): try again soon.
            retry = self.clock() + self.settings.policy.initial
            wakeup = retry if wakeup is None else min(wakeup, retry)
        return wakeup

    async def handle(self, envelope: Envelope, now: float) -> None:
        async with self.limiter:
            try:
                if schedule.expire(envelope, now, self.settings.policy):
                    await self.save(envelope)
                due = schedule.due(envelope, now)
                if due:
                    await self.deliver(envelope, due)
                await self.report(envelope)
                if envelope.finished():
                    await trio.to_thread.run_sync(self.queue.remove, envelope.id)
            except OSError as exc:
                log.error("outbound: %s: queue file error: %s", envelope.id, exc)
            except Exception:
                # One message's trouble (a report the sender's full mailbox refuses, a
                # bug) must not stop the queue: it stays queued and is tried again.
                log.exception("outbound: %s: left for the next pass", envelope.id)

    async def deliver(self, envelope: Envelope, due: list[RecipientState]) -> None:
        data = await trio.to_thread.run_sync(self.queue.read_data, envelope.id)
        sign = self.settings.sign
        if sign is not None:
            try:
                data = sign(data)
            except Exception as exc:  # a message dkimpy cannot parse goes unsigned
                log.warning("outbound: %s: not DKIM-signed: %s", envelope.id, exc)
        smart = self.settings.smarthost
        if smart is not None:
            await self.try_hosts(envelope, [a.address for a in due], [smart.host], data)
            return
        by_domain: dict[str, list[str]] = {}
        for rcpt in due:
            by_domain.setdefault(rcpt.address.rpartition("@")[2].lower(), []).append(rcpt.address)
        for domain, addresses in by_domain.items():
            try:
                hosts = await resolve_mx(domain.encode("idna").decode("ascii"))
            except (NoRoute, UnicodeError) as exc:
                permanent = isinstance(exc, UnicodeError) or exc.permanent
                code, status = (550, "5.1.2") if permanent else (451, "4.4.3")
                result = schedule.Result(code, f"{status} {exc}", status)
                await self.record(envelope, dict.fromkeys(addresses, result))
                continue
            await self.try_hosts(envelope, addresses, hosts, data)

    def options(self) -> tuple[ClientOptions, ssl.SSLContext | None, int]:
        smart = self.settings.smarthost
        name = self.settings.hostname
        if smart is None:
            return ClientOptions(helo_name=name), self.mx_context, self.settings.mx_port
        modes: dict[str, TlsMode] = {"starttls": "required", "tls": "implicit", "none": "none"}
        mode = modes[smart.tls]
        options = ClientOptions(
            helo_name=name, tls=mode, username=smart.username, password=smart.password
        )
        return options, smart.ssl_context, smart.port

    async def try_hosts(
        self, envelope: Envelope, addresses: list[str], hosts: list[str], data: bytes
    ) -> None:
        options, context, port = self.options()
        tx = Transaction(envelope.sender, tuple(addresses), data)
        last = schedule.Result(451, "4.4.1 no host answered", "4.4.1")
        for host in hosts:

            async def acknowledged(outcome: Finished, host: str = host) -> None:
                if outcome.acknowledged:  # durable before anything else
                    taken = {a: r for a, r in outcome.results.items() if r.positive}
                    await self.record(envelope, self._results(taken, host), report=False)

            try:
                outcome = await send_message(
                    host, port, options, tx, acknowledged, ssl_context=context,
                    limits=self.settings.limits,
                )  # fmt: skip
            except ConnectFailed as exc:
                log.info("outbound: %s: %s", envelope.id, exc)
                last = schedule.Result(451, f"4.4.1 {exc}", "4.4.1", host)
                continue
            if outcome.session and host != hosts[-1]:
                continue  # this host would not talk: the next one may
            await self.record(envelope, self._results(outcome.results, host))
            return
        await self.record(envelope, dict.fromkeys(addresses, last))

    @staticmethod
    def _results(results: dict[str, Reply], host: str) -> dict[str, schedule.Result]:
        return {
            address: schedule.Result(reply.code, reply.text, reply.enhanced, host)
            for address, reply in results.items()
        }

    async def record(
        self, envelope: Envelope, results: dict[str, schedule.Result], *, report: bool = True
    ) -> None:
        failed = schedule.record(envelope, results, self.clock(), self.settings.policy)
        for rcpt in failed:
            log.info("outbound: %s: %s failed: %s", envelope.id, rcpt.address, rcpt.reply)
        await self.save(envelope)
        if report:
            await self.report(envelope)

    async def report(self, envelope: Envelope) -> None:
        """One report for the failed recipients not yet reported (see the module doc)."""
        failed = [r for r in envelope.recipients if r.status == FAILED and not r.reported]
        if not failed:
            return
        if wants_report(envelope.sender):
            original = await trio.to_thread.run_sync(self.queue.read_data, envelope.id)
            dsn = build_dsn(
                reporting_mta=self.settings.hostname, sender=envelope.sender,
                queue_id=envelope.id, arrival=envelope.created,
                when=max(r.next_try for r in failed), failed=failed, original=original,
            )  # fmt: skip
            if self.is_local(envelope.sender):
                await self.report_local(envelope.sender, dsn)
            else:
                key = "\0".join([envelope.id, *(r.address for r in failed)]).encode()
                qid = "ndr-" + hashlib.sha256(key).hexdigest()[:40]
                await trio.to_thread.run_sync(
                    self.queue.enqueue_as, qid, "", [envelope.sender], dsn
                )
        for rcpt in failed:
            rcpt.reported = True
        await self.save(envelope)


async def run_outbound(
    queue: OutboundQueue, settings: OutboundSettings, *, report_local: ReportLocal,
    is_local: Callable[[str], bool], clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:  # fmt: skip
    """Deliver the queue until cancelled (see the module docstring)."""
    runner = _Runner(queue, settings, report_local, is_local, clock)
    token = trio.lowlevel.current_trio_token()

    def wake() -> None:
        runner.wake.set()

    def hook() -> None:  # from any thread
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(wake)

    queue.set_wakeup(hook)
    try:
        task_status.started()
        while True:
            runner.wake = trio.Event()
            try:
                next_time = await runner.pass_once()
            except OSError as exc:
                log.error("outbound: the queue cannot be read: %s", exc)
                next_time = runner.clock() + 60.0
            if runner.wake.is_set():
                continue
            delay = math.inf if next_time is None else max(0.0, next_time - runner.clock())
            with trio.move_on_after(min(delay, 3600.0)):
                await runner.wake.wait()
    finally:
        queue.set_wakeup(None)


__all__ = ["OutboundSettings", "ReportLocal", "Smarthost", "run_outbound"]
