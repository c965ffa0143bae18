"""One connection's security context: tokens at bind time, verifiers on every call PDU.

Theory of operation
-------------------
[MS-RPCE] 3.3.1.5 (server) and 3.2.1.5 (client): a bind (or alter_context) whose PDU
carries a ``sec_trailer`` starts a security context named by the trailer's
``auth_context_id``; the mechanism's tokens travel in the auth value of bind /
bind_ack, then either auth3 (NTLM's third leg, no reply) or alter_context /
alter_context_resp (SPNEGO, whose acceptor has a last word). Every later PDU of the
connection names the same auth type, level and context id.

Once the mechanism is complete, :class:`SecurityContext` protects call PDUs by the
level's meaning (:func:`dcerpc.security.protection`):

* CONNECT: no verifier is sent; one received is checked for consistency only
  (Samba and Windows ignore signatures at this level).
* integrity: the stub is padded to 16, the trailer appended, and the 16-byte NTLM
  signature covers the *whole* PDU, header included (what NTLM does whether or not
  the client asked for header signing with PFC_SUPPORT_HEADER_SIGN).
* privacy: as integrity, and the stub plus padding are sealed (RC4) before the
  signature's checksum is encrypted; the header and trailer stay in clear.

Each protected fragment consumes one sequence number in its direction, so a dropped,
replayed or reordered PDU fails verification. Faults are sent without a verifier
(their status must stay readable; impacket and Windows read it in clear) and one
received is not checked.

:class:`ServerSecurity` is what a server is configured with (the directory callback,
our names, which auth types); :class:`ClientAuth` what a client asks for. Both make
mechanisms; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from dcerpc.ntlm import (
    AuthenticateMessage,
    NtHashLookup,
    NtlmAcceptor,
    NtlmInitiator,
    ServerNames,
)
from dcerpc.ntlm_crypto import SessionSecurity, SignatureError
from dcerpc.security import (
    AUTH_PAD_ALIGNMENT,
    SEC_TRAILER,
    SIGNATURE_SIZE,
    AuthError,
    AuthLevel,
    AuthType,
    CallerAuth,
    Identity,
    SecTrailer,
    protection,
)
from dcerpc.spnego import SpnegoAcceptor, SpnegoInitiator

#: Bytes a protected fragment adds at most: padding to 16, the trailer, the signature.
PROTECTION_OVERHEAD = AUTH_PAD_ALIGNMENT - 1 + SEC_TRAILER.size + SIGNATURE_SIZE
_VALID_LEVELS = frozenset(range(AuthLevel.CONNECT, AuthLevel.PKT_PRIVACY + 1))


class Mechanism(Protocol):
    """A GSS-like security mechanism as the connection cores drive it (NTLM's and
    SPNEGO's acceptors and initiators are such)."""

    @property
    def complete(self) -> bool: ...

    def step(self, token: bytes) -> bytes: ...

    @property
    def session(self) -> SessionSecurity | None: ...


class AcceptorMechanism(Mechanism, Protocol):
    @property
    def identity(self) -> Identity | None: ...


#: A connection's peer address (None: unknown, an in-process relay that named none).
Peer = tuple[str, int] | None
#: ``(user, domain, peer)``: told of an authentication the mechanism refused.
AuthFailureHook = Callable[[str, str, Peer], None]
#: ``(user, domain, peer) -> bool``: asked before the user's NT hash is looked up.
AuthAdmitHook = Callable[[str, str, Peer], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSecurity:
    """A server's security providers.

    Args:
        lookup_nt_hash: ``(user, domain) -> NT hash | None``, the directory. It is
            called on the event loop while a bind is handled, so it must answer from
            memory (a cache the directory keeps), never block.
        names: how CHALLENGE messages name the server.
        auth_types: the auth types accepted (NTLM and SPNEGO-with-NTLM by default).
        random: randomness for server challenges (tests pass a fixed source).
        on_auth_failure: told ``(user, domain, peer)`` of each authentication the
            mechanism refused (wrong password, unknown user, bad MIC; ``user`` is ""
            when the client named none): a logon throttle counts them. On the loop.
        admit: asked ``(user, domain, peer)`` before the NT hash is looked up; False
            refuses the attempt as an unknown user would be, and is not reported to
            ``on_auth_failure`` (a throttle holding a guesser back). On the loop.
        peer: the connection's peer, passed to the hooks (:meth:`for_peer`).
    """

    lookup_nt_hash: NtHashLookup
    names: ServerNames = field(default_factory=ServerNames)
    auth_types: frozenset[int] = frozenset({AuthType.NTLM, AuthType.SPNEGO})
    random: Callable[[int], bytes] = os.urandom
    on_auth_failure: AuthFailureHook | None = None
    admit: AuthAdmitHook | None = None
    peer: Peer = None

    def for_peer(self, peer: Peer) -> ServerSecurity:
        """This configuration for one connection from ``peer`` (what the hooks see)."""
        if self.on_auth_failure is None and self.admit is None:
            return self
        return replace(self, peer=peer)

    def _admitted_lookup(self, user: str, domain: str) -> bytes | None:
        return _admitted(self, user, domain)

    def acceptor(self, auth_type: int, now: float | None) -> AcceptorMechanism | None:
        """A fresh acceptor for ``auth_type``, or None if we do not offer it."""
        if auth_type not in self.auth_types:
            return None
        mech = self._acceptor(auth_type, now)
        if mech is None or (self.on_auth_failure is None and self.admit is None):
            return mech
        return _ReportedAcceptor(mech, self)

    def _acceptor(self, auth_type: int, now: float | None) -> AcceptorMechanism | None:
        lookup = self.lookup_nt_hash if self.admit is None else self._admitted_lookup

        def ntlm() -> NtlmAcceptor:
            return NtlmAcceptor(lookup, self.names, now=now, random=self.random)

        if auth_type == AuthType.NTLM:
            return ntlm()
        if auth_type == AuthType.SPNEGO:
            return SpnegoAcceptor(ntlm)
        return None


def _admitted(security: ServerSecurity, user: str, domain: str) -> bytes | None:
    assert security.admit is not None
    if not security.admit(user, domain, security.peer):
        raise _Held(f"{user!r} is held back")
    return security.lookup_nt_hash(user, domain)


class _Held(AuthError):
    """``admit`` refused: an authentication failure that is not reported again."""


class _ReportedAcceptor:
    """An acceptor that tells :attr:`ServerSecurity.on_auth_failure` of its refusals
    (with the user the client named, which the NT-hash lookup saw)."""

    def __init__(self, mech: AcceptorMechanism, security: ServerSecurity) -> None:
        self._mech = mech
        self._security = security
        self._claimed = ("", "")

    @property
    def complete(self) -> bool:
        return self._mech.complete

    @property
    def session(self) -> SessionSecurity | None:
        return self._mech.session

    @property
    def identity(self) -> Identity | None:
        return self._mech.identity

    def step(self, token: bytes) -> bytes:
        try:
            return self._mech.step(token)
        except _Held:
            raise
        except AuthError:
            hook = self._security.on_auth_failure
            if hook is not None:
                user, domain = _claimed_user(token)
                hook(user, domain, self._security.peer)
            raise


def _claimed_user(token: bytes) -> tuple[str, str]:
    """The user and domain an NTLM AUTHENTICATE (bare or inside SPNEGO) names, or
    ("", "") when ``token`` holds none that decodes."""
    start = token.find(b"NTLMSSP\x00\x03\x00\x00\x00")
    if start < 0:
        return "", ""
    try:
        msg = AuthenticateMessage.decode(token[start:])
    except (AuthError, ValueError, IndexError, struct.error):
        return "", ""
    return msg.user, msg.domain


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAuth:
    """What our client authenticates with. An empty ``user`` and ``password`` make an
    anonymous NTLM login."""

    user: str
    password: str
    domain: str = ""
    auth_type: int = AuthType.NTLM
    auth_level: int = AuthLevel.PKT_PRIVACY
    #: Our auth_context_id (any value; Windows uses small integers).
    context_id: int = 1
    workstation: str = ""
    random: Callable[[int], bytes] = os.urandom

    def __post_init__(self) -> None:
        if self.auth_type not in (AuthType.NTLM, AuthType.SPNEGO):
            raise ValueError("our client speaks NTLM (10) and SPNEGO (9) only")
        if self.auth_level not in _VALID_LEVELS:
            raise ValueError("auth_level must be CONNECT (2) .. PKT_PRIVACY (6)")

    def initiator(self, now: float) -> Mechanism:
        ntlm = NtlmInitiator(
            self.user,
            self.password,
            self.domain,
            workstation=self.workstation,
            now=now,
            random=self.random,
        )
        if self.auth_type == AuthType.SPNEGO:
            return SpnegoInitiator(ntlm)
        return ntlm


def valid_level(level: int) -> bool:
    return level in _VALID_LEVELS


class SecurityContext:
    """One security context of a connection (see the module docstring)."""

    def __init__(self, trailer: SecTrailer, mech: Mechanism) -> None:
        self.auth_type = trailer.auth_type
        self.auth_level = trailer.auth_level
        self.context_id = trailer.context_id
        self.mech = mech
        self._protection = protection(trailer.auth_level)
        #: The mechanism refused (wrong password...): every call is refused.
        self.failed = False

    @property
    def complete(self) -> bool:
        return self.mech.complete and not self.failed

    def matches(self, trailer: SecTrailer) -> bool:
        return (trailer.auth_type, trailer.auth_level, trailer.context_id) == (
            self.auth_type,
            self.auth_level,
            self.context_id,
        )

    def trailer(self, pad: int = 0) -> bytes:
        return SecTrailer(self.auth_type, self.auth_level, pad, self.context_id).encode()

    def caller(self) -> CallerAuth | None:
        """The caller's identity once the context is complete (acceptors only)."""
        identity = getattr(self.mech, "identity", None)
        if not self.complete or identity is None:
            return None
        return CallerAuth(identity, self.auth_type, self.auth_level)

    @property
    def protects(self) -> bool:
        """Whether call PDUs carry verifiers (integrity or privacy)."""
        return self._protection >= AuthLevel.PKT_INTEGRITY

    def protect(self, pdu: bytes, header_size: int) -> bytes:
        """Add padding, trailer and verifier to an encoded request or response fragment
        (``pdu`` has auth_length 0; the first ``header_size`` bytes stay in clear)."""
        if not self.protects:
            return pdu
        session = self.mech.session
        assert session is not None
        pad = -(len(pdu) - header_size) % AUTH_PAD_ALIGNMENT
        frag_len = len(pdu) + pad + SEC_TRAILER.size + SIGNATURE_SIZE
        header = pdu[:8] + struct.pack("<HH", frag_len, SIGNATURE_SIZE) + pdu[12:header_size]
        body = pdu[header_size:] + b"\x00" * pad
        trailer = self.trailer(pad)
        if self._protection >= AuthLevel.PKT_PRIVACY:
            sealed, sig = session.seal(body, header + body + trailer)
            return header + sealed + trailer + sig
        return header + body + trailer + session.sign_pdu(body, header + body + trailer)

    def unprotect(self, raw: bytes, header_size: int, auth_length: int) -> bytes:
        """Verify (and at privacy, decrypt) a received request or response fragment;
        returns the PDU with its stub in clear, verifier kept.

        Raises:
            AuthError: the trailer names another context, the verifier is missing or
                malformed, or the signature does not verify.
        """
        if not auth_length:
            if self.protects:
                raise AuthError("a PDU without a verifier at integrity or privacy level")
            return raw
        start = len(raw) - auth_length - SEC_TRAILER.size
        if start < header_size:
            raise AuthError("the verifier overlaps the PDU header")
        auth_type, level, pad, _rsv, ctx_id = SEC_TRAILER.unpack_from(raw, start)
        if (auth_type, level, ctx_id) != (self.auth_type, self.auth_level, self.context_id):
            raise AuthError("the sec_trailer names another security context")
        if pad > start - header_size:
            raise AuthError("auth_pad_length runs into the PDU header")
        if not self.protects:
            return raw  # CONNECT: nothing to check, as Windows and Samba do
        if auth_length != SIGNATURE_SIZE:
            raise AuthError("bad verifier length")
        session = self.mech.session
        assert session is not None
        trailer_end = start + SEC_TRAILER.size
        sig = raw[trailer_end:]
        try:
            if self._protection >= AuthLevel.PKT_PRIVACY:
                plain = session.unseal(raw[header_size:start])
                whole = raw[:header_size] + plain + raw[start:trailer_end]
                session.verify_sealed(whole, sig, plain)
                return whole + sig
            session.verify_pdu(raw[header_size:start], raw[:trailer_end], sig)
        except SignatureError as exc:
            raise AuthError(str(exc)) from exc
        return raw
