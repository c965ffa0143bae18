"""The tunnel server's public entry point (the composition root calls :func:`serve_tunnel`).

The implementation lives in :mod:`tunnel.drivers.server` (drivers are the only tunnel
modules that do I/O); this module re-exports it under the documented name::

    info = await nursery.start(functools.partial(
        serve_tunnel, config,
        allowed_targets=AllowList.for_database(db, epm_port, config.server_names),
        authenticate=authenticator,
        data_dir=data_dir,
    ))
    info.port, info.fingerprint

``authenticator`` is any :class:`~tunnel.policy.Authenticator`: awaited as
``authenticator(user, password, address)`` with the client's IP address (None when
unknown), it returns whether the credentials are good. When it also has a cheap,
synchronous ``is_cached(user, password) -> bool``
(:class:`~tunnel.policy.CachingAuthenticator`), credentials it vouches for skip the
queue of credential checks (``TunnelConfig.max_auth_checks`` and its neighbours).
With ``lookup_nt_hash``, ``ntlm_failed`` and ``ntlm_succeeded``
(:class:`~tunnel.http_auth.NtlmDirectory`) it also lets HTTP/1.1 connections
authenticate with NTLM and Negotiate (``TunnelConfig.auth_schemes``).
"""

from __future__ import annotations

from tunnel.drivers.context import TunnelInfo
from tunnel.drivers.server import serve_tunnel

__all__ = ["TunnelInfo", "serve_tunnel"]
