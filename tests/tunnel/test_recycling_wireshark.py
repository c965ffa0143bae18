"""Wireshark (tshark) dissects our channel-recycling RTS PDUs by name and without a
malformed packet or warning.

The tunnel's own traffic is TLS, so the PDUs are wrapped in a synthetic capture: one
TCP connection to port 593 (ncacn_http), with a handshake, one PDU per segment,
consistent sequence numbers and checksums, client PDUs one way and proxy PDUs the
other. The test skips when tshark is missing (``.ci/run`` installs Debian's).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tunnel import rts_recycling

pytestmark = pytest.mark.skipif(
    not shutil.which("tshark"), reason="tshark not installed (apt-get install tshark)"
)

VC, OLD_IN, NEW_IN, OLD_OUT, NEW_OUT = (bytes([i]) * 16 for i in range(1, 6))
CLIENT, PROXY = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
CLIENT_PORT, PROXY_PORT = 40000, 593

#: (from the client?, PDU, the name tshark must show): both sequences in wire order.
SEQUENCE = [
    (True, rts_recycling.in_r2_a1(VC, OLD_IN, NEW_IN), "IN_R2/A1"),
    (False, rts_recycling.in_r2_a4(), "IN_R2/A4"),
    (True, rts_recycling.in_r2_a5(NEW_IN), "IN_R2/A5"),
    (False, rts_recycling.out_r2_a2(), "OUT_R2/A2"),
    (True, rts_recycling.out_r2_a3(VC, OLD_OUT, NEW_OUT, 262144), "OUT_R2/A3"),
    (False, rts_recycling.out_r2_a6(), "OUT_R2/A6"),
    (True, rts_recycling.out_r2_a7(NEW_OUT), "OUT_R2/A7"),
    (True, rts_recycling.out_r2_c1(), "OUT_R2/C1"),
    (False, rts_recycling.out_r2_b3(), "OUT_R2/B3"),
]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _segment(from_client: bool, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    src, dst = (CLIENT, PROXY) if from_client else (PROXY, CLIENT)
    sport, dport = (CLIENT_PORT, PROXY_PORT) if from_client else (PROXY_PORT, CLIENT_PORT)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, 6, len(tcp) + len(payload))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp + payload)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0, 64, 6, 0, src, dst
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + tcp + payload


def _write_pcap(path: Path) -> None:
    syn, ack, psh_ack = 0x02, 0x10, 0x18
    seq = {True: 1000, False: 5000}
    packets = [_segment(True, seq[True], 0, syn, b"")]
    seq[True] += 1
    packets.append(_segment(False, seq[False], seq[True], syn | ack, b""))
    seq[False] += 1
    packets.append(_segment(True, seq[True], seq[False], ack, b""))
    for from_client, pdu, _ in SEQUENCE:
        packets.append(_segment(from_client, seq[from_client], seq[not from_client], psh_ack, pdu))
        seq[from_client] += len(pdu)
    # pcap, link type 101 (raw IPv4): no Ethernet header needed.
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
    for i, packet in enumerate(packets):
        out += struct.pack("<IIII", 1_700_000_000 + i, 0, len(packet), len(packet)) + packet
    path.write_bytes(bytes(out))


def _tshark(pcap: Path, *args: str) -> str:
    return subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"tcp.port=={PROXY_PORT},dcerpc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_wireshark_names_every_recycling_pdu_and_finds_nothing_malformed(tmp_path: Path) -> None:
    pcap = tmp_path / "recycling.pcap"
    _write_pcap(pcap)
    problems = _tshark(pcap, "-Y", "_ws.malformed || _ws.expert.severity >= warning")
    assert problems.strip() == "", problems
    rows = _tshark(
        pcap, "-Y", "dcerpc", "-T", "fields", "-e", "dcerpc.pkt_type", "-e", "_ws.col.Info"
    )
    lines = [line.split("\t") for line in rows.splitlines() if line]
    assert len(lines) == len(SEQUENCE)
    for (ptype, info), (_, _, name) in zip(lines, SEQUENCE, strict=True):
        assert ptype == "20"  # RTS
        # tshark lists every PDU name with that signature (IN_R1/A1 and IN_R2/A1 share one).
        assert name in info.split(","), (name, info)
