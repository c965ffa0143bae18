"""The address book's heavy calls run in worker threads, not on the event loop.

A real ``serve`` on loopback; two impacket NSPI connections (NTLM at privacy). The
first one's NspiGetMatches is held inside the core (a gate in the test stands for a
search over a huge GAL) while the second connection binds, reads the special table,
pages the GAL and resolves names: all of that must be answered while the search is
still running, and only then is the search let go. Had the search run on the event
loop, the second connection would get no answer until the gate's own time-out, and the
recorded order would differ. Ordering and progress only, never timing; every wait is
bounded (``fail_after``, ``Event.wait(timeout)``).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
from impacket.dcerpc.v5 import nspi

from dcerpc.errors import FaultStatus, RpcFault
from dcerpc.idl import nspi as idl
from dcerpc.interface import CallContext
from mapi.addressbook import props as p
from mapi.addressbook.gal import build_gal
from mapi.addressbook.nspi import NspiCore
from mapi.addressbook.service import HEAVY_OPNUMS, AddressBookService
from mapi.model import errors as mapi_errors
from tests.serve_helpers import start_server
from tests.test_addressbook_e2e import NAME, connect, ours_of, raw_call

USERS = {"alice": "pw-alice-1", "bob": "pw-bob-1", "bobby": "pw-bobby-1"}
GATE_SECONDS = 20.0


@pytest.fixture
async def server(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "data", USERS, emails=True)
    await running.gal.refresh()
    return running


async def test_a_long_get_matches_does_not_hold_up_another_connection(server, monkeypatch):
    entered = threading.Event()
    release = threading.Event()
    order: list[str] = []
    lock = threading.Lock()

    def note(what: str) -> None:
        with lock:
            order.append(what)

    real = NspiCore.get_matches

    def held(self: NspiCore, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        note("search running")
        released = release.wait(GATE_SECONDS)
        note("search released" if released else "search gave up waiting")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(NspiCore, "get_matches", held)

    def searcher() -> list[str]:
        dce = connect(server.epm_port)
        try:
            handle = nspi.hNspiBind(dce)["contextHandle"]
            prefix = idl.Restriction(
                idl.RES_CONTENT,
                idl.ContentRestriction(0x10002, NAME, idl.PropertyValue(NAME, "bob")),
            )
            got = raw_call(
                dce,
                idl.NspiGetMatches,
                {
                    "hRpc": ours_of(handle),
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
            note("search answered")
            return [row.props[0].value for row in got["ppRows"]]
        finally:
            dce.disconnect()

    def other() -> dict[str, Any]:
        assert entered.wait(GATE_SECONDS), "the search never started"
        dce = connect(server.epm_port, "bob", "pw-bob-1")
        try:
            handle = nspi.hNspiBind(dce)["contextHandle"]
            note("other bound")
            nspi.hNspiGetSpecialTable(dce, handle)
            rows = nspi.simplifyPropertyRowSet(
                nspi.hNspiQueryRows(dce, handle, Count=10, pPropTags=[NAME])["ppRows"]
            )
            note("other paged")
            mids = nspi.hNspiResolveNamesW(dce, handle, pPropTags=[NAME], paStr=["alice"])
            note("other resolved")
            return {
                "names": [r[NAME] for r in rows],
                "resolved": [int(m["Data"]) for m in mids["ppMIds"]["aulPropTag"]],
            }
        finally:
            release.set()
            dce.disconnect()

    results: dict[str, Any] = {}

    async def run(key: str, fn: Any) -> None:
        results[key] = await trio.to_thread.run_sync(fn)

    with trio.fail_after(90):
        async with trio.open_nursery() as n:
            n.start_soon(run, "search", searcher)
            n.start_soon(run, "other", other)

    assert order == [
        "search running",
        "other bound",
        "other paged",
        "other resolved",
        "search released",
        "search answered",
    ]
    # Both connections got real answers.
    assert len(results["search"]) == 2
    assert {"alice", "bob", "bobby"} <= {n.lower() for n in results["other"]["names"]}
    assert results["other"]["resolved"][0] > p.MID_RESOLVED


class _Auth:
    anonymous = False
    user = "alice"


def _ctx(opnum: int) -> CallContext:
    return CallContext(
        opnum=opnum,
        interface=idl.NSPI_SYNTAX,
        transfer_syntax=idl.NSPI_SYNTAX,
        object_uuid=None,
        association_group=0,
        peer=None,
        local=None,
        auth=_Auth(),  # type: ignore[arg-type]
    )


async def test_heavy_calls_go_to_the_offload_cheap_ones_do_not():
    gal, _ = build_gal([], organization="o", server_guid=b"\0" * 16)
    seen: list[str] = []

    async def offload(work: Any) -> bytes:
        seen.append("offloaded")
        raise mapi_errors.Timeout("spent")

    service = AddressBookService(lambda: gal, server_fqdn="h.example", offload=offload)
    assert {3, 4, 5, 6, 19, 20} == HEAVY_OPNUMS
    with pytest.raises(RpcFault) as caught:
        await service.handle(_ctx(5), b"")
    assert caught.value.status == FaultStatus.SERVER_TOO_BUSY
    assert seen == ["offloaded"]

    async def cancelled(work: Any) -> bytes:
        raise mapi_errors.UserCancel("gone")

    service = AddressBookService(lambda: gal, server_fqdn="h.example", offload=cancelled)
    with pytest.raises(RpcFault) as caught:
        await service.handle(_ctx(19), b"")
    assert caught.value.status == FaultStatus.FAULT_CANCEL
    # A cheap call (NspiUpdateStat with a stub that does not decode) never reaches it.
    with pytest.raises(Exception) as other:
        await service.handle(_ctx(2), b"")
    assert not isinstance(other.value, RpcFault) or other.value.status != FaultStatus.FAULT_CANCEL
