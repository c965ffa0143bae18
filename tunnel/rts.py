"""RTS PDU commands of RPC over HTTP v2 ([MS-RPCH] 2.2.3.5, 2.2.3.6, 2.2.4).

Theory of operation
-------------------
An RTS PDU is a connection-oriented DCE/RPC PDU of type 20 ([MS-RPCH] 2.2.3.6.1):
the common header (call_id 0, never fragmented), then ``Flags u16``,
``NumberOfCommands u16`` and that many commands. Each command is a little-endian
``CommandType u32`` followed by a body whose size the type fixes, except Padding
(a count then that many bytes) and ClientAddress (an address type selects 4 or 16
address bytes, then 12 bytes of padding).

This module is a pure codec, pull/push style: :func:`decode_rts` turns one complete
PDU (as cut by :class:`dcerpc.framing.PduFramer`) into an :class:`RtsMessage` of
frozen command dataclasses, and :func:`encode_rts` does the reverse. Decoding raises
only :class:`~dcerpc.errors.DecodeError`: a count beyond :data:`MAX_COMMANDS`, an
unknown command type, a truncated body, Padding over 0xFFFF bytes or trailing bytes
are all refused before anything is allocated.

Below the codec are builders for the PDUs of [MS-RPCH] 2.2.4 that a terminating
proxy and a client exchange (CONN/A1, B1, A3, C2, Ping, Echo, Keep-Alive,
FlowControlAck, FlowControlAckWithDestination) and :func:`classify` that
names a received message by its flags and command sequence, with parsers for the
messages whose fields matter. The builders and parsers of the channel recycling PDUs
(the IN_R2 and OUT_R2 sequences of 3.2.1.5.3) live in :mod:`tunnel.rts_recycling`.

Recycling PDUs with the same layout share a kind: IN_R1/A1 is IN_R2/A1, IN_R1/A5 is
IN_R2/A5, OUT_R1/A2 is OUT_R2/A2 and OUT_R1/A3 is OUT_R2/A3 on the wire (2.2.4.10,
2.2.4.14, 2.2.4.24, 2.2.4.25); a terminating proxy is every proxy at once, so it treats
them as the R2 variants. OUT_R2/A7 is sent with ``RTS_FLAG_OUT_CHANNEL`` (2.2.4.40);
FreeRDP's signature table lists it without the flag, so both are recognised.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from dcerpc.errors import DecodeError
from dcerpc.pdu import HEADER_SIZE, PType, RtsPdu, decode_pdu

#: No PDU of [MS-RPCH] 2.2.4 has more than 8 commands; refuse absurd counts early.
MAX_COMMANDS = 16
#: [MS-RPCH] 2.2.3.5.9: ConformanceCount of Padding is at most 0xFFFF.
MAX_PADDING = 0xFFFF
COOKIE_SIZE = 16
#: Version command value ([MS-RPCH] 2.2.3.5.7).
RTS_VERSION = 1


class RtsFlags(enum.IntFlag):
    """``Flags`` of an RTS PDU ([MS-RPCH] 2.2.3.6.1)."""

    NONE = 0
    PING = 0x01
    OTHER_CMD = 0x02
    RECYCLE_CHANNEL = 0x04
    IN_CHANNEL = 0x08
    OUT_CHANNEL = 0x10
    EOF = 0x20
    ECHO = 0x40


class CommandType(enum.IntEnum):
    """``CommandType`` values ([MS-RPCH] 2.2.3.5)."""

    RECEIVE_WINDOW_SIZE = 0
    FLOW_CONTROL_ACK = 1
    CONNECTION_TIMEOUT = 2
    COOKIE = 3
    CHANNEL_LIFETIME = 4
    CLIENT_KEEPALIVE = 5
    VERSION = 6
    EMPTY = 7
    PADDING = 8
    NEGATIVE_ANCE = 9
    ANCE = 10
    CLIENT_ADDRESS = 11
    ASSOCIATION_GROUP_ID = 12
    DESTINATION = 13
    PING_TRAFFIC_SENT_NOTIFY = 14


class ForwardDestination(enum.IntEnum):
    """Forward destinations ([MS-RPCH] 2.2.3.3)."""

    CLIENT = 0
    IN_PROXY = 1
    SERVER = 2
    OUT_PROXY = 3


# -- commands ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceiveWindowSize:
    value: int


@dataclass(frozen=True, slots=True)
class FlowControlAck:
    """[MS-RPCH] 2.2.3.4: what the receiver has consumed and the window it still offers."""

    bytes_received: int
    available_window: int
    channel_cookie: bytes


@dataclass(frozen=True, slots=True)
class ConnectionTimeout:
    value: int


@dataclass(frozen=True, slots=True)
class Cookie:
    cookie: bytes


@dataclass(frozen=True, slots=True)
class ChannelLifetime:
    value: int


@dataclass(frozen=True, slots=True)
class ClientKeepalive:
    value: int


@dataclass(frozen=True, slots=True)
class Version:
    value: int = RTS_VERSION


@dataclass(frozen=True, slots=True)
class Empty:
    pass


@dataclass(frozen=True, slots=True)
class Padding:
    """Padding: ``length`` bytes (sent as zeros; their value is ignored on receipt)."""

    length: int


@dataclass(frozen=True, slots=True)
class NegativeAnce:
    pass


@dataclass(frozen=True, slots=True)
class Ance:
    pass


@dataclass(frozen=True, slots=True)
class ClientAddress:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class AssociationGroupId:
    cookie: bytes


@dataclass(frozen=True, slots=True)
class Destination:
    value: int


@dataclass(frozen=True, slots=True)
class PingTrafficSentNotify:
    value: int


Command = (
    ReceiveWindowSize
    | FlowControlAck
    | ConnectionTimeout
    | Cookie
    | ChannelLifetime
    | ClientKeepalive
    | Version
    | Empty
    | Padding
    | NegativeAnce
    | Ance
    | ClientAddress
    | AssociationGroupId
    | Destination
    | PingTrafficSentNotify
)

_U32_COMMANDS: dict[int, type[Command]] = {
    CommandType.RECEIVE_WINDOW_SIZE: ReceiveWindowSize,
    CommandType.CONNECTION_TIMEOUT: ConnectionTimeout,
    CommandType.CHANNEL_LIFETIME: ChannelLifetime,
    CommandType.CLIENT_KEEPALIVE: ClientKeepalive,
    CommandType.VERSION: Version,
    CommandType.DESTINATION: Destination,
    CommandType.PING_TRAFFIC_SENT_NOTIFY: PingTrafficSentNotify,
}
_TYPE_OF: dict[type[Command], int] = {cls: code for code, cls in _U32_COMMANDS.items()}
_TYPE_OF.update(
    {
        FlowControlAck: CommandType.FLOW_CONTROL_ACK,
        Cookie: CommandType.COOKIE,
        Empty: CommandType.EMPTY,
        Padding: CommandType.PADDING,
        NegativeAnce: CommandType.NEGATIVE_ANCE,
        Ance: CommandType.ANCE,
        ClientAddress: CommandType.CLIENT_ADDRESS,
        AssociationGroupId: CommandType.ASSOCIATION_GROUP_ID,
    }
)
_U32 = struct.Struct("<I")
_ACK = struct.Struct("<II16s")


def _check_u32(value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{value} does not fit in a u32")


def _check_cookie(cookie: bytes) -> None:
    if len(cookie) != COOKIE_SIZE:
        raise ValueError("a cookie is 16 bytes")


def push_command(buf: bytearray, cmd: Command) -> None:
    """Append one command's wire bytes to ``buf``.

    Raises:
        ValueError: a field is out of range (a bug on our side).
    """
    code = _TYPE_OF[type(cmd)]
    buf += _U32.pack(code)
    if isinstance(
        cmd,
        ReceiveWindowSize
        | ConnectionTimeout
        | ChannelLifetime
        | ClientKeepalive
        | Version
        | Destination
        | PingTrafficSentNotify,
    ):
        _check_u32(cmd.value)
        buf += _U32.pack(cmd.value)
    elif isinstance(cmd, FlowControlAck):
        _check_u32(cmd.bytes_received)
        _check_u32(cmd.available_window)
        _check_cookie(cmd.channel_cookie)
        buf += _ACK.pack(cmd.bytes_received, cmd.available_window, cmd.channel_cookie)
    elif isinstance(cmd, Cookie | AssociationGroupId):
        _check_cookie(cmd.cookie)
        buf += cmd.cookie
    elif isinstance(cmd, Padding):
        if not 0 <= cmd.length <= MAX_PADDING:
            raise ValueError("padding is at most 0xFFFF bytes")
        buf += _U32.pack(cmd.length) + b"\x00" * cmd.length
    elif isinstance(cmd, ClientAddress):
        if cmd.address.version == 4:
            # [MS-RPCH] 2.2.3.2: the address bytes in network order (as Wireshark shows).
            buf += _U32.pack(0) + cmd.address.packed
        else:
            buf += _U32.pack(1) + cmd.address.packed
        buf += b"\x00" * 12
    # Empty, NegativeAnce and Ance have no body.


def pull_command(data: bytes, pos: int, end: int) -> tuple[Command, int]:
    """Decode the command at ``data[pos:end]``; returns it and the position after it.

    Raises:
        DecodeError: unknown type, truncated body or out-of-range padding.
    """

    def need(n: int) -> None:
        if pos + n > end:
            raise DecodeError("RTS command truncated")

    need(4)
    (code,) = _U32.unpack_from(data, pos)
    pos += 4
    u32_cls = _U32_COMMANDS.get(code)
    if u32_cls is not None:
        need(4)
        (value,) = _U32.unpack_from(data, pos)
        return u32_cls(value), pos + 4  # type: ignore[call-arg]
    if code == CommandType.FLOW_CONTROL_ACK:
        need(_ACK.size)
        received, window, cookie = _ACK.unpack_from(data, pos)
        return FlowControlAck(received, window, cookie), pos + _ACK.size
    if code == CommandType.COOKIE:
        need(COOKIE_SIZE)
        return Cookie(data[pos : pos + COOKIE_SIZE]), pos + COOKIE_SIZE
    if code == CommandType.ASSOCIATION_GROUP_ID:
        need(COOKIE_SIZE)
        return AssociationGroupId(data[pos : pos + COOKIE_SIZE]), pos + COOKIE_SIZE
    if code == CommandType.EMPTY:
        return Empty(), pos
    if code == CommandType.NEGATIVE_ANCE:
        return NegativeAnce(), pos
    if code == CommandType.ANCE:
        return Ance(), pos
    if code == CommandType.PADDING:
        need(4)
        (count,) = _U32.unpack_from(data, pos)
        if count > MAX_PADDING:
            raise DecodeError(f"RTS padding of {count} bytes exceeds 0xFFFF")
        need(4 + count)
        return Padding(count), pos + 4 + count
    if code == CommandType.CLIENT_ADDRESS:
        need(4)
        (kind,) = _U32.unpack_from(data, pos)
        if kind not in (0, 1):
            raise DecodeError(f"unknown client address type {kind}")
        size = 4 if kind == 0 else 16
        need(4 + size + 12)
        raw = data[pos + 4 : pos + 4 + size]
        address = ipaddress.IPv4Address(raw) if kind == 0 else ipaddress.IPv6Address(raw)
        return ClientAddress(address), pos + 4 + size + 12
    raise DecodeError(f"unknown RTS command type {code}")


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtsMessage:
    """One decoded RTS PDU: its flags and commands."""

    flags: int
    commands: tuple[Command, ...] = ()

    def command_types(self) -> tuple[type[Command], ...]:
        return tuple(type(c) for c in self.commands)


def encode_rts(message: RtsMessage) -> bytes:
    """The wire bytes of one RTS PDU (call_id 0, whole fragment, little-endian)."""
    if len(message.commands) > MAX_COMMANDS:
        raise ValueError("too many RTS commands")
    body = bytearray()
    for cmd in message.commands:
        push_command(body, cmd)
    return RtsPdu(
        rts_flags=message.flags, number_of_commands=len(message.commands), commands=bytes(body)
    ).encode()


def is_rts(pdu: bytes) -> bool:
    """Whether a framed PDU is an RTS PDU (ptype 20); it need not be well formed."""
    return len(pdu) >= HEADER_SIZE and pdu[2] == PType.RTS


def decode_rts(pdu: bytes) -> RtsMessage:
    """Decode one complete RTS PDU.

    Raises:
        DecodeError: not a well-formed RTS PDU, or it breaks a limit.
    """
    decoded = decode_pdu(pdu)
    if not isinstance(decoded, RtsPdu):
        raise DecodeError("not an RTS PDU")
    if decoded.auth_verifier:
        raise DecodeError("RTS PDUs carry no authentication")
    if decoded.number_of_commands > MAX_COMMANDS:
        raise DecodeError(f"{decoded.number_of_commands} RTS commands exceed {MAX_COMMANDS}")
    data = decoded.commands
    pos, end = 0, len(data)
    commands = []
    for _ in range(decoded.number_of_commands):
        cmd, pos = pull_command(data, pos, end)
        commands.append(cmd)
    if pos != end:
        raise DecodeError("trailing bytes after the RTS commands")
    return RtsMessage(decoded.rts_flags, tuple(commands))


# -- builders ([MS-RPCH] 2.2.4) -----------------------------------------------------------


def conn_a1(vc_cookie: bytes, out_cookie: bytes, receive_window: int) -> bytes:
    """CONN/A1 (2.2.4.2): the client opens the OUT channel (76 bytes)."""
    return encode_rts(
        RtsMessage(
            RtsFlags.NONE,
            (Version(), Cookie(vc_cookie), Cookie(out_cookie), ReceiveWindowSize(receive_window)),
        )
    )


def conn_b1(
    vc_cookie: bytes,
    in_cookie: bytes,
    assoc_group: bytes,
    *,
    lifetime: int = 1073741824,
    keepalive_ms: int = 300000,
) -> bytes:
    """CONN/B1 (2.2.4.5): the client opens the IN channel (104 bytes)."""
    return encode_rts(
        RtsMessage(
            RtsFlags.NONE,
            (
                Version(),
                Cookie(vc_cookie),
                Cookie(in_cookie),
                ChannelLifetime(lifetime),
                ClientKeepalive(keepalive_ms),
                AssociationGroupId(assoc_group),
            ),
        )
    )


def conn_a3(connection_timeout_ms: int) -> bytes:
    """CONN/A3 (2.2.4.4): the OUT proxy answers A1 (28 bytes)."""
    return encode_rts(RtsMessage(RtsFlags.NONE, (ConnectionTimeout(connection_timeout_ms),)))


def conn_c2(in_window: int, connection_timeout_ms: int) -> bytes:
    """CONN/C2 (2.2.4.9): the VC is established; carries the IN window (44 bytes)."""
    return encode_rts(
        RtsMessage(
            RtsFlags.NONE,
            (Version(), ReceiveWindowSize(in_window), ConnectionTimeout(connection_timeout_ms)),
        )
    )


def ping() -> bytes:
    """Ping (2.2.4.49): keep an idle channel alive (20 bytes)."""
    return encode_rts(RtsMessage(RtsFlags.PING))


def echo() -> bytes:
    """Echo (2.2.4.47): the body of an echo request and of its answer (20 bytes)."""
    return encode_rts(RtsMessage(RtsFlags.ECHO))


def keep_alive(interval_ms: int) -> bytes:
    """Keep-Alive (2.2.4.45): the client changes its keep-alive interval (28 bytes)."""
    return encode_rts(RtsMessage(RtsFlags.OTHER_CMD, (ClientKeepalive(interval_ms),)))


def flow_control_ack(bytes_received: int, available_window: int, cookie: bytes) -> bytes:
    """FlowControlAck (2.2.4.50): sent on the hop the data came from (48 bytes)."""
    return encode_rts(
        RtsMessage(RtsFlags.OTHER_CMD, (FlowControlAck(bytes_received, available_window, cookie),))
    )


def flow_control_ack_to(
    destination: ForwardDestination, bytes_received: int, available_window: int, cookie: bytes
) -> bytes:
    """FlowControlAckWithDestination (2.2.4.51) (56 bytes)."""
    return encode_rts(
        RtsMessage(
            RtsFlags.OTHER_CMD,
            (
                Destination(destination),
                FlowControlAck(bytes_received, available_window, cookie),
            ),
        )
    )


# -- recognising messages ---------------------------------------------------------------


class Kind(enum.Enum):
    """What a received RTS message is, for the messages a terminating proxy handles."""

    CONN_A1 = "CONN/A1"
    CONN_B1 = "CONN/B1"
    CONN_A3 = "CONN/A3"
    CONN_C2 = "CONN/C2"
    PING = "Ping"
    ECHO = "Echo"
    KEEP_ALIVE = "Keep-Alive"
    FLOW_CONTROL_ACK = "FlowControlAck"
    IN_R2_A1 = "IN_R2/A1"  # also IN_R1/A1
    IN_R1_A4 = "IN_R1/A4"
    IN_R2_A4 = "IN_R2/A4"
    IN_R2_A5 = "IN_R2/A5"  # also IN_R1/A5
    OUT_R2_A2 = "OUT_R2/A2"  # also OUT_R1/A2
    OUT_R2_A3 = "OUT_R2/A3"  # also OUT_R1/A3
    OUT_R2_A6 = "OUT_R2/A6"
    OUT_R2_A7 = "OUT_R2/A7"
    OUT_R2_B3 = "OUT_R2/B3"
    OUT_R2_C1 = "OUT_R2/C1"
    RECYCLE = "recycle"  # any other PDU with RTS_FLAG_RECYCLE_CHANNEL
    OTHER = "other"


_SHAPES: dict[tuple[int, tuple[type[Command], ...]], Kind] = {
    (RtsFlags.NONE, (Version, Cookie, Cookie, ReceiveWindowSize)): Kind.CONN_A1,
    (
        RtsFlags.NONE,
        (Version, Cookie, Cookie, ChannelLifetime, ClientKeepalive, AssociationGroupId),
    ): Kind.CONN_B1,
    (RtsFlags.NONE, (ConnectionTimeout,)): Kind.CONN_A3,
    (RtsFlags.NONE, (Version, ReceiveWindowSize, ConnectionTimeout)): Kind.CONN_C2,
    (RtsFlags.OTHER_CMD, (ClientKeepalive,)): Kind.KEEP_ALIVE,
    (RtsFlags.OTHER_CMD, (FlowControlAck,)): Kind.FLOW_CONTROL_ACK,
    (RtsFlags.OTHER_CMD, (Destination, FlowControlAck)): Kind.FLOW_CONTROL_ACK,
    (RtsFlags.RECYCLE_CHANNEL, (Version, Cookie, Cookie, Cookie)): Kind.IN_R2_A1,
    (
        RtsFlags.NONE,
        (Destination, Version, ReceiveWindowSize, ConnectionTimeout),
    ): Kind.IN_R1_A4,
    (RtsFlags.NONE, (Destination,)): Kind.IN_R2_A4,
    (RtsFlags.NONE, (Cookie,)): Kind.IN_R2_A5,
    (RtsFlags.RECYCLE_CHANNEL, (Destination,)): Kind.OUT_R2_A2,
    (
        RtsFlags.RECYCLE_CHANNEL,
        (Version, Cookie, Cookie, Cookie, ReceiveWindowSize),
    ): Kind.OUT_R2_A3,
    (RtsFlags.NONE, (Destination, Ance)): Kind.OUT_R2_A6,
    (RtsFlags.OUT_CHANNEL, (Destination, Cookie, Version)): Kind.OUT_R2_A7,
    (RtsFlags.NONE, (Destination, Cookie, Version)): Kind.OUT_R2_A7,
    (RtsFlags.EOF, (Ance,)): Kind.OUT_R2_B3,
    (RtsFlags.PING, (Empty,)): Kind.OUT_R2_C1,
}


def classify(message: RtsMessage) -> Kind:
    """Name a message by its flags and command sequence ([MS-RPCH] 2.2.4)."""
    kind = _SHAPES.get((message.flags, message.command_types()))
    if kind is not None:
        return kind
    if message.flags & RtsFlags.RECYCLE_CHANNEL:
        return Kind.RECYCLE
    if message.flags & RtsFlags.PING:
        return Kind.PING
    if message.flags & RtsFlags.ECHO:
        return Kind.ECHO
    return Kind.OTHER


@dataclass(frozen=True, slots=True)
class ConnA1:
    vc_cookie: bytes
    out_cookie: bytes
    receive_window: int


@dataclass(frozen=True, slots=True)
class ConnB1:
    vc_cookie: bytes
    in_cookie: bytes
    lifetime: int
    #: As applied: see :func:`client_keepalive_ms`.
    keepalive_ms: int
    assoc_group: bytes


#: [MS-RPCH] 2.2.3.5.6: a ClientKeepalive is 0 (the default interval) or at least this.
MIN_CLIENT_KEEPALIVE_MS = 60000


def client_keepalive_ms(value: int) -> int:
    """A ClientKeepalive (CONN/B1, Keep-Alive) as we apply it: 0 (the default) as is,
    1..59999 raised to :data:`MIN_CLIENT_KEEPALIVE_MS`.

    The spec bounds what the client sends and prescribes no receiver check. The value
    only sets how often we ping the OUT channel (half of it), so a value below the floor
    is raised rather than refused: refusing would end the VC, keeping it would have us
    ping every half millisecond.
    """
    return value if value == 0 else max(value, MIN_CLIENT_KEEPALIVE_MS)


def parse_conn_a1(message: RtsMessage) -> ConnA1:
    """The fields of a CONN/A1 message.

    Raises:
        DecodeError: the message is not a CONN/A1 or its window is out of range.
    """
    if classify(message) is not Kind.CONN_A1:
        raise DecodeError("expected CONN/A1")
    version, vc, out, window = message.commands
    assert isinstance(version, Version) and isinstance(vc, Cookie)
    assert isinstance(out, Cookie) and isinstance(window, ReceiveWindowSize)
    check_rts_version(version)
    check_receive_window(window)
    return ConnA1(vc.cookie, out.cookie, window.value)


def parse_conn_b1(message: RtsMessage) -> ConnB1:
    """The fields of a CONN/B1 message (its ClientKeepalive as :func:`client_keepalive_ms`
    applies it).

    Raises:
        DecodeError: the message is not a CONN/B1.
    """
    if classify(message) is not Kind.CONN_B1:
        raise DecodeError("expected CONN/B1")
    version, vc, cookie, lifetime, keepalive, group = message.commands
    assert isinstance(version, Version) and isinstance(vc, Cookie)
    assert isinstance(cookie, Cookie) and isinstance(lifetime, ChannelLifetime)
    assert isinstance(keepalive, ClientKeepalive) and isinstance(group, AssociationGroupId)
    check_rts_version(version)
    return ConnB1(
        vc.cookie,
        cookie.cookie,
        lifetime.value,
        client_keepalive_ms(keepalive.value),
        group.cookie,
    )


def check_rts_version(version: Version) -> None:
    """Refuse a Version command other than :data:`RTS_VERSION` ([MS-RPCH] 2.2.3.5.7).

    Raises:
        DecodeError: another RTS version.
    """
    if version.value != RTS_VERSION:
        raise DecodeError(f"unsupported RTS version {version.value}")


def check_receive_window(window: ReceiveWindowSize) -> None:
    """Refuse a ReceiveWindowSize out of range ([MS-RPCH] 2.2.3.5.1).

    Raises:
        DecodeError: the window is below 8 KiB or above 1 GiB.
    """
    # [MS-RPCH] 2.2.3.5.1: 8 KiB..256 KiB (we accept up to 1 GiB: only a bound matters).
    if not 8192 <= window.value <= 1 << 30:
        raise DecodeError(f"receive window {window.value} out of range")


def find_window(message: RtsMessage) -> int | None:
    """The ReceiveWindowSize of a message (CONN/C2, IN_R1/A4), if it has one."""
    for cmd in message.commands:
        if isinstance(cmd, ReceiveWindowSize):
            return cmd.value
    return None


def find_ack(message: RtsMessage) -> FlowControlAck | None:
    """The FlowControlAck command of a flow-control message, if it has one."""
    for cmd in message.commands:
        if isinstance(cmd, FlowControlAck):
            return cmd
    return None
