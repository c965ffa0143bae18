"""HTTP authentication of the tunnel: Basic, NTLM and Negotiate ([MS-RPCH] 3.2.2.5;
RFC 7617; RFC 4559 and [MS-NTHT] for NTLM and Negotiate over HTTP).

Theory of operation
-------------------
**Basic** carries a user name and password in each request; the driver hands them to
the injected :class:`~tunnel.policy.Authenticator` (a memory-hard check, admitted by
:class:`~tunnel.policy.CheckQueue`). Nothing of it outlives the request.

**NTLM** and **Negotiate** (SPNEGO carrying NTLM, [RFC 4178]) authenticate the *TCP
connection*, in a 401 handshake on a keep-alive connection::

    C: RPC_IN_DATA /rpc/rpcproxy.dll            Authorization: NTLM <NEGOTIATE>
    S: 401                                       WWW-Authenticate: NTLM <CHALLENGE>
    C: RPC_IN_DATA /rpc/rpcproxy.dll?srv:port   Authorization: NTLM <AUTHENTICATE>
       (the long channel request itself, same connection)

which is why MS-RPCH has each channel's own connection authenticate, and why HTTP/2
(whose requests are not bound to a connection) cannot carry it: the HTTP/2 driver
answers such an attempt with ``HTTP_1_1_REQUIRED``, as IIS does. :class:`ConnectionAuth`
is the state of one connection: the handshake under way (at most one: a new NEGOTIATE
replaces it) and, once one completed, the user the connection is authenticated as;
later requests on the connection without an ``Authorization`` header are that user's
(as IIS does). An AUTHENTICATE on a connection that sent no NEGOTIATE, or whose
handshake was replaced, is refused: the challenge it answers lives in the other
connection's acceptor, so a replayed or relayed AUTHENTICATE proves nothing here.

The NTLM arithmetic is :class:`dcerpc.ntlm.NtlmAcceptor`'s (NTLMv2 with extended
session security only, MIC checked when announced) and SPNEGO's
:class:`dcerpc.spnego.SpnegoAcceptor`'s, used as they are. A Negotiate header that
carries a bare NTLM message (what Windows sends when it falls back to NTLM) is
answered with bare NTLM under the Negotiate scheme.

The composition root supplies what the tunnel needs as :class:`NtlmDirectory` (the NT
hash of a user, from memory, and the throttle's outcome hooks), and optionally the
throttle's ``refuses(user, address)`` (:class:`~tunnel.policy.ScreeningAuthenticator`),
asked before the NT hash is looked up: a user held back gets the 401 a wrong password
gets, without a check and without counting again. Failures of a named user are told
to ``ntlm_failed``, successes to ``ntlm_succeeded``, so the throttle counts NTLM
logons as it counts Basic ones. A check costs two HMAC-MD5s, not a KDF, so NTLM does
not take a place in the check queue (it would only make NTLM logons wait behind Basic
guesses); the throttle, the per-address connection limit and the timeouts apply.

**User names.** Windows clients send ``DOMAIN\\user``, ``\\user`` or ``user@domain``;
all name ``user`` (one domain per server), as :func:`split_user_name` says, for Basic
and NTLM alike. The NTLMv2 proof is still computed over the name as the client sent
it.

Pure logic: no I/O, no clocks (the driver passes the time for the CHALLENGE).
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from dcerpc.ntlm import SIGNATURE as NTLM_SIGNATURE
from dcerpc.ntlm import NtlmAcceptor, ServerNames
from dcerpc.security import MAX_USERNAME, AuthError, split_user_name
from dcerpc.spnego import SpnegoAcceptor

REALM = "mapi-anywhere"
MAX_PASSWORD = 1024
#: Longest base64 token accepted in an NTLM/Negotiate header (an NTLM message is at
#: most 8 KiB, :data:`dcerpc.ntlm.MAX_MESSAGE_SIZE`; SPNEGO adds a few bytes).
MAX_TOKEN_CHARS = 4 * (8192 + 512) // 3 + 4
#: Handshakes one connection may start; one more closes it (a client restarting the
#: handshake for ever would otherwise hold an unauthenticated connection open, each
#: leg inside ``head_timeout``). Clients need one, or one per credential prompt.
MAX_HANDSHAKES = 8


class Scheme(enum.Enum):
    """HTTP authentication schemes (the values are the ``[tunnel] auth_schemes`` names)."""

    BASIC = "basic"
    NTLM = "ntlm"
    NEGOTIATE = "negotiate"

    @property
    def token(self) -> str:
        """The scheme as written in headers."""
        return _TOKENS[self]

    @property
    def connection_bound(self) -> bool:
        return self is not Scheme.BASIC


_TOKENS = {Scheme.BASIC: "Basic", Scheme.NTLM: "NTLM", Scheme.NEGOTIATE: "Negotiate"}
SCHEME_NAMES = frozenset(s.value for s in Scheme)


def parse_schemes(names: Iterable[str]) -> tuple[Scheme, ...]:
    """The schemes named in a configuration, in order.

    Raises:
        ValueError: an unknown name, a repeated one, or none.
    """
    out: list[Scheme] = []
    for name in names:
        try:
            scheme = Scheme(name.strip().lower())
        except ValueError:
            raise ValueError(
                f"unknown auth scheme {name!r} (known: {', '.join(sorted(SCHEME_NAMES))})"
            ) from None
        if scheme in out:
            raise ValueError(f"auth scheme {name!r} listed twice")
        out.append(scheme)
    if not out:
        raise ValueError("at least one auth scheme is needed")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    """Basic credentials: ``user`` is the bare name (:func:`split_user_name`),
    ``sent`` the name as the client wrote it."""

    user: str
    domain: str
    password: str
    sent: str


@dataclass(frozen=True, slots=True)
class MechToken:
    """An NTLM or Negotiate token from an ``Authorization`` header."""

    scheme: Scheme
    token: bytes


class Malformed(enum.Enum):
    """An ``Authorization`` header that is present but unusable (answered with 401)."""

    MALFORMED = "malformed"


def parse_credentials(value: str | bytes | None) -> BasicCredentials | MechToken | Malformed | None:
    """What an ``Authorization`` value carries: Basic credentials, an NTLM/Negotiate
    token, :attr:`Malformed.MALFORMED` (unknown scheme, bad base64, too long, no user),
    or None when absent. Never raises."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return Malformed.MALFORMED
    scheme_text, _, token = value.strip().partition(" ")
    try:
        scheme = Scheme(scheme_text.lower())
    except ValueError:
        return Malformed.MALFORMED
    token = token.strip()
    if scheme is Scheme.BASIC:
        return _basic(token)
    if not token or len(token) > MAX_TOKEN_CHARS:
        return Malformed.MALFORMED
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return Malformed.MALFORMED
    return MechToken(scheme, raw) if raw else Malformed.MALFORMED


def _basic(token: str) -> BasicCredentials | Malformed:
    if len(token) > 4 * (MAX_USERNAME + MAX_PASSWORD):
        return Malformed.MALFORMED
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return Malformed.MALFORMED
    sent, sep, password = decoded.partition(":")
    if not sep or len(sent) > MAX_USERNAME or len(password) > MAX_PASSWORD:
        return Malformed.MALFORMED
    split = split_user_name(sent)
    if split is None:
        return Malformed.MALFORMED
    return BasicCredentials(split[0], split[1], password, sent)


class NtlmDirectory(Protocol):
    """What NTLM and Negotiate need from the composition root.

    The authenticator given to ``serve_tunnel`` offers this when it has the three
    methods (they are looked up on it, as ``is_cached`` and ``refuses`` are); without
    them the tunnel speaks Basic only. All three are called on the event loop while a
    request is decided, so they answer from memory and never block.

    * ``lookup_nt_hash(user, domain)``: the user's NT hash (16 bytes), or None for an
      unknown or disabled user or one whose hash is not known yet. ``user`` is the bare
      name (:func:`split_user_name`), ``domain`` what the client sent (may be ignored).
    * ``ntlm_failed(user, address)``: an NTLM/Negotiate logon of ``user`` (bare name;
      None when the client named none) from ``address`` (the client's IP address as
      text, None when unknown) failed: wrong password, unknown user, bad MIC.
    * ``ntlm_succeeded(user, address)``: it succeeded.
    """

    def lookup_nt_hash(self, user: str, domain: str, /) -> bytes | None: ...

    def ntlm_failed(self, user: str | None, address: str | None, /) -> None: ...

    def ntlm_succeeded(self, user: str, address: str | None, /) -> None: ...


def ntlm_directory_of(authenticator: object) -> NtlmDirectory | None:
    """``authenticator`` when it offers :class:`NtlmDirectory`, else None."""
    names = ("lookup_nt_hash", "ntlm_failed", "ntlm_succeeded")
    if all(callable(getattr(authenticator, n, None)) for n in names):
        return authenticator  # type: ignore[return-value]
    return None


def server_names(names: Iterable[str]) -> ServerNames:
    """How a CHALLENGE names us, from the configured server names (the first DNS name;
    its first label, upper case, as the NetBIOS computer name)."""
    dns = next((n for n in names if n and not _is_address(n)), "")
    label = dns.split(".", 1)[0].upper()[:15] if dns else ""
    return ServerNames(
        netbios_computer=label or "MAPISERVER",
        dns_computer=dns or "mapiserver",
        dns_domain=dns.split(".", 1)[1] if "." in dns else "",
    )


def _is_address(name: str) -> bool:
    return all(c in "0123456789.:[]abcdefABCDEF" for c in name) and any(c in ".:" for c in name)


def challenges(offered: Iterable[Scheme]) -> list[str]:
    """``WWW-Authenticate`` values of a 401 that starts authentication."""
    return [f'Basic realm="{REALM}"' if s is Scheme.BASIC else s.token for s in offered]


@dataclass(frozen=True, slots=True)
class Step:
    """What :meth:`ConnectionAuth.step` decided.

    Exactly one outcome: ``user`` (authenticated; ``final``, when set, is a
    ``WWW-Authenticate`` value for the success response: Negotiate's last token),
    ``challenge`` (answer 401 with this ``WWW-Authenticate`` value on a connection kept
    open: the handshake goes on), or neither (refused: 401 with the offers; ``reason``
    says why, for the log).
    """

    user: str | None = None
    challenge: str | None = None
    final: str | None = None
    #: The user the client named, when known (logs).
    offered: str | None = None
    reason: str = ""
    #: Refused, and the connection should close (too many handshakes on it).
    close: bool = False


class _Held(AuthError):
    """The throttle holds the user back: refused, not counted again."""


class ConnectionAuth:
    """The NTLM/Negotiate state of one HTTP/1.1 connection.

    Args:
        schemes: the connection-bound schemes offered (NTLM, Negotiate).
        directory: the NT hashes and outcome hooks.
        names: how CHALLENGE messages name us.
        address: the client's IP address (hooks, throttle), None when unknown.
        refuses: the throttle's ``(user, address) -> bool``, asked before a lookup.
        random: source of server challenges.
    """

    def __init__(
        self,
        schemes: Iterable[Scheme],
        directory: NtlmDirectory,
        names: ServerNames,
        address: str | None,
        *,
        refuses: Callable[[str, str | None], bool] | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.schemes = frozenset(s for s in schemes if s.connection_bound)
        self._directory = directory
        self._names = names
        self._address = address
        self._refuses = refuses
        self._random = random
        self._mech: NtlmAcceptor | SpnegoAcceptor | None = None
        self._scheme: Scheme | None = None
        self._claimed: str | None = None
        self._now: float | None = None
        #: The user this connection authenticated as (NTLM/Negotiate), or None.
        self.user: str | None = None
        #: Handshakes started on this connection (at most :data:`MAX_HANDSHAKES`).
        self.handshakes = 0

    @property
    def pending(self) -> bool:
        """A handshake is under way (a CHALLENGE went out; its AUTHENTICATE is due)."""
        return self._mech is not None

    def abandon(self) -> None:
        """Forget the handshake under way (the connection cannot carry it on)."""
        self._mech = None
        self._scheme = None

    def step(self, token: MechToken, now: float | None) -> Step:
        """Consume one ``Authorization`` token of this connection. Never raises for
        bad input; the directory's own exceptions propagate (a bug there)."""
        scheme = token.scheme
        if scheme not in self.schemes:
            return Step(reason=f"{scheme.token} is not offered")
        data = token.token
        bare_ntlm = data.startswith(NTLM_SIGNATURE)
        if scheme is Scheme.NTLM and not bare_ntlm:
            return Step(reason="not an NTLM message")
        if _is_first(data, bare_ntlm):
            self.handshakes += 1
            if self.handshakes > MAX_HANDSHAKES:
                self.abandon()
                return Step(reason="too many handshakes on one connection", close=True)
            self.user = None  # a new handshake: the connection is no one's until it ends
            self._scheme = scheme
            self._now = now
            self._mech = self._ntlm() if bare_ntlm else SpnegoAcceptor(self._ntlm)
        elif self._mech is None or self._scheme is not scheme:
            return Step(reason="no handshake under way on this connection")
        elif bare_ntlm != isinstance(self._mech, NtlmAcceptor):
            self.abandon()
            return Step(reason="the handshake changed mechanism")
        mech = self._mech
        self._claimed = None
        try:
            answer = mech.step(data)
        except _Held as exc:
            self.abandon()
            return Step(offered=self._claimed, reason=str(exc))
        except (AuthError, ValueError, IndexError, struct.error) as exc:
            self.abandon()
            if self._claimed is not None:  # a named user was checked: a failed logon
                self._directory.ntlm_failed(self._claimed, self._address)
            return Step(offered=self._claimed, reason=f"{scheme.token}: {exc}")
        if not mech.complete:
            return Step(challenge=f"{scheme.token} {_b64(answer)}")
        self.abandon()
        identity = mech.identity
        if identity is None or identity.anonymous:
            return Step(reason=f"{scheme.token}: anonymous logon")
        split = split_user_name(identity.user)
        if split is None:
            return Step(reason=f"{scheme.token}: no user name")
        user = split[0]
        self._directory.ntlm_succeeded(user, self._address)
        self.user = user
        final = f"{scheme.token} {_b64(answer)}" if answer else None
        return Step(user=user, final=final, offered=user)

    def _ntlm(self) -> NtlmAcceptor:
        return NtlmAcceptor(self._lookup, self._names, now=self._now, random=self._random)

    def _lookup(self, user: str, domain: str) -> bytes | None:
        split = split_user_name(user)
        if split is None:
            raise AuthError("no user name")
        self._claimed = split[0]
        if self._refuses is not None and self._refuses(split[0], self._address):
            raise _Held(f"{split[0]!r} is held back by the logon throttle")
        return self._directory.lookup_nt_hash(split[0], domain or split[1])


def _is_first(data: bytes, bare_ntlm: bool) -> bool:
    """A token that starts a handshake: an NTLM NEGOTIATE, or SPNEGO's NegTokenInit."""
    if bare_ntlm:
        return data[8:12] == b"\x01\x00\x00\x00"
    return data[:1] in (b"\x60", b"\xa0")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
