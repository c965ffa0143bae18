"""The RTS codec ([MS-RPCH] 2.2.3.5/2.2.3.6): sizes from the spec, byte-exact builders,
round trips of every command, impacket's bytes, and fuzzing: garbage gives values or
a DecodeError, nothing else."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import rpch

from dcerpc.errors import DecodeError
from tunnel import rts

COOKIE_A, COOKIE_B, COOKIE_C = b"A" * 16, b"B" * 16, b"C" * 16


@pytest.mark.parametrize(
    ("pdu", "size", "kind"),
    [
        (rts.conn_a1(COOKIE_A, COOKIE_B, 262144), 76, rts.Kind.CONN_A1),
        (rts.conn_b1(COOKIE_A, COOKIE_B, COOKIE_C), 104, rts.Kind.CONN_B1),
        (rts.conn_a3(120000), 28, rts.Kind.CONN_A3),
        (rts.conn_c2(65536, 120000), 44, rts.Kind.CONN_C2),
        (rts.ping(), 20, rts.Kind.PING),
        (rts.echo(), 20, rts.Kind.ECHO),
        (rts.keep_alive(300000), 28, rts.Kind.KEEP_ALIVE),
        (rts.flow_control_ack(1, 2, COOKIE_A), 48, rts.Kind.FLOW_CONTROL_ACK),
        (
            rts.flow_control_ack_to(rts.ForwardDestination.OUT_PROXY, 1, 2, COOKIE_A),
            56,
            rts.Kind.FLOW_CONTROL_ACK,
        ),
    ],
)
def test_builders_have_the_sizes_of_the_spec(pdu: bytes, size: int, kind: rts.Kind) -> None:
    assert len(pdu) == size
    assert struct.unpack_from("<H", pdu, 8)[0] == size  # frag_length
    assert pdu[2] == 20 and pdu[3] == 3  # RTS, first+last fragment
    assert rts.classify(rts.decode_rts(pdu)) is kind


def test_impacket_builds_the_same_conn_a1_and_b1() -> None:
    # impacket's hCONN_A1/hCONN_B1 are an independent encoder of the same PDUs.
    assert rpch.hCONN_A1(COOKIE_A, COOKIE_B, 262144) == rts.conn_a1(COOKIE_A, COOKIE_B, 262144)
    assert rpch.hCONN_B1(COOKIE_A, COOKIE_B, COOKIE_C) == rts.conn_b1(COOKIE_A, COOKIE_B, COOKIE_C)
    ack = rpch.hFlowControlAckWithDestination(rpch.FDOutProxy, 1000, 262144, COOKIE_B)
    assert ack == rts.flow_control_ack_to(rts.ForwardDestination.OUT_PROXY, 1000, 262144, COOKIE_B)


def test_parsers_return_the_fields() -> None:
    a1 = rts.parse_conn_a1(rts.decode_rts(rts.conn_a1(COOKIE_A, COOKIE_B, 65536)))
    assert (a1.vc_cookie, a1.out_cookie, a1.receive_window) == (COOKIE_A, COOKIE_B, 65536)
    b1 = rts.parse_conn_b1(rts.decode_rts(rts.conn_b1(COOKIE_A, COOKIE_B, COOKIE_C)))
    assert (b1.vc_cookie, b1.in_cookie, b1.assoc_group) == (COOKIE_A, COOKIE_B, COOKIE_C)
    assert (b1.lifetime, b1.keepalive_ms) == (1073741824, 300000)
    with pytest.raises(DecodeError):
        rts.parse_conn_a1(rts.decode_rts(rts.ping()))
    with pytest.raises(DecodeError):
        rts.parse_conn_b1(rts.decode_rts(rts.conn_a1(COOKIE_A, COOKIE_B, 65536)))
    with pytest.raises(DecodeError, match="window"):
        rts.parse_conn_a1(rts.decode_rts(rts.conn_a1(COOKIE_A, COOKIE_B, 10)))


ALL_COMMANDS: list[rts.Command] = [
    rts.ReceiveWindowSize(65536),
    rts.FlowControlAck(1, 2, COOKIE_A),
    rts.ConnectionTimeout(120000),
    rts.Cookie(COOKIE_B),
    rts.ChannelLifetime(1 << 30),
    rts.ClientKeepalive(0),
    rts.Version(1),
    rts.Empty(),
    rts.Padding(7),
    rts.NegativeAnce(),
    rts.Ance(),
    rts.ClientAddress(ipaddress.IPv4Address("192.0.2.1")),
    rts.ClientAddress(ipaddress.IPv6Address("2001:db8::1")),
    rts.AssociationGroupId(COOKIE_C),
    rts.Destination(2),
    rts.PingTrafficSentNotify(1234),
]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(command: rts.Command) -> None:
    message = rts.RtsMessage(rts.RtsFlags.OTHER_CMD, (command,))
    wire = rts.encode_rts(message)
    assert rts.decode_rts(wire) == message
    body = bytearray()
    rts.push_command(body, command)
    assert rts.pull_command(bytes(body), 0, len(body)) == (command, len(body))


def test_client_address_sizes() -> None:
    v4, v6 = bytearray(), bytearray()
    rts.push_command(v4, rts.ClientAddress(ipaddress.IPv4Address("192.0.2.1")))
    rts.push_command(v6, rts.ClientAddress(ipaddress.IPv6Address("::1")))
    assert (len(v4), len(v6)) == (24, 36)


def _raw_rts(n_commands: int, body: bytes) -> bytes:
    size = 20 + len(body)
    header = struct.pack("<BBBB4sHHI", 5, 0, 20, 3, b"\x10\x00\x00\x00", size, 0, 0)
    return header + struct.pack("<HH", 0, n_commands) + body


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (_raw_rts(17, b""), "exceed"),
        (_raw_rts(1, struct.pack("<II", 8, 0x10000)), "padding"),
        (_raw_rts(1, struct.pack("<I", 99)), "unknown RTS command"),
        (_raw_rts(1, struct.pack("<I", 3) + b"short"), "truncated"),
        (_raw_rts(1, struct.pack("<II", 11, 7) + b"\x00" * 16), "address type"),
        (_raw_rts(0, b"junk"), "trailing"),
        (_raw_rts(2, struct.pack("<II", 6, 1)), "truncated"),
    ],
)
def test_malformed_rts_is_a_decode_error(wire: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        rts.decode_rts(wire)


def test_encoder_refuses_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        rts.encode_rts(rts.RtsMessage(0, (rts.Padding(0x10000),)))
    with pytest.raises(ValueError):
        rts.encode_rts(rts.RtsMessage(0, (rts.Cookie(b"short"),)))
    with pytest.raises(ValueError):
        rts.encode_rts(rts.RtsMessage(0, (rts.Version(-1),)))
    with pytest.raises(ValueError):
        rts.encode_rts(rts.RtsMessage(0, (rts.Empty(),) * 17))


def _fuzz(data: bytes) -> None:
    try:
        message = rts.decode_rts(data)
    except DecodeError:
        return
    rts.classify(message)
    assert rts.decode_rts(rts.encode_rts(message)).commands == message.commands


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _fuzz(data)


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(
        [rts.conn_a1(COOKIE_A, COOKIE_B, 65536), rts.conn_b1(COOKIE_A, COOKIE_B, COOKIE_C)]
    ),
    st.lists(st.tuples(st.integers(0, 103), st.integers(0, 255)), max_size=6),
    st.integers(0, 8),
)
def test_fuzz_mutated_pdus(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    _fuzz(bytes(data[: len(data) - cut]))


@pytest.mark.parametrize(
    ("value", "applied"),
    [
        (0, 0),
        (1, 60000),
        (59999, 60000),
        (60000, 60000),
        (300000, 300000),
        (0xFFFFFFFF, 0xFFFFFFFF),
    ],
)
def test_client_keepalive_below_the_floor_is_raised(value: int, applied: int) -> None:
    # [MS-RPCH] 2.2.3.5.6: 0 (the default) or at least 60000 ms; 1 would have us ping
    # every half millisecond.
    assert rts.client_keepalive_ms(value) == applied
    b1 = rts.parse_conn_b1(
        rts.decode_rts(rts.conn_b1(COOKIE_A, COOKIE_B, COOKIE_C, keepalive_ms=value))
    )
    assert b1.keepalive_ms == applied
