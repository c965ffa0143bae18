"""Streams larger than a chunk, named properties, and folder permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from mapi_helpers import FAST_KDF, Clock

from mapi.access import permissions
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.model.named import (
    MNID_ID,
    MNID_STRING,
    PS_MAPI,
    PS_PUBLIC_STRINGS,
    PSETID_COMMON,
    PropName,
)
from mapi.objects.streams import STREAM_SEEK_CUR, STREAM_SEEK_END
from mapi.store import MsgStore, ObjectStore


@pytest.fixture
def small_chunks(tmp_path: Path, clock: Clock) -> MsgStore:
    limits = Limits(chunk_bytes=1024, inline_value_bytes=256, max_value_bytes=4096)
    s = ObjectStore(tmp_path / "small", kdf=FAST_KDF, clock=clock, limits=limits)
    s.add_user("eve", "pw")
    return s.logon_with_password("eve", "pw").open_store()


def _pattern(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def test_stream_spanning_many_chunks(small_chunks: MsgStore) -> None:
    ms = small_chunks
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    att = msg.create_attach()
    data = _pattern(10_000)  # ten chunks, larger than max_value_bytes
    stream = att.open_stream(pt.PR_ATTACH_DATA_BIN, create=True)
    for offset in range(0, len(data), 999):
        stream.write(data[offset : offset + 999])
    assert stream.size() == len(data)
    stream.close()
    att.save_changes()
    assert inbox.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 0
    msg.save_changes()
    assert msg.entry_id is not None
    again = ms.open_message(msg.entry_id).open_attach(0)
    value = again.get_props([pt.PR_ATTACH_DATA_BIN]).values[0]
    assert value.is_error and value.value == errors.Hresult.MAPI_E_NOT_ENOUGH_MEMORY
    reader = again.open_stream(pt.PR_ATTACH_DATA_BIN)
    got = b""
    while block := reader.read(700):
        got += block
    assert got == data
    assert reader.seek(1500) == 1500
    assert reader.read(10) == data[1500:1510]
    assert reader.seek(-5, STREAM_SEEK_END) == len(data) - 5
    assert reader.read(100) == data[-5:]
    assert reader.seek(-10, STREAM_SEEK_CUR) == len(data) - 10
    with pytest.raises(errors.InvalidParameter):
        reader.seek(-1)
    with pytest.raises(errors.NoAccess):
        reader.write(b"x")
    rows = ms.open_message(msg.entry_id).attachment_table().query_rows(5)
    size = next(v.value for v in rows[0] if v.tag == pt.PR_ATTACH_SIZE)
    assert isinstance(size, int) and size >= len(data)


def test_stream_edits_are_transacted(small_chunks: MsgStore) -> None:
    ms = small_chunks
    inbox = ms.open_folder(ms.get_receive_folder())
    msg = inbox.create_message()
    body = "héllo wörld " * 300  # UTF-16 > one chunk
    with pytest.raises(errors.NotFound):
        msg.open_stream(pt.PR_BODY_W)
    stream = msg.open_stream(pt.PR_BODY_W, create=True)
    encoded = body.encode("utf-16-le")
    with pytest.raises(errors.InvalidParameter):  # one write is bounded by max_value_bytes
        stream.write(encoded)
    stream.write(encoded[:4000])
    stream.write(encoded[4000:])
    stream.commit()
    msg.save_changes()
    assert msg.entry_id is not None
    writer = ms.open_message(msg.entry_id, writable=True)
    edit = writer.open_stream(pt.PR_BODY_W, write=True)
    edit.seek(0)
    edit.write("HÉLLO".encode("utf-16-le"))
    edit.set_size(24)
    edit.close()
    # Not saved yet: a reader still sees the old body, streamed from chunk rows.
    old = ms.open_message(msg.entry_id).open_stream(pt.PR_BODY_W)
    assert old.read(4096) == body.encode("utf-16-le")[:4096]
    assert writer.get_props([pt.PR_BODY_W]).values[0].value == "HÉLLO wörld "
    writer.save_changes()
    new = ms.open_message(msg.entry_id)
    assert new.get_props([pt.PR_BODY_W]).values[0].value == "HÉLLO wörld "
    with pytest.raises(errors.NoSupport):
        new.open_stream(pt.PR_IMPORTANCE)
    with pytest.raises(errors.NoAccess):
        new.open_stream(pt.PR_BODY_W, write=True)


def test_named_properties(alice: MsgStore, bob: MsgStore) -> None:
    names = [
        PropName.by_name(PS_PUBLIC_STRINGS, "Keywords"),
        PropName.by_id(PSETID_COMMON, 0x8514),
        PropName.by_id(PS_MAPI, pt.prop_id(pt.PR_SUBJECT_W)),
    ]
    assert alice.get_ids_from_names(names) == [0, 0, 0x0037]
    ids = alice.get_ids_from_names(names, create=True)
    assert ids[0] == 0x8000 and ids[1] == 0x8001 and ids[2] == 0x0037
    assert alice.get_ids_from_names(names) == ids
    assert alice.get_names_from_ids([0x8000, 0x8001, 0x9999]) == [names[0], names[1], None]
    assert bob.get_ids_from_names(names[:1]) == [0]  # mappings are per store
    msg = alice.open_folder(alice.get_receive_folder()).create_message()
    tag = pt.make_tag(ids[1], pt.PropType.PT_BOOLEAN)
    assert msg.set_props([(tag, True)]) == []
    msg.save_changes()
    assert msg.get_props([tag]).values[0].value is True
    for bad in (
        PropName(b"short", MNID_ID, 1),
        PropName(PS_PUBLIC_STRINGS, MNID_STRING, 0, ""),
        PropName(PS_PUBLIC_STRINGS, 7, 0, "x"),
        PropName(PS_PUBLIC_STRINGS, MNID_STRING, 0, "x" * 300),
    ):
        with pytest.raises(errors.InvalidParameter):
            alice.get_ids_from_names([bad], create=True)


def test_looking_up_mapped_names_commits_nothing(alice: MsgStore) -> None:
    """Mapped names are read, not written: a lookup (every IMAP logon and many MAPI
    calls make one) must not count as a change of the mailbox for the caches that
    watch its commits."""
    names = [PropName.by_name(PS_PUBLIC_STRINGS, "Keywords")]
    db = alice.context.db
    before = db.generation
    alice.get_ids_from_names(names, create=True)  # first time: mapped, one commit
    assert db.generation == before + 1
    for create in (True, False):
        alice.get_ids_from_names(names, create=create)
    assert db.generation == before + 1


def test_named_id_range_exhaustion(tmp_path: Path, clock: Clock) -> None:
    s = ObjectStore(tmp_path / "n", kdf=FAST_KDF, clock=clock, limits=Limits(max_named_props=2))
    s.add_user("u", "pw")
    ms = s.logon_with_password("u", "pw").open_store()
    ms.get_ids_from_names([PropName.by_name(PS_PUBLIC_STRINGS, n) for n in "ab"], create=True)
    with pytest.raises(errors.NotEnoughResources):
        ms.get_ids_from_names([PropName.by_name(PS_PUBLIC_STRINGS, "c")], create=True)


def test_other_mailbox_needs_permission(store: ObjectStore, alice: MsgStore) -> None:
    bob_session = store.logon_with_password("bob", "bob-pw")
    with pytest.raises(errors.NoAccess):
        bob_session.open_store("alice")
    inbox = alice.open_folder(alice.get_receive_folder())
    msg = inbox.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, "private")])
    msg.save_changes()
    assert msg.entry_id is not None
    bob_id = store.directory.get_user("bob").user_id
    inbox.set_permission(bob_id, permissions.ROLES["reviewer"])
    assert inbox.get_permissions() == [(bob_id, 0x401)]
    view = bob_session.open_store("alice")
    with pytest.raises(errors.NoAccess):
        view.open_folder(view.special_folder_id("drafts"))
    shared = view.open_folder(view.get_receive_folder())
    assert shared.contents_table().get_row_count() == 1
    assert view.open_message(msg.entry_id).get_props([pt.PR_SUBJECT_W]).values[0].value == "private"
    with pytest.raises(errors.NoAccess):
        view.open_message(msg.entry_id, writable=True)
    with pytest.raises(errors.NoAccess):
        shared.create_message()
    with pytest.raises(errors.NoAccess):
        shared.delete_messages([msg.entry_id])
    with pytest.raises(errors.NoAccess):
        shared.set_props([(pt.PR_COMMENT_W, "x")])
    with pytest.raises(errors.NoAccess):
        shared.set_permission(bob_id, permissions.ROLES["owner"])
    assert shared.get_props([pt.PR_RIGHTS]).values[0].value == 0x401
    inbox.set_permission(bob_id, permissions.ROLES["editor"])
    created = shared.create_message()
    created.set_props([(pt.PR_SUBJECT_W, "from bob")])
    created.save_changes()
    assert inbox.get_props([pt.PR_CONTENT_COUNT]).values[0].value == 2
    inbox.set_permission(bob_id, 0)
    with pytest.raises(errors.NoAccess):
        view.open_folder(view.get_receive_folder())
    with pytest.raises(errors.InvalidParameter):
        inbox.set_permission(bob_id, 0x10000)


def test_data_files_are_private(store: ObjectStore, alice: MsgStore) -> None:
    assert stat.S_IMODE(os.stat(store.data_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.data_dir / "directory.sqlite3").st_mode) == 0o600
    user = store.directory.get_user("alice")
    mailbox = store.data_dir / "mailboxes" / user.mailbox
    assert stat.S_IMODE(os.stat(mailbox).st_mode) == 0o600
