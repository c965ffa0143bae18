"""Stub data of the endpoint mapper (ept) and management (mgmt) calls, as NDR32.

Theory of operation
-------------------
Each call gets a request and a response dataclass and ``encode_*`` / ``decode_*``
functions for both directions, so the server (``service.py``) and the client
(``client.py``) share one codec. Layouts follow the IDL of [C706] Appendix O (``ept``)
and Appendix Q (``mgmt``), with the ``vers_option`` values of [MS-RPCE] 3.1; the
marshalling rules are those of [C706] chapter 14 (see :mod:`dcerpc.ndr`):

``ept_lookup`` (opnum 2)
    in: ``inquiry_type u32, [unique] uuid_p_t object, [unique] rpc_if_id_p_t Ifid,
    vers_option u32, [in,out] entry_handle (20), max_ents u32``;
    out: ``entry_handle, num_ents u32, ept_entry_t entries[max_ents] (conformant
    varying, length num_ents), status u32``. An ``ept_entry_t`` is ``GUID object,
    twr_p_t tower, [string] char annotation[64]`` (a varying string); the towers are
    deferred after the array.
``ept_map`` (opnum 3)
    in: ``[unique] uuid_p_t obj, [unique] twr_p_t map_tower, entry_handle,
    max_towers u32``; out: ``entry_handle, num_towers u32, twr_p_t towers[max_towers]
    (conformant varying), status u32``.
``ept_lookup_handle_free`` (opnum 4)
    in: ``entry_handle``; out: ``entry_handle, status u32``.
``twr_t``
    a conformant structure: ``max_count u32`` (hoisted), ``tower_length u32``,
    ``tower_length`` octets (see :mod:`endpoint_mapper.towers`).
mgmt ``inq_if_ids`` (0), ``inq_stats`` (1), ``is_server_listening`` (2),
``stop_server_listening`` (3), ``inq_princ_name`` (4)
    see the functions below.

Request decoders ignore trailing bytes (lenient, as MIDL-generated servers are);
response decoders do too. Every count is bounded (:data:`MAX_ENTRIES`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from dcerpc.errors import NdrError
from dcerpc.ndr import NULL_HANDLE, ByteOrder, ContextHandle, NdrReader, NdrWriter
from dcerpc.syntax import SyntaxId
from endpoint_mapper.database import MAX_ANNOTATION_SIZE, EndpointEntry
from endpoint_mapper.towers import MAX_TOWER_LENGTH, Tower

EPM_SYNTAX = SyntaxId.parse("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3, 0)
MGMT_SYNTAX = SyntaxId.parse("afa8bd80-7d8a-11c9-bef4-08002b102989", 1, 0)

# ept opnums ([C706] Appendix O).
OP_EPT_INSERT = 0
OP_EPT_DELETE = 1
OP_EPT_LOOKUP = 2
OP_EPT_MAP = 3
OP_EPT_LOOKUP_HANDLE_FREE = 4
OP_EPT_INQ_OBJECT = 5
OP_EPT_MGMT_DELETE = 6
EPT_OPNUM_COUNT = 7

# mgmt opnums ([C706] Appendix Q).
OP_MGMT_INQ_IF_IDS = 0
OP_MGMT_INQ_STATS = 1
OP_MGMT_IS_SERVER_LISTENING = 2
OP_MGMT_STOP_SERVER_LISTENING = 3
OP_MGMT_INQ_PRINC_NAME = 4
MGMT_OPNUM_COUNT = 5

# Status values carried in the stubs ([MS-ERREF] 2.2, [C706] Appendix E).
RPC_S_OK = 0
ERROR_ACCESS_DENIED = 0x00000005
RPC_S_UNKNOWN_AUTHN_SERVICE = 0x000006D3
EPT_S_CANT_PERFORM_OP = 0x000006D8
EPT_S_NOT_REGISTERED = 0x16C9A0D6

#: Most entries, towers or interface ids we send or accept in one response.
MAX_ENTRIES = 500
#: ``rpc_c_stats_array_max_size`` ([C706] Appendix Q): calls in/out, packets in/out.
STATS_COUNT = 4

# Smallest wire size of one entry, to bound counts before reading entries.
_ENTRY_SIZE = 16 + 4 + 8  # GUID, tower referent, annotation offset/count


# -- twr_t --------------------------------------------------------------------


def write_twr(w: NdrWriter, tower: Tower) -> None:
    octets = tower.encode()
    w.conformance(len(octets))
    w.u32(len(octets))
    w.raw(octets)


def read_twr(r: NdrReader) -> Tower:
    max_count = r.conformance(1, MAX_TOWER_LENGTH)
    length = r.u32()
    if length != max_count:
        raise NdrError(f"tower_length {length} differs from its max_count {max_count}")
    return Tower.decode(r.raw(length))


# -- ept_lookup ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LookupRequest:
    inquiry_type: int = 0
    object_uuid: uuid.UUID | None = None
    interface: SyntaxId | None = None
    vers_option: int = 1
    entry_handle: ContextHandle = NULL_HANDLE
    max_ents: int = MAX_ENTRIES

    @property
    def next_referent(self) -> int:
        """The referent id the response's first full pointer takes."""
        return 1 + (self.object_uuid is not None) + (self.interface is not None)


@dataclass(frozen=True, slots=True)
class LookupResponse:
    entry_handle: ContextHandle
    entries: tuple[EndpointEntry, ...]
    status: int
    #: The request's ``max_ents``: the array's conformance (``max_count``).
    max_ents: int = MAX_ENTRIES
    #: First referent id of the [ptr] towers. Full pointers share one translation table
    #: per call, so [out] ids follow the request's non-NULL [in] pointers (Windows does
    #: this, and Wireshark skips a pointee whose id the request already used).
    first_referent: int = 1


def encode_lookup_request(req: LookupRequest) -> bytes:
    w = NdrWriter()
    w.u32(req.inquiry_type)
    w.unique(req.object_uuid, NdrWriter.uuid)
    w.unique(req.interface, NdrWriter.syntax_id)
    w.u32(req.vers_option)
    w.context_handle(req.entry_handle)
    w.u32(req.max_ents)
    return w.getvalue()


def decode_lookup_request(stub: bytes, byteorder: ByteOrder = "<") -> LookupRequest:
    r = NdrReader(stub, byteorder)
    inquiry_type = r.u32()
    object_uuid = r.unique(NdrReader.uuid)
    interface = r.unique(NdrReader.syntax_id)
    return LookupRequest(
        inquiry_type=inquiry_type,
        object_uuid=object_uuid,
        interface=interface,
        vers_option=r.u32(),
        entry_handle=r.context_handle(),
        max_ents=r.u32(),
    )


def encode_lookup_response(resp: LookupResponse) -> bytes:
    w = NdrWriter(first_referent=resp.first_referent)
    w.context_handle(resp.entry_handle)
    w.u32(len(resp.entries))

    def write_entry(w: NdrWriter, entry: EndpointEntry) -> None:
        w.uuid(entry.object_uuid)
        w.pointer(True)
        w.defer(lambda w: write_twr(w, entry.tower))  # towers follow the whole array
        w.varying_string(entry.annotation)

    w.conformant_varying_array(resp.entries, write_entry, max_count=resp.max_ents)
    w.flush_deferred()
    w.u32(resp.status)
    return w.getvalue()


def decode_lookup_response(stub: bytes, byteorder: ByteOrder = "<") -> LookupResponse:
    """Entries whose tower pointer is NULL are dropped (no endpoint to report)."""
    r = NdrReader(stub, byteorder)
    handle = r.context_handle()
    num = r.u32()
    max_count = r.u32()
    actual = r.variance(max_count, _ENTRY_SIZE, MAX_ENTRIES)
    if actual != num:
        raise NdrError(f"num_ents {num} differs from the array's actual_count {actual}")
    heads = []
    for _ in range(actual):
        object_uuid = r.uuid()
        referent = r.pointer()
        annotation = r.varying_string(limit=MAX_ANNOTATION_SIZE, max_count=MAX_ANNOTATION_SIZE)
        heads.append((object_uuid, referent, annotation))
    entries = tuple(
        EndpointEntry(obj, read_twr(r), annotation)
        for obj, referent, annotation in heads
        if referent
    )
    return LookupResponse(handle, entries, r.u32(), max_count)


# -- ept_map ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapRequest:
    object_uuid: uuid.UUID | None
    tower: Tower | None
    entry_handle: ContextHandle = NULL_HANDLE
    max_towers: int = 4

    @property
    def next_referent(self) -> int:
        """The referent id the response's first full pointer takes."""
        return 1 + (self.object_uuid is not None) + (self.tower is not None)


@dataclass(frozen=True, slots=True)
class MapResponse:
    entry_handle: ContextHandle
    towers: tuple[Tower, ...]
    status: int
    max_towers: int = 4
    #: First referent id of the [ptr] towers: see :attr:`LookupResponse.first_referent`.
    first_referent: int = 1


def encode_map_request(req: MapRequest) -> bytes:
    # Referent ids 1 and 2, as Windows Server 2003 insists (noted in impacket's hept_map).
    w = NdrWriter(first_referent=1)
    w.unique(req.object_uuid, NdrWriter.uuid)
    w.unique(req.tower, write_twr)
    w.context_handle(req.entry_handle)
    w.u32(req.max_towers)
    return w.getvalue()


def decode_map_request(stub: bytes, byteorder: ByteOrder = "<") -> MapRequest:
    r = NdrReader(stub, byteorder)
    object_uuid = r.unique(NdrReader.uuid)
    tower = r.unique(read_twr)
    return MapRequest(object_uuid, tower, r.context_handle(), r.u32())


def encode_map_response(resp: MapResponse) -> bytes:
    w = NdrWriter(first_referent=resp.first_referent)
    w.context_handle(resp.entry_handle)
    w.u32(len(resp.towers))

    def write_ptr(w: NdrWriter, tower: Tower) -> None:
        w.pointer(True)
        w.defer(lambda w: write_twr(w, tower))

    w.conformant_varying_array(resp.towers, write_ptr, max_count=resp.max_towers)
    w.flush_deferred()
    w.u32(resp.status)
    return w.getvalue()


def decode_map_response(stub: bytes, byteorder: ByteOrder = "<") -> MapResponse:
    r = NdrReader(stub, byteorder)
    handle = r.context_handle()
    num = r.u32()
    max_count = r.u32()
    actual = r.variance(max_count, 4, MAX_ENTRIES)
    if actual != num:
        raise NdrError(f"num_towers {num} differs from the array's actual_count {actual}")
    referents = [r.pointer() for _ in range(actual)]
    towers = tuple(read_twr(r) for referent in referents if referent)
    return MapResponse(handle, towers, r.u32(), max_count)


# -- ept_lookup_handle_free ---------------------------------------------------


def encode_handle_free_request(handle: ContextHandle) -> bytes:
    w = NdrWriter()
    w.context_handle(handle)
    return w.getvalue()


def decode_handle_free_request(stub: bytes, byteorder: ByteOrder = "<") -> ContextHandle:
    return NdrReader(stub, byteorder).context_handle()


def encode_handle_response(handle: ContextHandle, status: int) -> bytes:
    """``entry_handle, status``: the response of ``ept_lookup_handle_free``."""
    w = NdrWriter()
    w.context_handle(handle)
    w.u32(status)
    return w.getvalue()


def decode_handle_response(stub: bytes, byteorder: ByteOrder = "<") -> tuple[ContextHandle, int]:
    r = NdrReader(stub, byteorder)
    return r.context_handle(), r.u32()


def encode_status(status: int) -> bytes:
    """A response stub that is just ``error_status_t`` (ept_insert, ept_delete, ...)."""
    w = NdrWriter()
    w.u32(status)
    return w.getvalue()


def encode_inq_object_response(object_uuid: uuid.UUID, status: int) -> bytes:
    """``ept_inq_object``: ``[out] uuid_t *ept_object, [out] error_status_t *status``."""
    w = NdrWriter()
    w.uuid(object_uuid)
    w.u32(status)
    return w.getvalue()


# -- mgmt ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InqIfIdsResponse:
    interfaces: tuple[SyntaxId, ...] = field(default=())
    status: int = RPC_S_OK


def encode_inq_if_ids_response(resp: InqIfIdsResponse) -> bytes:
    """``[out] rpc_if_id_vector_p_t *if_id_vector, [out] error_status_t *status``.

    The vector is a conformant struct ``{count u32, [size_is(count)] rpc_if_id_p_t
    if_id[]}`` behind a full pointer; the ``rpc_if_id_t`` pointees follow the array.
    """
    w = NdrWriter()

    def write_ptr(w: NdrWriter, syntax: SyntaxId) -> None:
        w.pointer(True)
        w.defer(lambda w: w.syntax_id(syntax))

    w.pointer(True)
    w.conformance(len(resp.interfaces))  # hoisted conformance of the struct's array
    w.u32(len(resp.interfaces))
    for syntax in resp.interfaces:
        write_ptr(w, syntax)
    w.flush_deferred()
    w.u32(resp.status)
    return w.getvalue()


def decode_inq_if_ids_response(stub: bytes, byteorder: ByteOrder = "<") -> InqIfIdsResponse:
    r = NdrReader(stub, byteorder)
    interfaces: tuple[SyntaxId, ...] = ()
    if r.pointer():
        max_count = r.conformance(4, MAX_ENTRIES)
        count = r.u32()
        if count != max_count:
            raise NdrError(f"if_id count {count} differs from its max_count {max_count}")
        referents = [r.pointer() for _ in range(count)]
        interfaces = tuple(r.syntax_id() for referent in referents if referent)
    return InqIfIdsResponse(interfaces, r.u32())


def decode_inq_stats_request(stub: bytes, byteorder: ByteOrder = "<") -> int:
    """``[in, out] unsigned32 *count``: how many statistics the client has room for."""
    return NdrReader(stub, byteorder).u32()


def encode_inq_stats_response(statistics: tuple[int, ...], status: int) -> bytes:
    """``count, [size_is(*count)] unsigned32 statistics[], status`` ([C706] Appendix Q)."""
    w = NdrWriter()
    w.u32(len(statistics))
    w.conformant_array(statistics, NdrWriter.u32)
    w.u32(status)
    return w.getvalue()


def encode_is_server_listening_response(listening: bool, status: int) -> bytes:
    """``[out] error_status_t *status`` then the ``boolean32`` return value."""
    w = NdrWriter()
    w.u32(status)
    w.u32(1 if listening else 0)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class InqPrincNameRequest:
    authn_proto: int
    princ_name_size: int


def decode_inq_princ_name_request(stub: bytes, byteorder: ByteOrder = "<") -> InqPrincNameRequest:
    r = NdrReader(stub, byteorder)
    return InqPrincNameRequest(r.u32(), r.u32())


def encode_inq_princ_name_response(name: str, princ_name_size: int, status: int) -> bytes:
    """``[out, string, size_is(princ_name_size)] char princ_name[], status``.

    The name is truncated to ``princ_name_size - 1`` characters, as the DCE reference
    implementation does; a size of 0 leaves no room even for the NUL, so nothing
    is sent but the (zero) counts.
    """
    w = NdrWriter()
    if princ_name_size == 0:
        w.conformance(0)
        w.variance(0)
    else:
        w.string(name[: princ_name_size - 1], max_count=princ_name_size)
    w.u32(status)
    return w.getvalue()
