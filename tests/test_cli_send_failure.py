"""``mapi-cli send`` that fails leaves nothing behind: the message it made is removed,
and the one line it prints says so (a recipient whose mailbox is full here)."""

from __future__ import annotations

import os
import sys

import trio
from serve_helpers import start_server

from clients.api import connect
from mapi.objects import quota


async def test_a_failed_send_removes_its_draft(nursery, tmp_path):
    server = await start_server(
        nursery, tmp_path / "data", {"alice": "alice-pw", "bob": "bob-pw"}, emails=True
    )
    store = server.store
    # bob's mailbox exists and is full: a limit of one byte.
    bob_db = await trio.to_thread.run_sync(store.mailbox_db, store.directory.get_user("bob"))
    await trio.to_thread.run_sync(quota.set_mailbox_quota, bob_db, 1)
    address = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPI_")}
    env.update(MAPI_SERVER=address, MAPI_USER="alice", MAPI_PASSWORD="alice-pw")
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "clients.cli", "send", "drafts", "--subject", "hello",
             "--to", "bob@example.org", "--body", "hi bob"],
            env=env, capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        err = result.stderr.decode()
        assert result.returncode != 0
        assert "full" in err and "the unsent message was removed" in err, err
        assert len(err.strip().splitlines()) == 1, err
        async with connect(address, "alice", "alice-pw") as session:
            msgstore = await session.open_store()
            drafts = await msgstore.open_folder(await msgstore.special_folder("drafts"))
            table = await drafts.contents_table()
            assert await table.row_count() == 0
