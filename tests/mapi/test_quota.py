"""Mailbox quotas and the message size limit: what a save, a stream write, a copy and a
delivery answer at the limit (MAPI_E_NOT_ENOUGH_DISK, MAPI_E_TOO_BIG), that a refused
operation keeps nothing, that a delivery to a full mailbox loses and duplicates
nothing of the sender's, the store's quota properties, and the configuration. The last
test crosses the wire (a real server on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from mapi_helpers import FAST_KDF, Clock, contents_of
from serve_helpers import start_server

from clients.api import connect
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects import quota
from mapi.objects.messages import Message
from mapi.objects.submit import submit
from mapi.store import MsgStore, ObjectStore
from mapi_anywhere.config import (
    ConfigError,
    parse_config,
)

BODY = "quota " * 1000  # 12,000 bytes of UTF-16


@pytest.fixture
def limited(tmp_path: Path, clock: Clock) -> ObjectStore:
    limits = Limits(max_mailbox_bytes=40_000, max_message_bytes=30_000)
    s = ObjectStore(tmp_path / "limited", kdf=FAST_KDF, clock=clock, limits=limits)
    for name in ("alice", "bob", "carol"):
        s.add_user(name, f"{name}-pw", email=f"{name}@example.org")
    return s


def view(store: ObjectStore, name: str) -> MsgStore:
    return store.logon_with_password(name, f"{name}-pw").open_store()


def folder(ms: MsgStore, role: str = "inbox"):  # type: ignore[no-untyped-def]
    return ms.open_folder(ms.special_folder_id(role))


def draft(ms: MsgStore, subject: str, body: str = BODY, role: str = "inbox") -> Message:
    msg = folder(ms, role).create_message()
    msg.set_props([(pt.PR_SUBJECT_W, subject), (pt.PR_BODY_W, body)])
    return msg


def used(ms: MsgStore) -> int:
    value = ms.get_props([pt.PR_MESSAGE_SIZE_EXTENDED]).values[0].value
    assert isinstance(value, int)
    return value


def count(ms: MsgStore, role: str = "inbox") -> int:
    value = folder(ms, role).get_props([pt.PR_CONTENT_COUNT]).values[0].value
    assert isinstance(value, int)
    return value


def test_a_save_past_the_mailbox_limit_fails_and_keeps_nothing(limited: ObjectStore) -> None:
    alice = view(limited, "alice")
    draft(alice, "one").save_changes()
    draft(alice, "two").save_changes()
    draft(alice, "three").save_changes()
    before = used(alice)
    assert 36_000 < before <= 40_000
    with pytest.raises(errors.NotEnoughDisk, match="mailbox is full"):
        draft(alice, "four").save_changes()
    assert count(alice) == 3 and used(alice) == before
    # Deleted Items still count; emptying it makes room.
    inbox = folder(alice)
    eid = contents_of(alice, "inbox")[0].entry_id
    assert eid is not None
    inbox.delete_messages([eid])
    assert used(alice) == before
    with pytest.raises(errors.NotEnoughDisk):
        draft(alice, "four").save_changes()
    folder(alice, "deleted").empty_folder()
    draft(alice, "four").save_changes()
    assert count(alice) == 3


def test_an_edit_that_does_not_grow_a_full_mailbox_is_allowed(limited: ObjectStore) -> None:
    alice = view(limited, "alice")
    msg = draft(alice, "big")
    msg.save_changes()
    quota.set_mailbox_quota(alice.context.db, 50)  # now far over its own limit
    msg.set_props([(pt.PR_BODY_W, "short")])
    msg.save_changes()  # shrinks: fine
    msg.set_props([(pt.PR_SUBJECT_W, "a longer subject than before")])
    with pytest.raises(errors.NotEnoughDisk):
        msg.save_changes()  # grows: refused


def test_a_mailbox_override_replaces_the_default(limited: ObjectStore) -> None:
    alice, bob = view(limited, "alice"), view(limited, "bob")
    quota.set_mailbox_quota(alice.context.db, 10_000)
    with pytest.raises(errors.NotEnoughDisk):
        draft(alice, "too much").save_changes()
    draft(bob, "fine").save_changes()  # Bob keeps the default
    assert quota.mailbox_quota(alice.context.db) == 10_000
    quota.set_mailbox_quota(alice.context.db, 0)  # 0: no limit at all
    draft(alice, "a").save_changes()
    draft(alice, "b").save_changes()
    draft(alice, "c").save_changes()
    draft(alice, "d").save_changes()
    assert used(alice) > 40_000
    quota.set_mailbox_quota(alice.context.db, None)  # back to the default
    assert quota.mailbox_quota(alice.context.db) == 40_000
    with pytest.raises(errors.InvalidParameter):
        quota.set_mailbox_quota(alice.context.db, -1)


def test_the_message_size_limit(limited: ObjectStore) -> None:
    alice = view(limited, "alice")
    msg = draft(alice, "huge", body=BODY * 3)  # 36,000 bytes
    with pytest.raises(errors.TooBig, match="30000"):
        msg.save_changes()
    assert count(alice) == 0
    # A stream is refused as soon as it passes the limit, not at the save.
    msg = draft(alice, "attachment", body="")
    att = msg.create_attach()
    stream = att.open_stream(pt.PR_ATTACH_DATA_BIN, create=True)
    stream.write(b"x" * 20_000)
    with pytest.raises(errors.TooBig):
        stream.write(b"x" * 20_000)
    with pytest.raises(errors.TooBig):
        stream.set_size(40_000)
    stream.close()
    att.save_changes()
    msg.save_changes()  # 20,000 bytes of attachment: fine
    assert count(alice) == 1


def test_a_stream_past_the_mailbox_room_is_refused_early(limited: ObjectStore) -> None:
    alice = view(limited, "alice")
    draft(alice, "one").save_changes()
    draft(alice, "two").save_changes()  # about 24,000 of 40,000 used
    msg = draft(alice, "three", body="")
    stream = msg.open_stream(pt.PR_BODY_W, create=True)
    stream.write(b"a\x00" * 5_000)
    with pytest.raises(errors.NotEnoughDisk, match="mailbox is full"):
        stream.write(b"a\x00" * 5_000)


def test_copies_count_and_moves_do_not(limited: ObjectStore) -> None:
    alice = view(limited, "alice")
    for subject in ("one", "two"):
        draft(alice, subject).save_changes()
    eids = [m.entry_id for m in contents_of(alice, "inbox")]
    inbox, drafts = folder(alice), folder(alice, "drafts")
    before = used(alice)
    with pytest.raises(errors.NotEnoughDisk):
        inbox.copy_messages(eids, drafts)  # type: ignore[arg-type]
    assert count(alice, "drafts") == 0 and used(alice) == before
    inbox.copy_messages(eids, drafts, move=True)  # type: ignore[arg-type]
    assert count(alice, "drafts") == 2 and used(alice) == before
    # A folder copy counts its messages too.
    sub = folder(alice).create_folder("Sub")
    drafts.copy_messages(eids, sub, move=True)  # type: ignore[arg-type]
    with pytest.raises(errors.NotEnoughDisk):
        folder(alice).copy_folder(sub.entry_id, drafts, "Copy")
    assert drafts.get_props([pt.PR_SUBFOLDERS]).values[0].value is False
    assert used(alice) == before


def submit_to(sender: MsgStore, *addresses: str) -> Message:
    msg = folder(sender, "drafts").create_message()
    msg.set_props([(pt.PR_SUBJECT_W, "hello"), (pt.PR_BODY_W, BODY)])
    msg.modify_recipients(
        [[(pt.PR_DISPLAY_NAME_W, a), (pt.PR_EMAIL_ADDRESS_W, a)] for a in addresses]
    )
    msg.save_changes()
    return msg


def test_delivery_to_a_full_mailbox_fails_cleanly_for_the_sender(limited: ObjectStore) -> None:
    alice, bob, carol = view(limited, "alice"), view(limited, "bob"), view(limited, "carol")
    draft(bob, "filler one").save_changes()
    draft(bob, "filler two").save_changes()
    draft(bob, "filler three").save_changes()  # Bob's mailbox has no room for 12 KB
    msg = submit_to(alice, "carol@example.org", "bob@example.org")
    with pytest.raises(errors.NotEnoughDisk, match=r"bob@example\.org"):
        submit(msg)
    # Nothing was delivered to anyone, and the draft is where it was, still unsent.
    assert count(carol) == 0 and count(bob) == 3
    assert count(alice, "drafts") == 1 and count(alice, "sent") == 0
    flags = msg.get_props([pt.PR_MESSAGE_FLAGS]).values[0].value
    assert isinstance(flags, int) and flags & pt.MSGFLAG_UNSENT
    # Once Bob makes room, the same submission goes out once to each.
    bob_inbox = folder(bob)
    bob_inbox.delete_messages([m.entry_id for m in contents_of(bob, "inbox")], hard=True)  # type: ignore[misc]
    result = submit(msg)
    assert len(result.delivered) == 2
    assert count(carol) == 1 and count(bob) == 1
    assert count(alice, "drafts") == 0 and count(alice, "sent") == 1


def test_a_mailbox_that_fills_during_a_submission_fails_it_without_loss(
    limited: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delivery's own check, when the early one passed (the mailbox filled in
    between): the submission fails there, and a retry delivers to each mailbox once."""
    alice, bob, carol = view(limited, "alice"), view(limited, "bob"), view(limited, "carol")
    for subject in ("one", "two", "three"):
        draft(bob, subject).save_changes()
    monkeypatch.setattr(quota, "check_submission", lambda message: None)
    msg = submit_to(alice, "carol@example.org", "bob@example.org")
    with pytest.raises(errors.NotEnoughDisk, match="mailbox is full"):
        submit(msg)
    assert count(carol) == 1 and count(bob) == 3  # Carol's delivery was its own
    assert count(alice, "drafts") == 1 and count(alice, "sent") == 0
    bob_inbox = folder(bob)
    bob_inbox.delete_messages([m.entry_id for m in contents_of(bob, "inbox")], hard=True)  # type: ignore[misc]
    submit(msg)
    assert count(carol) == 1 and count(bob) == 1  # not twice to Carol
    assert count(alice, "drafts") == 0 and count(alice, "sent") == 1


def test_a_full_sender_cannot_send(limited: ObjectStore) -> None:
    alice = view(limited, "alice")
    msg = submit_to(alice, "bob@example.org")
    quota.set_mailbox_quota(alice.context.db, 1000)
    with pytest.raises(errors.NotEnoughDisk, match="your mailbox is full"):
        submit(msg)
    assert count(view(limited, "bob")) == 0


def test_the_store_shows_its_quota(limited: ObjectStore, alice: MsgStore) -> None:
    limited_alice = view(limited, "alice")
    draft(limited_alice, "one").save_changes()
    tags = [pt.PR_MESSAGE_SIZE_EXTENDED, quota.PR_PROHIBIT_SEND_QUOTA,
            quota.PR_PROHIBIT_RECEIVE_QUOTA, quota.PR_STORAGE_QUOTA_LIMIT,
            quota.PR_MAX_SUBMIT_MESSAGE_SIZE]  # fmt: skip
    values = [v.value for v in limited_alice.get_props(tags).values]
    assert values[0] == sum(m.get_props([pt.PR_MESSAGE_SIZE]).values[0].value  # type: ignore[misc]
                            for m in contents_of(limited_alice, "inbox"))  # fmt: skip
    assert values[1:] == [39, 39, 35, 29]  # kilobytes: 40,000 B, 90 % of it, 30,000 B
    # Without limits (the default store), only the size is there.
    unlimited = alice.get_props(tags)
    assert unlimited.values[0].value == 0
    assert all(v.is_error for v in unlimited.values[1:])


def test_limits_and_configuration_keys() -> None:
    assert Limits().max_mailbox_bytes == 0 and Limits().max_message_bytes == 0
    with pytest.raises(ValueError, match="max_mailbox_bytes"):
        Limits(max_mailbox_bytes=-1)
    with pytest.raises(ValueError, match="mailbox_warning_percent"):
        Limits(mailbox_warning_percent=0)
    config = parse_config(
        "[store]\nmailbox_quota_bytes = 1073741824\nquota_warning_percent = 80\n"
        "max_message_bytes = 26214400\n"
    )
    store = config.store
    limits = Limits(
        max_mailbox_bytes=store.mailbox_quota_bytes,
        mailbox_warning_percent=store.quota_warning_percent,
        max_message_bytes=store.max_message_bytes,
    )
    assert (limits.max_mailbox_bytes, limits.mailbox_warning_percent) == (1 << 30, 80)
    assert limits.max_message_bytes == 25 << 20
    with pytest.raises(ConfigError, match="mailbox_quota_bytes"):
        parse_config("[store]\nmailbox_quota_bytes = -5\n")


PASSWORDS = {"alice": "correct horse", "bob": "battery staple"}


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(nursery, tmp_path / "wire", PASSWORDS, emails=True)


async def test_quota_errors_cross_the_wire(server) -> None:
    """A user's own quota (set by the administrator) as a client sees it."""

    def limit_bob() -> None:
        store = server.store
        quota.set_mailbox_quota(store.mailbox_db(store.directory.get_user("bob")), 20_000)

    await trio.to_thread.run_sync(limit_bob)
    address = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
    with trio.fail_after(60):
        async with connect(address, "bob", PASSWORDS["bob"]) as bob:
            store = await bob.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            for subject in ("one", "two"):
                msg = await inbox.create_message()
                await msg.set_props({"PR_SUBJECT": subject, "PR_BODY": "x" * 4000})
                await msg.save()
            msg = await inbox.create_message()
            await msg.set_props({"PR_SUBJECT": "three", "PR_BODY": "x" * 4000})
            with pytest.raises(errors.NotEnoughDisk) as caught:
                await msg.save()
            assert caught.value.hresult == 0x8004010D
            assert "mailbox is full" in str(caught.value)
            tags = [pt.PR_MESSAGE_SIZE_EXTENDED, quota.PR_PROHIBIT_SEND_QUOTA]
            props = await store.get_props(tags)
            assert 16_000 < props[pt.PR_MESSAGE_SIZE_EXTENDED] <= 20_000
            assert props[quota.PR_PROHIBIT_SEND_QUOTA] == 19
        async with connect(address, "alice", PASSWORDS["alice"]) as alice:
            store = await alice.open_store()
            drafts = await store.open_folder(await store.special_folder("drafts"))
            mail = await drafts.create_message()
            await mail.set_props({"PR_SUBJECT": "for bob", "PR_BODY": "x" * 4000})
            await mail.add_recipient("Bob", "bob@example.org")
            await mail.save()
            with pytest.raises(errors.NotEnoughDisk, match=r"bob@example\.org"):
                await mail.submit()
            subjects = [r["PR_SUBJECT"] async for r in drafts.contents(["PR_SUBJECT"])]
            assert subjects == ["for bob"]  # the draft is kept, once
