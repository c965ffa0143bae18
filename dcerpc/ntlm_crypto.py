"""The arithmetic of NTLM ([MS-NLMP] 3.3.2, 3.4): hashes, keys, signing and sealing.

Theory of operation
-------------------
NTLM needs three primitives the standard library does not all give: MD4 (for the NT
hash; OpenSSL 3 dropped it from ``hashlib``), HMAC-MD5 (``hmac``) and RC4
(``cryptography``'s ``decrepit`` ARC4, a C implementation). MD4 is written out here
from RFC 1320; it only ever hashes a password, so its speed does not matter.

Once an NTLM exchange is over both sides hold the *exported session key*. From it
:class:`NtlmSession` derives, per direction, a signing key and a sealing key
([MS-NLMP] 3.4.5.2/3.4.5.3, extended session security, 128-bit) and keeps one RC4
state and one sequence number per direction ([MS-NLMP] 3.4.4: connection-oriented
NTLM starts both at 0 and expects each received message to carry the next number).
A signature is ``version 1 | RC4(HMAC_MD5(SignKey, seq | message)[:8]) | seq``; sealing
encrypts the data with the same RC4 state *before* the checksum is encrypted, so the
order of operations is part of the protocol.

:class:`Ntlm1Session` is NTLM's older session security ([MS-NLMP] 3.4.2-3.4.4 without
``NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY``), kept for one case only: Samba's
client drops extended session security from an *anonymous* AUTHENTICATE and then
signs or seals with it. One RC4 state keyed by the exported session key and one
sequence number serve both directions, in the order the messages are processed; a
signature is ``version 1 | RC4(0 (4) | CRC32(data) | seq)`` and only its last 8 bytes
are compared (the sender may put anything in the first 4). An anonymous session's key
is known to anyone who saw the exchange, so this protects nothing; it only lets such
clients talk to services that take anonymous callers.

DCE/RPC gives both kinds the PDU's stub-plus-padding (``data``) and the whole PDU up
to the verifier (``whole``): extended session security signs ``whole``, NTLM1's CRC
covers ``data`` (:meth:`NtlmSession.sign_pdu`, :meth:`NtlmSession.verify_pdu`).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext

_M32 = 0xFFFFFFFF
SIGNATURE_SIZE = 16
_CLIENT_SIGN = b"session key to client-to-server signing key magic constant\x00"
_SERVER_SIGN = b"session key to server-to-client signing key magic constant\x00"
_CLIENT_SEAL = b"session key to client-to-server sealing key magic constant\x00"
_SERVER_SEAL = b"session key to server-to-client sealing key magic constant\x00"


class SignatureError(Exception):
    """A message signature did not verify (wrong key, tampering, replay or reordering)."""


def _rotl(value: int, shift: int) -> int:
    value &= _M32
    return ((value << shift) | (value >> (32 - shift))) & _M32


_R2_ORDER = (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
_R3_ORDER = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)


def md4(data: bytes) -> bytes:
    """MD4 of ``data`` (RFC 1320)."""
    msg = bytearray(data)
    bit_length = (8 * len(data)) & 0xFFFFFFFFFFFFFFFF
    msg.append(0x80)
    msg += b"\x00" * ((56 - len(msg) % 64) % 64)
    msg += struct.pack("<Q", bit_length)
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for block in range(0, len(msg), 64):
        x = struct.unpack_from("<16I", msg, block)
        r = list(h)
        # Each step updates one register and the roles rotate (a, b, c, d) -> (d, a, b, c).
        for i in range(16):
            a, b, c, d = r[-i % 4], r[(1 - i) % 4], r[(2 - i) % 4], r[(3 - i) % 4]
            f = (b & c) | (~b & d)
            r[-i % 4] = _rotl(a + f + x[i], (3, 7, 11, 19)[i % 4])
        for i in range(16):
            a, b, c, d = r[-i % 4], r[(1 - i) % 4], r[(2 - i) % 4], r[(3 - i) % 4]
            g = (b & c) | (b & d) | (c & d)
            r[-i % 4] = _rotl(a + g + x[_R2_ORDER[i]] + 0x5A827999, (3, 5, 9, 13)[i % 4])
        for i in range(16):
            a, b, c, d = r[-i % 4], r[(1 - i) % 4], r[(2 - i) % 4], r[(3 - i) % 4]
            r[-i % 4] = _rotl(a + (b ^ c ^ d) + x[_R3_ORDER[i]] + 0x6ED9EBA1, (3, 9, 11, 15)[i % 4])
        h = [(h[j] + r[j]) & _M32 for j in range(4)]
    return struct.pack("<4I", *h)


def nt_hash(password: str) -> bytes:
    """NTOWFv1: MD4(UTF-16LE(password)), the password equivalent a directory stores."""
    return md4(password.encode("utf-16-le"))


def hmac_md5(key: bytes, *parts: bytes) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.md5)
    for part in parts:
        mac.update(part)
    return mac.digest()


class _KeyedMd5:
    """HMAC-MD5 under one fixed key, the padded key's MD5 states computed once
    ([RFC 2104]): each message then costs two state copies and two MD5 finishes, a
    third of ``hmac.new`` per PDU (a session signs every PDU with one key per
    direction)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.md5(key).digest()
        key = key.ljust(64, b"\x00")
        self._inner = hashlib.md5(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.md5(bytes(b ^ 0x5C for b in key))

    def digest(self, first: bytes, second: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(first)
        inner.update(second)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def ntowf_v2(nt: bytes, user: str, domain: str) -> bytes:
    """NTOWFv2 = HMAC_MD5(NT hash, UTF-16LE(Uppercase(user) + domain))."""
    return hmac_md5(nt, (user.upper() + domain).encode("utf-16-le"))


def rc4(key: bytes) -> CipherContext:
    """A fresh RC4 keystream; ``update`` continues it."""
    return Cipher(ARC4(key), mode=None).encryptor()


def rc4_once(key: bytes, data: bytes) -> bytes:
    return rc4(key).update(data)


class NtlmSession:
    """Per-direction signing and sealing state after an NTLM exchange.

    ``initiator`` says which end we are: the client signs with the client-to-server
    keys and verifies with the server-to-client ones, the server the reverse.
    ``key_exchange`` (NTLMSSP_NEGOTIATE_KEY_EXCH) says whether checksums are RC4
    encrypted. Only extended session security with 128-bit keys is offered.
    """

    def __init__(self, exported_session_key: bytes, *, initiator: bool, key_exchange: bool) -> None:
        key = exported_session_key
        out_sign, in_sign = (
            (_CLIENT_SIGN, _SERVER_SIGN) if initiator else (_SERVER_SIGN, _CLIENT_SIGN)
        )
        out_seal, in_seal = (
            (_CLIENT_SEAL, _SERVER_SEAL) if initiator else (_SERVER_SEAL, _CLIENT_SEAL)
        )
        self.session_key = key
        self._sign_out = hashlib.md5(key + out_sign).digest()
        self._sign_in = hashlib.md5(key + in_sign).digest()
        self._seal_key_out = hashlib.md5(key + out_seal).digest()
        self._seal_key_in = hashlib.md5(key + in_seal).digest()
        self._mac_out = _KeyedMd5(self._sign_out)
        self._mac_in = _KeyedMd5(self._sign_in)
        self._key_exchange = key_exchange
        self._rc4_out = rc4(self._seal_key_out)
        self._rc4_in = rc4(self._seal_key_in)
        self.seq_out = 0
        self.seq_in = 0

    def reset_rc4(self, *, outgoing: bool) -> None:
        """Restart one direction's RC4 state ([MS-SPNG]: after SPNEGO's mechListMIC the
        first message is protected with the state the MIC started from)."""
        if outgoing:
            self._rc4_out = rc4(self._seal_key_out)
        else:
            self._rc4_in = rc4(self._seal_key_in)

    def _checksum(self, mac: _KeyedMd5, seq: int, message: bytes, stream: CipherContext) -> bytes:
        seq_bytes = struct.pack("<I", seq)
        checksum = mac.digest(seq_bytes, message)[:8]
        if self._key_exchange:
            checksum = stream.update(checksum)
        return b"\x01\x00\x00\x00" + checksum + seq_bytes

    def sign(self, message: bytes) -> bytes:
        """The 16-byte signature of an outgoing message (GSS_GetMIC)."""
        sig = self._checksum(self._mac_out, self.seq_out, message, self._rc4_out)
        self.seq_out = (self.seq_out + 1) & _M32
        return sig

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check an incoming message's signature (GSS_VerifyMIC).

        Raises:
            SignatureError: it does not match; the sequence number is not advanced.
        """
        expected = self._checksum(self._mac_in, self.seq_in, message, self._rc4_in)
        if len(signature) != SIGNATURE_SIZE or not hmac.compare_digest(expected, signature):
            raise SignatureError("NTLM signature mismatch")
        self.seq_in = (self.seq_in + 1) & _M32

    def seal(self, data: bytes, whole: bytes) -> tuple[bytes, bytes]:
        """Encrypt ``data`` and sign ``whole`` (the plaintext message containing it, as
        DCE/RPC signs the whole PDU and seals the stub): (ciphertext, signature)."""
        seq = self.seq_out
        mac = self._mac_out.digest(struct.pack("<I", seq), whole)[:8]
        sealed = self._rc4_out.update(data)
        if self._key_exchange:
            mac = self._rc4_out.update(mac)
        self.seq_out = (seq + 1) & _M32
        return sealed, b"\x01\x00\x00\x00" + mac + struct.pack("<I", seq)

    def unseal(self, sealed: bytes) -> bytes:
        """Decrypt incoming data; :meth:`verify_sealed` must follow for the same message."""
        return self._rc4_in.update(sealed)

    def verify_sealed(self, whole: bytes, signature: bytes, data: bytes = b"") -> None:
        """Check the signature of a message just :meth:`unseal` ed (``whole`` holds the
        plaintext; ``data``, the decrypted part, is what NTLM1 checks instead).

        Raises:
            SignatureError: it does not match.
        """
        self.verify(whole, signature)

    def sign_pdu(self, data: bytes, whole: bytes) -> bytes:
        """The signature of an outgoing PDU at integrity level (see the module notes)."""
        return self.sign(whole)

    def verify_pdu(self, data: bytes, whole: bytes, signature: bytes) -> None:
        """Check an incoming PDU's signature at integrity level.

        Raises:
            SignatureError: it does not match.
        """
        self.verify(whole, signature)


class Ntlm1Session:
    """NTLM session security without extended session security (anonymous only; see
    the module notes). Same interface as :class:`NtlmSession`."""

    def __init__(self, exported_session_key: bytes) -> None:
        self.session_key = exported_session_key
        self._rc4 = rc4(exported_session_key)
        self.seq = 0

    def reset_rc4(self, *, outgoing: bool) -> None:
        """Restart the (shared) RC4 state, as Samba does after a mechListMIC."""
        self._rc4 = rc4(self.session_key)

    def _signature(self, data: bytes) -> bytes:
        plain = struct.pack("<III", 0, zlib.crc32(data), self.seq)
        self.seq = (self.seq + 1) & _M32
        return b"\x01\x00\x00\x00" + self._rc4.update(plain)

    def sign(self, message: bytes) -> bytes:
        return self._signature(message)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raises SignatureError on a mismatch. The shared RC4 state has moved on
        either way: a connection that failed a check must be closed."""
        expected = self._signature(message)
        if len(signature) != SIGNATURE_SIZE or not hmac.compare_digest(expected[8:], signature[8:]):
            raise SignatureError("NTLM signature mismatch")

    def seal(self, data: bytes, whole: bytes) -> tuple[bytes, bytes]:
        crc = zlib.crc32(data)
        sealed = self._rc4.update(data)
        plain = struct.pack("<III", 0, crc, self.seq)
        self.seq = (self.seq + 1) & _M32
        return sealed, b"\x01\x00\x00\x00" + self._rc4.update(plain)

    def unseal(self, sealed: bytes) -> bytes:
        return self._rc4.update(sealed)

    def verify_sealed(self, whole: bytes, signature: bytes, data: bytes = b"") -> None:
        self.verify(data, signature)

    def sign_pdu(self, data: bytes, whole: bytes) -> bytes:
        return self.sign(data)

    def verify_pdu(self, data: bytes, whole: bytes, signature: bytes) -> None:
        self.verify(data, signature)


#: Either kind of NTLM session security.
SessionSecurity = NtlmSession | Ntlm1Session
