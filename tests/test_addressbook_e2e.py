"""The address book on the LAN, end to end: a real ``serve`` on loopback, impacket's
``nspi`` module (no one here wrote it) finding NSPI through the endpoint mapper
(``epm.hept_map``) and binding with NTLM at packet privacy, each answer checked against
the directory. impacket has no NspiGetMatches: that request is built with our codec's
operation and sent with impacket's ``dce.call``. Hostile input (out-of-range STATs, an
unbound context handle, malformed stubs) is answered with the spec's error or a fault,
and the server keeps serving. Every test is bounded by ``fail_after``."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
import trio
from impacket.dcerpc.v5 import epm, nspi, oxabref, rpcrt
from impacket.dcerpc.v5 import transport as imp_transport

from dcerpc.idl import nspi as idl
from dcerpc.ndr import ContextHandle
from mapi.addressbook import props as p
from mapi.addressbook.gal import legacy_dn
from tests.serve_helpers import start_server

USERS = {
    "alice": "pw-alice-1",
    "bob": "pw-bob-1",
    "bobby": "pw-bobby-1",
    "carol": "pw-carol-1",
    "hidden": "pw-hidden-1",
}
DETAILS: dict[str, dict[str, Any]] = {
    "alice": {"display_name": "Alice Archer", "title": "Engineer", "department": "R&D"},
    "bob": {"display_name": "Bob Builder", "office": "B-12", "phone": "+1 555 0100"},
    "bobby": {"display_name": "Bobby Tables", "company": "Example Ltd"},
    "carol": {"display_name": "Carol Cole"},
    "hidden": {"display_name": "Hidden Harry", "hidden": True},
}
DN = 0x3003001F
NAME = 0x3001001F
SMTP = 0x39FE001F
TITLE = 0x3A17001F
ACCOUNT = 0x3A00001F
GUID = 0x8C6D0102


@pytest.fixture
async def server(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "data", USERS, emails=True)
    directory = running.store.directory
    for user, fields in DETAILS.items():
        await trio.to_thread.run_sync(lambda u=user, f=fields: directory.update_user(u, **f))
    await running.gal.refresh()
    return running


def connect(epm_port: int, user: str = "alice", password: str = "pw-alice-1") -> Any:
    """EPM lookup, then NTLM at privacy on the port it names."""
    binding = _map(epm_port, nspi.MSRPC_UUID_NSPI)
    tr = imp_transport.DCERPCTransportFactory(binding)
    tr.set_credentials(user, password, "")
    dce = tr.get_dce_rpc()
    dce.set_auth_level(rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    dce.connect()
    dce.bind(nspi.MSRPC_UUID_NSPI)
    return dce


def _map(port: int, interface: bytes) -> str:
    """impacket's ept_map on our endpoint mapper (anonymous, as its tools do)."""
    tr = imp_transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
    dce = tr.get_dce_rpc()
    dce.connect()
    try:
        return str(epm.hept_map("127.0.0.1", interface, protocol="ncacn_ip_tcp", dce=dce))
    finally:
        dce.disconnect()


def ours_of(handle: Any) -> ContextHandle:
    """impacket's context handle as our codec's value."""
    raw = bytes(handle.getData())
    return ContextHandle(int.from_bytes(raw[:4], "little"), uuid.UUID(bytes_le=raw[4:20]))


def raw_call(dce: Any, op: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Send ``op`` encoded by our codec with impacket's transport; decode the answer."""
    dce.call(op.opnum, op.encode_request(values))
    return op.decode_response(bytes(dce.recv()))


def _in_thread(fn: Any, *args: Any) -> Any:
    return trio.to_thread.run_sync(fn, *args)


async def test_bind_special_table_and_paging(server):
    def client() -> dict[str, Any]:
        dce = connect(server.epm_port)
        try:
            bound = nspi.hNspiBind(dce)
            handle = bound["contextHandle"]
            table = nspi.simplifyPropertyRowSet(nspi.hNspiGetSpecialTable(dce, handle)["ppRows"])
            names: list[str] = []
            stat = None
            pages = 0
            while True:
                resp = nspi.hNspiQueryRows(
                    dce, handle, pStat=stat, Count=2, pPropTags=[NAME, DN, SMTP, TITLE]
                )
                rows = nspi.simplifyPropertyRowSet(resp["ppRows"])
                pages += 1
                names += [r[NAME] for r in rows]
                stat = resp["pStat"]
                if stat["CurrentRec"] == p.MID_END_OF_TABLE or not rows:
                    break
                if pages == 1:
                    first = rows
            unbound = nspi.hNspiUnbind(dce, handle)["ErrorCode"]
            return {
                "table": table,
                "names": names,
                "first": first,
                "total": stat["TotalRecs"],
                "unbind": unbound,
            }
        finally:
            dce.disconnect()

    with trio.fail_after(60):
        got = await _in_thread(client)
    assert [row[NAME] for row in got["table"]] == ["Global Address List", "All Users"]
    assert [row[0xFFFD0003] for row in got["table"]] == [0, 0x10]
    # Every visible user (the demo user is not made: start_server adds users first),
    # in display-name order; the hidden one absent.
    users = await trio.to_thread.run_sync(server.store.directory.list_users)
    expected = sorted(
        (u.display_name for u in users if not u.hidden and not u.disabled), key=str.casefold
    )
    assert got["names"] == expected
    assert "Hidden Harry" not in got["names"]
    assert got["total"] == len(expected)
    alice = got["first"][0]
    assert alice[DN] == legacy_dn("mapi-anywhere", "alice")
    assert alice[SMTP] == "alice@example.org"
    assert alice[TITLE] == "Engineer"
    assert got["unbind"] == p.UNBIND_SUCCESS


async def test_resolve_get_props_dn_to_mid_and_matches(server):
    def client() -> dict[str, Any]:
        dce = connect(server.epm_port)
        try:
            handle = nspi.hNspiBind(dce)["contextHandle"]
            out: dict[str, Any] = {}
            resolved = nspi.hNspiResolveNamesW(
                dce,
                handle,
                pPropTags=[NAME, SMTP],
                paStr=["bob", "Bob", "nobody", "carol@example.org", "harry"],
            )
            out["mids"] = [int(m["Data"]) for m in resolved["ppMIds"]["aulPropTag"]]
            out["rows"] = nspi.simplifyPropertyRowSet(resolved["ppRows"])
            carol = out["mids"][3]
            props = nspi.hNspiGetProps(
                dce, handle, CurrentRec=carol, pPropTags=[NAME, DN, ACCOUNT, GUID, 0x3002001F]
            )
            out["props"] = nspi.simplifyPropertyRow(props["ppRows"])
            out["props_code"] = props["ErrorCode"]
            dn_resp = nspi.hNspiDNToMId(
                dce, handle, [legacy_dn("mapi-anywhere", "carol"), "/o=x/cn=nobody"]
            )
            out["dn_mids"] = [int(m["Data"]) for m in dn_resp["ppOutMIds"]["aulPropTag"]]
            # impacket has no NspiGetMatches: our codec's request, impacket's transport.
            prefix = idl.Restriction(
                idl.RES_CONTENT,
                idl.ContentRestriction(
                    0x10002, NAME, idl.PropertyValue(NAME, "bob")
                ),  # FL_PREFIX | FL_IGNORECASE
            )
            ours = ours_of(handle)
            out["matches"] = raw_call(
                dce,
                idl.NspiGetMatches,
                {
                    "hRpc": ours,
                    "Reserved1": 0,
                    "pStat": idl.Stat(code_page=p.CP_TELETEX),
                    "pReserved": None,
                    "Reserved2": 0,
                    "Filter": prefix,
                    "lpPropName": None,
                    "ulRequested": 10,
                    "pPropTags": [NAME],
                },
            )
            return out
        finally:
            dce.disconnect()

    with trio.fail_after(60):
        got = await _in_thread(client)
    mids = got["mids"]
    # "bob" is bob's login name (exact beats the prefix that bobby shares); "Bob"
    # the same; "nobody" unknown; carol by SMTP; harry is hidden: unknown.
    assert mids[0] == mids[1] and mids[0] > p.MID_RESOLVED
    assert mids[2] == p.MID_UNRESOLVED
    assert mids[4] == p.MID_UNRESOLVED
    assert [r[NAME] for r in got["rows"]] == ["Bob Builder", "Bob Builder", "Carol Cole"]
    props = got["props"]
    assert props[NAME] == "Carol Cole"
    assert props[ACCOUNT] == "carol"
    assert props[DN] == legacy_dn("mapi-anywhere", "carol")
    assert props[0x3002001F] == "EX"
    record = await trio.to_thread.run_sync(server.store.directory.get_user, "carol")
    assert props[GUID] == str(uuid.UUID(hex=record.user_id))
    assert got["props_code"] == 0
    assert got["dn_mids"] == [mids[3], 0]
    matches = got["matches"]
    assert matches["result"] == 0
    names = [row.props[0].value for row in matches["ppRows"]]
    assert names == ["Bob Builder", "Bobby Tables"]
    assert len(matches["ppOutMIds"]) == 2


async def test_ambiguous_name(server):
    def client() -> list[int]:
        dce = connect(server.epm_port)
        try:
            handle = nspi.hNspiBind(dce)["contextHandle"]
            resp = nspi.hNspiResolveNamesW(dce, handle, pPropTags=[NAME], paStr=["bo", "zz"])
            return [int(m["Data"]) for m in resp["ppMIds"]["aulPropTag"]]
        finally:
            dce.disconnect()

    with trio.fail_after(60):
        mids = await _in_thread(client)
    assert mids == [p.MID_AMBIGUOUS, p.MID_UNRESOLVED]  # bob and bobby; nobody


async def test_referral_names_this_server(server):
    def client() -> str:
        binding = _map(server.epm_port, oxabref.MSRPC_UUID_OXABREF)
        tr = imp_transport.DCERPCTransportFactory(binding)
        tr.set_credentials("bob", "pw-bob-1", "")
        dce = tr.get_dce_rpc()
        dce.set_auth_level(rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
        dce.connect()
        try:
            dce.bind(oxabref.MSRPC_UUID_OXABREF)
            resp = oxabref.hRfrGetNewDSA(dce, legacy_dn("mapi-anywhere", "bob"))
            return str(resp["ppszServer"])
        finally:
            dce.disconnect()

    with trio.fail_after(60):
        name = await _in_thread(client)
    assert name == server.addressbook.server_fqdn


async def test_anonymous_refused(server):
    """An anonymous NTLM login binds the connection, but no NSPI call runs on it."""

    def client() -> None:
        dce = None
        try:
            dce = connect(server.epm_port, user="", password="")
            nspi.hNspiBind(dce)
        finally:
            if dce is not None:
                dce.disconnect()

    with trio.fail_after(60), pytest.raises(rpcrt.DCERPCException):
        await _in_thread(client)
    assert server.addressbook.bind_count == 0


async def test_hostile_input_is_answered_and_the_server_keeps_serving(server):
    def client() -> dict[str, Any]:
        dce = connect(server.epm_port)
        out: dict[str, Any] = {}
        try:
            handle = nspi.hNspiBind(dce)["contextHandle"]
            ours = ours_of(handle)
            # A STAT with positions far out of range: clamped, never an error.
            wild = idl.Stat(current_rec=p.MID_CURRENT, delta=-(2**31), num_pos=2**32 - 1,
                            total_recs=3, code_page=p.CP_TELETEX)  # fmt: skip
            out["wild"] = raw_call(
                dce,
                idl.NspiQueryRows,
                {"hRpc": ours, "dwFlags": 0, "pStat": wild, "lpETable": None, "Count": 5,
                 "pPropTags": [NAME]},
            )  # fmt: skip
            # A CurrentRec that is no row's MId: NotFound, the STAT given back unchanged.
            nowhere = replace(wild, current_rec=0xDEADBEEF)
            out["nowhere"] = raw_call(
                dce,
                idl.NspiQueryRows,
                {"hRpc": ours, "dwFlags": 0, "pStat": nowhere, "lpETable": None, "Count": 5,
                 "pPropTags": [NAME]},
            )  # fmt: skip
            out["nowhere_stat"] = nowhere
            out["bad_sort"] = raw_call(
                dce,
                idl.NspiUpdateStat,
                {"hRpc": ours, "Reserved": 0, "pStat": idl.Stat(sort_type=77), "plDelta": 1},
            )
            out["bad_container"] = raw_call(
                dce,
                idl.NspiUpdateStat,
                {"hRpc": ours, "Reserved": 0, "pStat": idl.Stat(container_id=999),
                 "plDelta": None},
            )  # fmt: skip
            # An unbound context handle.
            stranger = ContextHandle(0, uuid.uuid4())
            try:
                raw_call(dce, idl.NspiQueryColumns, {"hRpc": stranger, "Reserved": 0,
                                                      "dwFlags": 0})  # fmt: skip
            except rpcrt.DCERPCException as exc:
                out["unbound"] = str(exc)
            out["unbind_stranger"] = raw_call(
                dce, idl.NspiUnbind, {"contextHandle": stranger, "Reserved": 0}
            )["result"]
            # Malformed stubs: truncated, and a lying count.
            for name, stub in (("truncated", b"\x00" * 7),
                               ("lying", bytes(ours.uuid.bytes_le).rjust(20, b"\0")
                                + b"\0" * 4 + b"\xff\xff\xff\x7f")):  # fmt: skip
                try:
                    dce.call(7, stub)
                    dce.recv()
                except rpcrt.DCERPCException as exc:
                    out[name] = str(exc)
            # Still serving on the same connection.
            out["after"] = nspi.hNspiQueryColumns(dce, handle)["ErrorCode"]
            # Templates and changes answer the spec's errors.
            out["mod"] = raw_call(
                dce, idl.NspiModLinkAtt, {"hRpc": ours, "dwFlags": 0, "ulPropTag": NAME,
                                          "dwMId": 0, "lpEntryIds": []},
            )["result"]  # fmt: skip
            alice = nspi.hNspiDNToMId(dce, handle, [legacy_dn("mapi-anywhere", "alice")])
            out["mod_known"] = raw_call(
                dce, idl.NspiModLinkAtt, {"hRpc": ours, "dwFlags": 0, "ulPropTag": NAME,
                    "dwMId": int(alice["ppOutMIds"]["aulPropTag"][0]["Data"]),
                    "lpEntryIds": []},
            )["result"]  # fmt: skip
            return out
        finally:
            dce.disconnect()

    with trio.fail_after(60):
        got = await _in_thread(client)
    wild = got["wild"]
    assert wild["result"] == 0
    stat = wild["pStat"]
    assert 0 <= stat.num_pos <= stat.total_recs
    assert stat.current_rec == p.MID_END_OF_TABLE or stat.num_pos < stat.total_recs
    assert got["bad_sort"]["result"] == p.GENERAL_FAILURE
    assert got["bad_container"]["result"] == p.INVALID_BOOKMARK
    assert "context_mismatch" in got["unbound"]  # nca_s_fault_context_mismatch
    assert got["unbind_stranger"] == p.UNBIND_FAILURE
    assert got["truncated"] == "rpc_x_bad_stub_data"  # nca_s_fault_ndr
    assert got["lying"] == "rpc_x_bad_stub_data"
    assert got["after"] == 0
    # NspiModLinkAtt: an object that is not there is InvalidParameter (rule 4); the
    # links of one that is are not the client's to change.
    assert got["mod"] == p.INVALID_PARAMETER
    assert got["mod_known"] == p.ACCESS_DENIED
    assert got["nowhere"]["result"] == p.NOT_FOUND
    assert got["nowhere"]["ppRows"] is None
    assert got["nowhere"]["pStat"] == got["nowhere_stat"]


async def test_foreign_handle_is_refused(server):
    """A handle bob bound is worth nothing on alice's connection."""

    def client() -> str | None:
        bob = connect(server.epm_port, "bob", "pw-bob-1")
        alice = connect(server.epm_port)
        try:
            handle = nspi.hNspiBind(bob)["contextHandle"]
            stolen = ours_of(handle)
            try:
                raw_call(alice, idl.NspiQueryColumns, {"hRpc": stolen, "Reserved": 0,
                                                        "dwFlags": 0})  # fmt: skip
            except rpcrt.DCERPCException as exc:
                return str(exc)
            return None
        finally:
            bob.disconnect()
            alice.disconnect()

    with trio.fail_after(60):
        assert "context_mismatch" in (await _in_thread(client) or "")
