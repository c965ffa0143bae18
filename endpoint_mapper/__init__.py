"""The DCE/RPC endpoint mapper: towers, the endpoint database, the EPM/mgmt services
and a client ([C706] Appendix O and Q, [MS-RPCE] 2.2.1.2 and 3.1).

The sans-IO parts (towers, database, stubs, services) are imported here; the client's
names (:mod:`endpoint_mapper.client`, a trio driver) are loaded on first use, so that
importing a core module of this package (or of ``tunnel/``, which resolves targets with
the database) does not load trio (``tests/test_quality.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from endpoint_mapper.database import (
    EndpointDatabase,
    EndpointEntry,
    InquiryType,
    VersionOption,
)
from endpoint_mapper.service import epm_interface, mgmt_interface
from endpoint_mapper.stubs import EPM_SYNTAX, MGMT_SYNTAX
from endpoint_mapper.towers import Floor, Tower

if TYPE_CHECKING:
    from endpoint_mapper.client import (
        EndpointNotRegistered,
        EpmError,
        RpcCaller,
        lookup,
        lookup_on,
        map_endpoint,
        map_endpoint_on,
        resolve,
    )

#: Public names of the client driver, imported from it on first use.
_CLIENT_NAMES = frozenset(
    {
        "EndpointNotRegistered",
        "EpmError",
        "RpcCaller",
        "lookup",
        "lookup_on",
        "map_endpoint",
        "map_endpoint_on",
        "resolve",
    }
)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        value = getattr(importlib.import_module("endpoint_mapper.client"), name)
        globals()[name] = value  # later look-ups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLIENT_NAMES})


__all__ = [
    "EPM_SYNTAX",
    "MGMT_SYNTAX",
    "EndpointDatabase",
    "EndpointEntry",
    "EndpointNotRegistered",
    "EpmError",
    "Floor",
    "InquiryType",
    "RpcCaller",
    "Tower",
    "VersionOption",
    "epm_interface",
    "lookup",
    "lookup_on",
    "map_endpoint",
    "map_endpoint_on",
    "mgmt_interface",
    "resolve",
]
