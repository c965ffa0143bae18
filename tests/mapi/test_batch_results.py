"""Batch results as the service sends them (ops.run_batch_packed), and the message size
kept between reads (PropBag.size)."""

from __future__ import annotations

import msgpack
import pytest

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.rpc import ops
from mapi.store import MsgStore, ObjectStore


def batch_context(store: ObjectStore) -> tuple[ops.Context, int]:
    """A context of alice's whose handle 1 is a saved message."""
    session = store.logon_with_password("alice", "alice-pw")
    ms = session.open_store()
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    msg = inbox.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, "hello")])
    msg.save_changes()
    assert msg.entry_id is not None
    handles = ops.HandleTable()
    handles.put(1, ms.open_message(msg.entry_id))
    return ops.Context(session, handles, store.limits, b"s" * 16), 1


@pytest.mark.parametrize("count", [1, 15, 16, 40])
def test_packed_results_decode_to_the_plain_results(store: ObjectStore, count: int) -> None:
    ctx, handle = batch_context(store)
    batch = [
        ["get_props", {"h": handle, "tags": [pt.PR_SUBJECT_W, pt.PR_BODY_W]}]
        if i % 3
        else ["no_such_op", {}]
        for i in range(count)
    ]
    packed = ops.run_batch_packed(ctx, batch)
    assert msgpack.unpackb(packed, raw=False) == ops.run_batch(ctx, batch)
    assert len(msgpack.unpackb(packed, raw=False)) == count  # fixarray and array16 headers


def test_results_past_the_limit_stop_the_batch(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, handle = batch_context(store)
    monkeypatch.setattr(ops, "MAX_RESULT_BYTES", 40)
    batch = [["get_props", {"h": handle, "tags": [pt.PR_SUBJECT_W] * 2}]] * 3
    results = msgpack.unpackb(ops.run_batch_packed(ctx, batch), raw=False)
    assert results[0][0] == 0  # 31 bytes: under the limit
    assert results[1] == [errors.Hresult.MAPI_E_TOO_BIG, "results exceed 40 bytes"]
    assert results[2] == [errors.Hresult.MAPI_E_TOO_BIG, "not run: the batch's results are full"]


def test_message_size_follows_every_change(alice: MsgStore) -> None:
    """PR_MESSAGE_SIZE is kept between reads: each kind of change must drop it."""
    inbox = alice.open_folder(alice.special_folder_id("inbox"))
    msg = inbox.create_message()

    def size() -> int:
        value = msg.get_props([pt.PR_MESSAGE_SIZE]).values[0].value
        assert isinstance(value, int)
        return value

    empty = size()
    msg.set_props([(pt.PR_SUBJECT_W, "x" * 100)])
    with_subject = size()
    assert with_subject >= empty + 200  # UTF-16 bytes
    msg.set_props([(pt.PR_SUBJECT_W, "x" * 10)])
    assert size() == with_subject - 180
    msg.delete_props([pt.PR_SUBJECT_W])
    assert size() == empty
    stream = msg.open_stream(pt.PR_BODY_W, create=True)
    stream.write(b"y" * 2000)
    stream.commit()
    assert size() >= empty + 2000
    msg.save_changes()
    assert msg.entry_id is not None
    reopened = alice.open_message(msg.entry_id, writable=True)
    before = reopened.get_props([pt.PR_MESSAGE_SIZE]).values[0].value
    reopened.set_read_flag()  # changes PR_MESSAGE_FLAGS in place (an int: same size)
    assert reopened.get_props([pt.PR_MESSAGE_SIZE]).values[0].value == before
    assert reopened.get_props([pt.PR_MESSAGE_FLAGS]).values[0].value & 0x1  # MSGFLAG_READ
