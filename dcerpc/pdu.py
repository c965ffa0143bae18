"""Codec for connection-oriented DCE/RPC PDUs ([C706] 12.6, [MS-RPCE] 2.2.2).

Theory of operation
-------------------
Every CO PDU starts with the same 16-byte common header::

    rpc_vers u8 (5) | rpc_vers_minor u8 | ptype u8 | pfc_flags u8 | drep[4]
    frag_length u16 | auth_length u16 | call_id u32

``drep[0] & 0x10`` selects the byte order of every integer that follows, header
included; we always *send* little-endian and accept both on input. ``frag_length``
covers the whole PDU; when ``auth_length`` is non-zero the PDU ends with an
8-byte ``sec_trailer`` and the auth value, which we keep opaque (the runtime offers
no authentication services and refuses binds that ask for one).

:func:`parse_header` validates the fixed part so a driver can frame a byte stream
without trusting lengths; :func:`decode_pdu` turns one complete PDU into a frozen
dataclass; each dataclass's ``encode()`` produces the wire bytes. Decoding raises
only :class:`~dcerpc.errors.DecodeError`; a body that is shorter than its declared
fields, or a count that points past the PDU, never allocates more than the PDU.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar, TypedDict

from dcerpc.errors import DecodeError
from dcerpc.syntax import NULL_SYNTAX, SYNTAX_ID_SIZE, SyntaxId

RPC_VERSION = 5
HEADER_SIZE = 16
#: [C706] 12.6.3.1 MustRecvFragSize: every implementation accepts fragments this large.
MIN_FRAGMENT_SIZE = 1432
#: frag_length is a u16.
MAX_FRAGMENT_SIZE = 0xFFFF
DREP_LITTLE_ENDIAN = b"\x10\x00\x00\x00"
SEC_TRAILER_SIZE = 8
REQUEST_HEADER_SIZE = HEADER_SIZE + 8
RESPONSE_HEADER_SIZE = HEADER_SIZE + 8


class PType(enum.IntEnum):
    """PDU types ([C706] 12.6.4, [MS-RPCH] 2.2.3.6 for RTS)."""

    REQUEST = 0
    PING = 1
    RESPONSE = 2
    FAULT = 3
    WORKING = 4
    NOCALL = 5
    REJECT = 6
    ACK = 7
    CL_CANCEL = 8
    FACK = 9
    CANCEL_ACK = 10
    BIND = 11
    BIND_ACK = 12
    BIND_NAK = 13
    ALTER_CONTEXT = 14
    ALTER_CONTEXT_RESP = 15
    AUTH3 = 16
    SHUTDOWN = 17
    CO_CANCEL = 18
    ORPHANED = 19
    RTS = 20


class PfcFlags(enum.IntFlag):
    """``pfc_flags`` bits ([C706] 12.6.3.1, [MS-RPCE] 2.2.2.3)."""

    NONE = 0
    FIRST_FRAG = 0x01
    LAST_FRAG = 0x02
    PENDING_CANCEL = 0x04  # in bind/alter: PFC_SUPPORT_HEADER_SIGN ([MS-RPCE])
    RESERVED_1 = 0x08
    CONC_MPX = 0x10
    DID_NOT_EXECUTE = 0x20
    MAYBE = 0x40
    OBJECT_UUID = 0x80


# Plain-int copies for hot paths: IntFlag arithmetic costs a Python-level call.
FIRST_FRAG = 0x01
LAST_FRAG = 0x02
OBJECT_UUID = 0x80
WHOLE = FIRST_FRAG | LAST_FRAG


class ContextResultCode(enum.IntEnum):
    """``p_cont_def_result_t`` plus [MS-RPCE]'s negotiate_ack."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    PROVIDER_REJECTION = 2
    NEGOTIATE_ACK = 3


class ProviderReason(enum.IntEnum):
    """``p_provider_reason_t`` for a rejected presentation context."""

    NOT_SPECIFIED = 0
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
    PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2
    LOCAL_LIMIT_EXCEEDED = 3


class BindNakReason(enum.IntEnum):
    """``p_reject_reason_t`` of a bind_nak ([C706] 12.6.3.7, [MS-RPCE] 2.2.2.5)."""

    NOT_SPECIFIED = 0
    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2
    CALLED_PADDR_UNKNOWN = 3
    PROTOCOL_VERSION_NOT_SUPPORTED = 4
    DEFAULT_CONTEXT_NOT_SUPPORTED = 5
    USER_DATA_NOT_READABLE = 6
    NO_PSAP_AVAILABLE = 7
    AUTHENTICATION_TYPE_NOT_RECOGNIZED = 8
    INVALID_CHECKSUM = 9


_HEADER_LE = struct.Struct("<BBBB4sHHI")
_HEADER_BE = struct.Struct(">BBBB4sHHI")
#: The fields after the common header: request (alloc_hint, p_cont_id, opnum) and
#: response (alloc_hint, p_cont_id, cancel_count, reserved).
_REQUEST_LE = struct.Struct("<IHH")
_REQUEST_BE = struct.Struct(">IHH")
_RESPONSE_LE = struct.Struct("<IHBx")
_RESPONSE_BE = struct.Struct(">IHBx")
#: A whole response or request PDU's first 24 bytes, as we send them (little-endian).
_RESPONSE_HEAD = struct.Struct("<BBBB4sHHIIHBx")
_REQUEST_HEAD = struct.Struct("<BBBB4sHHIIHH")


@dataclass(frozen=True, slots=True)
class Header:
    """The common header of one PDU, as read off the wire."""

    ptype: int
    pfc_flags: int
    drep: bytes
    frag_length: int
    auth_length: int
    call_id: int
    minor_version: int = 0

    @property
    def byteorder(self) -> str:
        return "<" if self.drep[0] & 0x10 else ">"


def parse_header(
    data: bytes | bytearray | memoryview, max_fragment: int = MAX_FRAGMENT_SIZE
) -> Header:
    """Parse and sanity-check the 16-byte common header at the start of ``data``.

    Raises:
        DecodeError: fewer than 16 bytes, wrong version, ``frag_length`` smaller than
            the header or larger than ``max_fragment``, or an auth length that does
            not fit in the fragment.
    """
    minor, ptype, flags, drep, frag_len, auth_len, call_id = _checked_header(data, max_fragment)
    return Header(ptype, flags, bytes(drep), frag_len, auth_len, call_id, minor)


def frame_length(
    data: bytes | bytearray | memoryview, max_fragment: int = MAX_FRAGMENT_SIZE
) -> int:
    """The ``frag_length`` of the PDU starting ``data``, checked as :func:`parse_header`
    checks it (a framer's per-PDU call: no :class:`Header` is built)."""
    return _checked_header(data, max_fragment)[4]


def _checked_header(
    data: bytes | bytearray | memoryview, max_fragment: int
) -> tuple[int, int, int, bytes, int, int, int]:
    """(minor, ptype, pfc_flags, drep, frag_length, auth_length, call_id), validated."""
    if len(data) < HEADER_SIZE:
        raise DecodeError("truncated PDU header")
    order = _HEADER_LE if data[4] & 0x10 else _HEADER_BE
    vers, minor, ptype, flags, drep, frag_len, auth_len, call_id = order.unpack_from(data, 0)
    if vers != RPC_VERSION or minor > 1:
        raise DecodeError(f"unsupported RPC version {vers}.{minor}")
    if frag_len < HEADER_SIZE:
        raise DecodeError(f"frag_length {frag_len} smaller than the header")
    if frag_len > max_fragment:
        raise DecodeError(f"frag_length {frag_len} exceeds the limit {max_fragment}")
    if auth_len and auth_len + SEC_TRAILER_SIZE > frag_len - HEADER_SIZE:
        raise DecodeError("auth_length does not fit in the fragment")
    return minor, ptype, flags, drep, frag_len, auth_len, call_id


class _Reader:
    """Bounds-checked reads from one PDU body, in the PDU's byte order."""

    __slots__ = ("data", "end", "order", "pos")

    def __init__(self, data: bytes, order: str, start: int, end: int) -> None:
        self.data = data
        self.order = order
        self.pos = start
        self.end = end

    def take(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > self.end:
            raise DecodeError("PDU body truncated")
        values = struct.unpack_from(self.order + fmt, self.data, self.pos)
        self.pos += size
        return values

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise DecodeError("PDU body truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def syntax(self) -> SyntaxId:
        if self.pos + SYNTAX_ID_SIZE > self.end:
            raise DecodeError("syntax id truncated")
        value = SyntaxId.decode(self.data, self.pos, self.order)
        self.pos += SYNTAX_ID_SIZE
        return value

    def align(self, n: int) -> None:
        self.pos += -self.pos % n
        if self.pos > self.end:
            raise DecodeError("PDU body truncated")

    def rest(self) -> bytes:
        return self.data[self.pos : self.end]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pdu:
    """Base of every PDU: the header fields a sender chooses."""

    ptype: ClassVar[PType]
    call_id: int = 0
    pfc_flags: int = WHOLE
    #: Raw ``sec_trailer`` + auth value, kept opaque (empty when there is none).
    auth_verifier: bytes = b""

    def body(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The PDU's wire bytes (little-endian data representation)."""
        body = self.body()
        auth_len = 0
        if self.auth_verifier:
            body += b"\x00" * (-len(body) % 4)
            auth_len = len(self.auth_verifier) - SEC_TRAILER_SIZE
            body += self.auth_verifier
        frag_len = HEADER_SIZE + len(body)
        if frag_len > MAX_FRAGMENT_SIZE:
            raise ValueError(f"PDU of {frag_len} bytes does not fit in one fragment")
        return (
            _HEADER_LE.pack(
                RPC_VERSION,
                0,
                self.ptype,
                self.pfc_flags,
                DREP_LITTLE_ENDIAN,
                frag_len,
                auth_len,
                self.call_id,
            )
            + body
        )


@dataclass(frozen=True, slots=True)
class ContextElement:
    """One proposed presentation context (``p_cont_elem_t``)."""

    context_id: int
    abstract_syntax: SyntaxId
    transfer_syntaxes: tuple[SyntaxId, ...]


@dataclass(frozen=True, slots=True)
class ContextResult:
    """The answer to one proposed context (``p_result_t``)."""

    result: int
    reason: int = 0
    transfer_syntax: SyntaxId = NULL_SYNTAX


@dataclass(frozen=True, slots=True, kw_only=True)
class BindPdu(Pdu):
    ptype: ClassVar[PType] = PType.BIND
    max_xmit_frag: int = 4280
    max_recv_frag: int = 4280
    assoc_group_id: int = 0
    contexts: tuple[ContextElement, ...] = ()

    def body(self) -> bytes:
        out = bytearray(
            struct.pack(
                "<HHIB3x",
                self.max_xmit_frag,
                self.max_recv_frag,
                self.assoc_group_id,
                len(self.contexts),
            )
        )
        for ctx in self.contexts:
            out += struct.pack("<HBx", ctx.context_id, len(ctx.transfer_syntaxes))
            out += ctx.abstract_syntax.encode()
            for ts in ctx.transfer_syntaxes:
                out += ts.encode()
        return bytes(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterContextPdu(BindPdu):
    ptype: ClassVar[PType] = PType.ALTER_CONTEXT


@dataclass(frozen=True, slots=True, kw_only=True)
class BindAckPdu(Pdu):
    ptype: ClassVar[PType] = PType.BIND_ACK
    max_xmit_frag: int = 4280
    max_recv_frag: int = 4280
    assoc_group_id: int = 0
    secondary_address: str = ""
    results: tuple[ContextResult, ...] = ()

    def body(self) -> bytes:
        out = bytearray(
            struct.pack("<HHI", self.max_xmit_frag, self.max_recv_frag, self.assoc_group_id)
        )
        if self.secondary_address:
            addr = self.secondary_address.encode("ascii") + b"\x00"
            out += struct.pack("<H", len(addr)) + addr
        else:
            out += b"\x00\x00"
        # Results start 4-aligned from the PDU start; the header is 16 bytes long.
        out += b"\x00" * (-len(out) % 4)
        out += struct.pack("<B3x", len(self.results))
        for res in self.results:
            out += struct.pack("<HH", res.result, res.reason) + res.transfer_syntax.encode()
        return bytes(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterContextRespPdu(BindAckPdu):
    ptype: ClassVar[PType] = PType.ALTER_CONTEXT_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class BindNakPdu(Pdu):
    ptype: ClassVar[PType] = PType.BIND_NAK
    reason: int = BindNakReason.NOT_SPECIFIED
    versions: tuple[tuple[int, int], ...] = ((5, 0),)

    def body(self) -> bytes:
        out = bytearray(struct.pack("<HB", self.reason, len(self.versions)))
        for major, minor in self.versions:
            out += struct.pack("<BB", major, minor)
        out += b"\x00" * (-len(out) % 4)
        return bytes(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestPdu(Pdu):
    ptype: ClassVar[PType] = PType.REQUEST
    alloc_hint: int = 0
    context_id: int = 0
    opnum: int = 0
    object_uuid: uuid.UUID | None = None
    stub: bytes = b""
    #: Integer byte order of the stub as received ("<" or ">"); encode() always writes
    #: little-endian, so only received PDUs carry ">".
    byteorder: str = field(default="<", compare=False)

    def body(self) -> bytes:
        head = struct.pack("<IHH", self.alloc_hint, self.context_id, self.opnum)
        if self.object_uuid is not None:
            head += self.object_uuid.bytes_le
        return head + self.stub

    def encode(self) -> bytes:
        flags = self.pfc_flags | (OBJECT_UUID if self.object_uuid is not None else 0)
        return Pdu.encode(replace(self, pfc_flags=flags) if flags != self.pfc_flags else self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponsePdu(Pdu):
    ptype: ClassVar[PType] = PType.RESPONSE
    alloc_hint: int = 0
    context_id: int = 0
    cancel_count: int = 0
    stub: bytes = b""

    def body(self) -> bytes:
        return struct.pack("<IHBx", self.alloc_hint, self.context_id, self.cancel_count) + self.stub


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPdu(Pdu):
    ptype: ClassVar[PType] = PType.FAULT
    pfc_flags: int = WHOLE | PfcFlags.DID_NOT_EXECUTE
    alloc_hint: int = 0
    context_id: int = 0
    cancel_count: int = 0
    fault_flags: int = 0
    status: int = 0
    stub: bytes = b""

    def body(self) -> bytes:
        return (
            struct.pack(
                "<IHBBII",
                self.alloc_hint,
                self.context_id,
                self.cancel_count,
                self.fault_flags,
                self.status,
                0,
            )
            + self.stub
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownPdu(Pdu):
    ptype: ClassVar[PType] = PType.SHUTDOWN

    def body(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True, kw_only=True)
class CoCancelPdu(Pdu):
    ptype: ClassVar[PType] = PType.CO_CANCEL

    def body(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrphanedPdu(Pdu):
    ptype: ClassVar[PType] = PType.ORPHANED

    def body(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth3Pdu(Pdu):
    ptype: ClassVar[PType] = PType.AUTH3

    def body(self) -> bytes:
        return b"\x00" * 4


@dataclass(frozen=True, slots=True, kw_only=True)
class RtsPdu(Pdu):
    """An RTS PDU ([MS-RPCH] 2.2.3.6): the tunnel decodes ``commands`` itself."""

    ptype: ClassVar[PType] = PType.RTS
    rts_flags: int = 0
    number_of_commands: int = 0
    commands: bytes = field(default=b"", repr=False)

    def body(self) -> bytes:
        return struct.pack("<HH", self.rts_flags, self.number_of_commands) + self.commands


# -- decoding ----------------------------------------------------------------------------


class _Common(TypedDict):
    call_id: int
    pfc_flags: int
    auth_verifier: bytes


#: At most this many presentation contexts in one bind (Windows proposes 3).
MAX_CONTEXTS = 32
#: At most this many transfer syntaxes per proposed context.
MAX_TRANSFER_SYNTAXES = 8


def _decode_bind(r: _Reader, cls: type[BindPdu], common: _Common) -> BindPdu:
    max_xmit, max_recv, group, n_ctx = r.take("HHIB3x")
    contexts: list[ContextElement] = []
    for _ in range(n_ctx):
        if len(contexts) >= MAX_CONTEXTS:
            raise DecodeError("too many presentation contexts")
        ctx_id, n_ts = r.take("HBx")
        if n_ts > MAX_TRANSFER_SYNTAXES:
            raise DecodeError("too many transfer syntaxes")
        abstract = r.syntax()
        transfers = tuple(r.syntax() for _ in range(n_ts))
        contexts.append(ContextElement(ctx_id, abstract, transfers))
    return cls(
        max_xmit_frag=max_xmit,
        max_recv_frag=max_recv,
        assoc_group_id=group,
        contexts=tuple(contexts),
        **common,
    )


def _decode_bind_ack(r: _Reader, cls: type[BindAckPdu], common: _Common) -> BindAckPdu:
    max_xmit, max_recv, group, addr_len = r.take("HHIH")
    addr = r.raw(addr_len).rstrip(b"\x00").decode("ascii", "replace")
    r.align(4)
    (n,) = r.take("B3x")
    results: list[ContextResult] = []
    for _ in range(n):
        if len(results) >= MAX_CONTEXTS:
            raise DecodeError("too many context results")
        result, reason = r.take("HH")
        results.append(ContextResult(result, reason, r.syntax()))
    return cls(
        max_xmit_frag=max_xmit,
        max_recv_frag=max_recv,
        assoc_group_id=group,
        secondary_address=addr,
        results=tuple(results),
        **common,
    )


def decode_pdu(data: bytes, max_fragment: int = MAX_FRAGMENT_SIZE) -> Pdu:
    """Decode exactly one complete PDU.

    Raises:
        DecodeError: the bytes are not one well-formed PDU of a known CO type.
    """
    minor, pt, pfc_flags, drep, frag_len, auth_len, call_id = _checked_header(data, max_fragment)
    if len(data) != frag_len:
        raise DecodeError(f"PDU is {len(data)} bytes, frag_length says {frag_len}")
    end = frag_len
    verifier = b""
    if auth_len:
        start = end - auth_len - SEC_TRAILER_SIZE
        verifier = data[start:]
        pad = data[start + 2]  # sec_trailer.auth_pad_length
        end = start - pad
        if end < HEADER_SIZE:
            raise DecodeError("auth padding runs into the header")
    little = bool(drep[0] & 0x10)
    # Requests and responses carry every call: decoded here without a _Reader.
    if pt == PType.REQUEST:
        if end < REQUEST_HEADER_SIZE:
            raise DecodeError("PDU body truncated")
        alloc_hint, ctx_id, opnum = (_REQUEST_LE if little else _REQUEST_BE).unpack_from(
            data, HEADER_SIZE
        )
        obj = None
        stub_start = REQUEST_HEADER_SIZE
        if pfc_flags & OBJECT_UUID:
            stub_start += 16
            if stub_start > end:
                raise DecodeError("PDU body truncated")
            raw = data[REQUEST_HEADER_SIZE:stub_start]
            obj = uuid.UUID(bytes_le=raw) if little else uuid.UUID(bytes=raw)
        return RequestPdu(
            call_id=call_id,
            pfc_flags=pfc_flags,
            auth_verifier=verifier,
            alloc_hint=alloc_hint,
            context_id=ctx_id,
            opnum=opnum,
            object_uuid=obj,
            stub=data[stub_start:end],
            byteorder="<" if little else ">",
        )
    if pt == PType.RESPONSE:
        if end < RESPONSE_HEADER_SIZE:
            raise DecodeError("PDU body truncated")
        alloc_hint, ctx_id, cancel = (_RESPONSE_LE if little else _RESPONSE_BE).unpack_from(
            data, HEADER_SIZE
        )
        return ResponsePdu(
            call_id=call_id,
            pfc_flags=pfc_flags,
            auth_verifier=verifier,
            alloc_hint=alloc_hint,
            context_id=ctx_id,
            cancel_count=cancel,
            stub=data[RESPONSE_HEADER_SIZE:end],
        )
    r = _Reader(data, "<" if little else ">", HEADER_SIZE, end)
    common: _Common = {
        "call_id": call_id,
        "pfc_flags": pfc_flags,
        "auth_verifier": verifier,
    }
    if pt == PType.FAULT:
        alloc_hint, ctx_id, cancel, fflags, status, _ = r.take("IHBBII")
        return FaultPdu(
            alloc_hint=alloc_hint,
            context_id=ctx_id,
            cancel_count=cancel,
            fault_flags=fflags,
            status=status,
            stub=r.rest(),
            **common,
        )
    if pt == PType.BIND:
        return _decode_bind(r, BindPdu, common)
    if pt == PType.ALTER_CONTEXT:
        return _decode_bind(r, AlterContextPdu, common)
    if pt == PType.BIND_ACK:
        return _decode_bind_ack(r, BindAckPdu, common)
    if pt == PType.ALTER_CONTEXT_RESP:
        return _decode_bind_ack(r, AlterContextRespPdu, common)
    if pt == PType.BIND_NAK:
        reason, n = r.take("HB")
        # Some peers (Windows) append an EEInfo signature; n bounds the loop at 255.
        versions = []
        for _ in range(n):
            major, minor = r.take("BB")
            versions.append((major, minor))
        return BindNakPdu(reason=reason, versions=tuple(versions), **common)
    if pt == PType.SHUTDOWN:
        return ShutdownPdu(**common)
    if pt == PType.CO_CANCEL:
        return CoCancelPdu(**common)
    if pt == PType.ORPHANED:
        return OrphanedPdu(**common)
    if pt == PType.AUTH3:
        return Auth3Pdu(**common)
    if pt == PType.RTS:
        flags, n_cmds = r.take("HH")
        return RtsPdu(rts_flags=flags, number_of_commands=n_cmds, commands=r.rest(), **common)
    raise DecodeError(f"unknown or connectionless PDU type {pt}")


def request_fragments(
    *,
    call_id: int,
    context_id: int,
    opnum: int,
    stub: bytes,
    max_fragment: int,
    object_uuid: uuid.UUID | None = None,
) -> list[bytes]:
    """Split one request's stub into encoded fragments no larger than ``max_fragment``
    (the bytes :meth:`RequestPdu.encode` writes, each header packed directly)."""
    if object_uuid is None and len(stub) <= _room(max_fragment - REQUEST_HEADER_SIZE):
        # The usual small call: one whole fragment, no helper calls.
        size = REQUEST_HEADER_SIZE + len(stub)
        fixed = _REQUEST_HEAD.pack(
            RPC_VERSION, 0, PType.REQUEST, WHOLE, DREP_LITTLE_ENDIAN, size, 0, call_id,
            len(stub), context_id, opnum,
        )  # fmt: skip
        return [fixed + stub]
    extra = b"" if object_uuid is None else object_uuid.bytes_le
    uuid_flag = 0 if object_uuid is None else OBJECT_UUID
    overhead = REQUEST_HEADER_SIZE + len(extra)

    def head(flags: int, size: int, hint: int) -> bytes:
        fixed = _REQUEST_HEAD.pack(
            RPC_VERSION, 0, PType.REQUEST, flags | uuid_flag, DREP_LITTLE_ENDIAN,
            overhead + size, 0, call_id, hint, context_id, opnum,
        )  # fmt: skip
        return fixed + extra

    return _fragments(stub, max_fragment - overhead, head)


def response_fragments(
    *, call_id: int, context_id: int, stub: bytes, max_fragment: int
) -> list[bytes]:
    """Split one response's stub into encoded fragments no larger than ``max_fragment``
    (the bytes :meth:`ResponsePdu.encode` writes, each header packed directly)."""
    if len(stub) <= _room(max_fragment - RESPONSE_HEADER_SIZE):
        # The usual small call: one whole fragment, no helper calls.
        size = RESPONSE_HEADER_SIZE + len(stub)
        fixed = _RESPONSE_HEAD.pack(
            RPC_VERSION, 0, PType.RESPONSE, WHOLE, DREP_LITTLE_ENDIAN, size, 0, call_id,
            len(stub), context_id, 0,
        )  # fmt: skip
        return [fixed + stub]

    def head(flags: int, size: int, hint: int) -> bytes:
        return _RESPONSE_HEAD.pack(
            RPC_VERSION, 0, PType.RESPONSE, flags, DREP_LITTLE_ENDIAN,
            RESPONSE_HEADER_SIZE + size, 0, call_id, hint, context_id, 0,
        )  # fmt: skip

    return _fragments(stub, max_fragment - RESPONSE_HEADER_SIZE, head)


def _room(room: int) -> int:
    """Stub bytes per fragment: kept 8-aligned so NDR alignment survives reassembly in
    naive peers."""
    return room - room % 8


def _fragments(stub: bytes, room: int, head: Callable[[int, int, int], bytes]) -> list[bytes]:
    """``head(flags, stub bytes in the fragment, alloc_hint)`` + each piece of ``stub``:
    one copy of each byte (a 1 MiB stream read is 16 fragments of 64 KiB)."""
    room = _room(room)
    if room <= 0:
        raise ValueError("fragment size too small")
    total = len(stub)
    if total <= room:
        return [head(WHOLE, total, total) + stub]
    view = memoryview(stub)
    out = []
    for start in range(0, total, room):
        end = min(start + room, total)
        flags = (FIRST_FRAG if start == 0 else 0) | (LAST_FRAG if end == total else 0)
        out.append(b"".join((head(flags, end - start, total - start), view[start:end])))
    return out
