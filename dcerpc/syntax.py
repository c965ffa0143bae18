"""Presentation syntax identifiers: an interface or transfer syntax UUID plus version.

On the wire a syntax id is the NDR GUID (``uuid.bytes_le``) followed by ``u16 major,
u16 minor`` ([C706] 12.6.3.1, ``p_syntax_id_t``). Towers and ``ept_lookup`` use the
same layout.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from dcerpc.errors import DecodeError

_SYNTAX = struct.Struct("<16sHH")
SYNTAX_ID_SIZE = _SYNTAX.size  # 20


@dataclass(frozen=True, slots=True)
class SyntaxId:
    """An abstract (interface) or transfer syntax: UUID and major/minor version."""

    uuid: uuid.UUID
    major: int
    minor: int = 0

    @classmethod
    def parse(cls, text: str, major: int, minor: int = 0) -> SyntaxId:
        return cls(uuid.UUID(text), major, minor)

    def encode(self, byteorder: str = "<") -> bytes:
        if byteorder == "<":
            return _SYNTAX.pack(self.uuid.bytes_le, self.major, self.minor)
        return self.uuid.bytes + struct.pack(">HH", self.major, self.minor)

    @classmethod
    def decode(cls, data: bytes | memoryview, offset: int = 0, byteorder: str = "<") -> SyntaxId:
        if len(data) - offset < SYNTAX_ID_SIZE:
            raise DecodeError("syntax id truncated")
        raw = bytes(data[offset : offset + 16])
        if byteorder == "<":
            major, minor = struct.unpack_from("<HH", data, offset + 16)
            return cls(uuid.UUID(bytes_le=raw), major, minor)
        major, minor = struct.unpack_from(">HH", data, offset + 16)
        return cls(uuid.UUID(bytes=raw), major, minor)

    def __str__(self) -> str:
        return f"{self.uuid} v{self.major}.{self.minor}"


NIL_UUID = uuid.UUID(int=0)
NULL_SYNTAX = SyntaxId(NIL_UUID, 0, 0)

#: NDR 2.0 transfer syntax ([C706] 14).
NDR = SyntaxId.parse("8a885d04-1ceb-11c9-9fe8-08002b104860", 2)
#: NDR64 ([MS-RPCE] 2.2.5); we do not implement it and reject it in binds.
NDR64 = SyntaxId.parse("71710533-beba-4937-8319-b5dbef9ccc36", 1)
#: Our own transfer syntax for the store interface: stub data are one msgpack document.
MSGPACK = SyntaxId.parse("8b3f7a2e-5d0c-4a61-9e47-6d61706961a1", 1)

#: Bind time feature negotiation ([MS-RPCE] 3.3.1.5.3): the first 8 bytes of the UUID
#: are fixed, bytes 8..15 carry a bitmask of features the client proposes.
BTFN_PREFIX = bytes.fromhex("2c1cb76c12984045")
BTFN_SECURITY_CONTEXT_MULTIPLEXING = 0x01
BTFN_KEEP_CONNECTION_ON_ORPHAN = 0x02


def btfn_features(syntax: SyntaxId) -> int | None:
    """The feature bitmask if ``syntax`` is a bind-time-feature-negotiation id, else None."""
    raw = syntax.uuid.bytes_le
    if raw[:8] != BTFN_PREFIX or syntax.major != 1:
        return None
    return raw[8] | (raw[9] << 8)
