"""Fixtures of the tunnel tests (helpers live in ``tunnel_helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from tunnel_helpers import Backend, Tunnel, make_backend, start_tunnel


@pytest.fixture(params=["tcp", "attached"])
async def backend(nursery: trio.Nursery, request: pytest.FixtureRequest) -> Backend:
    """The RPC server behind the tunnel: reached over loopback TCP, or attached in
    memory as ``serve`` attaches its own services."""
    return await make_backend(nursery, attached=request.param == "attached")


@pytest.fixture
async def tunnel(nursery: trio.Nursery, backend: Backend, tmp_path: Path) -> Tunnel:
    return await start_tunnel(nursery, backend, tmp_path / "data")
