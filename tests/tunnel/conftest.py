"""Fixtures of the tunnel tests (helpers live in ``tunnel_helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from tunnel_helpers import Backend, Tunnel, make_backend, start_tunnel


@pytest.fixture
async def backend(nursery: trio.Nursery) -> Backend:
    return await make_backend(nursery)


@pytest.fixture
async def tunnel(nursery: trio.Nursery, backend: Backend, tmp_path: Path) -> Tunnel:
    return await start_tunnel(nursery, backend, tmp_path / "data")
