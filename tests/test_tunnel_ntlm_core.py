"""The tunnel's HTTP authentication core (tunnel.http_auth) and the HTTP/1.0 keep-alive
cycle of the channel core, without sockets: header parsing (hypothesis), user-name
forms, the NTLM and Negotiate handshakes against dcerpc's initiators, the throttle's
hooks, and the configuration key."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcerpc.ntlm import NtlmInitiator
from dcerpc.ntlm_crypto import nt_hash
from dcerpc.spnego import SpnegoInitiator
from tunnel.channel import ChannelState, RequestReceived, ServerChannel
from tunnel.config import TunnelConfig
from tunnel.http_auth import (
    MAX_HANDSHAKES,
    BasicCredentials,
    ConnectionAuth,
    Malformed,
    MechToken,
    Scheme,
    challenges,
    ntlm_directory_of,
    parse_credentials,
    server_names,
    split_user_name,
)

USER, PASSWORD = "alice", "correct horse"


class Directory:
    def __init__(self) -> None:
        self.failed: list[str | None] = []
        self.succeeded: list[str] = []

    def lookup_nt_hash(self, user: str, domain: str) -> bytes | None:
        return nt_hash(PASSWORD) if user == USER else None

    def ntlm_failed(self, user: str | None, address: str | None) -> None:
        self.failed.append(user)

    def ntlm_succeeded(self, user: str, address: str | None) -> None:
        self.succeeded.append(user)


def _auth(directory: Directory, held: set[str] | None = None) -> ConnectionAuth:
    return ConnectionAuth(
        (Scheme.NEGOTIATE, Scheme.NTLM, Scheme.BASIC),
        directory,
        server_names(["mail.example.test"]),
        "192.0.2.1",
        refuses=(lambda user, address: user in held) if held is not None else None,
    )


def _leg(value: str) -> bytes:
    return base64.b64decode(value.partition(" ")[2])


# -- header parsing ------------------------------------------------------------------------------


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
@settings(max_examples=400, deadline=None)
def test_parse_credentials_never_raises(value: str | bytes) -> None:
    result = parse_credentials(value)
    assert result is Malformed.MALFORMED or isinstance(result, BasicCredentials | MechToken)


@given(
    scheme=st.sampled_from(["NTLM", "ntlm", "Negotiate", "NEGOTIATE", "Basic"]),
    token=st.binary(max_size=400),
    pad=st.sampled_from(["", " ", "  "]),
)
@settings(max_examples=300, deadline=None)
def test_parse_credentials_roundtrips_tokens(scheme: str, token: bytes, pad: str) -> None:
    value = f"{scheme} {pad}{base64.b64encode(token).decode()}{pad}"
    result = parse_credentials(value)
    if scheme.lower() == "basic":
        assert result is Malformed.MALFORMED or isinstance(result, BasicCredentials)
    elif token:
        assert result == MechToken(Scheme(scheme.lower()), token)
    else:
        assert result is Malformed.MALFORMED


_NAME = st.text(
    alphabet=st.characters(
        blacklist_characters="\\@:\r\n", blacklist_categories=["Cs", "Zs", "Cc"]
    ),
    min_size=1,
    max_size=40,
)


@given(user=_NAME, domain=_NAME, password=st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_basic_name_forms_name_the_same_user(user: str, domain: str, password: str) -> None:
    for sent, dom in ((user, ""), (f"{domain}\\{user}", domain), (f"\\{user}", ""),
                      (f"{user}@{domain}", domain)):  # fmt: skip
        token = base64.b64encode(f"{sent}:{password}".encode()).decode()
        creds = parse_credentials(f"Basic {token}")
        assert creds == BasicCredentials(user.strip(), dom.strip(), password, sent)


def test_split_user_name_edge_cases() -> None:
    assert split_user_name("EXAMPLE\\alice") == ("alice", "EXAMPLE")
    assert split_user_name("\\alice") == ("alice", "")
    assert split_user_name("alice@example.test") == ("alice", "example.test")
    assert split_user_name("A\\B\\alice") == ("alice", "A\\B")
    assert split_user_name("DOM\\alice@x") == ("alice", "DOM")
    for bad in ("", " ", "DOMAIN\\", "\\", "@example.test", "x" * 300):
        assert split_user_name(bad) is None
    assert parse_credentials("Basic " + base64.b64encode(b"\\:pw").decode()) is Malformed.MALFORMED
    assert parse_credentials(None) is None


# -- the handshakes -----------------------------------------------------------------------------


@pytest.mark.parametrize("user", [USER, f"EXAMPLE\\{USER}", f"{USER}@example.test"])
def test_ntlm_handshake(user: str) -> None:
    directory = Directory()
    auth = _auth(directory)
    client = NtlmInitiator(user, PASSWORD, "EXAMPLE")
    step = auth.step(MechToken(Scheme.NTLM, client.step()), 1.7e9)
    assert step.challenge is not None and step.challenge.startswith("NTLM ") and auth.pending
    done = auth.step(MechToken(Scheme.NTLM, client.step(_leg(step.challenge))), 1.7e9)
    assert done.user == USER and auth.user == USER and not auth.pending
    assert directory.succeeded == [USER] and directory.failed == []


def test_negotiate_handshake_has_a_last_word() -> None:
    directory = Directory()
    auth = _auth(directory)
    client = SpnegoInitiator(NtlmInitiator(USER, PASSWORD))
    step = auth.step(MechToken(Scheme.NEGOTIATE, client.step()), None)
    assert step.challenge is not None and step.challenge.startswith("Negotiate ")
    step = auth.step(MechToken(Scheme.NEGOTIATE, client.step(_leg(step.challenge))), None)
    if step.challenge is not None:  # the initiator's optimistic token needed one more leg
        step = auth.step(MechToken(Scheme.NEGOTIATE, client.step(_leg(step.challenge))), None)
    assert step.user == USER and step.final is not None
    client.step(_leg(step.final))  # the client checks our mechListMIC


def test_bare_ntlm_inside_negotiate() -> None:
    auth = _auth(Directory())
    client = NtlmInitiator(USER, PASSWORD)
    step = auth.step(MechToken(Scheme.NEGOTIATE, client.step()), None)
    assert step.challenge is not None and step.challenge.startswith("Negotiate TlRMTVNT")
    done = auth.step(MechToken(Scheme.NEGOTIATE, client.step(_leg(step.challenge))), None)
    assert done.user == USER and done.final is None


def test_wrong_password_unknown_user_and_held_back() -> None:
    directory = Directory()
    for user, password in ((USER, "wrong"), ("mallory", PASSWORD)):
        auth = _auth(directory)
        client = NtlmInitiator(user, password)
        step = auth.step(MechToken(Scheme.NTLM, client.step()), None)
        assert step.challenge is not None
        done = auth.step(MechToken(Scheme.NTLM, client.step(_leg(step.challenge))), None)
        assert done.user is None and done.challenge is None and auth.user is None
    assert directory.failed == [USER, "mallory"]
    held = Directory()
    auth = _auth(held, held={USER})
    client = NtlmInitiator(USER, PASSWORD)
    step = auth.step(MechToken(Scheme.NTLM, client.step()), None)
    assert step.challenge is not None
    done = auth.step(MechToken(Scheme.NTLM, client.step(_leg(step.challenge))), None)
    assert done.user is None and held.failed == [] and held.succeeded == []


def test_schemes_not_offered_and_out_of_order_legs() -> None:
    auth = ConnectionAuth((Scheme.NTLM,), Directory(), server_names([]), None)
    client = SpnegoInitiator(NtlmInitiator(USER, PASSWORD))
    assert auth.step(MechToken(Scheme.NEGOTIATE, client.step()), None).reason
    # An AUTHENTICATE-shaped token with no NEGOTIATE first.
    fake = b"NTLMSSP\x00\x03\x00\x00\x00" + bytes(80)
    assert auth.step(MechToken(Scheme.NTLM, fake), None).user is None
    # A new NEGOTIATE replaces the handshake under way (and forgets the old user).
    first = NtlmInitiator(USER, PASSWORD)
    step1 = auth.step(MechToken(Scheme.NTLM, first.step()), None)
    second = NtlmInitiator(USER, PASSWORD)
    step2 = auth.step(MechToken(Scheme.NTLM, second.step()), None)
    assert step1.challenge and step2.challenge
    stale = first.step(_leg(step1.challenge))
    assert auth.step(MechToken(Scheme.NTLM, stale), None).user is None


@given(st.lists(st.binary(max_size=200), max_size=6), st.booleans())
@settings(max_examples=300, deadline=None)
def test_random_legs_never_raise(tokens: list[bytes], start: bool) -> None:
    directory = Directory()
    auth = _auth(directory)
    if start:
        auth.step(MechToken(Scheme.NTLM, NtlmInitiator(USER, PASSWORD).step()), None)
    for i, token in enumerate(tokens):
        scheme = Scheme.NTLM if i % 2 == 0 else Scheme.NEGOTIATE
        step = auth.step(MechToken(scheme, b"NTLMSSP\x00" + token if i % 3 else token), None)
        assert step.user is None
    assert directory.succeeded == []


@given(st.binary(min_size=1, max_size=120))
@settings(max_examples=300, deadline=None)
def test_truncated_and_corrupted_authenticate(noise: bytes) -> None:
    auth = _auth(Directory())
    client = NtlmInitiator(USER, PASSWORD)
    step = auth.step(MechToken(Scheme.NTLM, client.step()), None)
    assert step.challenge is not None
    token = bytearray(client.step(_leg(step.challenge)))
    cut = noise[0] % len(token)
    corrupted = bytes(token[:cut]) + noise[1:]
    done = auth.step(MechToken(Scheme.NTLM, corrupted), None)
    assert done.user is None or corrupted == bytes(token)


# -- wiring pieces ------------------------------------------------------------------------------


def test_offers_and_config() -> None:
    assert challenges((Scheme.NEGOTIATE, Scheme.NTLM, Scheme.BASIC)) == [
        "Negotiate", "NTLM", 'Basic realm="mapi-anywhere"',
    ]  # fmt: skip
    assert TunnelConfig().schemes == (Scheme.NEGOTIATE, Scheme.NTLM, Scheme.BASIC)
    assert TunnelConfig(auth_schemes=("Basic",)).schemes == (Scheme.BASIC,)
    for bad in ((), ("kerberos",), ("ntlm", "NTLM")):
        with pytest.raises(ValueError):
            TunnelConfig(auth_schemes=bad)
    assert ntlm_directory_of(Directory()) is not None
    assert ntlm_directory_of(object()) is None
    names = server_names(["127.0.0.1", "mail.example.test"])
    assert (names.netbios_computer, names.dns_computer, names.dns_domain) == (
        "MAIL", "mail.example.test", "example.test",
    )  # fmt: skip


def _state(channel: ServerChannel) -> ChannelState:
    return channel.state


def _requests(channel: ServerChannel, data: bytes) -> list[RequestReceived]:
    return [e for e in channel.receive_data(data) if isinstance(e, RequestReceived)]


def test_http10_keep_alive_cycles_in_the_channel_core() -> None:
    channel = ServerChannel(TunnelConfig())
    head = b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.0\r\nConnection: Keep-Alive\r\n"
    first = _requests(channel, head + b"Content-Length: 0\r\n\r\n" + head)
    assert first and first[0].http10_keep_alive
    channel.reject(401, "Unauthorized", [("WWW-Authenticate", "NTLM abc")])
    out = channel.data_to_send()
    assert out.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and b"Connection: keep-alive" in out
    # The pipelined second head, completed now, is read by a fresh h11 connection.
    second = _requests(channel, b"Content-Length: 0\r\n\r\n")
    assert len(second) == 1 and second[0].http10_keep_alive
    channel.reject(401, "Unauthorized")
    assert _state(channel) in (ChannelState.HEAD, ChannelState.DRAIN)
    # HTTP/1.0 without keep-alive: answered, then closed, as before.
    third = _requests(channel, b"RPC_IN_DATA /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    assert third and not third[0].keep_alive
    channel.reject(401, "Unauthorized")
    assert b"Connection: close" in channel.data_to_send()
    assert _state(channel) is ChannelState.CLOSED


def test_handshakes_per_connection_are_bounded() -> None:
    auth = _auth(Directory())
    for _ in range(MAX_HANDSHAKES):
        step = auth.step(MechToken(Scheme.NTLM, NtlmInitiator(USER, PASSWORD).step()), None)
        assert step.challenge is not None
    step = auth.step(MechToken(Scheme.NTLM, NtlmInitiator(USER, PASSWORD).step()), None)
    assert step.close and step.challenge is None and not auth.pending
