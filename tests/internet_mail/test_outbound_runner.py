"""The outbound runner against a real sink SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dkim
import trio
from outbound_sink import SinkHandler, free_port, start_sink

from internet_mail.outbound import dkim_sign, schedule, state
from internet_mail.outbound.queue import OutboundQueue
from internet_mail.outbound.runner import OutboundSettings, Smarthost, run_outbound
from internet_mail.smtp.client_driver import ClientLimits
from mapi.model.errors import NotEnoughDisk

MESSAGE = b"From: a@local.test\r\nTo: x@remote.test\r\nSubject: hello\r\n\r\n.line\r\nbody\r\n"


def _settings(port: int, sign: Callable[[bytes], bytes] | None = None) -> OutboundSettings:
    return OutboundSettings(
        hostname="mail.local.test",
        smarthost=Smarthost(host="127.0.0.1", port=port, tls="none"),
        policy=schedule.RetryPolicy(initial=0.2, maximum=0.5, expiry=3600),
        limits=ClientLimits(connect_timeout=5, timeout_scale=0.05),
        sign=sign,
    )


async def _until(check: Callable[[], bool]) -> None:
    with trio.fail_after(20):
        while not check():  # noqa: ASYNC110 - state of files and of the sink's thread
            await trio.sleep(0.05)


async def test_delivers_signed_mail_to_the_smarthost(tmp_path: Path) -> None:
    port = free_port()
    handler = SinkHandler()
    sink = start_sink(port, handler)
    key = dkim_sign.load_or_create_key(tmp_path, "sel", "local.test")
    queue = OutboundQueue(tmp_path / "queue")
    reports: list[tuple[str, bytes]] = []

    async def report(sender: str, data: bytes) -> None:
        reports.append((sender, data))

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_outbound(
                    queue, _settings(port, lambda d: dkim_sign.sign(d, key)),
                    report_local=report, is_local=lambda a: a.endswith("@local.test"),
                    task_status=task_status,
                )
            )  # fmt: skip
            await trio.to_thread.run_sync(
                queue.enqueue, "a@local.test", ["x@remote.test", "y@remote.test"], MESSAGE
            )
            await _until(lambda: bool(handler.messages) and not queue.load())
            nursery.cancel_scope.cancel()
    finally:
        sink.stop()
    [got] = handler.messages
    assert got.sender == "a@local.test" and sorted(got.recipients) == [
        "x@remote.test",
        "y@remote.test",
    ]
    assert got.data.endswith(MESSAGE)  # dot-unstuffed back to the original
    record = dkim_sign.txt_record(key).encode()
    assert dkim.verify(got.data, dnsfunc=lambda name, timeout=5: record)
    assert reports == []


async def test_refused_recipients_get_one_report(tmp_path: Path) -> None:
    port = free_port()
    handler = SinkHandler(rcpt_reply="550 5.1.1 no such user here")
    sink = start_sink(port, handler)
    queue = OutboundQueue(tmp_path / "queue")
    reports: list[tuple[str, bytes]] = []

    async def report(sender: str, data: bytes) -> None:
        reports.append((sender, data))

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_outbound(
                    queue, _settings(port), report_local=report,
                    is_local=lambda a: a.endswith("@local.test"), task_status=task_status,
                )
            )  # fmt: skip
            queue.enqueue("a@local.test", ["x@remote.test"], MESSAGE)
            queue.enqueue("", ["z@remote.test"], MESSAGE)  # a null sender: no report
            queue.enqueue("b@remote.test", ["x@remote.test"], MESSAGE)  # reported remotely
            await _until(lambda: len(reports) == 1 and len(queue.load()) <= 1)
            nursery.cancel_scope.cancel()
    finally:
        sink.stop()
    [(sender, dsn)] = reports
    assert sender == "a@local.test"
    assert b"report-type=delivery-status" in dsn and b"Status: 5.1.1" in dsn
    assert b"Final-Recipient: rfc822; x@remote.test" in dsn
    assert b"Subject: Undeliverable: hello" in dsn
    # The remote sender's report waits in the queue, from <> (the sink refuses it too,
    # and a report is never reported on).
    left = queue.load()
    assert all(e.sender == "" for e in left)


async def test_waits_while_the_peer_is_down_then_delivers(tmp_path: Path) -> None:
    port = free_port()
    queue = OutboundQueue(tmp_path / "queue")

    async def report(sender: str, data: bytes) -> None:
        raise AssertionError("no report expected")

    handler = SinkHandler()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_outbound(
                queue, _settings(port), report_local=report, is_local=lambda a: True,
                task_status=task_status,
            )
        )  # fmt: skip
        queue.enqueue("a@local.test", ["x@remote.test"], MESSAGE)

        def tried() -> bool:
            envelopes = queue.load()
            return bool(envelopes) and envelopes[0].recipients[0].attempts >= 2

        await _until(tried)
        [env] = queue.load()
        assert env.recipients[0].status == state.PENDING
        assert "4.4.1" in env.recipients[0].reply
        sink = start_sink(port, handler)
        try:
            await _until(lambda: bool(handler.messages) and not queue.load())
        finally:
            sink.stop()
        nursery.cancel_scope.cancel()
    assert len(handler.messages) == 1


def test_expiry_fails_pending_recipients() -> None:
    env = state.new_envelope("abc", "a@b.test", ["x@y.test"], 100.0)
    policy = schedule.RetryPolicy(initial=10, maximum=40, expiry=60)
    schedule.record(env, {"x@y.test": schedule.Result(451, "busy", "4.3.0")}, 110.0, policy)
    assert env.recipients[0].next_try == 120.0
    assert schedule.next_wakeup([env]) == 120.0
    assert schedule.due(env, 119.0) == []
    [failed] = schedule.expire(env, 161.0, policy)
    assert failed.dsn_status == "4.4.7" and "busy" in failed.reply
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 40]


async def test_a_report_that_cannot_be_delivered_stops_nothing(tmp_path: Path) -> None:
    """The sender's mailbox refuses the report (over quota): the runner goes on (it
    used to die, and serve with it, at every start) and makes the report again later."""
    port = free_port()
    handler = SinkHandler(rcpt_reply="550 5.1.1 no such user here")
    sink = start_sink(port, handler)
    queue = OutboundQueue(tmp_path / "queue")
    calls: list[str] = []

    async def report(sender: str, data: bytes) -> None:
        calls.append(sender)
        if len(calls) == 1:
            raise NotEnoughDisk("the mailbox is over its quota")

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_outbound(
                    queue, _settings(port), report_local=report,
                    is_local=lambda a: a.endswith("@local.test"), task_status=task_status,
                )
            )  # fmt: skip
            queue.enqueue("a@local.test", ["x@remote.test"], MESSAGE)
            await _until(lambda: len(calls) == 2 and not queue.load())
            nursery.cancel_scope.cancel()
    finally:
        sink.stop()
    assert calls == ["a@local.test", "a@local.test"]
