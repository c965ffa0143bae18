"""The DCE/RPC security cores without sockets: [MS-NLMP] 4.2 test vectors, NTLM and
SPNEGO exchanges, the connection cores' handling of sec_trailers and verifiers (the
hostile cases of issue 18 among them), and hypothesis fuzzing of every new decoder:
bad input gives the protocol's error (AuthError inside a mechanism,
RemoteProtocolError out of a connection core), never another exception."""

from __future__ import annotations

import contextlib
import struct
import uuid
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcerpc.auth_context import ClientAuth, ServerSecurity
from dcerpc.client_connection import ClientConnection, ClientState
from dcerpc.errors import FaultStatus, RemoteProtocolError
from dcerpc.events import (
    BindAckReceived,
    BindNakReceived,
    CallReceived,
    FaultReceived,
    ResponseReceived,
)
from dcerpc.interface import CallContext, Interface
from dcerpc.ntlm import (
    AuthenticateMessage,
    AvId,
    ChallengeMessage,
    NegotiateMessage,
    NtlmAcceptor,
    NtlmInitiator,
    ServerNames,
    decode_av_pairs,
    encode_av_pairs,
)
from dcerpc.ntlm_crypto import (
    Ntlm1Session,
    NtlmSession,
    SignatureError,
    hmac_md5,
    md4,
    nt_hash,
    ntowf_v2,
    rc4_once,
)
from dcerpc.pdu import (
    Auth3Pdu,
    BindNakPdu,
    BindNakReason,
    BindPdu,
    ContextElement,
    FaultPdu,
    PfcFlags,
    decode_pdu,
)
from dcerpc.security import (
    AuthError,
    AuthLevel,
    AuthPolicy,
    AuthType,
    SecTrailer,
    split_verifier,
)
from dcerpc.server_connection import AssociationGroups, InterfaceRegistry, ServerConnection
from dcerpc.spnego import (
    NTLM_OID,
    NegTokenInit,
    NegTokenResp,
    SpnegoAcceptor,
    SpnegoInitiator,
    decode_token,
)
from dcerpc.syntax import NDR, SyntaxId

USERS = {"alice": nt_hash("s3cret")}
NOW = 1_700_000_000.0
ECHO = SyntaxId(uuid.UUID("12345678-1234-1234-1234-123456789abc"), 1, 0)
OPEN = SyntaxId(uuid.UUID("12345678-1234-1234-1234-123456789abd"), 1, 0)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lookup(user: str, domain: str) -> bytes | None:
    return USERS.get(user.lower())


def counter(start: int = 0):
    """A deterministic randomness source."""
    state = [start]

    def random(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] + i) & 0xFF for i in range(n))

    return random


# -- [MS-NLMP] 4.2 vectors ---------------------------------------------------------------


def test_md4_rfc1320_vectors():
    assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
    assert md4(b"abc").hex() == "a448017aaf21d8525fc10ae87aa6729d"
    assert md4(b"12345678901234567890" * 4).hex() == "e33b4ddc9c38f2199c3e7b164fcc0536"


def test_ms_nlmp_4_2_4_ntlmv2_vectors():
    """[MS-NLMP] 4.2.4: User/Domain/Password, server challenge 0123456789abcdef, client
    challenge aa*8, time 0, random session key 55*16, AV pairs Domain then Server."""
    response_key = ntowf_v2(nt_hash("Password"), "User", "Domain")
    assert response_key.hex() == "0c868a403bfd7a93a3001ef22ef02e3f"
    server_challenge = bytes.fromhex("0123456789abcdef")
    client_challenge = b"\xaa" * 8
    lmv2 = hmac_md5(response_key, server_challenge, client_challenge) + client_challenge
    assert lmv2.hex() == "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"
    pairs = encode_av_pairs(
        [(AvId.NB_DOMAIN_NAME, "Domain".encode("utf-16-le")),
         (AvId.NB_COMPUTER_NAME, "Server".encode("utf-16-le"))]
    )  # fmt: skip
    temp = b"\x01\x01" + bytes(6) + bytes(8) + client_challenge + bytes(4) + pairs + bytes(4)
    proof = hmac_md5(response_key, server_challenge, temp)
    assert proof.hex() == "68cd0ab851e51c96aabc927bebef6a1c"
    session_base_key = hmac_md5(response_key, proof)
    assert session_base_key.hex() == "8de40ccadbc14a82f15cb0ad0de95ca3"
    assert rc4_once(session_base_key, b"\x55" * 16).hex() == "c5dad2544fc9799094ce1ce90bc9d03e"
    # 4.2.4.4 GSS_WrapEx of "Plaintext" (UTF-16LE), sequence number 0, key exchange.
    session = NtlmSession(b"\x55" * 16, initiator=True, key_exchange=True)
    plaintext = "Plaintext".encode("utf-16-le")
    sealed, signature = session.seal(plaintext, plaintext)
    assert sealed.hex() == "54e50165bf1936dc996020c1811b0f06fb5f"
    assert signature.hex() == "010000007fb38ec5c55d497600000000"


def test_the_acceptor_verifies_the_spec_exchange():
    """The 4.2.4 AUTHENTICATE, rebuilt, is accepted by our acceptor with the same
    challenge, and yields the spec's session key."""
    acceptor = NtlmAcceptor(
        lambda u, d: nt_hash("Password") if u == "User" else None,
        ServerNames("Server", "Domain", "", ""),
        now=None,
        random=lambda n: bytes.fromhex("0123456789abcdef"),
    )
    acceptor.step(NegotiateMessage(0xE28A8235).encode())
    challenge = ChallengeMessage.decode(acceptor._challenge_raw)
    assert challenge.server_challenge.hex() == "0123456789abcdef"
    pairs = encode_av_pairs(
        [(AvId.NB_DOMAIN_NAME, "Domain".encode("utf-16-le")),
         (AvId.NB_COMPUTER_NAME, "Server".encode("utf-16-le"))]
    )  # fmt: skip
    temp = b"\x01\x01" + bytes(6) + bytes(8) + b"\xaa" * 8 + bytes(4) + pairs + bytes(4)
    key = ntowf_v2(nt_hash("Password"), "User", "Domain")
    proof = hmac_md5(key, challenge.server_challenge, temp)
    msg = AuthenticateMessage(
        challenge.flags, b"\x00" * 24, proof + temp, "Domain", "User", "COMPUTER",
        bytes.fromhex("c5dad2544fc9799094ce1ce90bc9d03e"),
    )  # fmt: skip
    assert acceptor.step(msg.encode(with_mic=False)) == b""
    assert acceptor.identity is not None and acceptor.identity.user == "User"
    assert acceptor.session is not None and acceptor.session.session_key == b"\x55" * 16


# -- NTLM and SPNEGO exchanges -----------------------------------------------------------


def ntlm_exchange(user="alice", password="s3cret", *, mutate=None):
    initiator = NtlmInitiator(user, password, "LAB", now=NOW, random=counter())
    acceptor = NtlmAcceptor(lookup, ServerNames(), now=NOW, random=counter(50))
    challenge = acceptor.step(initiator.step())
    authenticate = initiator.step(challenge)
    if mutate:
        authenticate = mutate(authenticate)
    acceptor.step(authenticate)
    return initiator, acceptor


def test_ntlm_exchange_signs_and_seals_both_ways():
    initiator, acceptor = ntlm_exchange()
    assert acceptor.identity is not None
    assert (acceptor.identity.user, acceptor.identity.domain) == ("alice", "LAB")
    assert not acceptor.identity.anonymous and acceptor.mic_present
    client, server = initiator.session, acceptor.session
    assert client is not None and server is not None
    for n in range(3):
        message = b"call %d" % n
        server.verify(message, client.sign(message))
        sealed, sig = server.seal(message, b"hdr" + message)
        assert client.unseal(sealed) == message
        client.verify_sealed(b"hdr" + message, sig)
    with pytest.raises(SignatureError):  # a replay: the sequence number moved on
        sig = client.sign(b"x")
        server.verify(b"x", sig)
        server.verify(b"x", sig)


def test_challenge_names_the_server():
    acceptor = NtlmAcceptor(
        lookup, ServerNames("SRV01", "LAB", "srv01.lab.example", "lab.example"), now=NOW
    )
    challenge = ChallengeMessage.decode(acceptor.step(NtlmInitiator("a", "b").step()))
    pairs = decode_av_pairs(challenge.target_info)
    assert pairs[AvId.NB_COMPUTER_NAME].decode("utf-16-le") == "SRV01"
    assert pairs[AvId.NB_DOMAIN_NAME].decode("utf-16-le") == "LAB"
    assert pairs[AvId.DNS_COMPUTER_NAME].decode("utf-16-le") == "srv01.lab.example"
    assert pairs[AvId.DNS_DOMAIN_NAME].decode("utf-16-le") == "lab.example"
    (stamp,) = struct.unpack("<Q", pairs[AvId.TIMESTAMP])
    assert stamp == int((NOW + 11644473600) * 10_000_000)


def test_an_oem_only_client_is_answered_in_unicode_and_its_mic_still_checks():
    """curl's NEGOTIATE offers OEM strings only: the CHALLENGE answers in Unicode, which
    such clients follow; the MIC covers the NEGOTIATE as it was sent."""

    def oem_only(negotiate: bytes) -> bytes:
        (flags,) = struct.unpack_from("<I", negotiate, 12)
        return negotiate[:12] + struct.pack("<I", (flags & ~0x1) | 0x2) + negotiate[16:]

    initiator = NtlmInitiator("alice", "s3cret", "LAB", now=NOW, random=counter())
    acceptor = NtlmAcceptor(lookup, ServerNames(), now=NOW, random=counter(50))
    negotiate = oem_only(initiator.step())
    challenge = acceptor.step(negotiate)
    assert ChallengeMessage.decode(challenge).flags & 0x1  # Unicode chosen
    initiator._negotiate = negotiate  # the MIC covers what was sent
    acceptor.step(initiator.step(challenge))
    assert acceptor.identity is not None and acceptor.identity.user == "alice"


def test_a_negotiate_with_no_character_set_is_refused():
    negotiate = NtlmInitiator("alice", "s3cret").step()
    (flags,) = struct.unpack_from("<I", negotiate, 12)
    bare = negotiate[:12] + struct.pack("<I", flags & ~0x3) + negotiate[16:]
    with pytest.raises(AuthError, match="character set"):
        NtlmAcceptor(lookup, ServerNames(), now=NOW).step(bare)


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("mallory", "s3cret")])
def test_wrong_password_and_unknown_user_are_refused(user, password):
    with pytest.raises(AuthError):
        ntlm_exchange(user, password)


def test_anonymous_is_recognised():
    initiator, acceptor = ntlm_exchange("", "")
    assert acceptor.identity is not None and acceptor.identity.anonymous
    assert initiator.session is not None and acceptor.session is not None
    acceptor.session.verify(b"m", initiator.session.sign(b"m"))


# Samba's anonymous AUTHENTICATE (from a capture of rpcclient 4.17 with -U%): no
# EXTENDED_SESSIONSECURITY, NEGOTIATE_ANONYMOUS, key exchange, sign (and seal).
SAMBA_ANON_FLAGS = 0x62008A35
SAMBA_NEGOTIATE_FLAGS = 0x62088235 | 0x800


def samba_anonymous_exchange(flags: int = SAMBA_ANON_FLAGS, *, user: str = "", nt: bytes = b""):
    """Our acceptor fed the AUTHENTICATE Samba sends for ``-U%``; returns it and the
    client's exported session key."""
    acceptor = NtlmAcceptor(lookup, ServerNames(), now=NOW, random=counter(7))
    challenge = ChallengeMessage.decode(
        acceptor.step(NegotiateMessage(SAMBA_NEGOTIATE_FLAGS).encode())
    )
    assert challenge.flags & 0x00080000  # we offer extended session security...
    exported = bytes(range(16))
    msg = AuthenticateMessage(
        flags, b"", nt, "", user, "VM", rc4_once(b"\x00" * 16, exported)
    )  # ...and Samba's anonymous client drops it
    acceptor.step(msg.encode(with_mic=True))
    return acceptor, exported


def impacket_ntlm1(key: bytes):
    """impacket's NTLM1 (no extended session security) sign and seal, one RC4 state."""
    from Cryptodome.Cipher import ARC4
    from impacket import ntlm as imp_ntlm

    handle = ARC4.new(key).encrypt
    flags = SAMBA_ANON_FLAGS

    def seal(data: bytes, seq: int) -> tuple[bytes, bytes]:
        sealed, sig = imp_ntlm.SEAL(flags, key, key, data, data, seq, handle)
        return sealed, sig.getData()

    def sign(data: bytes, seq: int) -> bytes:
        return imp_ntlm.SIGN(flags, key, data, seq, handle).getData()

    return seal, sign, handle


def test_samba_anonymous_without_extended_session_security_gets_ntlm1():
    acceptor, exported = samba_anonymous_exchange()
    assert acceptor.identity is not None and acceptor.identity.anonymous
    server = acceptor.session
    assert isinstance(server, Ntlm1Session) and server.session_key == exported
    # Requests and responses share one RC4 stream and one sequence number, in the
    # order they cross: check against impacket's independent NTLM1 code.
    seal, sign, handle = impacket_ntlm1(exported)
    stub = b"request stub" + bytes(4)
    sealed, sig = seal(stub, 0)
    plain = server.unseal(sealed)
    assert plain == stub
    server.verify_sealed(b"header" + plain, sig, plain)
    answer, our_sig = server.seal(b"response stub!!!", b"ignored")
    assert handle(answer) == b"response stub!!!"
    # impacket leaves the random pad in clear; only the CRC and sequence number count
    assert handle(our_sig[4:])[4:] == struct.pack("<II", zlib.crc32(b"response stub!!!"), 1)
    server.verify_pdu(b"signed", b"whole pdu", sign(b"signed", 2))
    with pytest.raises(SignatureError):
        server.verify_pdu(b"signed", b"whole pdu", sign(b"tampered", 3))


def test_ntlm1_sessions_talk_to_each_other_and_catch_tampering():
    a, b = Ntlm1Session(b"\x11" * 16), Ntlm1Session(b"\x11" * 16)
    for n in range(3):
        sealed, sig = a.seal(b"call %d" % n, b"")
        plain = b.unseal(sealed)
        b.verify_sealed(b"", sig, plain)
        b.verify_pdu(b"reply %d" % n, b"", a.sign_pdu(b"reply %d" % n, b"whole"))
    with pytest.raises(SignatureError):
        b.verify(b"x", a.sign(b"y"))


@pytest.mark.parametrize(
    ("flags", "user", "nt"),
    [
        (SAMBA_ANON_FLAGS, "alice", b"\x01" * 48),  # a user without ESS: refused
        (SAMBA_ANON_FLAGS & ~0x800, "alice", b"\x01" * 48),
    ],
)
def test_without_extended_session_security_only_anonymous_is_accepted(flags, user, nt):
    with pytest.raises(AuthError, match="NTLMv1 session security"):
        samba_anonymous_exchange(flags, user=user, nt=nt)


def test_a_tampered_authenticate_fails_the_mic():
    def flip_flags(raw: bytes) -> bytes:
        # Drop KEY_EXCH from the flags: the MIC covers them.
        (flags,) = struct.unpack_from("<I", raw, 60)
        return raw[:60] + struct.pack("<I", flags & ~0x40000000) + raw[64:]

    with pytest.raises(AuthError):
        ntlm_exchange(mutate=flip_flags)


def test_ntlmv1_responses_are_refused():
    def v1(raw: bytes) -> bytes:
        msg = AuthenticateMessage.decode(raw)
        return AuthenticateMessage(
            msg.flags, b"\x01" * 24, b"\x02" * 24, msg.domain, msg.user, "", b""
        ).encode(with_mic=False)

    with pytest.raises(AuthError, match="NTLMv2"):
        ntlm_exchange(mutate=v1)


def spnego_pair():
    initiator = SpnegoInitiator(NtlmInitiator("alice", "s3cret", now=NOW, random=counter()))
    acceptor = SpnegoAcceptor(lambda: NtlmAcceptor(lookup, ServerNames(), now=NOW))
    return initiator, acceptor


def test_spnego_with_ntlm_and_mech_list_mic():
    initiator, acceptor = spnego_pair()
    first = initiator.step()
    assert isinstance(decode_token(first), NegTokenInit)
    reply = acceptor.step(first)
    resp = decode_token(reply)
    assert isinstance(resp, NegTokenResp) and resp.supported_mech == NTLM_OID
    final = acceptor.step(initiator.step(reply))
    done = decode_token(final)
    assert isinstance(done, NegTokenResp) and done.neg_state == 0 and done.mech_list_mic
    assert initiator.step(final) == b""
    assert initiator.complete and acceptor.complete
    # After the MICs each side's RC4 restarts: messages still flow both ways.
    assert initiator.session is not None and acceptor.session is not None
    sealed, sig = initiator.session.seal(b"data", b"whole data")
    assert acceptor.session.unseal(sealed) == b"data"
    acceptor.session.verify_sealed(b"whole data", sig)


def test_spnego_client_preferring_kerberos_gets_ntlm_and_must_send_the_mic():
    krb5 = bytes.fromhex("06092a864886f712010202")
    ntlm = NtlmInitiator("alice", "s3cret", now=NOW, random=counter())
    acceptor = SpnegoAcceptor(lambda: NtlmAcceptor(lookup, ServerNames(), now=NOW))
    reply = decode_token(acceptor.step(NegTokenInit((krb5, NTLM_OID), b"krb-token").encode()))
    assert isinstance(reply, NegTokenResp) and reply.supported_mech == NTLM_OID
    assert not reply.response_token
    challenge = decode_token(acceptor.step(NegTokenResp(None, b"", ntlm.step()).encode()))
    assert isinstance(challenge, NegTokenResp)
    authenticate = ntlm.step(challenge.response_token)
    with pytest.raises(AuthError, match="mechListMIC"):  # downgrade protection
        acceptor.step(NegTokenResp(None, b"", authenticate).encode())


def test_spnego_without_ntlm_is_refused():
    acceptor = SpnegoAcceptor(lambda: NtlmAcceptor(lookup, ServerNames(), now=NOW))
    with pytest.raises(AuthError):
        acceptor.step(NegTokenInit((bytes.fromhex("06092a864886f712010202"),)).encode())


# -- connection cores --------------------------------------------------------------------

RUN: list[CallContext | None] = []


async def _never(ctx: CallContext, stub: bytes) -> bytes:  # pragma: no cover
    raise AssertionError("handlers are not run by the core")


def registry(policy: AuthPolicy) -> InterfaceRegistry:
    return InterfaceRegistry(
        [Interface(ECHO, _never, 2, policy=policy), Interface(OPEN, _never, 2)]
    )


STRICT = AuthPolicy(AuthLevel.PKT_PRIVACY, allow_anonymous=False)


def server(policy: AuthPolicy = STRICT) -> ServerConnection:
    security = ServerSecurity(lookup_nt_hash=lookup, random=counter(99))
    return ServerConnection(registry(policy), AssociationGroups(), security=security)


def pump(client: ClientConnection, srv: ServerConnection) -> list:
    """Carry bytes both ways until both are quiet; the client's events."""
    events = []
    for _ in range(10):
        data = client.data_to_send()
        if data:
            for ev in srv.receive_data(data, now=NOW):
                events.append(("server", ev))
        back = srv.data_to_send()
        if not back and not data:
            break
        if back:
            events += [("client", ev) for ev in client.receive_data(back)]
    return events


def bound(auth: ClientAuth, policy: AuthPolicy = STRICT, syntax: SyntaxId = ECHO):
    client = ClientConnection(auth=auth)
    srv = server(policy)
    client.bind([ContextElement(0, syntax, (NDR,))], now=NOW)
    events = pump(client, srv)
    return client, srv, events


ALICE = ClientAuth(user="alice", password="s3cret", random=counter())


@pytest.mark.parametrize("auth_type", [AuthType.NTLM, AuthType.SPNEGO])
@pytest.mark.parametrize("level", [AuthLevel.PKT_INTEGRITY, AuthLevel.PKT_PRIVACY])
def test_cores_authenticate_and_protect_calls(auth_type, level):
    auth = ClientAuth(user="alice", password="s3cret", auth_type=auth_type, auth_level=level)
    client, srv, events = bound(auth, AuthPolicy(AuthLevel.PKT_INTEGRITY, False))
    assert [type(e) for side, e in events if side == "client"] == [BindAckReceived]
    assert client.state is ClientState.BOUND and client.authenticated
    stub = bytes(range(256)) * 400  # several fragments each way
    call_id = client.request(0, 1, stub)
    wire = client.data_to_send()
    assert (stub[:64] in wire) is (level < AuthLevel.PKT_PRIVACY)
    (call,) = srv.receive_data(wire)
    assert isinstance(call, CallReceived) and call.stub == stub
    assert call.auth is not None and call.auth.user == "alice" and call.auth.auth_level == level
    srv.send_response(call.call_id, stub[::-1])
    reply = srv.data_to_send()
    assert (stub[::-1][:64] in reply) is (level < AuthLevel.PKT_PRIVACY)
    (resp,) = client.receive_data(reply)
    assert isinstance(resp, ResponseReceived) and resp.call_id == call_id
    assert resp.stub == stub[::-1]


def test_bind_below_the_policy_is_nakked_and_an_open_interface_is_not():
    auth = ClientAuth(user="alice", password="s3cret", auth_level=AuthLevel.PKT_INTEGRITY)
    client = ClientConnection(auth=auth)
    srv = server()
    client.bind([ContextElement(0, ECHO, (NDR,))], now=NOW)
    with pytest.raises(RemoteProtocolError):
        srv.receive_data(client.data_to_send(), now=NOW)
    nak = decode_pdu(srv.data_to_send())
    assert isinstance(nak, BindNakPdu)
    assert nak.reason == BindNakReason.AUTHENTICATION_TYPE_NOT_RECOGNIZED
    # The open interface takes an unauthenticated bind.
    plain = ClientConnection()
    srv = server()
    plain.bind([ContextElement(0, OPEN, (NDR,))])
    pump(plain, srv)
    assert plain.state is ClientState.BOUND


def test_anonymous_caller_is_refused_before_the_handler():
    anon = ClientAuth(user="", password="", auth_level=AuthLevel.PKT_PRIVACY)
    client, srv, _ = bound(anon, AuthPolicy(AuthLevel.PKT_INTEGRITY, allow_anonymous=False))
    assert client.authenticated
    client.request(0, 0, b"x")
    assert srv.receive_data(client.data_to_send()) == []  # no CallReceived
    (fault,) = client.receive_data(srv.data_to_send())
    assert isinstance(fault, FaultReceived) and fault.status == FaultStatus.ACCESS_DENIED
    # The same caller may use an interface that admits anonymous callers.
    client, srv, _ = bound(anon, AuthPolicy(AuthLevel.CONNECT))
    client.request(0, 0, b"x")
    (call,) = srv.receive_data(client.data_to_send())
    assert isinstance(call, CallReceived) and call.auth is not None and call.auth.anonymous


def test_wrong_password_refuses_the_first_call_and_closes():
    wrong = ClientAuth(user="alice", password="nope")
    client, srv, _ = bound(wrong)
    client.request(0, 0, b"x")
    with pytest.raises(RemoteProtocolError):
        srv.receive_data(client.data_to_send())
    fault = decode_pdu(srv.data_to_send())
    assert isinstance(fault, FaultPdu) and fault.status == FaultStatus.ACCESS_DENIED


def test_wrong_password_over_spnego_faults_the_alter_leg():
    wrong = ClientAuth(user="alice", password="nope", auth_type=AuthType.SPNEGO)
    client = ClientConnection(auth=wrong)
    srv = server()
    client.bind([ContextElement(0, ECHO, (NDR,))], now=NOW)
    srv.receive_data(client.data_to_send(), now=NOW)
    client.receive_data(srv.data_to_send())  # queues the alter_context leg
    with pytest.raises(RemoteProtocolError):
        srv.receive_data(client.data_to_send())
    events = client.receive_data(srv.data_to_send())
    assert [type(e) for e in events] == [FaultReceived]
    assert events[0].call_id == 1 and events[0].status == FaultStatus.ACCESS_DENIED


def tamper(wire: bytes, offset: int) -> bytes:
    return wire[:offset] + bytes([wire[offset] ^ 1]) + wire[offset + 1 :]


@pytest.mark.parametrize("offset", [12, 30, -20, -1])  # call_id, stub, trailer's ctx, sig
def test_a_modified_request_is_refused_and_closes(offset):
    client, srv, _ = bound(ALICE)
    client.request(0, 0, b"payload" * 4)
    with pytest.raises(RemoteProtocolError) as info:
        srv.receive_data(tamper(client.data_to_send(), offset))
    assert info.value.status == FaultStatus.ACCESS_DENIED
    assert isinstance(decode_pdu(srv.data_to_send()), FaultPdu)


def test_a_request_without_verifier_at_privacy_is_refused():
    _client, srv, _ = bound(ALICE)
    plain = ClientConnection()
    plain.state, plain.max_xmit_frag = ClientState.BOUND, 4096
    plain._next_call_id = 5
    plain.request(0, 0, b"downgrade")
    with pytest.raises(RemoteProtocolError):
        srv.receive_data(plain.data_to_send())


def test_a_replayed_authenticate_on_another_connection_fails():
    """An eavesdropper replays a victim's auth3 on its own connection: the server's
    fresh challenge makes it fail, and the victim's sealed requests are refused there."""
    fresh = ServerSecurity(lookup_nt_hash=lookup)  # os.urandom challenges
    victim = ClientConnection(auth=ALICE)
    srv = ServerConnection(registry(AuthPolicy()), AssociationGroups(), security=fresh)
    victim.bind([ContextElement(0, ECHO, (NDR,))], now=NOW)
    srv.receive_data(victim.data_to_send(), now=NOW)
    victim.receive_data(srv.data_to_send())
    auth3 = victim.data_to_send()
    srv.receive_data(auth3)
    attacker = ClientConnection(auth=ALICE)
    srv2 = ServerConnection(registry(AuthPolicy()), AssociationGroups(), security=fresh)
    attacker.bind([ContextElement(0, ECHO, (NDR,))], now=NOW)
    srv2.receive_data(attacker.data_to_send(), now=NOW)
    srv2.data_to_send()
    assert srv2.receive_data(auth3) == []
    assert srv2.caller is None  # the context failed
    victim.request(0, 0, b"secret")
    with pytest.raises(RemoteProtocolError) as info:
        srv2.receive_data(victim.data_to_send())
    assert info.value.status == FaultStatus.ACCESS_DENIED


def test_auth3_without_a_bind_and_a_changed_context_id():
    srv = server(AuthPolicy())
    plain = ClientConnection()
    plain.bind([ContextElement(0, OPEN, (NDR,))])
    pump(plain, srv)
    trailer = SecTrailer(AuthType.NTLM, AuthLevel.PKT_PRIVACY, 0, 1).encode()
    with pytest.raises(RemoteProtocolError):
        srv.receive_data(Auth3Pdu(call_id=9, auth_verifier=trailer + b"x" * 16).encode())
    _client, srv, _ = bound(ALICE)
    alter = BindPdu(
        call_id=20,
        contexts=(ContextElement(1, OPEN, (NDR,)),),
        auth_verifier=SecTrailer(AuthType.NTLM, AuthLevel.PKT_PRIVACY, 0, 2).encode() + b"t",
    )
    raw = bytearray(alter.encode())
    raw[2] = 14  # alter_context
    with pytest.raises(RemoteProtocolError) as info:
        srv.receive_data(bytes(raw))
    assert info.value.status == FaultStatus.ACCESS_DENIED


def test_unknown_auth_type_and_bad_level_are_nakked():
    for auth_type, level in [(AuthType.KERBEROS, 6), (AuthType.NTLM, 7), (AuthType.NTLM, 1)]:
        srv = server()
        bind = BindPdu(
            call_id=1,
            contexts=(ContextElement(0, ECHO, (NDR,)),),
            auth_verifier=SecTrailer(auth_type, level, 0, 0).encode() + b"token",
        )
        with pytest.raises(RemoteProtocolError):
            srv.receive_data(bind.encode(), now=NOW)
        nak = decode_pdu(srv.data_to_send())
        assert isinstance(nak, BindNakPdu) and nak.reason == 8


def test_bind_ack_echoes_header_signing():
    client = ClientConnection(auth=ALICE)
    srv = server()
    client.bind([ContextElement(0, ECHO, (NDR,))], now=NOW)
    srv.receive_data(client.data_to_send(), now=NOW)
    ack = decode_pdu(srv.data_to_send())
    assert ack.pfc_flags & PfcFlags.PENDING_CANCEL  # PFC_SUPPORT_HEADER_SIGN
    trailer, token = split_verifier(ack.auth_verifier)
    assert (trailer.auth_type, trailer.auth_level, trailer.context_id) == (10, 6, 1)
    assert ChallengeMessage.decode(token).server_challenge


def test_bind_with_malformed_ntlm_is_nakked_invalid_checksum():
    srv = server()
    bind = BindPdu(
        call_id=1,
        contexts=(ContextElement(0, ECHO, (NDR,)),),
        auth_verifier=SecTrailer(10, 6, 0, 0).encode() + b"NTLMSSP\x00garbage",
    )
    with pytest.raises(RemoteProtocolError):
        srv.receive_data(bind.encode(), now=NOW)
    nak = decode_pdu(srv.data_to_send())
    assert isinstance(nak, BindNakPdu) and nak.reason == BindNakReason.INVALID_CHECKSUM


def test_client_refuses_a_tampered_response():
    client, srv, _ = bound(ALICE)
    client.request(0, 0, b"x")
    (call,) = srv.receive_data(client.data_to_send())
    srv.send_response(call.call_id, b"answer" * 10)
    with pytest.raises(RemoteProtocolError):
        client.receive_data(tamper(srv.data_to_send(), 30))


def test_nak_reaches_the_client():
    auth = ClientAuth(user="alice", password="s3cret", auth_level=AuthLevel.CONNECT)
    client = ClientConnection(auth=auth)
    srv = server()
    client.bind([ContextElement(0, ECHO, (NDR,))], now=NOW)
    with pytest.raises(RemoteProtocolError):
        srv.receive_data(client.data_to_send(), now=NOW)
    (nak,) = client.receive_data(srv.data_to_send())
    assert isinstance(nak, BindNakReceived) and nak.reason == 8


# -- fuzzing -----------------------------------------------------------------------------


def _valid_messages() -> list[bytes]:
    initiator = NtlmInitiator("alice", "s3cret", now=NOW, random=counter())
    acceptor = NtlmAcceptor(lookup, ServerNames(), now=NOW, random=counter())
    negotiate = initiator.step()
    challenge = acceptor.step(negotiate)
    return [negotiate, challenge, initiator.step(challenge)]


VALID = _valid_messages()


def _mutated(data: bytes, cuts: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in cuts:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_fuzz_ntlm_decoders(message, cuts, cut):
    data = _mutated(message, cuts)[: cut or None]
    for decode in (
        NegotiateMessage.decode,
        ChallengeMessage.decode,
        AuthenticateMessage.decode,
        decode_av_pairs,
    ):
        with contextlib.suppress(AuthError):
            decode(data)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_fuzz_the_ntlm_acceptor(cuts, cut):
    acceptor = NtlmAcceptor(lookup, ServerNames(), now=NOW, random=counter())
    initiator = NtlmInitiator("alice", "s3cret", now=NOW, random=counter())
    challenge = acceptor.step(initiator.step())
    data = _mutated(initiator.step(challenge), cuts)[: cut or None]
    with contextlib.suppress(AuthError):
        acceptor.step(data)


def _spnego_tokens() -> list[bytes]:
    initiator, acceptor = spnego_pair()
    first = initiator.step()
    reply = acceptor.step(first)
    second = initiator.step(reply)
    return [first, reply, second, acceptor.step(second)]


SPNEGO_TOKENS = _spnego_tokens()


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(
            st.sampled_from(SPNEGO_TOKENS),
            st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=4),
            st.integers(0, 600),
        ).map(lambda t: _mutated(t[0], t[1])[: t[2] or None]),
    )
)
def test_fuzz_spnego(data):
    with contextlib.suppress(AuthError):
        decode_token(data)
    acceptor = SpnegoAcceptor(lambda: NtlmAcceptor(lookup, ServerNames(), now=NOW))
    with contextlib.suppress(AuthError):
        acceptor.step(data)


@FUZZ
@given(st.binary(max_size=40))
def test_fuzz_sec_trailer(data):
    try:
        trailer, token = split_verifier(data)
    except AuthError:
        return
    assert trailer.encode() + token == data[:3] + b"\x00" + data[4:]


@FUZZ
@given(
    st.sampled_from(["bind", "auth3", "request"]),
    st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_fuzz_authenticated_connection(stage, cuts):
    """Mutated PDUs at each stage of an authenticated connection: events or
    RemoteProtocolError only."""
    client = ClientConnection(auth=ALICE)
    srv = server()
    client.bind([ContextElement(0, ECHO, (NDR,))], now=NOW)
    wire = client.data_to_send()
    if stage != "bind":
        srv.receive_data(wire, now=NOW)
        client.receive_data(srv.data_to_send())
        wire = client.data_to_send()
        if stage == "request":
            srv.receive_data(wire)
            client.request(0, 1, b"stub data" * 10)
            wire = client.data_to_send()
    try:
        srv.receive_data(_mutated(wire, cuts), now=NOW)
        if stage == "auth3":
            client.request(0, 1, b"after")
            srv.receive_data(client.data_to_send())
    except RemoteProtocolError:
        pass
