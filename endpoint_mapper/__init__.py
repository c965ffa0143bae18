"""The DCE/RPC endpoint mapper: towers, the endpoint database, the EPM/mgmt services
and a client ([C706] Appendix O and Q, [MS-RPCE] 2.2.1.2 and 3.1)."""

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
from endpoint_mapper.database import (
    EndpointDatabase,
    EndpointEntry,
    InquiryType,
    VersionOption,
)
from endpoint_mapper.service import epm_interface, mgmt_interface
from endpoint_mapper.stubs import EPM_SYNTAX, MGMT_SYNTAX
from endpoint_mapper.towers import Floor, Tower

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
