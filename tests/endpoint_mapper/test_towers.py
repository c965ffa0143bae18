"""Towers: byte-exact against impacket's EPMTower floors, generic floors, limits, fuzzing."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import epm
from impacket.uuid import uuidtup_to_bin

from dcerpc.errors import NdrError
from dcerpc.syntax import NDR, NDR64, SyntaxId
from endpoint_mapper.towers import MAX_FLOORS, MAX_TOWER_LENGTH, Floor, Tower

STORE = SyntaxId.parse("12345678-1234-abcd-ef00-0123456789ab", 1, 2)


def impacket_tower(port_floor: bytes, address_floor: bytes, interface=STORE) -> bytes:
    """Tower octets built floor by floor with impacket's structures (as hept_map does)."""
    iface = epm.EPMRPCInterface()
    raw = uuidtup_to_bin((str(interface.uuid), f"{interface.major}.{interface.minor}"))
    iface["InterfaceUUID"] = raw[:16]
    iface["MajorVersion"] = interface.major
    iface["MinorVersion"] = interface.minor
    drep = epm.EPMRPCDataRepresentation()
    drep["DataRepUuid"] = uuidtup_to_bin(("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0"))[:16]
    drep["MajorVersion"] = 2
    drep["MinorVersion"] = 0
    prot = epm.EPMProtocolIdentifier()
    prot["ProtIdentifier"] = epm.FLOOR_RPCV5_IDENTIFIER
    tower = epm.EPMTower()
    tower["NumberOfFloors"] = 5
    tower["Floors"] = iface.getData() + drep.getData() + prot.getData() + port_floor + address_floor
    return tower.getData()


def impacket_port(port: int, ident: int = epm.FLOOR_TCPPORT_IDENTIFIER) -> bytes:
    floor = epm.EPMPortAddr()
    floor["PortIdentifier"] = ident
    floor["IpPort"] = port
    return floor.getData()


def impacket_ip(ip: str) -> bytes:
    floor = epm.EPMHostAddr()
    floor["Ip4addr"] = socket.inet_aton(ip)
    return floor.getData()


def test_tcp_tower_is_byte_identical_to_impacket():
    ours = Tower.tcp(STORE, "10.1.2.3", 49152).encode()
    assert len(ours) == 75
    assert ours == impacket_tower(impacket_port(49152), impacket_ip("10.1.2.3"))
    # the port is big-endian, the floor lengths little-endian
    assert ours[-16:] == bytes.fromhex("0100 07 0200 c000 0100 09 0400 0a010203")


def test_impacket_parses_our_tower():
    parsed = epm.EPMTower(Tower.http(STORE, "192.168.0.9", 593).encode())
    floors = parsed["Floors"]
    assert parsed["NumberOfFloors"] == 5
    assert str(floors[0]) == f"{str(STORE.uuid).upper()} v1.2"
    assert str(floors[1]) == "8A885D04-1CEB-11C9-9FE8-08002B104860 v2.0"
    assert epm.PrintStringBinding(floors) == "ncacn_http:192.168.0.9[593]"


def test_decode_impacket_tower_accessors():
    tower = Tower.decode(impacket_tower(impacket_port(135), impacket_ip("127.0.0.1")))
    assert tower.interface == STORE
    assert tower.transfer_syntax == NDR
    assert tower.protocol_ids == (0x0B, 0x07)
    assert tower.protocol == "ncacn_ip_tcp"
    assert tower.port == 135
    assert tower.endpoint == "135"
    assert tower.address == "127.0.0.1"
    assert tower.string_binding() == "ncacn_ip_tcp:127.0.0.1[135]"
    assert tower == Tower.tcp(STORE, "127.0.0.1", 135)


def test_named_pipe_and_netbios_floors_are_kept_generically():
    pipe = epm.EPMPipeName()
    pipe["PipeName"] = b"\\PIPE\\lsass\x00"
    host = epm.EPMHostName()
    host["HostName"] = b"SRV01\x00"
    raw = impacket_tower(pipe.getData(), host.getData())
    tower = Tower.decode(raw)
    assert tower.protocol == "ncacn_np"
    assert tower.port is None
    assert tower.endpoint == "\\PIPE\\lsass"
    assert tower.address == "SRV01"
    assert tower.floors[3] == Floor(b"\x0f", b"\\PIPE\\lsass\x00")
    assert tower.string_binding() == "ncacn_np:SRV01[\\PIPE\\lsass]"
    assert tower.encode() == raw


def test_unknown_protocol_string_binding():
    tower = Tower(
        (
            Floor.for_syntax(STORE),
            Floor.for_syntax(NDR),
            Floor(b"\x0b", b"\0\0"),
            Floor(b"\x42", b"xy"),
        )
    )
    assert tower.protocol is None
    assert tower.port is None and tower.address is None
    assert tower.string_binding() == "unknown_0x42:"
    assert Tower((Floor(b"\x0d", b""),)).string_binding() == "unknown:"
    assert Tower(()).string_binding() == "unknown:"  # accessors never raise


def test_http_and_ndr64_tower():
    tower = Tower.http(STORE, "0.0.0.0", 593, transfer=NDR64)
    assert tower.protocol == "ncacn_http"
    assert tower.transfer_syntax == NDR64
    assert tower.port == 593


def test_with_address_replaces_only_the_ip_floor():
    tower = Tower.tcp(STORE, "0.0.0.0", 1025).with_address("172.16.5.4")
    assert tower.address == "172.16.5.4"
    assert tower.port == 1025
    assert tower.interface == STORE


@pytest.mark.parametrize(
    ("ip", "port"), [("::1", 1), ("host", 1), ("1.2.3.4", 70000), ("1.2.3.4", -1)]
)
def test_bad_construction_arguments(ip, port):
    with pytest.raises(ValueError):
        Tower.tcp(STORE, ip, port)


def test_encode_limits():
    with pytest.raises(ValueError):
        Tower(()).encode()
    with pytest.raises(ValueError):
        Tower((Floor(b"\x01", b""),) * (MAX_FLOORS + 1)).encode()
    with pytest.raises(ValueError):
        Tower((Floor(b"\x01", bytes(MAX_TOWER_LENGTH)),)).encode()
    with pytest.raises(ValueError):
        Floor(b"", b"")
    with pytest.raises(ValueError):
        Floor(b"\x01", bytes(0x10000))


GOOD = Tower.tcp(STORE, "10.1.2.3", 49152).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x05",
        GOOD[:-1],  # truncated address
        GOOD + b"\x00",  # trailing garbage
        b"\x00\x00",  # no floors
        struct.pack("<H", MAX_FLOORS + 1) + b"\x01\x00\x01\x00\x00" * (MAX_FLOORS + 1),
        b"\x01\x00\x00\x00\x00\x00",  # empty LHS
        b"\x01\x00\x01\x00\x07\xff\xff",  # RHS length beyond the end
        struct.pack("<HH", 1, 1) + b"\x07" + struct.pack("<H", 1996) + bytes(1996),  # 2001 B
    ],
)
def test_malformed_towers_raise_ndr_error(data):
    with pytest.raises(NdrError):
        Tower.decode(data)


floors = st.builds(Floor, lhs=st.binary(min_size=1, max_size=24), rhs=st.binary(max_size=24))
towers = st.builds(Tower, st.lists(floors, min_size=1, max_size=MAX_FLOORS).map(tuple))


@settings(max_examples=200, deadline=None)
@given(towers)
def test_round_trip(tower):
    assert Tower.decode(tower.encode()) == tower


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=120),
        st.builds(
            lambda pos, byte: GOOD[:pos] + bytes([byte]) + GOOD[pos + 1 :],
            st.integers(0, len(GOOD) - 1),
            st.integers(0, 255),
        ),
    )
)
def test_fuzz_decode_gives_tower_or_ndr_error(data):
    try:
        tower = Tower.decode(data)
    except NdrError:
        return
    assert tower.encode() == data  # anything accepted re-encodes byte-exact
    # accessors never raise on whatever floors were accepted
    tower.string_binding()
    _ = (tower.interface, tower.transfer_syntax, tower.protocol, tower.port, tower.address)
