"""Wireshark (tshark) dissects the address book's NSPI traffic without a malformed packet
(issue 19).

A real ``serve`` on loopback with ``[rpc] min_auth_level = "integrity"``: impacket's
``nspi`` module (no one here wrote it) finds NSPI through the endpoint mapper, binds
with NTLM at packet integrity (signed, stubs in clear, so tshark's NSPI dissector reads
them without a password) and makes the calls of a client looking someone up:
NspiBind, NspiGetMatches on a name prefix (impacket has no helper for it: our codec's
request, impacket's transport), NspiResolveNamesW with an ambiguous and an unknown
name, NspiGetProps, NspiQueryRows, NspiUnbind. dumpcap records it; tshark must name
the NSPI operations, read the values in our answers, and find 0 malformed packets and
0 expert items at error severity. The answers are checked too, so the capture holds
what it should. Skips with the reason when dumpcap or tshark is missing or cannot
capture (``.ci/run`` installs Debian's tshark).

Wireshark 4.0's NSPI dissector was generated from an early OpenChange IDL: its
restriction union has the AND and property arms only (``tshark -G fields | grep
SRestriction_CTR``). So the prefix searches here are the two forms it can read: a
display-name range (an AND of two property restrictions) and ambiguous name resolution
(a property restriction on ``PR_ANR``, what Outlook sends). A content restriction
(``FL_PREFIX``) is what it cannot read: tshark calls that request malformed whoever
encodes it; ours is checked byte for byte against impacket's ``Restriction_r`` in
``tests/dcerpc/test_ndr_nspi.py``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from capture_helpers import capture_on_loopback
from impacket.dcerpc.v5 import epm, nspi, rpcrt
from impacket.dcerpc.v5 import transport as imp_transport

from dcerpc.idl import nspi as idl
from mapi.addressbook import props as p
from tests.serve_helpers import start_server
from tests.test_addressbook_e2e import ours_of, raw_call

pytestmark = pytest.mark.skipif(
    not (shutil.which("tshark") and shutil.which("dumpcap")),
    reason="tshark/dumpcap not installed (apt-get install tshark)",
)

USERS = {"alice": "pw-alice-Ws1", "bob": "pw-bob-Ws1", "bobby": "pw-bobby-Ws1"}
NAME = 0x3001001F
SMTP = 0x39FE001F
#: [MS-OXNSPI] opnums: NspiBind 0, NspiUnbind 1, NspiQueryRows 3, NspiGetMatches 5,
#: NspiGetProps 9, NspiResolveNamesW 20.
EXPECTED_OPNUMS = {0, 1, 3, 5, 9, 20}
RELOP_LT = 0
RELOP_GE = 3


def _name(text: str) -> Any:
    return idl.PropertyValue(NAME, text)


def _prefix(text: str) -> Any:
    """Display names starting with ``text``: ``text <= name < text'`` (``text'``: the
    last letter bumped), an AND of two property restrictions."""
    upper = text[:-1] + chr(ord(text[-1]) + 1)
    return idl.Restriction(
        idl.RES_AND,
        [
            idl.Restriction(idl.RES_PROPERTY, idl.PropertyRestriction(RELOP_GE, NAME, _name(text))),
            idl.Restriction(
                idl.RES_PROPERTY, idl.PropertyRestriction(RELOP_LT, NAME, _name(upper))
            ),
        ],
    )


def _get_matches(dce: Any, handle: Any, res: Any) -> list[str]:
    """NspiGetMatches (impacket has no helper: our codec's request, its transport)."""
    reply = raw_call(
        dce,
        idl.NspiGetMatches,
        {
            "hRpc": handle,
            "Reserved1": 0,
            "pStat": idl.Stat(code_page=p.CP_TELETEX),
            "pReserved": None,
            "Reserved2": 0,
            "Filter": res,
            "lpPropName": None,
            "ulRequested": 10,
            "pPropTags": [NAME],
        },
    )
    assert reply["result"] == p.SUCCESS, reply
    return sorted(row.props[0].value for row in reply["ppRows"])


def _nspi_session(epm_port: int) -> dict[str, Any]:
    """The client's calls (blocking, impacket): EPM lookup, then NSPI at integrity."""
    tr = imp_transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{epm_port}]")
    mapper = tr.get_dce_rpc()
    mapper.connect()
    try:
        binding = str(
            epm.hept_map("127.0.0.1", nspi.MSRPC_UUID_NSPI, protocol="ncacn_ip_tcp", dce=mapper)
        )
    finally:
        mapper.disconnect()
    tr = imp_transport.DCERPCTransportFactory(binding)
    tr.set_credentials("alice", USERS["alice"], "")
    dce = tr.get_dce_rpc()
    dce.set_auth_level(rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)
    dce.connect()
    out: dict[str, Any] = {"port": int(binding.rsplit("[", 1)[1].rstrip("]"))}
    try:
        dce.bind(nspi.MSRPC_UUID_NSPI)
        handle = nspi.hNspiBind(dce)["contextHandle"]
        ours = ours_of(handle)
        out["prefix"] = _get_matches(dce, ours, _prefix("bob"))
        out["anr"] = _get_matches(
            dce,
            ours,
            idl.Restriction(idl.RES_PROPERTY, idl.PropertyRestriction(4, p.PR_ANR, _name("bo"))),
        )
        resolved = nspi.hNspiResolveNamesW(
            dce, handle, pPropTags=[NAME, SMTP], paStr=["bo", "nobody-here", "alice"]
        )
        out["resolved"] = [int(m["Data"]) for m in resolved["ppMIds"]["aulPropTag"]]
        props = nspi.hNspiGetProps(dce, handle, CurrentRec=out["resolved"][2], pPropTags=[NAME])
        out["props"] = nspi.simplifyPropertyRow(props["ppRows"])
        rows = nspi.hNspiQueryRows(dce, handle, Count=10, pPropTags=[NAME, SMTP])
        out["rows"] = nspi.simplifyPropertyRowSet(rows["ppRows"])
        out["unbind"] = nspi.hNspiUnbind(dce, handle)["ErrorCode"]
    finally:
        dce.disconnect()
    return out


def _tshark(pcap: Path, ports: list[int], *args: str) -> str:
    decode = [arg for port in ports for arg in ("-d", f"tcp.port=={port},dcerpc")]
    return subprocess.run(
        ["tshark", "-r", str(pcap), *decode, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


async def test_tshark_dissects_nspi_calls_cleanly(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(
        nursery, tmp_path / "data", USERS, emails=True, min_auth_level="integrity"
    )
    await server.gal.refresh()
    ports = [server.epm_port, server.service_ports["addressbook"]]
    got: dict[str, Any] = {}

    async def traffic() -> None:
        got.update(await trio.to_thread.run_sync(_nspi_session, server.epm_port))

    pcap = tmp_path / "nspi.pcapng"
    await capture_on_loopback(pcap, ports, traffic)

    # The calls did what a client expects, so the capture holds real answers.
    assert got["port"] == ports[1]
    assert got["prefix"] == ["bob", "bobby"]
    assert got["anr"] == ["bob", "bobby"]
    assert got["resolved"][:2] == [p.MID_AMBIGUOUS, p.MID_UNRESOLVED]
    assert got["props"][NAME] == "alice"
    assert {"alice", "bob", "bobby"} <= {r[NAME] for r in got["rows"]}
    assert got["unbind"] == p.UNBIND_SUCCESS

    problems = _tshark(pcap, ports, "-Y", "_ws.malformed || _ws.expert.severity >= error")
    assert problems.strip() == "", problems
    fields = _tshark(
        pcap, ports, "-Y", "nspi", "-T", "fields", "-e", "tcp.srcport",
        "-e", "nspi.opnum", "-e", "nspi.SPropValue_CTR.lpszW", "-e", "nspi.MAPISTATUS_status",
    )  # fmt: skip
    rows = [line.split("\t") for line in fields.splitlines() if line]
    assert {int(r[1]) for r in rows} >= EXPECTED_OPNUMS, fields
    # tshark reads the values inside our answers (the server's frames), not just names.
    answers = [r for r in rows if int(r[0]) == ports[1]]
    strings = {v for r in answers for v in r[2].split(",") if v}
    assert {"alice", "bob", "bobby", "bob@example.org"} <= strings, fields
    codes = {int(r[1]): r[3] for r in answers}
    assert codes[0] == codes[5] == codes[9] == codes[3] == "0x00000000", fields
    summary = _tshark(pcap, ports, "-Y", "nspi")
    for name in ("NspiBind", "NspiGetMatches", "NspiGetProps", "NspiQueryRows", "NspiUnbind"):
        assert name in summary, summary
    # Wireshark 4.0's NSPI dissector has no fields for NspiResolveNamesW (opnum 20): it
    # flags those frames "Long frame" (a warning); impacket's NspiGetProps request, which
    # sends pStat as a unique pointer (not the IDL's shape), gets the same. Nothing else
    # may draw a warning, and nothing from the server but opnum 20.
    warned = _tshark(
        pcap, ports, "-Y", "nspi && _ws.expert.severity >= warning", "-T", "fields",
        "-e", "tcp.srcport", "-e", "nspi.opnum",
    )  # fmt: skip
    for line in warned.splitlines():
        port, opnum = (int(v) for v in line.split("\t"))
        assert opnum == 20 or (opnum == 9 and port != ports[1]), warned
