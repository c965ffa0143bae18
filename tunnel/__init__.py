"""The HTTPS tunnel: an RPC proxy (RPC over HTTP v2 on HTTP/1.1, raw streams on HTTP/2)
and its client transport. Entry points: :func:`tunnel.proxy.serve_tunnel` and
:func:`tunnel.transport.open_tunnel_stream`; configuration: :class:`TunnelConfig`;
policy: :class:`AllowList`."""

from tunnel.config import TunnelConfig
from tunnel.errors import TunnelError
from tunnel.policy import AllowList, Authenticator, CachingAuthenticator

__all__ = ["AllowList", "Authenticator", "CachingAuthenticator", "TunnelConfig", "TunnelError"]
