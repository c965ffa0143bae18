"""The directory and challenge-response logon."""

from __future__ import annotations

import hmac

import pytest

from mapi.access.directory import normalise_username
from mapi.access.logon import (
    KdfParams,
    client_response,
    derive_key,
    make_challenge,
    server_proof,
    verify_response,
    verify_server_proof,
)
from mapi.model import errors
from mapi.store import ObjectStore

PARAMS = KdfParams(n=16, r=1, p=1)
SALT = bytes(16)
SERVER_NONCE = bytes(range(32))
CLIENT_NONCE = bytes(range(32, 64))


def test_pure_functions_agree_and_are_deterministic() -> None:
    challenge = make_challenge("alice", SALT, PARAMS, server_secret=b"s", nonce=SERVER_NONCE)
    nonce, response = client_response("secret", challenge, CLIENT_NONCE)
    assert nonce == CLIENT_NONCE
    key = derive_key("secret", SALT, PARAMS)
    assert verify_response(key, challenge, nonce, response)
    assert client_response("secret", challenge, CLIENT_NONCE)[1] == response
    expected = hmac.new(
        key, b"C" + b"mapi-anywhere logon v1" + SERVER_NONCE + CLIENT_NONCE + b"alice", "sha256"
    ).digest()
    assert response == expected
    assert not verify_response(derive_key("wrong", SALT, PARAMS), challenge, nonce, response)
    other = make_challenge("alice", SALT, PARAMS, server_secret=b"s", nonce=bytes(32))
    assert not verify_response(key, other, nonce, response)  # bound to the server nonce
    assert not verify_response(key, challenge, nonce, response[:-1])
    assert not verify_response(key, challenge, b"short", response)
    proof = server_proof(key, challenge, nonce)
    assert proof != response
    assert verify_server_proof("secret", challenge, nonce, proof)
    assert not verify_server_proof("other", challenge, nonce, proof)


def test_password_normalisation_and_kdf_bounds() -> None:
    assert derive_key("\u212b", SALT, PARAMS) == derive_key("\u00c5", SALT, PARAMS)  # NFKC
    with pytest.raises(errors.InvalidParameter):
        derive_key("", SALT, PARAMS)
    challenge = make_challenge("a", SALT, KdfParams(n=1 << 22), server_secret=b"s")
    with pytest.raises(errors.InvalidParameter):  # a hostile server cannot exhaust the client
        client_response("pw", challenge)
    with pytest.raises(errors.InvalidParameter):
        KdfParams(n=1000).check()


def test_unknown_users_get_a_stable_decoy() -> None:
    a = make_challenge("ghost", None, PARAMS, server_secret=b"secret")
    b = make_challenge("ghost", None, PARAMS, server_secret=b"secret")
    assert a.salt == b.salt and len(a.salt) == 16 and a.server_nonce != b.server_nonce


def test_store_logon_flow(store: ObjectStore) -> None:
    pending = store.pending_challenges(8)
    challenge = store.begin_logon("Alice")
    pending.add(challenge)
    nonce, response = client_response("alice-pw", challenge)
    taken = pending.take(challenge.server_nonce)
    assert taken == challenge
    session = store.complete_logon(taken, nonce, response)
    assert session.user.username == "alice"
    assert pending.take(challenge.server_nonce) is None  # single use: no replay
    bad = store.begin_logon("alice")
    nonce, response = client_response("nope", bad)
    with pytest.raises(errors.LogonFailed):
        store.complete_logon(bad, nonce, response)
    ghost = store.begin_logon("ghost")
    nonce, response = client_response("x", ghost)
    with pytest.raises(errors.LogonFailed):
        store.complete_logon(ghost, nonce, response)
    assert pending.take(b"never issued") is None
    session.logoff()
    session.logoff()
    with pytest.raises(errors.InvalidObject):
        session.open_store()


def test_challenges_expire(store: ObjectStore) -> None:
    pending = store.pending_challenges(8)
    challenge = store.begin_logon("alice")
    pending.add(challenge)
    store.clock.now += 3 * 60 * 10_000_000  # type: ignore[attr-defined]
    assert pending.take(challenge.server_nonce) is None


def test_pending_challenges_are_bounded_and_expired_ones_make_room(store: ObjectStore) -> None:
    pending = store.pending_challenges(2)
    first, second = store.begin_logon("alice"), store.begin_logon("bob")
    pending.add(first)
    pending.add(second)
    assert pending.full()
    with pytest.raises(errors.NotEnoughResources):
        pending.add(store.begin_logon("alice"))
    assert pending.take(first.server_nonce) == first  # an answer frees its slot
    pending.add(store.begin_logon("alice"))
    store.clock.now += 3 * 60 * 10_000_000  # type: ignore[attr-defined]
    assert not pending.full() and len(pending) == 0  # expired ones are dropped


def test_directory_admin_functions(store: ObjectStore) -> None:
    assert [u.username for u in store.list_users()] == ["alice", "bob"]
    with pytest.raises(errors.Collision):
        store.add_user("ALICE", "x")
    with pytest.raises(errors.InvalidParameter):
        store.add_user("bad name", "x")
    with pytest.raises(errors.InvalidParameter):
        normalise_username("../etc")
    store.set_password("alice", "new-pw")
    with pytest.raises(errors.LogonFailed):
        store.logon_with_password("alice", "alice-pw")
    store.logon_with_password("alice", "new-pw")
    store.directory.set_disabled("bob", True)
    with pytest.raises(errors.LogonFailed):
        store.logon_with_password("bob", "bob-pw")
    bob = store.directory.get_user("bob")
    store.delete_user("bob")
    assert [u.username for u in store.list_users()] == ["alice"]
    assert not (store.data_dir / "mailboxes" / bob.mailbox).exists()
    with pytest.raises(errors.NotFound):
        store.set_password("bob", "x")
    again = store.add_user("bob", "pw")
    assert again.user_id != bob.user_id


def test_session_limit(tmp_path: object, store: ObjectStore) -> None:
    limit = store.limits.max_sessions_per_user
    sessions = [store.logon_with_password("alice", "alice-pw") for _ in range(limit)]
    with pytest.raises(errors.SessionLimit):
        store.logon_with_password("alice", "alice-pw")
    sessions[0].logoff()
    store.logon_with_password("alice", "alice-pw")
