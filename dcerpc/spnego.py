"""SPNEGO ([RFC 4178], [MS-SPNG]) carrying NTLM: the DER tokens, an acceptor, an initiator.

Theory of operation
-------------------
A DCE/RPC client asking for auth type 9 wraps its mechanism tokens in SPNEGO. The
first token is a GSS ``InitialContextToken`` (``[APPLICATION 0]`` with the SPNEGO OID)
around ``NegTokenInit`` (the mechanisms the client offers, most preferred first, and
optionally an optimistic token for the first); every later token in either direction
is a bare ``NegTokenResp`` (``negState``, ``supportedMech``, ``responseToken``,
``mechListMIC``). Only NTLM is offered and accepted here; a client that prefers
Kerberos (Windows does) gets NTLM chosen in our first answer, its optimistic token
dropped, and then sends an NTLM NEGOTIATE in its next token.

mechListMIC protects the mechanism list against downgrade. Windows and Samba send it
whenever NTLM's AUTHENTICATE carries a MIC, or when the chosen mechanism was not the
client's first choice; the acceptor then requires it, verifies it (NTLM GSS_VerifyMIC
over the DER of the client's ``MechTypeList``, as it was sent) and answers with its
own. [MS-SPNG] asks that the first message protected afterwards start from the RC4
state the MIC started from: each side resets that direction's RC4 after the MIC
(sequence numbers go on).

The DER reader accepts definite lengths only (DER forbids the indefinite form),
bounds every length by the enclosing value and the token by :data:`MAX_TOKEN`, and
never recurses (the grammar's nesting is fixed); anything else is an
:class:`~dcerpc.security.AuthError`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from dcerpc.ntlm import NtlmAcceptor, NtlmInitiator
from dcerpc.ntlm_crypto import SessionSecurity, SignatureError
from dcerpc.security import AuthError, Identity

#: DER of OID 1.3.6.1.5.5.2 (SPNEGO) and 1.3.6.1.4.1.311.2.2.10 (NTLMSSP), tag included.
SPNEGO_OID = bytes.fromhex("06062b0601050502")
NTLM_OID = bytes.fromhex("060a2b06010401823702020a")
MAX_TOKEN = 16384
_MAX_MECHS = 32


class NegState(enum.IntEnum):
    ACCEPT_COMPLETED = 0
    ACCEPT_INCOMPLETE = 1
    REJECT = 2
    REQUEST_MIC = 3


# -- DER ----------------------------------------------------------------------------------


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the element at ``pos``, within ``end``."""
    if pos + 2 > end:
        raise AuthError("truncated DER element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise AuthError("multi-byte DER tags are not used by SPNEGO")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 3:
            raise AuthError("unsupported DER length form")
        if pos + n > end:
            raise AuthError("truncated DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise AuthError("DER length runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, value start, value end) of each element in ``start:end``."""
    out: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        if len(out) >= _MAX_MECHS + 8:
            raise AuthError("too many DER elements")
        tag, vstart, vend = _tlv(data, pos, end)
        out.append((tag, pos, vstart, vend))
        pos = vend
    return out


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def der(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _len(len(value)) + value


def _octets(data: bytes, start: int, end: int) -> bytes:
    tag, vstart, vend = _tlv(data, start, end)
    if tag != 0x04 or vend != end:
        raise AuthError("expected an OCTET STRING")
    return data[vstart:vend]


@dataclass(frozen=True, slots=True)
class NegTokenInit:
    mech_types: tuple[bytes, ...]  # each a DER OID, tag included
    mech_token: bytes = b""
    mech_list_mic: bytes = b""
    #: The DER of the MechTypeList as sent (what mechListMIC covers).
    mech_list_der: bytes = b""

    def encode(self) -> bytes:
        mech_list = der(0x30, b"".join(self.mech_types))
        body = der(0xA0, mech_list)
        if self.mech_token:
            body += der(0xA2, der(0x04, self.mech_token))
        if self.mech_list_mic:
            body += der(0xA3, der(0x04, self.mech_list_mic))
        inner = der(0xA0, der(0x30, body))
        return der(0x60, SPNEGO_OID + inner)


@dataclass(frozen=True, slots=True)
class NegTokenResp:
    neg_state: int | None = None
    supported_mech: bytes = b""
    response_token: bytes = b""
    mech_list_mic: bytes = b""

    def encode(self) -> bytes:
        body = b""
        if self.neg_state is not None:
            body += der(0xA0, der(0x0A, bytes([self.neg_state])))
        if self.supported_mech:
            body += der(0xA1, self.supported_mech)
        if self.response_token:
            body += der(0xA2, der(0x04, self.response_token))
        if self.mech_list_mic:
            body += der(0xA3, der(0x04, self.mech_list_mic))
        return der(0xA1, der(0x30, body))


def decode_token(data: bytes) -> NegTokenInit | NegTokenResp:
    """Decode an SPNEGO token: an InitialContextToken around NegTokenInit (or
    NegTokenInit2, whose negHints are skipped), or a bare NegTokenInit/NegTokenResp.

    Raises:
        AuthError: anything that is not one of those, within the limits.
    """
    if len(data) > MAX_TOKEN:
        raise AuthError("SPNEGO token too large")
    end = len(data)
    tag, start, stop = _tlv(data, 0, end)
    if stop != end:
        raise AuthError("trailing bytes after the SPNEGO token")
    if tag == 0x60:
        if data[start : start + len(SPNEGO_OID)] != SPNEGO_OID:
            raise AuthError("not an SPNEGO token")
        tag, start, stop = _tlv(data, start + len(SPNEGO_OID), stop)
        if stop != end:
            raise AuthError("trailing bytes in the initial context token")
    if tag not in (0xA0, 0xA1):
        raise AuthError("not a NegotiationToken")
    seq_tag, seq_start, seq_end = _tlv(data, start, stop)
    if seq_tag != 0x30 or seq_end != stop:
        raise AuthError("expected a SEQUENCE")
    fields = {t: (s, e) for t, _p, s, e in _children(data, seq_start, seq_end)}
    if tag == 0xA0:
        return _decode_init(data, fields)
    return _decode_resp(data, fields)


def _decode_init(data: bytes, fields: dict[int, tuple[int, int]]) -> NegTokenInit:
    if 0xA0 not in fields:
        raise AuthError("NegTokenInit without mechTypes")
    s, e = fields[0xA0]
    list_tag, ls, le = _tlv(data, s, e)
    if list_tag != 0x30 or le != e:
        raise AuthError("mechTypes is not a SEQUENCE OF")
    mechs: list[bytes] = []
    for t, pos, _vs, ve in _children(data, ls, le):
        if t != 0x06:
            raise AuthError("mechTypes holds a non-OID")
        if len(mechs) >= _MAX_MECHS:
            raise AuthError("too many mechanisms")
        mechs.append(data[pos:ve])
    token = _octets(data, *fields[0xA2]) if 0xA2 in fields else b""
    # NegTokenInit puts mechListMIC at [3]; NegTokenInit2 puts negHints there and the
    # MIC at [4]. A client's first token has no MIC in practice; take [3] only when it
    # is an OCTET STRING.
    mic = b""
    for mic_tag in (0xA3, 0xA4):
        if mic_tag in fields and data[fields[mic_tag][0]] == 0x04:
            mic = _octets(data, *fields[mic_tag])
    return NegTokenInit(tuple(mechs), token, mic, data[s:e])


def _decode_resp(data: bytes, fields: dict[int, tuple[int, int]]) -> NegTokenResp:
    state = None
    if 0xA0 in fields:
        t, vs, ve = _tlv(data, *fields[0xA0])
        if t != 0x0A or ve - vs != 1:
            raise AuthError("bad negState")
        state = data[vs]
    mech = b""
    if 0xA1 in fields:
        s, e = fields[0xA1]
        t, _vs, ve = _tlv(data, s, e)
        if t != 0x06 or ve != e:
            raise AuthError("bad supportedMech")
        mech = data[s:e]
    token = _octets(data, *fields[0xA2]) if 0xA2 in fields else b""
    mic = _octets(data, *fields[0xA3]) if 0xA3 in fields else b""
    return NegTokenResp(state, mech, token, mic)


# -- acceptor and initiator ---------------------------------------------------------------


def _verify_mic(session: SessionSecurity, mech_list_der: bytes, mic: bytes) -> None:
    try:
        session.verify(mech_list_der, mic)
    except SignatureError as exc:
        raise AuthError("SPNEGO mechListMIC mismatch") from exc
    session.reset_rc4(outgoing=False)


def _make_mic(session: SessionSecurity, mech_list_der: bytes) -> bytes:
    mic = session.sign(mech_list_der)
    session.reset_rc4(outgoing=True)
    return mic


class SpnegoAcceptor:
    """Server side of SPNEGO, negotiating NTLM through ``make_ntlm()``."""

    def __init__(self, make_ntlm: Callable[[], NtlmAcceptor]) -> None:
        self._make_ntlm = make_ntlm
        self._ntlm: NtlmAcceptor | None = None
        self._mech_list_der = b""
        self._mic_required = False
        self._started = False
        self.complete = False

    @property
    def identity(self) -> Identity | None:
        return self._ntlm.identity if self._ntlm is not None else None

    @property
    def session(self) -> SessionSecurity | None:
        return self._ntlm.session if self._ntlm is not None and self.complete else None

    def step(self, token: bytes) -> bytes:
        """Consume a client token and answer it (a NegTokenResp).

        Raises:
            AuthError: malformed token, no common mechanism, NTLM refused, bad MIC.
        """
        if self.complete:
            raise AuthError("SPNEGO exchange already complete")
        msg = decode_token(token)
        if not self._started:
            if not isinstance(msg, NegTokenInit):
                raise AuthError("SPNEGO must start with NegTokenInit")
            self._started = True
            if NTLM_OID not in msg.mech_types:
                raise AuthError("the client offers no mechanism we support")
            self._mech_list_der = msg.mech_list_der
            self._ntlm = self._make_ntlm()
            if msg.mech_types[0] != NTLM_OID or not msg.mech_token:
                # Not the client's first choice (or no optimistic token): ask for an
                # NTLM NEGOTIATE; the mechanism list must then be MIC-protected.
                self._mic_required = msg.mech_types[0] != NTLM_OID
                return NegTokenResp(NegState.ACCEPT_INCOMPLETE, NTLM_OID).encode()
            answer = self._ntlm.step(msg.mech_token)
            return NegTokenResp(NegState.ACCEPT_INCOMPLETE, NTLM_OID, answer).encode()
        if not isinstance(msg, NegTokenResp) or self._ntlm is None:
            raise AuthError("expected NegTokenResp")
        if msg.neg_state == NegState.REJECT:
            raise AuthError("the client rejected the negotiation")
        if not msg.response_token:
            raise AuthError("NegTokenResp without a mechanism token")
        answer = self._ntlm.step(msg.response_token)
        if not self._ntlm.complete:
            return NegTokenResp(NegState.ACCEPT_INCOMPLETE, b"", answer).encode()
        session = self._ntlm.session
        assert session is not None
        if self._ntlm.mic_present:
            self._mic_required = True
        our_mic = b""
        if msg.mech_list_mic:
            _verify_mic(session, self._mech_list_der, msg.mech_list_mic)
            our_mic = _make_mic(session, self._mech_list_der)
        elif self._mic_required:
            raise AuthError("SPNEGO mechListMIC required but missing")
        self.complete = True
        return NegTokenResp(NegState.ACCEPT_COMPLETED, b"", b"", our_mic).encode()


class SpnegoInitiator:
    """Client side of SPNEGO offering NTLM only (with MIC, as Windows sends it)."""

    def __init__(self, ntlm: NtlmInitiator) -> None:
        self._ntlm = ntlm
        self._mech_list_der = der(0x30, NTLM_OID)
        self._expect_mic = False
        self.complete = False
        self._first = True

    @property
    def session(self) -> SessionSecurity | None:
        return self._ntlm.session if self.complete else None

    def step(self, token: bytes = b"") -> bytes:
        """First call: NegTokenInit with an NTLM NEGOTIATE. Later calls: the server's
        NegTokenResp in, ours out (empty once the server's final token is checked).

        Raises:
            AuthError: the server refused, chose another mechanism, or its MIC is bad.
        """
        if self._first:
            self._first = False
            return NegTokenInit((NTLM_OID,), self._ntlm.step()).encode()
        msg = decode_token(token)
        if not isinstance(msg, NegTokenResp):
            raise AuthError("expected NegTokenResp")
        if msg.neg_state == NegState.REJECT:
            raise AuthError("the server rejected SPNEGO negotiation")
        if msg.supported_mech and msg.supported_mech != NTLM_OID:
            raise AuthError("the server chose a mechanism we did not offer")
        if not self._ntlm.complete:
            if not msg.response_token:
                raise AuthError("expected an NTLM CHALLENGE")
            authenticate = self._ntlm.step(msg.response_token)
            session = self._ntlm.session
            assert session is not None
            mic = _make_mic(session, self._mech_list_der)
            self._expect_mic = True
            return NegTokenResp(None, b"", authenticate, mic).encode()
        # The server's final answer: accept-completed with its mechListMIC.
        if msg.neg_state != NegState.ACCEPT_COMPLETED:
            raise AuthError("SPNEGO did not complete")
        session = self._ntlm.session
        assert session is not None
        if self._expect_mic:
            if not msg.mech_list_mic:
                raise AuthError("the server sent no mechListMIC")
            _verify_mic(session, self._mech_list_der, msg.mech_list_mic)
        self.complete = True
        return b""
