"""Logon over the wire, against hostile callers: answers are judged and throttled for
the user the challenge was issued to, and challenges live with their connection."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
from serve_helpers import start_server

from dcerpc.client import open_tcp_rpc_client
from dcerpc.syntax import MSGPACK
from mapi.access.logon import Challenge, KdfParams, client_response
from mapi.model import errors
from mapi.rpc.service import OP_CONNECT, STORE_SYNTAX

PASSWORDS = {"alice": "alice-password", "mallory": "mallory-password"}
H = errors.Hresult


@pytest.fixture
async def server(nursery, tmp_path):
    # The unauthenticated challenge-response path itself ([rpc] min_auth_level = "none"):
    # at the default, every connection here would have to be alice's or mallory's NTLM.
    return await start_server(nursery, tmp_path / "data", PASSWORDS, min_auth_level="none")


@asynccontextmanager
async def store_connection(server: Any):
    """A raw connect() caller on the store's port: ``call(request) -> reply``."""
    async with open_tcp_rpc_client("127.0.0.1", server.service_ports["store"]) as rpc:
        ctx_id = await rpc.bind(STORE_SYNTAX, (MSGPACK,))

        async def call(request: dict[str, Any]) -> dict[str, Any]:
            reply = await rpc.call(ctx_id, OP_CONNECT, msgpack.packb(request))
            return dict(msgpack.unpackb(reply))

        yield call


def answer(user: str, password: str, first: dict[str, Any], **extra: Any) -> dict[str, Any]:
    kdf = first["kdf"]
    params = KdfParams(kdf["n"], kdf["r"], kdf["p"])
    challenge = Challenge(user, first["salt"], params, first["nonce"])
    cnonce, response = client_response(password, challenge)
    return {"user": user, "nonce": first["nonce"], "cnonce": cnonce, "response": response,
            **extra}  # fmt: skip


def junk(nonce: bytes, user: str) -> dict[str, Any]:
    return {"user": user, "nonce": nonce, "cnonce": os.urandom(32), "response": os.urandom(32)}


async def test_guesses_count_against_the_challenged_user_whatever_name_they_carry(server):
    """Answering alice's challenges under other names used to count the failures
    against those names: alice's own counter never moved."""
    with trio.fail_after(60):
        async with store_connection(server) as call:
            for i in range(8):  # past the throttle's free failures
                first = await call({"user": "alice"})
                reply = await call(junk(first["nonce"], f"decoy{i}"))
                assert reply["hresult"] == H.MAPI_E_LOGON_FAILED
        async with store_connection(server) as call:
            first = await call({"user": "alice"})
            reply = await call(answer("alice", PASSWORDS["alice"], first))
            assert reply["hresult"] == H.MAPI_E_LOGON_FAILED
            assert "too many failed logons" in str(reply["error"])


async def test_an_answer_naming_another_user_never_logs_on(server):
    with trio.fail_after(60):
        async with store_connection(server) as call:
            first = await call({"user": "mallory"})
            request = answer("mallory", PASSWORDS["mallory"], first)
            request["user"] = "alice"
            reply = await call(request)
            assert reply["hresult"] == H.MAPI_E_LOGON_FAILED and "session" not in reply


async def test_challenges_live_with_their_connection(server):
    """A step 2 for a nonce never issued frees no slot, a challenge is no good on
    another connection, and challenges of one connection take nothing from another."""
    limit = 8  # ServiceLimits.max_pending_logons_per_connection
    with trio.fail_after(60):
        async with store_connection(server) as hoarder, store_connection(server) as other:
            firsts = [await hoarder({"user": "alice"}) for _ in range(limit)]
            assert all(first["hresult"] == 0 for first in firsts)
            reply = await hoarder(junk(os.urandom(32), "alice"))  # never issued
            assert reply["hresult"] == H.MAPI_E_LOGON_FAILED
            assert (await hoarder({"user": "alice"}))["hresult"] == H.MAPI_E_NOT_ENOUGH_RESOURCES
            # alice's challenge from the hoarder's connection, answered on another one:
            reply = await other(answer("alice", PASSWORDS["alice"], firsts[0]))
            assert reply["hresult"] == H.MAPI_E_LOGON_FAILED
            first = await other({"user": "alice"})
            reply = await other(answer("alice", PASSWORDS["alice"], first))
            assert reply["hresult"] == 0 and reply["user"] == "alice"
            # And on its own connection, an issued challenge still works (then frees a slot).
            reply = await hoarder(answer("alice", PASSWORDS["alice"], firsts[1]))
            assert reply["hresult"] == 0
            assert (await hoarder({"user": "alice"}))["hresult"] == 0
