"""Errors a tunnel client sees."""

from __future__ import annotations


class TunnelError(Exception):
    """The tunnel could not be opened or broke.

    ``status`` is the HTTP status the proxy answered with (0 when there was none),
    ``rpc_error`` the hex code of an MS-RPCH ``503 RPC Error: <hex>`` answer.
    """

    def __init__(self, msg: str, *, status: int = 0, rpc_error: int | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.rpc_error = rpc_error
