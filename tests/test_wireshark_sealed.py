"""Wireshark (tshark) decrypts a sealed session given the user's password (issue 18).

Our client (:func:`clients.api.connect`, NTLM at privacy: auth type 10, not SPNEGO,
whose sealed packets tshark 4.0 does not follow) logs on to a real ``serve`` on
loopback and writes a message while dumpcap captures. tshark, told the password
(``-o ntlmssp.nt_password:...``), must decrypt the stubs (our msgpack requests show
in clear in "Decrypted stub data") and dissect every DCE/RPC packet with 0 malformed;
without the password the same capture shows no subject, which proves the stubs were
sealed on the wire. Skips with the reason when dumpcap or tshark is missing or cannot
capture (``.ci/run`` installs Debian's tshark).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import msgpack
import pytest
import trio
from capture_helpers import capture_on_loopback
from serve_helpers import start_server

from clients.api import connect

pytestmark = pytest.mark.skipif(
    not (shutil.which("tshark") and shutil.which("dumpcap")),
    reason="tshark/dumpcap not installed (apt-get install tshark)",
)

PASSWORD = "alice-Sealed-41"
SUBJECT = "Sealed subject for Wireshark"


def _tshark(pcap: Path, ports: list[int], *args: str) -> str:
    decode = [arg for port in ports for arg in ("-d", f"tcp.port=={port},dcerpc")]
    return subprocess.run(
        ["tshark", "-r", str(pcap), *decode, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


async def test_tshark_decrypts_a_sealed_ntlm_session(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "data", {"alice": PASSWORD})
    ports = [server.epm_port, server.service_ports["store"]]
    lan = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"

    async def traffic() -> None:
        async with connect(lan, "alice", PASSWORD, auth_type="ntlm") as session:
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            msg = await inbox.create_message()
            await msg.set_props({"PR_SUBJECT": SUBJECT})
            await msg.save()

    pcap = tmp_path / "sealed.pcapng"
    await capture_on_loopback(pcap, ports, traffic)

    password = ("-o", f"ntlmssp.nt_password:{PASSWORD}")
    # Every DCE/RPC packet dissects cleanly, with and without the password.
    for extra in ((), password):
        malformed = _tshark(pcap, ports, *extra, "-Y", "_ws.malformed")
        assert malformed.strip() == "", malformed
    fields = ("-T", "fields", "-e", "dcerpc.pkt_type", "-e", "dcerpc.auth_type",
              "-e", "dcerpc.auth_level")  # fmt: skip
    rows = [r.split("\t") for r in _tshark(pcap, ports, "-Y", "dcerpc", *fields).splitlines()]
    sealed = [r for r in rows if "10" in r[1].split(",") and "6" in r[2].split(",")]
    assert sealed, rows  # NTLM (10) at privacy (6) on the wire
    # Without the password the subject is nowhere in the dissection...
    opaque = _tshark(pcap, ports, "-V", "-x")
    assert "Decrypted stub data" not in opaque
    assert SUBJECT.encode("utf-8").hex() not in opaque.replace(" ", "")
    # ... with it, tshark decrypts the stubs: the subject shows in a decrypted stub.
    clear = _tshark(pcap, ports, *password, "-V", "-x")
    assert "Decrypted stub data" in clear, clear[-3000:]
    decrypted = _tshark(
        pcap, ports, *password,
        "-Y", "dcerpc.auth_level == 6 && (dcerpc.pkt_type == 0 || dcerpc.pkt_type == 2)",
        "-T", "fields", "-e", "dcerpc.pkt_type", "-e", "dcerpc.decrypted_stub_data",
    )  # fmt: skip
    stubs = [line.split("\t") for line in decrypted.splitlines() if line]
    assert {"0", "2"} <= {kind for kind, _ in stubs}, stubs  # requests and responses
    # Every sealed request and response decrypts to a msgpack map (then at most the
    # auth padding, which the sealed part includes).
    for kind, stub in stubs:
        assert stub, f"packet type {kind} not decrypted"
        unpacker = msgpack.Unpacker()
        unpacker.feed(bytes.fromhex(stub.replace(":", "")))
        assert isinstance(unpacker.unpack(), dict)
        assert unpacker.tell() > len(stub.replace(":", "")) // 2 - 16
    assert SUBJECT.encode("utf-8").hex() in decrypted.replace(":", "")
    # A wrong password decrypts nothing: the clear text above came from the password.
    wrong = _tshark(pcap, ports, "-o", "ntlmssp.nt_password:wrong-password", "-V", "-x")
    assert SUBJECT.encode("utf-8").hex() not in wrong.replace(" ", "")
