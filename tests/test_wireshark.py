"""Wireshark (tshark) dissects our traffic without a malformed packet (DESIGN.md).

A real server on loopback is queried by impacket and by our client while dumpcap
captures; tshark then decodes the capture with its DCE/RPC and EPM dissectors. The
test skips with the reason when dumpcap or tshark is missing or cannot capture
(``.ci/run`` installs Debian's tshark).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import trio
from capture_helpers import capture_on_loopback
from impacket.dcerpc.v5 import epm, transport
from impacket.uuid import uuidtup_to_bin

from dcerpc.client import open_tcp_rpc_client
from dcerpc.config import RpcConfig
from dcerpc.errors import RpcFault
from dcerpc.interface import CallContext, Interface
from dcerpc.syntax import SyntaxId
from endpoint_mapper import EPM_SYNTAX, lookup
from mapi_anywhere.config import (
    Config,
    EndpointMapperSection,
    ImapSection,
    Pop3Section,
    ServerSection,
    SmtpSection,
    SubmissionSection,
    TunnelSection,
)
from mapi_anywhere.serve import ServiceSpec, run_server
from tunnel.config import TunnelConfig

DEMO = SyntaxId(uuid.UUID("5a9e7c10-0b1d-4d8e-9f63-8a2b4c6d0e11"), 2, 1)

pytestmark = pytest.mark.skipif(
    not (shutil.which("tshark") and shutil.which("dumpcap")),
    reason="tshark/dumpcap not installed (apt-get install tshark)",
)


async def _echo(ctx: CallContext, stub: bytes) -> bytes:
    return stub


def _impacket_queries(port: int, demo: bytes) -> None:
    for use_map in (False, True):
        rpctransport = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
        dce = rpctransport.get_dce_rpc()
        dce.connect()
        if use_map:
            epm.hept_map("127.0.0.1", demo, protocol="ncacn_ip_tcp", dce=dce)
        else:
            epm.hept_lookup(None, dce=dce)
        dce.disconnect()


async def _traffic(epm_port: int, demo_port: int) -> None:
    await lookup("127.0.0.1", epm_port)
    await trio.to_thread.run_sync(
        _impacket_queries, epm_port, uuidtup_to_bin((str(DEMO.uuid), "2.1"))
    )
    async with open_tcp_rpc_client("127.0.0.1", epm_port) as rpc:
        ctx = await rpc.bind(EPM_SYNTAX)
        with pytest.raises(RpcFault):
            await rpc.call(ctx, 42, b"")  # a fault PDU on the wire
    small_frags = RpcConfig(max_fragment=1432)
    async with open_tcp_rpc_client("127.0.0.1", demo_port, config=small_frags) as rpc:
        ctx = await rpc.bind(DEMO)
        assert await rpc.call(ctx, 0, bytes(5000)) == bytes(5000)  # fragmented both ways


def _tshark(pcap: Path, ports: list[int], *args: str) -> str:
    decode = [arg for port in ports for arg in ("-d", f"tcp.port=={port},dcerpc")]
    return subprocess.run(
        ["tshark", "-r", str(pcap), *decode, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


async def test_wireshark_dissects_our_traffic_cleanly(nursery, tmp_path):
    config = Config(
        server=ServerSection(data_dir=tmp_path / "data"),
        endpoint_mapper=EndpointMapperSection(port=0),
        smtp=SmtpSection(enabled=False),
        submission=SubmissionSection(enabled=False),
        imap=ImapSection(enabled=False),
        pop3=Pop3Section(enabled=False),
        tunnel=TunnelSection(settings=TunnelConfig(port=0)),
    )
    demo = ServiceSpec("demo", [Interface(DEMO, _echo, 1)], "Demo service")
    server = await nursery.start(run_server, config, [demo])
    ports = [server.epm_port, server.service_ports["demo"]]
    pcap = tmp_path / "rpc.pcapng"
    await capture_on_loopback(pcap, ports, lambda: _traffic(*ports))

    problems = _tshark(pcap, ports, "-Y", "_ws.malformed || _ws.expert.severity >= warning")
    assert problems.strip() == "", problems
    fields = _tshark(
        pcap, ports, "-Y", "dcerpc", "-T", "fields", "-e", "dcerpc.pkt_type", "-e", "epm.opnum"
    )
    rows = [line.split("\t") for line in fields.splitlines() if line]
    # A frame holding several PDUs lists its values comma-separated.
    packet_types = {int(v) for row in rows for v in row[0].split(",") if v}
    assert {0, 2, 3, 11, 12} <= packet_types  # request, response, fault, bind, bind_ack
    epm_opnums = {v for row in rows if len(row) > 1 for v in row[1].split(",") if v}
    assert {"2", "3"} <= epm_opnums  # ept_lookup and ept_map dissected as EPM
    summary = _tshark(pcap, ports)
    assert "Map response" in summary and "Lookup response" in summary
    # The demo call went out in first, middle and last fragments, each dissected.
    flags = _tshark(
        pcap, ports, "-Y", "dcerpc.pkt_type == 0", "-T", "fields", "-e", "dcerpc.cn_flags"
    )
    seen = {int(v, 16) & 0x03 for v in flags.replace("\n", ",").split(",") if v}
    assert {0x00, 0x01, 0x02, 0x03} <= seen
