"""The tunnel client transport's public entry point.

``async with open_tunnel_stream(url, server, port, username=u, password=p) as stream``
yields a stream carrying the raw DCE/RPC byte stream; give it to
``dcerpc.client.open_rpc_client``. Implemented in :mod:`tunnel.drivers.client`.
"""

from __future__ import annotations

from tunnel.drivers.client import open_tunnel_stream
from tunnel.errors import TunnelError

__all__ = ["TunnelError", "open_tunnel_stream"]
