"""NTLM authentication ([MS-NLMP]): messages, an acceptor fed by our directory, an initiator.

Theory of operation
-------------------
Three messages make an NTLM exchange: NEGOTIATE (client: what it can do),
CHALLENGE (server: an 8-byte random challenge, the flags it grants and AV pairs naming
itself, [MS-NLMP] 2.2.1.2 and 2.2.2.1) and AUTHENTICATE (client: its NTLMv2 response,
user, domain, workstation, the encrypted random session key and a MIC over all three
messages). Each message is a fixed header whose variable fields are
``(length u16, max_length u16, offset u32)`` triples pointing into a payload;
decoders check every triple against the message and a size limit before reading.

:class:`NtlmAcceptor` is the server side. It never sees a password: it asks
``lookup_nt_hash(user, domain)`` for the user's NT hash (a password equivalent the
directory stores) and verifies the NTLMv2 proof ``HMAC_MD5(NTOWFv2, challenge | temp)``
([MS-NLMP] 3.3.2). Only NTLMv2 with extended session security is accepted: NTLMv1 and
LM responses are crackable and every client of the last twenty years sends v2. An
AUTHENTICATE with an empty user and an empty NT response is *anonymous*
([MS-NLMP] 3.2.5.1.2); it is accepted as such (the runtime's policy decides what an
anonymous caller may do) with the all-zero key exchange key that clients use for it.
Samba's client leaves extended session security out of an anonymous AUTHENTICATE
(the spec does not ask for that) and then signs and seals with NTLM1 session security;
we follow it there (:class:`~dcerpc.ntlm_crypto.Ntlm1Session`) and nowhere else.
A MIC, when the client's AV pairs say it sent one (MsvAvFlags bit 0x2), must verify.

:class:`NtlmInitiator` is the client side, for our own client. Both end with an
:class:`~dcerpc.ntlm_crypto.NtlmSession` for signing and sealing.

Randomness (challenges, client challenges, session keys) comes from ``random``
(``os.urandom`` by default), and time from the caller (``now``, Unix seconds), so the
exchange is reproducible in tests and the module reads no clock.
"""

from __future__ import annotations

import enum
import hmac
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dcerpc.ntlm_crypto import (
    Ntlm1Session,
    NtlmSession,
    SessionSecurity,
    hmac_md5,
    nt_hash,
    ntowf_v2,
    rc4_once,
)
from dcerpc.security import AuthError, Identity

SIGNATURE = b"NTLMSSP\x00"
#: No NTLM message we accept is larger (Windows' are under 2 KiB; AV pairs are short).
MAX_MESSAGE_SIZE = 8192
#: Longest user, domain or workstation name accepted, in characters.
MAX_NAME_CHARS = 256
#: Seconds between 1601-01-01 (FILETIME epoch) and 1970-01-01.
_FILETIME_EPOCH = 11644473600


class NegotiateFlags(enum.IntFlag):
    """[MS-NLMP] 2.2.2.5."""

    UNICODE = 0x00000001
    OEM = 0x00000002
    REQUEST_TARGET = 0x00000004
    SIGN = 0x00000010
    SEAL = 0x00000020
    DATAGRAM = 0x00000040
    LM_KEY = 0x00000080
    NTLM = 0x00000200
    ANONYMOUS = 0x00000800
    OEM_DOMAIN_SUPPLIED = 0x00001000
    OEM_WORKSTATION_SUPPLIED = 0x00002000
    ALWAYS_SIGN = 0x00008000
    TARGET_TYPE_DOMAIN = 0x00010000
    TARGET_TYPE_SERVER = 0x00020000
    EXTENDED_SESSIONSECURITY = 0x00080000
    IDENTIFY = 0x00100000
    REQUEST_NON_NT_SESSION_KEY = 0x00400000
    TARGET_INFO = 0x00800000
    VERSION = 0x02000000
    NEGOTIATE_128 = 0x20000000
    KEY_EXCH = 0x40000000
    NEGOTIATE_56 = 0x80000000


F = NegotiateFlags


class AvId(enum.IntEnum):
    """AV pair ids ([MS-NLMP] 2.2.2.1)."""

    EOL = 0
    NB_COMPUTER_NAME = 1
    NB_DOMAIN_NAME = 2
    DNS_COMPUTER_NAME = 3
    DNS_DOMAIN_NAME = 4
    DNS_TREE_NAME = 5
    FLAGS = 6
    TIMESTAMP = 7
    SINGLE_HOST = 8
    TARGET_NAME = 9
    CHANNEL_BINDINGS = 10


#: MsvAvFlags bit: the AUTHENTICATE message carries a MIC.
AV_FLAG_MIC = 0x2
#: Flags our acceptor grants when the client asks (and nothing weaker).
_SERVER_FLAGS = (
    F.UNICODE | F.REQUEST_TARGET | F.SIGN | F.SEAL | F.NTLM | F.ALWAYS_SIGN
    | F.EXTENDED_SESSIONSECURITY | F.TARGET_INFO | F.VERSION | F.NEGOTIATE_128
    | F.KEY_EXCH | F.NEGOTIATE_56
)  # fmt: skip
_CLIENT_FLAGS = _SERVER_FLAGS
#: A VERSION field ([MS-NLMP] 2.2.2.10): 10.0 build 20348, NTLM revision 15.
VERSION = bytes([10, 0]) + struct.pack("<H", 20348) + b"\x00\x00\x00\x0f"
_MIC_OFFSET = 72


def _field(data: bytes, pos: int, limit: int = MAX_MESSAGE_SIZE) -> bytes:
    """The payload a ``(len, maxlen, offset)`` triple at ``pos`` points to, bounds-checked."""
    length, _max, offset = struct.unpack_from("<HHI", data, pos)
    if length == 0:
        return b""
    if length > limit or offset + length > len(data) or offset < 8:
        raise AuthError("NTLM field points outside the message")
    return data[offset : offset + length]


def _text(raw: bytes, unicode: bool) -> str:
    if unicode:
        if len(raw) % 2:
            raise AuthError("NTLM string of odd length")
        text = raw.decode("utf-16-le", "replace")
    else:
        text = raw.decode("latin-1")
    if len(text) > MAX_NAME_CHARS:
        raise AuthError("NTLM name too long")
    return text


def _check_header(data: bytes, kind: int, size: int) -> None:
    if len(data) > MAX_MESSAGE_SIZE:
        raise AuthError("NTLM message too large")
    if len(data) < size or data[:8] != SIGNATURE:
        raise AuthError("not an NTLM message")
    (msg_type,) = struct.unpack_from("<I", data, 8)
    if msg_type != kind:
        raise AuthError(f"expected NTLM message type {kind}, got {msg_type}")


def decode_av_pairs(data: bytes) -> dict[int, bytes]:
    """AV pairs up to MsvAvEOL; the first occurrence of an id wins ([MS-NLMP] 2.2.2.1).

    Raises:
        AuthError: a pair runs past the data, or there are absurdly many.
    """
    pairs: dict[int, bytes] = {}
    pos = 0
    for _ in range(64):
        if pos + 4 > len(data):
            raise AuthError("truncated AV pair list")
        av_id, av_len = struct.unpack_from("<HH", data, pos)
        pos += 4
        if av_id == AvId.EOL:
            return pairs
        if pos + av_len > len(data):
            raise AuthError("AV pair runs past its list")
        pairs.setdefault(av_id, data[pos : pos + av_len])
        pos += av_len
    raise AuthError("too many AV pairs")


def encode_av_pairs(pairs: Sequence[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for av_id, value in pairs:
        out += struct.pack("<HH", av_id, len(value)) + value
    return bytes(out + struct.pack("<HH", AvId.EOL, 0))


@dataclass(frozen=True, slots=True)
class NegotiateMessage:
    flags: int
    domain: str = ""
    workstation: str = ""

    def encode(self) -> bytes:
        flags = self.flags | F.VERSION
        return (
            SIGNATURE
            + struct.pack("<II", 1, flags)
            + struct.pack("<HHI", 0, 0, 40)
            + struct.pack("<HHI", 0, 0, 40)
            + VERSION
        )

    @classmethod
    def decode(cls, data: bytes) -> NegotiateMessage:
        _check_header(data, 1, 16)
        (flags,) = struct.unpack_from("<I", data, 12)
        domain = workstation = ""
        if len(data) >= 32:
            # OEM names, seldom sent; decoded for completeness, never trusted.
            domain = _text(_field(data, 16), False)
            workstation = _text(_field(data, 24), False)
        return cls(flags, domain, workstation)


@dataclass(frozen=True, slots=True)
class ChallengeMessage:
    flags: int
    server_challenge: bytes
    target_name: str = ""
    target_info: bytes = b""

    def encode(self) -> bytes:
        name = self.target_name.encode("utf-16-le")
        base = 56
        return (
            SIGNATURE
            + struct.pack("<I", 2)
            + struct.pack("<HHI", len(name), len(name), base)
            + struct.pack("<I", self.flags)
            + self.server_challenge
            + b"\x00" * 8
            + struct.pack("<HHI", len(self.target_info), len(self.target_info), base + len(name))
            + VERSION
            + name
            + self.target_info
        )

    @classmethod
    def decode(cls, data: bytes) -> ChallengeMessage:
        _check_header(data, 2, 48)
        (flags,) = struct.unpack_from("<I", data, 20)
        challenge = data[24:32]
        name = _text(_field(data, 12), bool(flags & F.UNICODE))
        info = _field(data, 40)
        return cls(flags, challenge, name, info)


@dataclass(frozen=True, slots=True)
class AuthenticateMessage:
    flags: int
    lm_response: bytes
    nt_response: bytes
    domain: str
    user: str
    workstation: str
    encrypted_session_key: bytes
    mic: bytes = b""
    #: The message as received (the MIC is computed over it with the MIC zeroed).
    raw: bytes = b""

    def encode(self, *, with_mic: bool) -> bytes:
        """The message; with ``with_mic`` a 16-byte MIC field (zeros or :attr:`mic`)."""
        enc = [
            self.lm_response,
            self.nt_response,
            self.domain.encode("utf-16-le"),
            self.user.encode("utf-16-le"),
            self.workstation.encode("utf-16-le"),
            self.encrypted_session_key,
        ]
        base = 88 if with_mic else 72
        head = bytearray(SIGNATURE + struct.pack("<I", 3))
        payload = bytearray()
        for value in enc:
            head += struct.pack("<HHI", len(value), len(value), base + len(payload))
            payload += value
        head += struct.pack("<I", self.flags) + VERSION
        if with_mic:
            head += self.mic or b"\x00" * 16
        return bytes(head + payload)

    @classmethod
    def decode(cls, data: bytes) -> AuthenticateMessage:
        _check_header(data, 3, 64)
        (flags,) = struct.unpack_from("<I", data, 60)
        unicode = bool(flags & F.UNICODE)
        lm = _field(data, 12)
        nt = _field(data, 20)
        domain = _text(_field(data, 28), unicode)
        user = _text(_field(data, 36), unicode)
        workstation = _text(_field(data, 44), unicode)
        key = _field(data, 52)
        # The MIC sits after VERSION when the payload starts late enough to leave room.
        offsets = [
            struct.unpack_from("<I", data, pos + 4)[0]
            for pos in (12, 20, 28, 36, 44, 52)
            if struct.unpack_from("<H", data, pos)[0]
        ]
        first = min(offsets, default=len(data))
        mic = data[_MIC_OFFSET : _MIC_OFFSET + 16] if first >= _MIC_OFFSET + 16 else b""
        return cls(flags, lm, nt, domain, user, workstation, key, mic, data)


def filetime(now: float) -> bytes:
    """Unix seconds as a little-endian FILETIME (100 ns units since 1601)."""
    return struct.pack("<Q", max(0, int((now + _FILETIME_EPOCH) * 10_000_000)))


@dataclass(frozen=True, slots=True)
class ServerNames:
    """How the server names itself in CHALLENGE AV pairs (clients show and log them;
    impacket uses the NetBIOS computer name as the target of RPC over HTTP)."""

    netbios_computer: str = "MAPISERVER"
    netbios_domain: str = "WORKGROUP"
    dns_computer: str = "mapiserver"
    dns_domain: str = ""


#: ``lookup_nt_hash(user, domain)``: the user's NT hash, or None for an unknown user.
NtHashLookup = Callable[[str, str], bytes | None]


class NtlmAcceptor:
    """Server side of one NTLM exchange. Call :meth:`step` with each client token.

    Args:
        lookup_nt_hash: the directory, asked for the NT hash of the user who
            authenticates (as named in AUTHENTICATE; the domain is what the client
            sent, which a single-domain server may ignore).
        names: the AV pairs naming us.
        now: Unix time for the CHALLENGE timestamp.
        random: source of the server challenge.
    """

    def __init__(
        self,
        lookup_nt_hash: NtHashLookup,
        names: ServerNames,
        *,
        now: float | None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._lookup = lookup_nt_hash
        self._names = names
        self._now = now
        self._random = random
        self._negotiate = b""
        self._challenge: ChallengeMessage | None = None
        self._challenge_raw = b""
        self.complete = False
        self.identity: Identity | None = None
        self.session: SessionSecurity | None = None
        #: Whether the client's AUTHENTICATE carried a (verified) MIC.
        self.mic_present = False

    def step(self, token: bytes) -> bytes:
        """Consume a client token; returns our answer (empty once complete).

        Raises:
            AuthError: malformed message, unknown user, wrong password, bad MIC.
        """
        if self.complete:
            raise AuthError("NTLM exchange already complete")
        if self._challenge is None:
            return self._on_negotiate(token)
        self._on_authenticate(token)
        return b""

    def _on_negotiate(self, token: bytes) -> bytes:
        negotiate = NegotiateMessage.decode(token)
        if not negotiate.flags & (F.UNICODE | F.OEM):
            raise AuthError("NTLM client offers no character set")
        # [MS-NLMP] 3.2.5.1.1 answers an OEM-only client in OEM; we answer every client
        # in Unicode, which real OEM-only clients (curl) follow (the CHALLENGE's flags
        # are the choice, 2.2.2.5); the NEGOTIATE is kept as sent, for the MIC.
        self._negotiate = token
        flags = F.NTLM | F.TARGET_INFO | F.TARGET_TYPE_SERVER | F.UNICODE | F.VERSION
        flags |= F.EXTENDED_SESSIONSECURITY  # required: no NTLMv1 session security
        # Grant what the client asked for among what we do.
        for bit in (F.SIGN, F.SEAL, F.ALWAYS_SIGN, F.KEY_EXCH, F.NEGOTIATE_128, F.NEGOTIATE_56):
            if negotiate.flags & bit:
                flags |= bit
        if negotiate.flags & F.REQUEST_TARGET:
            flags |= F.REQUEST_TARGET
        names = self._names
        pairs = [
            (AvId.NB_DOMAIN_NAME, names.netbios_domain.encode("utf-16-le")),
            (AvId.NB_COMPUTER_NAME, names.netbios_computer.encode("utf-16-le")),
            (AvId.DNS_DOMAIN_NAME, names.dns_domain.encode("utf-16-le")),
            (AvId.DNS_COMPUTER_NAME, names.dns_computer.encode("utf-16-le")),
        ]
        if self._now is not None:
            pairs.append((AvId.TIMESTAMP, filetime(self._now)))
        self._challenge = ChallengeMessage(
            int(flags),
            self._random(8),
            names.netbios_domain if flags & F.REQUEST_TARGET else "",
            encode_av_pairs(pairs),
        )
        self._challenge_raw = self._challenge.encode()
        return self._challenge_raw

    def _on_authenticate(self, token: bytes) -> None:
        assert self._challenge is not None
        msg = AuthenticateMessage.decode(token)
        challenge = self._challenge
        anonymous = msg.user == "" and len(msg.nt_response) == 0 and len(msg.lm_response) <= 1
        flags = msg.flags & challenge.flags  # the client may not claim what we did not grant
        if not flags & F.EXTENDED_SESSIONSECURITY and not anonymous:
            # Samba drops extended session security from an anonymous AUTHENTICATE
            # (its key is public anyway); anyone else keeps it or is refused.
            raise AuthError("NTLMv1 session security is not accepted")
        if anonymous:
            key_exchange_key = b"\x00" * 16
            self.identity = Identity(user="", domain=msg.domain, anonymous=True)
        else:
            if len(msg.nt_response) < 48:  # NTProofStr (16) + the smallest v2 blob
                raise AuthError("only NTLMv2 responses are accepted")
            nt = self._lookup(msg.user, msg.domain)
            if nt is None:
                raise AuthError("unknown user")
            proof, temp = msg.nt_response[:16], msg.nt_response[16:]
            key_exchange_key = b""
            # Clients compute NTOWFv2 with the domain they sent; some upper-case it or
            # leave it out. Try those forms (as Samba does), nothing broader.
            for domain in dict.fromkeys((msg.domain, msg.domain.upper(), "")):
                response_key = ntowf_v2(nt, msg.user, domain)
                expected = hmac_md5(response_key, challenge.server_challenge, temp)
                if hmac.compare_digest(expected, proof):
                    key_exchange_key = hmac_md5(response_key, proof)  # SessionBaseKey
                    break
            else:
                raise AuthError("wrong password")
            self._check_mic_flag(temp, msg)
            self.identity = Identity(user=msg.user, domain=msg.domain, anonymous=False)
        if flags & F.KEY_EXCH and msg.encrypted_session_key:
            if len(msg.encrypted_session_key) != 16:
                raise AuthError("bad encrypted session key length")
            exported = rc4_once(key_exchange_key, msg.encrypted_session_key)
        else:
            exported = key_exchange_key
        if self.mic_present:
            zeroed = bytearray(msg.raw)
            zeroed[_MIC_OFFSET : _MIC_OFFSET + 16] = b"\x00" * 16
            mic = hmac_md5(exported, self._negotiate, self._challenge_raw, bytes(zeroed))
            if not hmac.compare_digest(mic, msg.mic):
                raise AuthError("NTLM MIC mismatch")
        self.session = (
            NtlmSession(exported, initiator=False, key_exchange=bool(flags & F.KEY_EXCH))
            if flags & F.EXTENDED_SESSIONSECURITY
            else Ntlm1Session(exported)
        )
        self.complete = True

    def _check_mic_flag(self, temp: bytes, msg: AuthenticateMessage) -> None:
        """Note whether the client says it sent a MIC (MsvAvFlags in its v2 blob)."""
        # temp: RespType, HiRespType, 6 reserved, timestamp 8, client challenge 8,
        # 4 reserved, then AV pairs.
        if len(temp) < 28:
            raise AuthError("NTLMv2 blob too short")
        pairs = decode_av_pairs(temp[28:])
        raw_flags = pairs.get(AvId.FLAGS, b"")
        if len(raw_flags) == 4 and struct.unpack("<I", raw_flags)[0] & AV_FLAG_MIC:
            if len(msg.mic) != 16:
                raise AuthError("MIC announced but missing")
            self.mic_present = True


class NtlmInitiator:
    """Client side of one NTLM exchange (our own client).

    Args:
        user, password, domain: the credentials; an empty user and password make an
            anonymous AUTHENTICATE.
        now: Unix time, used when the server sends no timestamp.
        random: source of the client challenge and the session key.
    """

    def __init__(
        self,
        user: str,
        password: str,
        domain: str = "",
        *,
        workstation: str = "",
        now: float = 0.0,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._user = user
        self._password = password
        self._domain = domain
        self._workstation = workstation
        self._now = now
        self._random = random
        self._negotiate = b""
        self.complete = False
        self.session: NtlmSession | None = None
        self.mic_present = False

    def step(self, token: bytes = b"") -> bytes:
        """First call: NEGOTIATE. Second call, with the CHALLENGE: AUTHENTICATE.

        Raises:
            AuthError: the server's CHALLENGE is malformed or offers too little.
        """
        if not self._negotiate:
            self._negotiate = NegotiateMessage(int(_CLIENT_FLAGS)).encode()
            return self._negotiate
        if self.complete:
            raise AuthError("NTLM exchange already complete")
        return self._authenticate(token)

    def _authenticate(self, token: bytes) -> bytes:
        challenge = ChallengeMessage.decode(token)
        if not challenge.flags & F.EXTENDED_SESSIONSECURITY:
            raise AuthError("server does not offer extended session security")
        flags = challenge.flags & _CLIENT_FLAGS | F.UNICODE
        anonymous = not self._user and not self._password
        if anonymous:
            lm, nt_resp, key_exchange_key = b"\x00", b"", b"\x00" * 16
            with_mic = False
            flags |= F.ANONYMOUS
        else:
            pairs = decode_av_pairs(challenge.target_info) if challenge.target_info else {}
            stamp = pairs.get(AvId.TIMESTAMP) or filetime(self._now)
            client_challenge = self._random(8)
            # Our AV pairs: the server's, plus MsvAvFlags announcing the MIC.
            ours = [(k, v) for k, v in pairs.items() if k not in (AvId.FLAGS,)]
            ours.append((AvId.FLAGS, struct.pack("<I", AV_FLAG_MIC)))
            temp = (
                b"\x01\x01" + b"\x00" * 6 + stamp + client_challenge + b"\x00" * 4
                + encode_av_pairs(ours) + b"\x00" * 4
            )  # fmt: skip
            response_key = ntowf_v2(nt_hash(self._password), self._user, self._domain)
            proof = hmac_md5(response_key, challenge.server_challenge, temp)
            nt_resp = proof + temp
            # With a server timestamp, [MS-NLMP] 3.1.5.1.2 sends Z(24) for LMv2.
            lm = b"\x00" * 24
            key_exchange_key = hmac_md5(response_key, proof)
            with_mic = True
        if flags & F.KEY_EXCH:
            exported = self._random(16)
            encrypted = rc4_once(key_exchange_key, exported)
        else:
            exported, encrypted = key_exchange_key, b""
        msg = AuthenticateMessage(
            int(flags), lm, nt_resp, self._domain, self._user, self._workstation, encrypted
        )
        raw = msg.encode(with_mic=with_mic)
        if with_mic:
            mic = hmac_md5(exported, self._negotiate, token, raw)
            raw = raw[:_MIC_OFFSET] + mic + raw[_MIC_OFFSET + 16 :]
            self.mic_present = True
        self.session = NtlmSession(exported, initiator=True, key_exchange=bool(flags & F.KEY_EXCH))
        self.complete = True
        return raw
