"""Mailbox databases are closed when no session holds them and they sit idle (each
costs file descriptors and SQLite's cache), and reopen transparently."""

from __future__ import annotations

from mapi.access.logon import KdfParams
from mapi.model import proptags as pt
from mapi.store import MAILBOX_IDLE, ObjectStore


def test_idle_mailboxes_close_and_reopen(tmp_path):
    now = [10**17]
    store = ObjectStore(tmp_path, kdf=KdfParams(n=1 << 10, r=8, p=1), clock=lambda: now[0])
    store.add_user("alice", "alice-password")
    session = store.logon_with_password("alice", "alice-password")
    msg_store = session.open_store()
    inbox = msg_store.open_folder(msg_store.get_receive_folder())
    message = inbox.create_message()
    message.set_props([(pt.PR_SUBJECT, "kept")])
    message.save_changes()
    now[0] += 2 * MAILBOX_IDLE
    assert store.close_idle_mailboxes() == 0  # a session holds it
    for obj in (message, inbox, msg_store):
        obj.close()
    session.logoff()
    assert store.close_idle_mailboxes() == 0  # just released: not idle yet
    now[0] += MAILBOX_IDLE
    assert store.close_idle_mailboxes() == 1
    assert store.close_idle_mailboxes() == 0
    again = store.logon_with_password("alice", "alice-password").open_store()
    table = again.open_folder(again.get_receive_folder()).contents_table()
    table.set_columns([pt.PR_SUBJECT])
    assert [row[0].value for row in table.query_rows(10)] == ["kept"]
    store.close()
