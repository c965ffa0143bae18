"""Who a peer is, for limits and counters kept per client.

A client controls more than one address: an IPv6 subscriber gets a whole /64, and an
IPv4 client may reach a dual-stack listener as ``::ffff:a.b.c.d``. Counters keyed on
the raw address (logon failures, credential checks in progress) would give such a
client a fresh counter per address; :func:`client_network` is the key they share.
"""

from __future__ import annotations

import ipaddress


def client_network(address: str) -> str:
    """The key of ``address``'s client: an IPv4 address itself, an IPv6 address's /64,
    an IPv4-mapped address's IPv4 address (anything that is no address, as it is)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
