"""The ``[store]`` quota keys reach a running server: a save past the mailbox limit is
refused over the wire with MAPI_E_NOT_ENOUGH_DISK, and the store shows its limit."""

from __future__ import annotations

import pytest
import trio
from serve_helpers import start_server

from clients.api import connect
from mapi.model import errors
from mapi.objects.quota import PR_PROHIBIT_SEND_QUOTA
from mapi_anywhere.config import StoreSection


async def test_the_configured_mailbox_quota_is_enforced(nursery, tmp_path):
    settings = StoreSection(demo_user=False, mailbox_quota_bytes=20_000)
    running = await start_server(
        nursery, tmp_path / "data", {"carol": "carol-password"}, store=settings
    )
    with trio.fail_after(30):
        address = f"ncacn_ip_tcp:127.0.0.1[{running.epm_port}]"
        async with connect(address, "carol", "carol-password") as session:
            store = await session.open_store()
            props = await store.get_props([PR_PROHIBIT_SEND_QUOTA])
            assert props[PR_PROHIBIT_SEND_QUOTA] == 19  # kilobytes
            inbox = await store.open_folder(await store.special_folder("inbox"))
            small = await inbox.create_message()
            await small.set_props({"PR_SUBJECT": "fits", "PR_BODY": "x" * 1000})
            await small.save()
            big = await inbox.create_message()
            await big.set_props({"PR_SUBJECT": "too big", "PR_BODY": "x" * 30_000})
            with pytest.raises(errors.NotEnoughDisk, match="mailbox is full"):
                await big.save()
