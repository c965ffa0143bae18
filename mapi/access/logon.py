"""Challenge-response logon: no password crosses the network.

Theory of operation
-------------------
The directory stores, per user, a random salt, scrypt parameters and the verifier
key ``K = scrypt(NFKC(password), salt, n, r, p, dklen=32)`` (memory-hard: 128*n*r
bytes per guess). **K is password-equivalent for this protocol**: whoever holds K
can log on as the user without knowing the password. It is therefore stored only in
the directory database, a file of mode 0600 in a data directory of mode 0700, and
never leaves the server.

A logon is one round trip plus the answer:

1. server -> client: :class:`Challenge` = salt, scrypt parameters and a fresh
   32-byte random ``server_nonce`` (:func:`make_challenge`). For an unknown user the
   server answers with a salt derived from its secret and the name, so the reply does
   not reveal whether the user exists.
2. client -> server: a 32-byte random ``client_nonce`` and
   ``HMAC-SHA256(K, "C" || label || server_nonce || client_nonce || username)``
   (:func:`client_response`); the client derives K itself from the password.
3. The server recomputes the HMAC from its stored K and compares in constant time
   (:func:`verify_response`); challenges are single-use, so a recorded answer cannot
   be replayed. The issuer keeps them in a :class:`PendingChallenges` per connection
   (bounded, expiring), so they go with the connection that asked for them, and the
   answer is judged for the user the challenge was issued to, whatever name comes
   with it. The server's answer carries :func:`server_proof` (role "S"): the client
   checks it, so a server that does not know K (an impostor on the LAN) cannot pass
   for ours.

The client refuses scrypt parameters below :data:`MIN_KDF_COST` (``n * r``: a fake
server offering ``n = 16`` would otherwise get an answer that is thousands of times
cheaper to attack offline); the server's default (``n = 2**15, r = 8``) is 32 times
above that floor.

This logon runs on every transport, inside NTLM sealing on the LAN (see
docs/security.md, "One logon path"): when the connection authenticated, the service
requires the same user.

An eavesdropper learns the salt and one HMAC per logon: enough for an offline
dictionary attack at scrypt cost per guess, which is the price of not needing TLS on
the LAN; the tunnel adds TLS on top. All functions are pure (randomness can be
passed in) so both sides are tested with vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mapi.model import errors

LABEL: Final = b"mapi-anywhere logon v1"
NONCE_BYTES: Final = 32
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
MAX_PASSWORD_CHARS: Final = 1024
#: The least scrypt cost a client accepts from a server, as ``n * r`` (128 bytes of
#: memory each per guess): 2**13, 1 MiB per guess. The default is 2**18 (32 MiB).
MIN_KDF_COST: Final = 1 << 13


@dataclass(frozen=True, slots=True)
class KdfParams:
    """scrypt cost parameters (n a power of two)."""

    n: int = 1 << 15
    r: int = 8
    p: int = 1

    def meets_floor(self, floor: int = MIN_KDF_COST) -> bool:
        """Whether a client should run these parameters: at least ``floor`` (``n * r``)."""
        return self.n * self.r >= floor

    def check(self) -> KdfParams:
        """Refuse parameters that are too weak or would exhaust memory or time.

        Raises:
            InvalidParameter: out of the accepted range.
        """
        n, r, p = self.n, self.r, self.p
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
            raise errors.InvalidParameter("scrypt parameters must be ints")
        if not (1 << 4 <= n <= 1 << 20 and n & (n - 1) == 0):
            raise errors.InvalidParameter("scrypt n must be a power of two in 2**4..2**20")
        if not 1 <= r <= 32 or not 1 <= p <= 16 or 128 * n * r > 1 << 30:
            raise errors.InvalidParameter("scrypt r/p out of range")
        return self


@dataclass(frozen=True, slots=True)
class Challenge:
    """What the server sends to start a logon."""

    username: str
    salt: bytes
    params: KdfParams
    server_nonce: bytes


def normalise_password(password: str) -> bytes:
    """The bytes the KDF sees: NFKC-normalised UTF-8.

    Raises:
        InvalidParameter: empty, too long or not a str.
    """
    if not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD_CHARS:
        raise errors.InvalidParameter("bad password")
    return unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")


def derive_key(password: str, salt: bytes, params: KdfParams) -> bytes:
    """K = scrypt(password, salt, n, r, p)."""
    params.check()
    return hashlib.scrypt(
        normalise_password(password),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=128 * params.n * params.r * (params.p + 2) + (1 << 20),
        dklen=KEY_BYTES,
    )


def _transcript(role: bytes, challenge: Challenge, client_nonce: bytes) -> bytes:
    if len(challenge.server_nonce) != NONCE_BYTES or len(client_nonce) != NONCE_BYTES:
        raise errors.InvalidParameter("nonces must be 32 bytes")
    return b"".join(
        (role, LABEL, challenge.server_nonce, client_nonce, challenge.username.encode("utf-8"))
    )


def challenge_name(username: object) -> str:
    """The name a challenge is issued to (and an answer must carry): lower case, trimmed;
    not checked, so that unknown and malformed names get a decoy like any other."""
    return username.strip().lower() if isinstance(username, str) else ""


def make_challenge(
    username: str,
    salt: bytes | None,
    params: KdfParams,
    *,
    server_secret: bytes,
    nonce: bytes | None = None,
) -> Challenge:
    """The server's challenge; ``salt`` None means "unknown user" (a decoy salt)."""
    if salt is None:
        salt = hmac.new(server_secret, b"decoy-salt\x00" + username.encode(), "sha256").digest()
        salt = salt[:SALT_BYTES]
    return Challenge(username, salt, params, nonce if nonce is not None else os.urandom(32))


def client_response(
    password: str, challenge: Challenge, client_nonce: bytes | None = None
) -> tuple[bytes, bytes]:
    """The client's answer: (client_nonce, response).

    Raises:
        InvalidParameter: the challenge carries unacceptable scrypt parameters.
    """
    nonce = client_nonce if client_nonce is not None else os.urandom(NONCE_BYTES)
    key = derive_key(password, challenge.salt, challenge.params)
    mac = hmac.new(key, _transcript(b"C", challenge, nonce), "sha256").digest()
    return nonce, mac


def response_with_key(key: bytes, challenge: Challenge, client_nonce: bytes) -> bytes:
    """The client's answer from K already derived (so that one derivation serves the
    answer and the check of :func:`server_proof`)."""
    return hmac.new(key, _transcript(b"C", challenge, client_nonce), "sha256").digest()


def verify_response(key: bytes, challenge: Challenge, client_nonce: bytes, response: bytes) -> bool:
    """True when ``response`` proves knowledge of ``key`` (constant-time compare)."""
    if not isinstance(response, bytes) or not isinstance(client_nonce, bytes):
        return False
    try:
        expected = hmac.new(key, _transcript(b"C", challenge, client_nonce), "sha256").digest()
    except errors.MapiError:
        return False
    return hmac.compare_digest(expected, response)


def server_proof(key: bytes, challenge: Challenge, client_nonce: bytes) -> bytes:
    """The server's proof that it knows K (the client checks it with compare_digest)."""
    return hmac.new(key, _transcript(b"S", challenge, client_nonce), "sha256").digest()


def verify_server_proof(
    password: str, challenge: Challenge, client_nonce: bytes, proof: bytes
) -> bool:
    """Client side: check :func:`server_proof`."""
    key = derive_key(password, challenge.salt, challenge.params)
    return hmac.compare_digest(server_proof(key, challenge, client_nonce), proof)


class PendingChallenges:
    """Challenges issued and not yet answered, by server nonce: single use, each valid
    for ``lifetime`` (in ``clock``'s units), at most ``limit`` at once.

    One per connection (the RPC service keeps it in the connection's state): a peer
    can hold no more than ``limit`` of them, and they go when its connection does.
    Not thread-safe: used from the event loop only.
    """

    def __init__(self, limit: int, lifetime: int, clock: Callable[[], int]) -> None:
        self.limit = limit
        self.lifetime = lifetime
        self.clock = clock
        self._issued: dict[bytes, tuple[Challenge, int]] = {}

    def __len__(self) -> int:
        return len(self._issued)

    def full(self) -> bool:
        """Whether another challenge would pass the limit (expired ones are dropped)."""
        if len(self._issued) >= self.limit:
            now = self.clock()
            for nonce in [n for n, (_, until) in self._issued.items() if until < now]:
                del self._issued[nonce]
        return len(self._issued) >= self.limit

    def add(self, challenge: Challenge) -> None:
        """Keep an issued challenge.

        Raises:
            NotEnoughResources: :meth:`full`.
        """
        if self.full():
            raise errors.NotEnoughResources("too many logons in progress on this connection")
        self._issued[challenge.server_nonce] = (challenge, self.clock() + self.lifetime)

    def take(self, server_nonce: object) -> Challenge | None:
        """The challenge of ``server_nonce``, now used up; None if it was never issued
        here, was used already or has expired."""
        if not isinstance(server_nonce, bytes):
            return None
        entry = self._issued.pop(server_nonce, None)
        if entry is None or entry[1] < self.clock():
            return None
        return entry[0]
