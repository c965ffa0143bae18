"""Channel recycling PDUs of RPC over HTTP v2 ([MS-RPCH] 2.2.4.18-2.2.4.22, 2.2.4.34-2.2.4.46).

Builders for the RTS PDUs of the IN_R2 and OUT_R2 recycling sequences (3.2.1.5.3) and
parsers for the received ones whose fields matter: IN_R2/A1, OUT_R2/A3 and the successor
cookie of IN_R2/A5 and OUT_R2/A7. The codec, :class:`~tunnel.rts.Kind` and
:func:`~tunnel.rts.classify` live in :mod:`tunnel.rts`; this module only builds on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcerpc.errors import DecodeError
from tunnel.rts import (
    Ance,
    Cookie,
    Destination,
    Empty,
    ForwardDestination,
    Kind,
    ReceiveWindowSize,
    RtsFlags,
    RtsMessage,
    Version,
    check_receive_window,
    check_rts_version,
    classify,
    encode_rts,
)

# -- builders ([MS-RPCH] 2.2.4.18-2.2.4.22, 2.2.4.34-2.2.4.46) ----------------------------


def in_r2_a1(vc_cookie: bytes, predecessor: bytes, successor: bytes) -> bytes:
    """IN_R2/A1 (2.2.4.18; IN_R1/A1 is identical): the first PDU of a successor IN
    channel, naming the VC, the IN channel it replaces and its own cookie (88 bytes)."""
    return encode_rts(
        RtsMessage(
            RtsFlags.RECYCLE_CHANNEL,
            (Version(), Cookie(vc_cookie), Cookie(predecessor), Cookie(successor)),
        )
    )


def in_r2_a4() -> bytes:
    """IN_R2/A4 (2.2.4.21): on OUT, the successor IN channel is accepted (28 bytes)."""
    return encode_rts(RtsMessage(RtsFlags.NONE, (Destination(ForwardDestination.CLIENT),)))


def in_r2_a5(successor: bytes) -> bytes:
    """IN_R2/A5 (2.2.4.22; IN_R1/A5 is identical): the last PDU of the predecessor IN
    channel; everything after it comes on the successor (40 bytes)."""
    return encode_rts(RtsMessage(RtsFlags.NONE, (Cookie(successor),)))


def out_r2_a2() -> bytes:
    """OUT_R2/A2 (2.2.4.35; OUT_R1/A2 is identical): the proxy asks the client for a
    successor OUT channel (28 bytes)."""
    return encode_rts(
        RtsMessage(RtsFlags.RECYCLE_CHANNEL, (Destination(ForwardDestination.CLIENT),))
    )


def out_r2_a3(vc_cookie: bytes, predecessor: bytes, successor: bytes, receive_window: int) -> bytes:
    """OUT_R2/A3 (2.2.4.36; OUT_R1/A3 is identical): the first PDU of a successor OUT
    channel, with the client's receive window for it (96 bytes)."""
    return encode_rts(
        RtsMessage(
            RtsFlags.RECYCLE_CHANNEL,
            (
                Version(),
                Cookie(vc_cookie),
                Cookie(predecessor),
                Cookie(successor),
                ReceiveWindowSize(receive_window),
            ),
        )
    )


def out_r2_a6() -> bytes:
    """OUT_R2/A6 (2.2.4.39): on the predecessor OUT, the successor is attached (32 bytes)."""
    return encode_rts(RtsMessage(RtsFlags.NONE, (Destination(ForwardDestination.CLIENT), Ance())))


def out_r2_a7(successor: bytes) -> bytes:
    """OUT_R2/A7 (2.2.4.40): on IN, the client confirms the successor OUT channel
    (56 bytes)."""
    return encode_rts(
        RtsMessage(
            RtsFlags.OUT_CHANNEL,
            (Destination(ForwardDestination.SERVER), Cookie(successor), Version()),
        )
    )


def out_r2_b3() -> bytes:
    """OUT_R2/B3 (2.2.4.44): the last PDU of the predecessor OUT channel (24 bytes)."""
    return encode_rts(RtsMessage(RtsFlags.EOF, (Ance(),)))


def out_r2_c1() -> bytes:
    """OUT_R2/C1 (2.2.4.45): the last PDU of the successor OUT channel's request body
    (24 bytes; with OUT_R2/A3 it fills the 120-byte Content-Length)."""
    return encode_rts(RtsMessage(RtsFlags.PING, (Empty(),)))


# -- parsers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InRecycleA1:
    """The fields of IN_R2/A1 (or IN_R1/A1)."""

    vc_cookie: bytes
    predecessor: bytes
    successor: bytes


@dataclass(frozen=True, slots=True)
class OutRecycleA3:
    """The fields of OUT_R2/A3 (or OUT_R1/A3)."""

    vc_cookie: bytes
    predecessor: bytes
    successor: bytes
    receive_window: int


def parse_in_r2_a1(message: RtsMessage) -> InRecycleA1:
    """The fields of an IN_R2/A1 (or IN_R1/A1) message.

    Raises:
        DecodeError: the message is something else, or another RTS version.
    """
    if classify(message) is not Kind.IN_R2_A1:
        raise DecodeError("expected IN_R2/A1")
    version, vc, predecessor, successor = message.commands
    assert isinstance(version, Version) and isinstance(vc, Cookie)
    assert isinstance(predecessor, Cookie) and isinstance(successor, Cookie)
    check_rts_version(version)
    return InRecycleA1(vc.cookie, predecessor.cookie, successor.cookie)


def parse_out_r2_a3(message: RtsMessage) -> OutRecycleA3:
    """The fields of an OUT_R2/A3 (or OUT_R1/A3) message.

    Raises:
        DecodeError: the message is something else, another RTS version or its window
            is out of range.
    """
    if classify(message) is not Kind.OUT_R2_A3:
        raise DecodeError("expected OUT_R2/A3")
    version, vc, predecessor, successor, window = message.commands
    assert isinstance(version, Version) and isinstance(vc, Cookie)
    assert isinstance(predecessor, Cookie) and isinstance(successor, Cookie)
    assert isinstance(window, ReceiveWindowSize)
    check_rts_version(version)
    check_receive_window(window)
    return OutRecycleA3(vc.cookie, predecessor.cookie, successor.cookie, window.value)


def successor_cookie(message: RtsMessage) -> bytes:
    """The successor channel cookie of an IN_R2/A5 or OUT_R2/A7 message.

    Raises:
        DecodeError: the message is neither.
    """
    if classify(message) not in (Kind.IN_R2_A5, Kind.OUT_R2_A7):
        raise DecodeError("expected IN_R2/A5 or OUT_R2/A7")
    for cmd in message.commands:
        if isinstance(cmd, Cookie):
            return cmd.cookie
    raise AssertionError("unreachable: both shapes carry a cookie")
