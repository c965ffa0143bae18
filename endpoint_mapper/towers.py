"""Protocol towers: the ``tower_octet_string`` of a ``twr_t``.

Theory of operation
-------------------
A tower describes how to reach an interface as a stack of *floors*, top to bottom
([C706] Appendix L, [MS-RPCE] 2.2.1.2). Its octets are a fixed encoding, not NDR,
and are little-endian whatever the PDU's ``drep`` says::

    floor_count u16, then per floor: lhs_len u16, lhs, rhs_len u16, rhs

For connection-oriented RPC over TCP or HTTP a tower has five floors:

===== ============================================= ==================================
floor LHS                                           RHS
===== ============================================= ==================================
1     0x0D, interface GUID (bytes_le), major u16    minor u16
2     0x0D, transfer syntax GUID, major u16         minor u16
3     0x0B (ncacn); 0x0A ncadg; 0x0C ncalrpc        u16 0
4     0x07 TCP / 0x1F HTTP / 0x08 UDP               port, **big-endian** u16
4     0x0F SMB named pipe / 0x10 LRPC endpoint      NUL-terminated name
5     0x09 IP                                       IPv4 address, network order
5     0x11 NetBIOS host                             NUL-terminated name
===== ============================================= ==================================

:class:`Floor` keeps any floor as raw LHS/RHS octets, so towers with floors we do not
interpret (named pipes, NetBIOS, ...) decode and re-encode unchanged; :class:`Tower`
adds accessors for the floors we understand. Decoding enforces hard limits (at most
:data:`MAX_FLOORS` floors, :data:`MAX_TOWER_LENGTH` octets) and raises
:class:`~dcerpc.errors.NdrError` for anything malformed, since towers travel inside
stub data.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from dataclasses import dataclass

from dcerpc.errors import NdrError
from dcerpc.syntax import NDR, SyntaxId

MAX_FLOORS = 16
MAX_TOWER_LENGTH = 2000

# Protocol identifiers ([C706] Appendix I, [MS-RPCE] 2.2.1.2).
PROT_UUID = 0x0D
PROT_NCADG = 0x0A
PROT_NCACN = 0x0B
PROT_NCALRPC = 0x0C
PROT_TCP = 0x07
PROT_UDP = 0x08
PROT_IP = 0x09
PROT_NAMED_PIPE = 0x0F
PROT_LRPC_NAME = 0x10
PROT_NETBIOS = 0x11
PROT_HTTP = 0x1F

# (floor 3 id, floor 4 id) -> protocol sequence name.
_PROTSEQS: dict[tuple[int, int], str] = {
    (PROT_NCACN, PROT_TCP): "ncacn_ip_tcp",
    (PROT_NCACN, PROT_HTTP): "ncacn_http",
    (PROT_NCACN, PROT_NAMED_PIPE): "ncacn_np",
    (PROT_NCADG, PROT_UDP): "ncadg_ip_udp",
    (PROT_NCALRPC, PROT_LRPC_NAME): "ncalrpc",
}
_PORT_FLOORS = frozenset({PROT_TCP, PROT_UDP, PROT_HTTP})
_NAME_FLOORS = frozenset({PROT_NAMED_PIPE, PROT_LRPC_NAME, PROT_NETBIOS})


@dataclass(frozen=True, slots=True)
class Floor:
    """One tower floor: raw left-hand side (protocol id) and right-hand side octets."""

    lhs: bytes
    rhs: bytes

    def __post_init__(self) -> None:
        if not self.lhs:
            raise ValueError("a floor needs a protocol identifier (a non-empty LHS)")
        if len(self.lhs) > 0xFFFF or len(self.rhs) > 0xFFFF:
            raise ValueError("a floor side is at most 65535 octets")

    @property
    def protocol_id(self) -> int:
        return self.lhs[0]

    @classmethod
    def for_syntax(cls, syntax: SyntaxId) -> Floor:
        """Floor 1 or 2: an interface or transfer syntax id."""
        return cls(
            bytes([PROT_UUID]) + syntax.uuid.bytes_le + struct.pack("<H", syntax.major),
            struct.pack("<H", syntax.minor),
        )

    def syntax(self) -> SyntaxId | None:
        """The syntax id of a UUID floor, None if this floor is something else."""
        if len(self.lhs) != 19 or self.lhs[0] != PROT_UUID or len(self.rhs) != 2:
            return None
        (major,) = struct.unpack_from("<H", self.lhs, 17)
        (minor,) = struct.unpack("<H", self.rhs)
        return SyntaxId(uuid.UUID(bytes_le=self.lhs[1:17]), major, minor)


@dataclass(frozen=True, slots=True)
class Tower:
    """A protocol tower ([MS-RPCE] 2.2.1.2): a sequence of :class:`Floor`."""

    floors: tuple[Floor, ...]

    # -- construction -------------------------------------------------------

    @classmethod
    def tcp(cls, interface: SyntaxId, ip: str, port: int, transfer: SyntaxId = NDR) -> Tower:
        """An ``ncacn_ip_tcp`` tower for ``interface`` at ``ip:port``."""
        return cls._ip_tower(interface, transfer, PROT_TCP, ip, port)

    @classmethod
    def http(cls, interface: SyntaxId, ip: str, port: int, transfer: SyntaxId = NDR) -> Tower:
        """An ``ncacn_http`` tower (RPC over HTTP endpoint, e.g. port 593)."""
        return cls._ip_tower(interface, transfer, PROT_HTTP, ip, port)

    @classmethod
    def _ip_tower(
        cls, interface: SyntaxId, transfer: SyntaxId, port_id: int, ip: str, port: int
    ) -> Tower:
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
        address = ipaddress.IPv4Address(ip)  # ValueError for anything but dotted IPv4
        return cls(
            (
                Floor.for_syntax(interface),
                Floor.for_syntax(transfer),
                Floor(bytes([PROT_NCACN]), b"\x00\x00"),
                Floor(bytes([port_id]), struct.pack(">H", port)),
                Floor(bytes([PROT_IP]), address.packed),
            )
        )

    def with_address(self, ip: str) -> Tower:
        """A copy with the IP floor replaced (e.g. by the address a client reached)."""
        packed = ipaddress.IPv4Address(ip).packed
        return Tower(
            tuple(
                Floor(f.lhs, packed) if i >= 3 and f.lhs == bytes([PROT_IP]) else f
                for i, f in enumerate(self.floors)
            )
        )

    # -- accessors ----------------------------------------------------------

    def _floor(self, index: int) -> Floor | None:
        return self.floors[index] if len(self.floors) > index else None

    @property
    def interface(self) -> SyntaxId | None:
        floor = self._floor(0)
        return floor.syntax() if floor else None

    @property
    def transfer_syntax(self) -> SyntaxId | None:
        floor = self._floor(1)
        return floor.syntax() if floor else None

    @property
    def protocol_ids(self) -> tuple[int, int] | None:
        """The (floor 3, floor 4) protocol identifiers, which name the protseq."""
        rpc, transport = self._floor(2), self._floor(3)
        if rpc is None or transport is None:
            return None
        return rpc.protocol_id, transport.protocol_id

    @property
    def protocol(self) -> str | None:
        """The protocol sequence, e.g. ``'ncacn_ip_tcp'``; None if unknown."""
        ids = self.protocol_ids
        return _PROTSEQS.get(ids) if ids else None

    @property
    def port(self) -> int | None:
        floor = self._floor(3)
        if floor is None or floor.protocol_id not in _PORT_FLOORS or len(floor.rhs) != 2:
            return None
        value: int = struct.unpack(">H", floor.rhs)[0]
        return value

    @property
    def endpoint(self) -> str | None:
        """The endpoint as in a string binding: a port number or a pipe/LRPC name."""
        port = self.port
        if port is not None:
            return str(port)
        floor = self._floor(3)
        if floor is not None and floor.protocol_id in _NAME_FLOORS:
            return _c_string(floor.rhs)
        return None

    @property
    def address(self) -> str | None:
        """The network address: dotted IPv4 or a NetBIOS name (floor 5)."""
        for floor in self.floors[4:]:
            if floor.protocol_id == PROT_IP and len(floor.rhs) == 4:
                return str(ipaddress.IPv4Address(floor.rhs))
            if floor.protocol_id == PROT_NETBIOS:
                return _c_string(floor.rhs)
        return None

    def string_binding(self) -> str:
        """E.g. ``ncacn_ip_tcp:127.0.0.1[49152]`` ([C706] 2.2 string bindings)."""
        protseq = self.protocol
        if protseq is None:
            ids = self.protocol_ids
            protseq = f"unknown_0x{ids[1]:02x}" if ids else "unknown"
        endpoint = self.endpoint
        return f"{protseq}:{self.address or ''}" + (f"[{endpoint}]" if endpoint else "")

    # -- wire ----------------------------------------------------------------

    def encode(self) -> bytes:
        """The tower octets; raises ValueError if limits would be exceeded."""
        if not 1 <= len(self.floors) <= MAX_FLOORS:
            raise ValueError(f"a tower has 1..{MAX_FLOORS} floors")
        parts = [struct.pack("<H", len(self.floors))]
        for floor in self.floors:
            parts += [struct.pack("<H", len(floor.lhs)), floor.lhs]
            parts += [struct.pack("<H", len(floor.rhs)), floor.rhs]
        octets = b"".join(parts)
        if len(octets) > MAX_TOWER_LENGTH:
            raise ValueError(f"tower longer than {MAX_TOWER_LENGTH} octets")
        return octets

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Tower:
        """Parses tower octets. Raises :class:`NdrError` on any malformed input."""
        raw = bytes(data)
        if len(raw) > MAX_TOWER_LENGTH:
            raise NdrError(f"tower longer than {MAX_TOWER_LENGTH} octets")
        if len(raw) < 2:
            raise NdrError("tower truncated")
        (count,) = struct.unpack_from("<H", raw, 0)
        if not 1 <= count <= MAX_FLOORS:
            raise NdrError(f"tower floor count {count} not in 1..{MAX_FLOORS}")
        pos, floors = 2, []
        for _ in range(count):
            lhs, pos = _field(raw, pos)
            rhs, pos = _field(raw, pos)
            if not lhs:
                raise NdrError("tower floor without a protocol identifier")
            floors.append(Floor(lhs, rhs))
        if pos != len(raw):
            raise NdrError(f"{len(raw) - pos} bytes after the last tower floor")
        return cls(tuple(floors))


def _field(raw: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(raw):
        raise NdrError("tower floor truncated")
    (length,) = struct.unpack_from("<H", raw, pos)
    end = pos + 2 + length
    if end > len(raw):
        raise NdrError("tower floor truncated")
    return raw[pos + 2 : end], end


def _c_string(rhs: bytes) -> str:
    return rhs.split(b"\x00", 1)[0].decode("latin-1")
