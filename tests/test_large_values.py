"""A value too large for one call is answered MAPI_E_TOO_BIG with the way out (a stream),
also when it is too large for the stub decoder itself, not "invalid msgpack"."""

from __future__ import annotations

import pytest
import trio
from serve_helpers import start_server

from clients.api import connect
from mapi.model import errors


async def test_a_string_past_the_decoders_limit_says_to_use_a_stream(nursery, tmp_path):
    server = await start_server(nursery, tmp_path / "data", {"alice": "alice-password"})
    with trio.fail_after(30):
        address = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
        async with connect(address, "alice", "alice-password") as session:
            # Past msgpack's 1 MiB string limit: the stub cannot even be decoded.
            with pytest.raises(errors.TooBig, match="through a stream"):
                await session.execute([["set_props", {"h": 0, "props": [["x" * (2 << 20)]]}]])
