"""Security vocabulary of the DCE/RPC runtime ([MS-RPCE] 2.2.1.1.7-8, 2.2.2.11).

Theory of operation
-------------------
A PDU that carries authentication ends with an 8-byte ``sec_trailer``::

    auth_type u8 | auth_level u8 | auth_pad_length u8 | auth_reserved u8 | auth_context_id u32

followed by ``auth_length`` bytes of auth value: a mechanism token on bind,
bind_ack, alter_context, alter_context_resp and auth3, a signature on request and
response. ``auth_pad_length`` bytes of padding sit before the trailer so it starts
4-aligned (we pad stubs to 16, as Windows and Samba do, and accept any padding that
fits).

This module holds what the connection cores, the mechanisms (:mod:`dcerpc.ntlm`,
:mod:`dcerpc.spnego`) and the services share: auth types and levels, the caller's
:class:`Identity`, an interface's :class:`AuthPolicy`, the :class:`AuthError` a
mechanism raises, and the ``sec_trailer`` codec. It imports no mechanism.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

SEC_TRAILER = struct.Struct("<BBBBI")
#: The auth value of a request or response at integrity or privacy: an NTLM signature.
SIGNATURE_SIZE: Final = 16
#: Stub data is padded to this before the sec_trailer at integrity/privacy levels.
AUTH_PAD_ALIGNMENT: Final = 16
#: Largest auth value accepted on a bind, alter_context or auth3 (a token); Windows'
#: Kerberos tokens can reach 12 KiB, NTLM's stay under 2 KiB.
MAX_TOKEN_SIZE: Final = 16384


class AuthType(enum.IntEnum):
    """``auth_type`` values ([MS-RPCE] 2.2.1.1.7) we recognise."""

    NONE = 0
    SPNEGO = 9  # RPC_C_AUTHN_GSS_NEGOTIATE
    NTLM = 10  # RPC_C_AUTHN_WINNT
    KERBEROS = 16
    NETLOGON = 0x44


class AuthLevel(enum.IntEnum):
    """``auth_level`` values ([MS-RPCE] 2.2.1.1.8), in increasing order of protection."""

    NONE = 1
    CONNECT = 2
    CALL = 3
    PKT = 4
    PKT_INTEGRITY = 5
    PKT_PRIVACY = 6


def protection(level: int) -> int:
    """What a level means on the wire for connection-oriented RPC: CONNECT
    authenticates only; CALL (upgraded to PKT on ncacn, as Windows does), PKT and
    PKT_INTEGRITY sign every PDU (as Samba does for PKT); PKT_PRIVACY also seals."""
    if level >= AuthLevel.PKT_PRIVACY:
        return AuthLevel.PKT_PRIVACY
    if level >= AuthLevel.CALL:
        return AuthLevel.PKT_INTEGRITY
    return level


class AuthError(Exception):
    """A security mechanism refused: malformed token, unknown user, wrong password,
    bad MIC or signature."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a security context authenticated. ``anonymous`` is set for NTLM's
    anonymous AUTHENTICATE (empty user, no response), which proves nothing."""

    user: str
    domain: str = ""
    anonymous: bool = False


@dataclass(frozen=True, slots=True)
class CallerAuth:
    """The authentication a call arrived under, as handlers see it
    (``CallContext.auth``). None there means the connection is unauthenticated."""

    identity: Identity
    auth_type: int
    auth_level: int

    @property
    def user(self) -> str:
        return self.identity.user

    @property
    def domain(self) -> str:
        return self.identity.domain

    @property
    def anonymous(self) -> bool:
        return self.identity.anonymous


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """What an interface demands of its callers, enforced before any handler runs.

    ``min_level``: the lowest auth level a call may arrive at (``AuthLevel.NONE``
    admits unauthenticated connections). ``allow_anonymous``: whether an anonymous
    NTLM login satisfies it (it never satisfies a level above NONE for a store, but
    the endpoint mapper, like Windows', takes anonymous callers at any level).
    """

    min_level: int = AuthLevel.NONE
    allow_anonymous: bool = True

    def admits(self, auth: CallerAuth | None) -> bool:
        """Whether a call under ``auth`` (None: unauthenticated) may run."""
        if auth is None:
            return self.min_level <= AuthLevel.NONE
        if auth.anonymous and not self.allow_anonymous:
            return False
        return auth.auth_level >= self.min_level

    def admits_level(self, level: int) -> bool:
        """Whether a bind asking for ``level`` could ever satisfy this policy."""
        return level >= self.min_level


#: The endpoint mapper's and the management interface's policy: anyone, as on Windows.
OPEN_POLICY: Final = AuthPolicy()


@dataclass(frozen=True, slots=True)
class SecTrailer:
    auth_type: int
    auth_level: int
    pad_length: int
    context_id: int

    def encode(self) -> bytes:
        return SEC_TRAILER.pack(
            self.auth_type, self.auth_level, self.pad_length, 0, self.context_id
        )


def split_verifier(verifier: bytes) -> tuple[SecTrailer, bytes]:
    """(sec_trailer, auth value) of a PDU's raw verifier (trailer + auth value).

    Raises:
        AuthError: shorter than a trailer.
    """
    if len(verifier) < SEC_TRAILER.size:
        raise AuthError("truncated sec_trailer")
    auth_type, level, pad, _reserved, ctx_id = SEC_TRAILER.unpack_from(verifier, 0)
    return SecTrailer(auth_type, level, pad, ctx_id), verifier[SEC_TRAILER.size :]


#: Longest user name accepted in any of the forms :func:`split_user_name` reads.
MAX_USERNAME: Final = 256


def split_user_name(name: str) -> tuple[str, str] | None:
    """``(user, domain)`` of a user name in the forms Windows clients send:
    ``DOMAIN\\user``, ``\\user``, ``user@domain`` or ``user`` (domain ""). None when no
    user is left (``DOMAIN\\``, ``@domain``, blanks)."""
    name = name.strip()
    domain, sep, rest = name.rpartition("\\")
    if not sep:
        domain, rest = "", name
    user, at, realm = rest.partition("@")
    if at and not domain:
        domain = realm
    user = user.strip()
    if not user or len(user) > MAX_USERNAME:
        return None
    return user, domain.strip()
