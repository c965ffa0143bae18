"""Hostile input: a random and mutation fuzz run of every decoder, for a time budget each.

Each target takes bytes (or decoded values) and may only fail with the protocol's own
error, as its core documents; anything else is a finding, as is an input that takes
longer than ``SLOW`` seconds. Inputs are mutations of valid seeds made by our own
encoders (bit flips, interesting integers written over 1/2/4-byte fields, inserted,
deleted, duplicated and spliced ranges, truncations) and, one time in ten, random
bytes. Targets:

==============  ==================================================  ===========================
target          what is fed                                         allowed errors
==============  ==================================================  ===========================
pdu             ``dcerpc.pdu.decode_pdu``                           DecodeError
framing         ``dcerpc.framing.PduFramer`` in random chunks       DecodeError
server_core     ``ServerConnection.receive_data`` (bind, calls)     RemoteProtocolError
ndr_stubs       every ``endpoint_mapper.stubs`` decoder (NDR)       DecodeError (NdrError)
ndr_nspi        ``dcerpc.ndr_types`` on [MS-OXNSPI]: every request   DecodeError (NdrError)
                and response of ``dcerpc.idl.nspi``, row sets,
                restrictions (deep chains, lying counts, unknown
                arms, huge sizes), both byte orders
towers          ``Tower.decode`` and the tower's accessors          DecodeError
rts             ``tunnel.rts.decode_rts``, classify, CONN/A1, B1    DecodeError
h1_channel      ``tunnel.channel.ServerChannel`` (accepts RPC)      ChannelError
h2_glue         ``tunnel.h2_glue.H2Glue.receive_data`` (+respond)   none (ConnectionEnded)
store_batch     ``mapi.rpc.ops.run_batch`` on a real store (tmp dir)    MapiError
store_service   ``StoreService.handle`` with msgpack stubs          none (an HRESULT reply)
restrictions    ``mapi.model.restrictions.from_plain`` (deep nesting),    MapiError
                then ``evaluate`` on a row
ntlm            ``dcerpc.ntlm`` message decoders, AV pairs, and     AuthError
                ``NtlmAcceptor.step`` on an AUTHENTICATE
spnego          ``dcerpc.spnego.decode_token``, ``SpnegoAcceptor``  AuthError
                on the first and the second leg
sec_trailer     ``dcerpc.security.split_verifier``; a signed and    AuthError
                a sealed PDU through ``SecurityContext.unprotect``
server_auth     ``ServerConnection.receive_data`` with security:     RemoteProtocolError
                NTLM and SPNEGO binds, auth3, alter_context, calls
http_auth       ``tunnel.http_auth``: ``parse_credentials``,          none (never raises)
                user-name forms, ``ConnectionAuth.step`` over a
                Basic/NTLM/Negotiate conversation
mime            ``internet_mail.mime.mime_to_mapi`` on mutated mail (the      MimeLimitExceeded
                MIME test corpus), then ``mapi_to_mime`` and a
                second read of what it wrote
mbox            ``clients.mailfiles.MboxSplitter`` (mapi-cli        MailFileError
                import) on mutated mbox files in random chunks:
                messages stay under the size limit, a file of
                our writer splits back into its messages
imap_parser     ``internet_mail.imap.ImapSession`` (in-memory        none (tagged BAD/NO,
                backend) fed mutated IMAP conversations in random     ``* BYE``, a close)
                chunks: literals that lie, deep nesting, huge sets;
                buffered bytes stay under the limits
smtp_server     ``internet_mail.smtp.SmtpServerConnection``         none (only SMTP replies)
                on mutated sessions (pipelined commands, DATA,
                BDAT, smuggled ends, AUTH, STARTTLS) in random
                chunks, the driver's answers made up; replies
                must be well formed and held input bounded
smtp_replies    ``internet_mail.smtp.replies.ReplyReader`` and the    ReplyError,
                outbound client core (``SmtpClient``) on mutated    ClientProtocolError
                peer replies in random chunks: replies well formed,
                held bytes bounded, the outcome names every
                recipient and QUIT waits for the driver
queue_envelope  ``internet_mail.outbound.state.decode`` on mutated  EnvelopeError
                envelope files: what decodes is within the limits
                (finite times, sendable addresses) and re-encodes
                to the same envelope
pop3_session    ``internet_mail.pop3.Pop3Session`` (in-memory       none (only ``+OK``/``-ERR``
                maildrop) on mutated sessions (USER/PASS, AUTH     lines, multi-line bodies,
                PLAIN, STLS, RETR/TOP/DELE/RSET/UIDL, QUIT) in      ``+`` challenges)
                random chunks, authentication answered; held
                input and the lock bounded, no deletion without
                QUIT
==============  ==================================================  ===========================

Prints one line per target (inputs, seconds, failures) and the distinct failures (type,
place, a reproducer in hex or repr), then rewrites the fuzz section of
``docs/reliability.md``. Exit status 1 when something was found.

Usage: ``python bench/fuzz.py [--seconds 10] [--seed 0] [--only pdu,rts] [--no-docs]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import struct
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

DOCS = ROOT / "docs" / "reliability.md"
#: An input taking longer than this (seconds) is a finding.
SLOW = 1.0
INTERESTING = (
    [0, 1, 0x7F, 0x80, 0xFF],
    [0, 1, 0x7FFF, 0x8000, 0xFFFF, 16, 4280, 5840],
    [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 0x1000000],
)


@dataclass
class Target:
    name: str
    seeds: list[Any]
    run: Callable[[Any], None]
    allowed: tuple[type[BaseException], ...]
    mutate: Callable[[random.Random, list[Any]], Any] | None = None
    inputs: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    slow: int = 0


# -- mutation -------------------------------------------------------------------------------


def mutate_bytes(rng: random.Random, seeds: list[Any]) -> bytes:
    if rng.random() < 0.1:
        return rng.randbytes(rng.randrange(0, 200))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        kind = rng.randrange(8)
        n = len(data)
        if kind == 0 and n:  # bit flip
            i = rng.randrange(n)
            data[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and n:  # random byte
            data[rng.randrange(n)] = rng.randrange(256)
        elif kind == 2 and n:  # an interesting integer over a field
            width = rng.choice((1, 2, 4))
            i = rng.randrange(n)
            value = rng.choice(INTERESTING[(1, 2, 4).index(width) if width != 1 else 0])
            order = rng.choice("<>")
            fmt = {1: "B", 2: "H", 4: "I"}[width]
            data[i : i + width] = struct.pack(order + fmt, value & ((1 << (8 * width)) - 1))
        elif kind == 3:  # insert
            i = rng.randrange(n + 1)
            data[i:i] = rng.randbytes(rng.randrange(1, 32))
        elif kind == 4 and n:  # delete a range
            i = rng.randrange(n)
            del data[i : i + rng.randrange(1, 32)]
        elif kind == 5 and n:  # duplicate a range
            i = rng.randrange(n)
            data[i:i] = data[i : i + rng.randrange(1, 64)]
        elif kind == 6:  # truncate
            del data[rng.randrange(n + 1) :]
        else:  # splice another seed in
            other = rng.choice(seeds)
            if other:
                j = rng.randrange(len(other))
                i = rng.randrange(n + 1)
                data[i:] = other[j:]
    return bytes(data)


def mutate_value(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """A structural mutation of decoded msgpack-like data."""
    pool: list[Any] = [
        None, True, False, 0, -1, 1, 2**31, 2**63 - 1, -(2**63), 1.5, float("nan"), "",
        "x" * 300, b"", b"\x00" * 16, b"\xff" * 70, [], {}, [1, 2], {"h": 1}, 4096, 0x0037001F,
        0x7FFFFFFF, "PR_SUBJECT",
    ]  # fmt: skip
    r = rng.random()
    if r < 0.15 or depth > 6:
        return rng.choice(pool)
    if isinstance(value, dict) and value:
        out = dict(value)
        key = rng.choice(list(out))
        choice = rng.randrange(4)
        if choice == 0:
            del out[key]
        elif choice == 1:
            out[key] = mutate_value(rng, out[key], depth + 1)
        elif choice == 2:
            out[rng.choice(["h", "out", "eid", "tags", "props", "count", "x"])] = rng.choice(pool)
        else:
            out[key] = rng.choice(pool)
        return out
    if isinstance(value, list) and value:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        choice = rng.randrange(4)
        if choice == 0:
            del out_list[i]
        elif choice == 1:
            out_list[i] = mutate_value(rng, out_list[i], depth + 1)
        elif choice == 2:
            out_list.insert(i, out_list[i])
        else:
            out_list[i] = rng.choice(pool)
        return out_list
    if isinstance(value, int) and not isinstance(value, bool):
        return rng.choice([value + 1, value - 1, -value, value ^ 0x80000000, 0, 2**64 - 1])
    return rng.choice(pool)


# -- targets --------------------------------------------------------------------------------


def pdu_seeds() -> list[bytes]:
    from dcerpc.pdu import (
        AlterContextPdu,
        BindAckPdu,
        BindNakPdu,
        BindPdu,
        ContextElement,
        ContextResult,
        FaultPdu,
        RequestPdu,
        ResponsePdu,
        ShutdownPdu,
        request_fragments,
    )
    from dcerpc.syntax import MSGPACK, NDR
    from endpoint_mapper import EPM_SYNTAX
    from tunnel import rts

    ctx = ContextElement(0, EPM_SYNTAX, (NDR, MSGPACK))
    seeds = [
        BindPdu(call_id=1, contexts=(ctx,)).encode(),
        AlterContextPdu(call_id=2, contexts=(ctx, ContextElement(1, EPM_SYNTAX, (NDR,)))).encode(),
        BindAckPdu(call_id=1, results=(ContextResult(0, 0, NDR),)).encode(),
        BindNakPdu(call_id=1).encode(),
        RequestPdu(call_id=3, opnum=3, stub=b"\x01" * 40).encode(),
        RequestPdu(call_id=3, opnum=3, stub=b"x", object_uuid=uuid.uuid4()).encode(),
        RequestPdu(
            call_id=3, stub=b"x" * 8, auth_verifier=b"\x0a\x02\x00\x00" + b"\0" * 20
        ).encode(),
        ResponsePdu(call_id=3, stub=b"\x02" * 24).encode(),
        FaultPdu(call_id=3, status=5).encode(),
        ShutdownPdu().encode(),
        rts.conn_a1(b"v" * 16, b"o" * 16, 65536),
        rts.conn_b1(b"v" * 16, b"i" * 16, b"a" * 16),
        rts.flow_control_ack(100, 65536, b"c" * 16),
        rts.ping(),
    ]
    seeds += request_fragments(
        call_id=4, context_id=0, opnum=1, stub=b"y" * 9000, max_fragment=4280
    )
    return seeds


def target_pdu() -> Target:
    from dcerpc.errors import DecodeError
    from dcerpc.pdu import decode_pdu

    def run(data: bytes) -> None:
        # Decoding only: a decoded PDU need not re-encode (a bind_ack's secondary address
        # is decoded with replacement characters, which encode() refuses as non-ASCII).
        decode_pdu(data)

    return Target("pdu", pdu_seeds(), run, (DecodeError,))


def target_framing() -> Target:
    from dcerpc.errors import DecodeError
    from dcerpc.framing import PduFramer

    seeds = pdu_seeds()
    seeds.append(b"".join(seeds))

    def run(data: bytes) -> None:
        framer = PduFramer(0xFFFF)
        rng = random.Random(len(data))
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 300)
            framer.feed(data[pos : pos + step])
            pos += step
            while framer.next_pdu() is not None:
                pass
        framer.head()

    return Target("framing", seeds, run, (DecodeError,))


def target_server_core() -> Target:
    from dcerpc.errors import RemoteProtocolError
    from dcerpc.events import CallReceived
    from dcerpc.pdu import AlterContextPdu, BindPdu, ContextElement, RequestPdu, request_fragments
    from dcerpc.server_connection import AssociationGroups, InterfaceRegistry, ServerConnection
    from dcerpc.syntax import MSGPACK, NDR
    from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, epm_interface, mgmt_interface
    from endpoint_mapper.stubs import MGMT_SYNTAX

    registry = InterfaceRegistry([epm_interface(EndpointDatabase()), mgmt_interface()])
    bind = BindPdu(
        call_id=1,
        contexts=(
            ContextElement(0, EPM_SYNTAX, (NDR,)),
            ContextElement(1, MGMT_SYNTAX, (NDR, MSGPACK)),
        ),
    ).encode()
    calls = [
        RequestPdu(call_id=2, opnum=3, stub=b"\0" * 60).encode(),
        RequestPdu(call_id=3, context_id=1, opnum=0, stub=b"").encode(),
        AlterContextPdu(call_id=4, contexts=(ContextElement(2, EPM_SYNTAX, (NDR,)),)).encode(),
        b"".join(
            request_fragments(call_id=5, context_id=0, opnum=2, stub=b"z" * 9000, max_fragment=4280)
        ),
    ]
    seeds = [bind + c for c in calls] + [bind + b"".join(calls), bind]

    def run(data: bytes) -> None:
        conn = ServerConnection(registry, AssociationGroups())
        rng = random.Random(len(data))
        pos = 0
        try:
            while pos < len(data):
                step = rng.randrange(1, 2000)
                for event in conn.receive_data(data[pos : pos + step]):
                    if isinstance(event, CallReceived):
                        conn.send_response(event.call_id, b"\0" * 8)
                pos += step
                conn.data_to_send()
            conn.receive_data(b"")
        finally:
            conn.data_to_send()

    return Target("server_core", seeds, run, (RemoteProtocolError,))


def target_ndr_stubs() -> Target:
    from dcerpc.errors import DecodeError
    from dcerpc.ndr import ContextHandle
    from endpoint_mapper import EPM_SYNTAX, Tower, stubs
    from endpoint_mapper.database import EndpointEntry

    tower = Tower.tcp(EPM_SYNTAX, "127.0.0.1", 1135)
    handle = ContextHandle(0, uuid.uuid4())
    entry = EndpointEntry(uuid.uuid4(), tower, "annotation")
    decoders: list[Callable[[bytes, Any], Any]] = [
        stubs.decode_lookup_request,
        stubs.decode_lookup_response,
        stubs.decode_map_request,
        stubs.decode_map_response,
        stubs.decode_handle_free_request,
        stubs.decode_handle_response,
        stubs.decode_inq_if_ids_response,
        stubs.decode_inq_stats_request,
        stubs.decode_inq_princ_name_request,
    ]
    seeds: list[bytes] = [
        stubs.encode_lookup_request(stubs.LookupRequest(interface=EPM_SYNTAX)),
        stubs.encode_lookup_request(stubs.LookupRequest()),
        stubs.encode_map_request(stubs.MapRequest(uuid.uuid4(), tower, handle)),
        stubs.encode_map_request(stubs.MapRequest(None, None)),
        stubs.encode_lookup_response(stubs.LookupResponse(handle, (entry, entry), 0, 500)),
        stubs.encode_map_response(stubs.MapResponse(handle, (tower, tower), 0)),
        stubs.encode_handle_free_request(handle),
        stubs.encode_handle_response(handle, 0),
        stubs.encode_inq_if_ids_response(stubs.InqIfIdsResponse((EPM_SYNTAX, EPM_SYNTAX), 0)),
        stubs.encode_inq_princ_name_response("name", 100, 0),
        stubs.encode_status(0),
    ]
    seeds += [struct.pack("<II", 1, 10) + b"\0" * 40]

    def run(data: bytes) -> None:
        for decode in decoders:
            for order in ("<", ">"):
                with contextlib.suppress(DecodeError):
                    decode(data, order)

    return Target("ndr_stubs", seeds, run, (DecodeError,))


def target_ndr_nspi() -> Target:
    from dcerpc import ndr_types
    from dcerpc.errors import DecodeError
    from dcerpc.idl import nspi as n
    from dcerpc.ndr import ContextHandle

    handle = ContextHandle(0, uuid.uuid4())
    stat = n.Stat(0, 0, 0x1928, -1, 2, 0x16, 0x4E4, 0x409, 0x409)
    props = [
        n.PropertyValue(0x3001001F, "Bob"),
        n.PropertyValue(0x3003001E, b"bob@example.org"),
        n.PropertyValue(0x0FFF0102, b"\x87\0\0\0" + bytes(24)),
        n.PropertyValue(0x39000003, 6),
        n.PropertyValue(0x800F101F, ["SMTP:bob@example.org", None]),
        n.PropertyValue(0x8C6A1102, [b"\x01", None]),
        n.PropertyValue(0x80081048, [bytes(16)]),
        n.PropertyValue(0x30070040, 1 << 60),
    ]
    rows = [n.PropertyRow(props), n.PropertyRow(None)]
    leaf = n.Restriction(n.RES_PROPERTY, n.PropertyRestriction(4, 0x3001001F, props[0]))
    deep: n.Restriction = leaf
    for _ in range(40):
        deep = n.Restriction(n.RES_NOT, deep)
    filt = n.Restriction(n.RES_AND, [leaf, n.Restriction(n.RES_OR, [deep, leaf])])
    seeds: list[bytes] = [
        ndr_types.encode(n.PropertyRowSet_r, rows),
        ndr_types.encode(n.Restriction_r, filt),
        n.NspiBind.encode_request({"dwFlags": 0, "pStat": stat, "pServerGuid": bytes(16)}),
        n.NspiQueryRows.encode_request({"hRpc": handle, "dwFlags": 0, "pStat": stat,
                                        "lpETable": [1, 2], "Count": 50, "pPropTags": [1, 2]}),
        n.NspiQueryRows.encode_response({"pStat": stat, "ppRows": rows, "result": 0}),
        n.NspiGetMatches.encode_request({"hRpc": handle, "Reserved1": 0, "pStat": stat,
                                         "pReserved": None, "Reserved2": 0, "Filter": filt,
                                         "lpPropName": n.PropertyName(bytes(16), 1),
                                         "ulRequested": 5, "pPropTags": [1]}),
        n.NspiResolveNamesW.encode_request({"hRpc": handle, "Reserved": 0, "pStat": stat,
                                            "pPropTags": None, "paWStr": ["Bob", "al"]}),
        n.NspiGetIDsFromNames.encode_request({"hRpc": handle, "Reserved": 0, "dwFlags": 0,
                                              "pNames": [n.PropertyName(None, 1), None]}),
    ]  # fmt: skip
    types = [n.PropertyRowSet_r, n.Restriction_r, n.PropertyValue_r, n.PropertyTagArray_r]
    limits = ndr_types.Limits(max_elements=100_000, max_depth=32)

    def run(data: bytes) -> None:
        for order in ("<", ">"):
            for typ in types:
                with contextlib.suppress(DecodeError):
                    ndr_types.decode(typ, data, order, limits=limits)
            for op in n.OPERATIONS.values():
                for decode in (op.decode_request, op.decode_response):
                    with contextlib.suppress(DecodeError):
                        decode(data, order, limits=limits)

    return Target("ndr_nspi", seeds, run, (DecodeError,))


def target_towers() -> Target:
    from dcerpc.errors import DecodeError
    from dcerpc.syntax import MSGPACK
    from endpoint_mapper import EPM_SYNTAX, Tower

    seeds = [
        Tower.tcp(EPM_SYNTAX, "127.0.0.1", 135).encode(),
        Tower.http(EPM_SYNTAX, "10.0.0.1", 593).encode(),
        Tower.tcp(EPM_SYNTAX, "0.0.0.0", 65535, MSGPACK).encode(),
    ]

    def run(data: bytes) -> None:
        tower = Tower.decode(data)
        for name in ("interface", "transfer_syntax", "protocol_ids", "protocol", "port",
                     "endpoint", "address", "string_binding"):  # fmt: skip
            getattr(tower, name)
        tower.encode()

    return Target("towers", seeds, run, (DecodeError,))


def target_rts() -> Target:
    from dcerpc.errors import DecodeError
    from tunnel import rts

    seeds = [
        rts.conn_a1(b"v" * 16, b"o" * 16, 65536),
        rts.conn_b1(b"v" * 16, b"i" * 16, b"a" * 16),
        rts.conn_a3(120000),
        rts.conn_c2(65536, 120000),
        rts.ping(),
        rts.echo(),
        rts.keep_alive(300000),
        rts.flow_control_ack(1000, 65536, b"c" * 16),
    ]

    def run(data: bytes) -> None:
        if not rts.is_rts(data):
            return
        message = rts.decode_rts(data)
        kind = rts.classify(message)
        rts.find_ack(message)
        rts.encode_rts(message)
        if kind.name.startswith("CONN_A1"):
            rts.parse_conn_a1(message)
        elif kind.name.startswith("CONN_B1"):
            rts.parse_conn_b1(message)

    return Target("rts", seeds, run, (DecodeError,))


def target_h1_channel() -> Target:
    from tunnel import rts
    from tunnel.channel import ChannelError, RequestReceived, ServerChannel
    from tunnel.config import TunnelConfig

    config = TunnelConfig(port=0)
    head = (
        b"RPC_IN_DATA /rpc/rpcproxy.dll?localhost:1135 HTTP/1.1\r\nHost: localhost\r\n"
        b"Accept: application/rpc\r\nContent-Length: 1073741824\r\n"
        b"Authorization: Basic YTpi\r\nExpect: 100-continue\r\n\r\n"
    )
    out_head = head.replace(b"RPC_IN_DATA", b"RPC_OUT_DATA").replace(b"1073741824", b"76")
    seeds = [
        head + rts.conn_b1(b"v" * 16, b"i" * 16, b"a" * 16) + rts.ping(),
        out_head + rts.conn_a1(b"v" * 16, b"o" * 16, 65536),
        b"GET /autodiscover/autodiscover.json?Email=a@b HTTP/1.1\r\nHost: x\r\n\r\n" * 2,
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        head + pdu_seeds()[4],
    ]

    def run(data: bytes) -> None:
        channel = ServerChannel(config)
        rng = random.Random(len(data))
        pos = 0
        while pos <= len(data):
            chunk = data[pos : pos + rng.randrange(1, 400)]
            pos += max(1, len(chunk))
            events = channel.receive_data(chunk)
            while True:
                for event in events:
                    if isinstance(event, RequestReceived):
                        channel.accept_rpc()
                channel.data_to_send()
                if not any(isinstance(e, RequestReceived) for e in events):
                    break
                events = channel.next_events()
            if not chunk:
                break

    return Target("h1_channel", seeds, run, (ChannelError,))


def target_h2_glue() -> Target:
    import h2.config
    import h2.connection

    from tunnel.config import TunnelConfig
    from tunnel.h2_glue import DataReceived, H2Glue, RequestReceived

    config = TunnelConfig(port=0)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    headers = [
        (":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
        (":path", "/rpc/rpcproxy.dll?localhost:1135"), ("authorization", "Basic YTpi"),
    ]  # fmt: skip
    client.send_headers(1, headers)
    client.send_data(1, b"\x05\x00\x0b\x03" + b"\0" * 68)
    client.send_headers(3, headers, end_stream=True)
    client.increment_flow_control_window(100000)
    client.ping(b"12345678")
    client.reset_stream(3)
    whole = client.data_to_send()
    seeds = [whole, whole[: 24 + 9 + 18], whole + whole[24:]]

    def run(data: bytes) -> None:
        glue = H2Glue(config)
        glue.data_to_send()
        rng = random.Random(len(data))
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 300)
            for event in glue.receive_data(data[pos : pos + step]):
                if isinstance(event, RequestReceived):
                    glue.respond(event.stream_id, 200, [("content-type", "application/rpc")])
                elif isinstance(event, DataReceived):
                    glue.consumed(event.stream_id, len(event.data))
                    glue.send_data(event.stream_id, event.data[: glue.sendable(event.stream_id)])
            glue.data_to_send()
            pos += step
        glue.receive_data(b"")

    return Target("h2_glue", seeds, run, ())


# -- the store ------------------------------------------------------------------------------


class StoreFixture:
    """A real store in a temporary directory, a logged-on session and its handle table."""

    def __init__(self) -> None:
        from mapi.access.logon import KdfParams
        from mapi.rpc import ops
        from mapi.store import ObjectStore

        self._tmp = tempfile.TemporaryDirectory()
        self.store = ObjectStore(Path(self._tmp.name), kdf=KdfParams(n=1 << 10))
        self.store.add_user("fuzz", "fuzz-password", email="fuzz@example.org")
        self.store.add_user("other", "other-password", email="other@example.org")
        self.session = self.store.logon_with_password("fuzz", "fuzz-password")
        self.handles = ops.HandleTable()
        self.ops = ops
        self.ctx = ops.Context(self.session, self.handles, self.store.limits, b"fuzz")
        prepared = ops.run_batch(self.ctx, self.base_batch())
        self.inbox_eid = prepared[1][1]

    @staticmethod
    def base_batch() -> list[list[Any]]:
        return [
            ["open_store", {"out": 1}],
            ["special_folder", {"h": 1, "role": "inbox"}],
        ]

    def reset(self) -> None:
        self.handles.clear()
        self.ops.run_batch(self.ctx, self.base_batch())

    def close(self) -> None:
        self.handles.clear()
        self.session.logoff()
        self.store.close()
        self._tmp.cleanup()


def batch_seeds(inbox_eid: bytes) -> list[Any]:
    from mapi.model import proptags as pt

    return [
        [
            ["open_folder", {"h": 1, "out": 2, "eid": inbox_eid}],
            ["create_message", {"h": 2, "out": 3}],
            ["set_props", {"h": 3, "props": [[pt.PR_SUBJECT, "s"], [pt.PR_BODY, "b" * 100]]}],
            ["create_attach", {"h": 3, "out": 4}],
            [
                "open_stream",
                {"h": 4, "out": 5, "tag": pt.PR_ATTACH_DATA_BIN, "write": True, "create": True},
            ],
            ["write_stream", {"h": 5, "data": b"d" * 1000}],
            ["commit_stream", {"h": 5}],
            ["save_changes", {"h": 4, "flags": 2}],
            [
                "modify_recipients",
                {
                    "h": 3,
                    "rows": [
                        [[pt.PR_EMAIL_ADDRESS, "other@example.org"], [pt.PR_RECIPIENT_TYPE, 1]]
                    ],
                    "flags": 2,
                },
            ],
            ["save_changes", {"h": 3, "flags": 2}],
        ],
        [
            ["open_folder", {"h": 1, "out": 2, "eid": inbox_eid}],
            ["contents_table", {"h": 2, "out": 6}],
            ["set_columns", {"h": 6, "tags": [pt.PR_SUBJECT, pt.PR_ENTRYID]}],
            ["sort_table", {"h": 6, "keys": [[pt.PR_SUBJECT, True]]}],
            [
                "restrict",
                {
                    "h": 6,
                    "restriction": {"rt": 3, "fuzzy": 0x10001, "tag": pt.PR_SUBJECT, "value": "s"},
                },
            ],
            ["seek_row", {"h": 6, "origin": 0, "count": 1}],
            ["query_rows", {"h": 6, "count": 5}],
            ["create_bookmark", {"h": 6}],
            ["find_row", {"h": 6, "restriction": {"rt": 8, "tag": pt.PR_SUBJECT}}],
        ],
        [
            ["open_folder", {"h": 1, "out": 2, "eid": inbox_eid}],
            ["create_folder", {"h": 2, "out": 7, "name": "F", "open_if_exists": True}],
            ["hierarchy_table", {"h": 2, "out": 8}],
            ["query_rows", {"h": 8, "count": 10}],
            ["get_ids_from_names", {"h": 1, "names": [[b"\x00" * 16, 1, "n"]], "create": True}],
            ["advise", {"h": 1, "mask": 2, "eid": None}],
            ["sync_contents", {"h": 2, "state": None, "props": None, "max": 10}],
            ["get_props", {"h": 2, "tags": None}],
            ["release", {"handles": [7, 8]}],
        ],
    ]


def target_store_batch(fixture: StoreFixture) -> Target:
    from mapi.model import errors
    from mapi.rpc import ops

    seeds = batch_seeds(fixture.inbox_eid)
    names = sorted(ops.OPS)

    def mutate(rng: random.Random, seeds: list[Any]) -> Any:
        batch = rng.choice(seeds)
        if rng.random() < 0.3:  # an operation of any name with a seed's arguments
            batch = list(batch)
            i = rng.randrange(len(batch))
            batch[i] = [rng.choice(names), batch[rng.randrange(len(batch))][1]]
        for _ in range(rng.choice((1, 2, 4))):
            batch = mutate_value(rng, batch)
        return batch

    count = [0]

    def run(batch: Any) -> None:
        count[0] += 1
        if count[0] % 200 == 0:
            fixture.reset()
        try:
            ops.run_batch(fixture.ctx, batch)
        finally:
            if len(fixture.handles) > 1000:
                fixture.reset()

    return Target("store_batch", seeds, run, (errors.MapiError,), mutate)


def target_store_service(fixture: StoreFixture) -> Target:
    import trio

    from dcerpc.interface import CallContext
    from mapi.rpc.service import OP_CONNECT, OP_DISCONNECT, OP_EXECUTE, StoreService

    service = StoreService(fixture.store)
    session = b"\x01" * 16
    stubs = [
        (OP_CONNECT, {"user": "fuzz"}),
        (
            OP_CONNECT,
            {"user": "fuzz", "nonce": b"n" * 16, "cnonce": b"c" * 16, "response": b"r" * 32},
        ),
        (OP_CONNECT, {"resume": session}),
        (OP_DISCONNECT, {"session": session}),
        (OP_EXECUTE, {"session": session, "ops": batch_seeds(fixture.inbox_eid)[1]}),
    ]
    seeds = [bytes([op]) + msgpack.packb(stub, use_bin_type=True) for op, stub in stubs]

    def run(data: bytes) -> None:
        if not data:
            return
        opnum = data[0] % 3  # connect, disconnect, execute (not the long-poll)
        ctx = CallContext(
            opnum=opnum,
            interface=service.interface().syntax,
            transfer_syntax=service.interface().transfer_syntaxes[0],
            object_uuid=None,
            association_group=1,
            peer=("127.0.0.1", 1),
            local=("127.0.0.1", 2),
        )

        async def call() -> None:
            reply = await service.handle(ctx, data[1:])
            decoded = msgpack.unpackb(reply, raw=False)
            assert isinstance(decoded, dict) and "hresult" in decoded, decoded

        trio.run(call)

    return Target("store_service", seeds, run, ())


def target_restrictions() -> Target:
    from mapi.model import errors
    from mapi.model import proptags as pt
    from mapi.model import restrictions as rs

    leaf = {"rt": 3, "fuzzy": 0x10001, "tag": pt.PR_SUBJECT, "value": "a*b"}
    seeds: list[Any] = [
        leaf,
        {"rt": 0, "res": [leaf, {"rt": 2, "res": {"rt": 8, "tag": pt.PR_BODY}}]},
        {"rt": 1, "res": [{"rt": 4, "relop": 6, "tag": pt.PR_SUBJECT, "value": "^a.*[b-d]+$"}]},
        {"rt": 6, "relop": 1, "tag": pt.PR_MESSAGE_FLAGS, "mask": 1},
        {"rt": 7, "relop": 2, "tag": pt.PR_SUBJECT, "size": 3},
        {"rt": 9, "sub": pt.PR_MESSAGE_RECIPIENTS, "res": leaf},
        {"rt": 5, "relop": 4, "tag1": pt.PR_SUBJECT, "tag2": pt.PR_BODY},
        {"rt": 10, "props": [[pt.PR_SUBJECT, "c"]], "res": leaf},
    ]
    row = rs.DictRow({pt.PR_SUBJECT: "aXXb" * 50, pt.PR_BODY: "body", pt.PR_MESSAGE_FLAGS: 1})

    def nested(depth: int, kind: int) -> Any:
        value: Any = leaf
        for _ in range(depth):
            value = {"rt": kind, "res": [value] if kind in (0, 1) else value}
        return value

    def mutate(rng: random.Random, seeds: list[Any]) -> Any:
        if rng.random() < 0.05:  # deep nesting, far beyond the limit
            return nested(rng.choice((31, 32, 33, 100, 5000, 200_000)), rng.choice((0, 1, 2)))
        value = rng.choice(seeds)
        for _ in range(rng.choice((1, 2, 3))):
            value = mutate_value(rng, value)
        if rng.random() < 0.2:
            wide = [value, rng.choice(seeds)] * rng.randrange(1, 600)
            value = {"rt": rng.choice((0, 1)), "res": wide}
        return value

    def run(value: Any) -> None:
        restriction = rs.from_plain(value)
        rs.evaluate(restriction, row)
        rs.to_plain(restriction)

    return Target("restrictions", seeds, run, (errors.MapiError,), mutate)


def target_control() -> Target:
    """The admin control channel's line codec (mapi_anywhere.control): any bytes, cut
    anywhere, give requests or ControlProtocolError, never another exception."""
    from mapi_anywhere import control

    seeds: list[Any] = [
        control.encode_request("sessions"),
        control.encode_request("end_session", handle="0123456789ab"),
        control.encode_request("delete_user", user="alice"),
        b'{"op":"set_password","user":"a","password":"\\u0000"}\n',
        b'{"op":"sessions","extra":1}\n{"op":7}\n[]\n\xff\xfe\n',
        control.encode_result([{"user": "alice"}]),
        control.encode_error("no such user"),
    ]

    def run(data: bytes) -> None:
        buffer = control.LineBuffer(max_line=4096)
        cut = len(data) // 3
        for part in (data[:cut], data[cut:]):
            for line in buffer.feed(part):
                with contextlib.suppress(control.ControlProtocolError):
                    control.parse_request(line)
                with contextlib.suppress(control.ControlProtocolError, control.ControlError):
                    control.parse_response(line)

    return Target("control", seeds, run, (control.ControlProtocolError,))


# -- security (issue 18) ----------------------------------------------------------------


def _fixed_random(n: int) -> bytes:
    """A fixed randomness source: seeds stay valid (the server challenge is the same
    every time), so mutations reach signature checks, not only the token decoders."""
    return bytes(range(1, n + 1))


_FUZZ_NOW = 1_700_000_000.0


def _lookup(user: str, domain: str) -> bytes | None:
    from dcerpc.ntlm_crypto import nt_hash

    return nt_hash("s3cret") if user.lower() == "alice" else None


def ntlm_seeds() -> list[bytes]:
    from dcerpc.ntlm import ChallengeMessage, NtlmAcceptor, NtlmInitiator, ServerNames

    seeds: list[bytes] = []
    for user, password in (("alice", "s3cret"), ("", "")):
        initiator = NtlmInitiator(user, password, "LAB", now=_FUZZ_NOW, random=_fixed_random)
        acceptor = NtlmAcceptor(_lookup, ServerNames(), now=_FUZZ_NOW, random=_fixed_random)
        negotiate = initiator.step()
        challenge = acceptor.step(negotiate)
        seeds += [negotiate, challenge, initiator.step(challenge)]
    seeds.append(ChallengeMessage.decode(seeds[1]).target_info)  # AV pairs alone
    return seeds


def target_ntlm() -> Target:
    from dcerpc.ntlm import (
        AuthenticateMessage,
        ChallengeMessage,
        NegotiateMessage,
        NtlmAcceptor,
        NtlmInitiator,
        ServerNames,
        decode_av_pairs,
    )
    from dcerpc.security import AuthError

    negotiate = NtlmInitiator("alice", "s3cret", now=_FUZZ_NOW, random=_fixed_random).step()

    def run(data: bytes) -> None:
        for decode in (
            NegotiateMessage.decode,
            ChallengeMessage.decode,
            AuthenticateMessage.decode,
            decode_av_pairs,
        ):
            with contextlib.suppress(AuthError):
                decode(data)
        acceptor = NtlmAcceptor(_lookup, ServerNames(), now=_FUZZ_NOW, random=_fixed_random)
        acceptor.step(negotiate)
        acceptor.step(data)  # as an AUTHENTICATE after a good NEGOTIATE
        assert acceptor.complete and acceptor.session is not None

    return Target("ntlm", ntlm_seeds(), run, (AuthError,))


def spnego_seeds() -> list[bytes]:
    from dcerpc.ntlm import NtlmAcceptor, NtlmInitiator, ServerNames
    from dcerpc.spnego import SpnegoAcceptor, SpnegoInitiator

    initiator = SpnegoInitiator(
        NtlmInitiator("alice", "s3cret", "LAB", now=_FUZZ_NOW, random=_fixed_random)
    )
    acceptor = SpnegoAcceptor(
        lambda: NtlmAcceptor(_lookup, ServerNames(), now=_FUZZ_NOW, random=_fixed_random)
    )
    first = initiator.step()
    reply = acceptor.step(first)
    second = initiator.step(reply)
    return [first, reply, second, acceptor.step(second)]


def target_spnego() -> Target:
    from dcerpc.ntlm import NtlmAcceptor, ServerNames
    from dcerpc.security import AuthError
    from dcerpc.spnego import SpnegoAcceptor, decode_token

    seeds = spnego_seeds()

    def acceptor() -> SpnegoAcceptor:
        return SpnegoAcceptor(
            lambda: NtlmAcceptor(_lookup, ServerNames(), now=_FUZZ_NOW, random=_fixed_random)
        )

    def run(data: bytes) -> None:
        with contextlib.suppress(AuthError):
            decode_token(data)
        with contextlib.suppress(AuthError):
            acceptor().step(data)  # as a first token
        second = acceptor()
        second.step(seeds[0])
        second.step(data)  # as the second (AUTHENTICATE and mechListMIC)

    return Target("spnego", seeds, run, (AuthError,))


def target_sec_trailer() -> Target:
    """split_verifier on any bytes; signed and sealed request PDUs (whose stub, padding,
    trailer and signature are mutated) through SecurityContext.unprotect."""
    from dcerpc.auth_context import SecurityContext
    from dcerpc.ntlm import NtlmAcceptor, NtlmInitiator, ServerNames
    from dcerpc.pdu import RequestPdu
    from dcerpc.security import AuthError, AuthLevel, AuthType, SecTrailer, split_verifier

    def session_pair(level: int) -> tuple[SecurityContext, SecurityContext]:
        initiator = NtlmInitiator("alice", "s3cret", "LAB", now=_FUZZ_NOW, random=_fixed_random)
        acceptor = NtlmAcceptor(_lookup, ServerNames(), now=_FUZZ_NOW, random=_fixed_random)
        acceptor.step(initiator.step(acceptor.step(initiator.step())))
        trailer = SecTrailer(AuthType.NTLM, level, 0, 1)
        return SecurityContext(trailer, initiator), SecurityContext(trailer, acceptor)

    levels = (AuthLevel.PKT_INTEGRITY, AuthLevel.PKT_PRIVACY)
    seeds: list[bytes] = [SecTrailer(10, 6, 8, 1).encode() + b"\x01" + bytes(15)]
    for level in levels:
        client, _ = session_pair(level)
        pdu = RequestPdu(call_id=2, opnum=1, stub=b"stub data " * 5).encode()
        seeds.append(bytes([level]) + client.protect(pdu, 24))

    def run(data: bytes) -> None:
        with contextlib.suppress(AuthError):
            split_verifier(data)
        if not data or data[0] not in levels:
            return
        _, server = session_pair(data[0])
        raw = data[1:]
        auth_length = struct.unpack_from("<H", raw, 10)[0] if len(raw) >= 12 else 0
        server.unprotect(raw, 24, min(auth_length, len(raw)))

    return Target("sec_trailer", seeds, run, (AuthError,))


def target_server_auth() -> Target:
    import dataclasses

    from dcerpc.auth_context import ClientAuth, ServerSecurity
    from dcerpc.client_connection import ClientConnection
    from dcerpc.errors import RemoteProtocolError
    from dcerpc.events import CallReceived
    from dcerpc.pdu import ContextElement
    from dcerpc.security import AuthLevel, AuthPolicy, AuthType
    from dcerpc.server_connection import AssociationGroups, InterfaceRegistry, ServerConnection
    from dcerpc.syntax import NDR
    from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, epm_interface, mgmt_interface
    from endpoint_mapper.stubs import MGMT_SYNTAX

    strict = dataclasses.replace(
        mgmt_interface(), policy=AuthPolicy(AuthLevel.PKT_INTEGRITY, allow_anonymous=False)
    )
    registry = InterfaceRegistry([epm_interface(EndpointDatabase()), strict])
    security = ServerSecurity(lookup_nt_hash=_lookup, random=_fixed_random)

    class FixedGroups(AssociationGroups):
        """Group ids as recorded in the seeds (the real ones are random), so a
        recorded alter_context names the group its connection's bind_ack gave."""

        def join(self, requested: int) -> int | None:
            return 0x5EED if requested in (0, 0x5EED) else None

    def server() -> ServerConnection:
        return ServerConnection(registry, FixedGroups(), security=security)

    def conversation(auth_type: int, level: int) -> bytes:
        """Everything a client sends on one connection: bind, auth3 or alter_context,
        two calls (the second fragmented)."""
        auth = ClientAuth(
            user="alice", password="s3cret", auth_type=auth_type, auth_level=level,
            random=_fixed_random,
        )  # fmt: skip
        client, srv = ClientConnection(auth=auth), server()
        sent = b""
        syntax = MGMT_SYNTAX if level >= AuthLevel.PKT_INTEGRITY else EPM_SYNTAX
        client.bind([ContextElement(0, syntax, (NDR,))], now=_FUZZ_NOW)
        for _ in range(4):
            wire = client.data_to_send()
            if not wire:
                break
            sent += wire
            srv.receive_data(wire, now=_FUZZ_NOW)
            back = srv.data_to_send()
            if back:
                client.receive_data(back)
        client.request(0, 0, b"\x00" * 8)
        client.request(0, 1, b"\x00" * 4 + b"s" * 9000)
        return sent + client.data_to_send()

    seeds = [
        conversation(kind, level)
        for kind in (AuthType.NTLM, AuthType.SPNEGO)
        for level in (AuthLevel.CONNECT, AuthLevel.PKT_INTEGRITY, AuthLevel.PKT_PRIVACY)
    ]
    epm_bind = ClientConnection(
        auth=ClientAuth(user="", password="", random=_fixed_random)
    )  # anonymous, to the open endpoint mapper
    epm_bind.bind([ContextElement(0, EPM_SYNTAX, (NDR,))], now=_FUZZ_NOW)
    seeds.append(epm_bind.data_to_send())

    def run(data: bytes) -> None:
        conn = server()
        rng = random.Random(len(data))
        pos = 0
        try:
            while pos < len(data):
                step = rng.randrange(1, 3000)
                for event in conn.receive_data(data[pos : pos + step], now=_FUZZ_NOW):
                    if isinstance(event, CallReceived):
                        conn.send_response(event.call_id, b"\0" * 8)
                pos += step
                conn.data_to_send()
            conn.receive_data(b"")
        finally:
            conn.data_to_send()

    return Target("server_auth", seeds, run, (RemoteProtocolError,))


def _http_auth_conversations() -> list[list[bytes]]:
    """``Authorization`` values a client sends on one connection, recorded against a
    :class:`tunnel.http_auth.ConnectionAuth` with fixed randomness (so a mutated
    AUTHENTICATE still meets the same CHALLENGE): Basic in the name forms Windows
    sends, bare NTLM (two legs) and Negotiate carrying NTLM."""
    import base64

    from dcerpc.ntlm import NtlmInitiator
    from dcerpc.spnego import SpnegoInitiator
    from tunnel.http_auth import MechToken, Scheme, parse_credentials

    def basic(name: str, password: str) -> bytes:
        return b"Basic " + base64.b64encode(f"{name}:{password}".encode())

    conversations = [
        [basic(name, "s3cret")] for name in ("alice", "LAB\\alice", "\\alice", "alice@lab")
    ]
    for scheme in (Scheme.NTLM, Scheme.NEGOTIATE):
        ntlm = NtlmInitiator("alice", "s3cret", "LAB", now=_FUZZ_NOW, random=_fixed_random)
        initiator = ntlm if scheme is Scheme.NTLM else SpnegoInitiator(ntlm)
        auth = _http_auth_connection()
        token = initiator.step()
        sent: list[bytes] = []
        for _ in range(4):
            sent.append(f"{scheme.token} ".encode() + base64.b64encode(token))
            parsed = parse_credentials(sent[-1])
            assert isinstance(parsed, MechToken)
            step = auth.step(parsed, _FUZZ_NOW)
            if step.challenge is None:
                break
            token = initiator.step(base64.b64decode(step.challenge.split(" ", 1)[1]))
        conversations.append(sent)
    return conversations


class _FuzzNtlmDirectory:
    """The tunnel's NTLM hooks, answered from memory (alice's hash only)."""

    def lookup_nt_hash(self, user: str, domain: str, /) -> bytes | None:
        return _lookup(user, domain)

    def ntlm_failed(self, user: str | None, address: str | None, /) -> None:
        pass

    def ntlm_succeeded(self, user: str, address: str | None, /) -> None:
        pass


def _http_auth_connection() -> Any:
    from dcerpc.ntlm import ServerNames
    from tunnel.http_auth import ConnectionAuth, Scheme

    return ConnectionAuth(
        (Scheme.NTLM, Scheme.NEGOTIATE),
        _FuzzNtlmDirectory(),
        ServerNames(),
        "192.0.2.7",
        refuses=lambda user, address: user == "held",
        random=_fixed_random,
    )


def target_http_auth() -> Target:
    """The tunnel's HTTP authentication (``tunnel.http_auth``): ``parse_credentials``
    on any header value, ``split_user_name`` on the names, ``parse_schemes`` on the
    config words, and the connection's ``ConnectionAuth.step`` over a conversation of
    ``Authorization`` values (one per line; mutated as text, or as the decoded NTLM
    token then re-encoded, so mutations reach the handshake past the base64)."""
    import base64

    from tunnel.http_auth import MechToken, parse_credentials, parse_schemes, split_user_name

    seeds = [b"\n".join(c) for c in _http_auth_conversations()]

    def mutate(rng: random.Random, pool: list[Any]) -> bytes:
        if rng.random() < 0.5:
            return mutate_bytes(rng, pool)
        lines = rng.choice(pool).split(b"\n")
        i = rng.randrange(len(lines))
        scheme, _, token = lines[i].partition(b" ")
        raw = base64.b64decode(token)
        lines[i] = scheme + b" " + base64.b64encode(mutate_bytes(rng, [raw]))
        if rng.random() < 0.2:  # a leg dropped, repeated or moved
            j = rng.randrange(len(lines))
            lines.insert(j, lines.pop(i) if rng.random() < 0.5 else lines[i])
        return b"\n".join(lines)

    def run(data: bytes) -> None:
        auth = _http_auth_connection()
        for line in data.split(b"\n")[:8]:
            parsed = parse_credentials(line)
            with contextlib.suppress(UnicodeDecodeError):
                parse_credentials(line.decode("latin-1"))
                split_user_name(line.decode("utf-8"))
                with contextlib.suppress(ValueError):
                    parse_schemes(line.decode("utf-8").split(","))
            if isinstance(parsed, MechToken):
                step = auth.step(parsed, _FUZZ_NOW)
                outcomes = [step.user is not None, step.challenge is not None]
                assert sum(outcomes) <= 1, step
                assert step.user in (None, "alice"), step

    return Target("http_auth", seeds, run, (), mutate)


def target_mime() -> Target:
    """MIME to MAPI (``internet_mail.mime``): any bytes convert or fail with
    MimeLimitExceeded;
    what converted renders to MIME, which reads back and renders the same bytes once
    normalised. Seeds: the test corpus of real-world-shaped messages."""
    sys.path.insert(0, str(ROOT / "tests" / "internet_mail"))
    from mime_corpus import corpus

    from internet_mail.mime import MimeLimitExceeded, mapi_to_mime, mime_to_mapi
    from mapi.model.limits import Limits

    limits = Limits(max_mime_parts=200, max_mime_depth=16)
    seeds = list(corpus().values())

    def mutate(rng: random.Random, pool: list[Any]) -> bytes:
        data = mutate_bytes(rng, pool)
        if rng.random() < 0.2:  # lines from another message: boundaries, headers
            other = rng.choice(pool).split(b"\n")
            lines = data.split(b"\n")
            i = rng.randrange(len(lines) + 1)
            j = rng.randrange(len(other))
            lines[i:i] = other[j : j + rng.randrange(1, 8)]
            data = b"\n".join(lines)
        return data

    def run(data: bytes) -> None:
        converted = mime_to_mapi(data, limits=limits)
        rendered = mapi_to_mime(converted, bcc=True)
        again = mapi_to_mime(mime_to_mapi(rendered, limits=limits), bcc=True)
        assert mapi_to_mime(mime_to_mapi(again, limits=limits), bcc=True) == again

    return Target("mime", seeds, run, (MimeLimitExceeded,), mutate)


def target_mbox() -> Target:
    """The mbox splitter of ``mapi-cli import`` (``clients.mailfiles``): any bytes, cut
    into random reads, give messages within the size limit or MailFileError (not an mbox);
    messages written by our writer read back as they were."""
    import datetime as dt

    from clients.mailfiles import MailFileError, MboxSplitter, mbox_entry, to_crlf

    when = dt.datetime(2024, 3, 5, 7, 8, 9, tzinfo=dt.UTC)
    parts = [
        b"Subject: a\r\n\r\nFrom here\r\n>From there\r\n\r\n",
        b"Subject: b\r\nStatus: RO\r\n\r\n>>From x\r\n" + b"y" * 300 + b"\r\n",
        b"From: c@d\r\n\r\n\r\n\r\nFrom \r\n",
    ]
    seeds = [b"".join(mbox_entry(p, "a@b.example", when) for p in parts[:n]) for n in (1, 2, 3)]
    seeds.append(b"From x Tue Mar  5 07:08:09 2024\n" + b"z" * 5000 + b"\n\nFrom y\nA: b\n")
    limit = 400

    def run(data: bytes) -> None:
        rng = random.Random(len(data))
        splitter = MboxSplitter(limit)
        messages = []
        start = 0
        while start < len(data):
            step = rng.randrange(1, 64)
            messages += splitter.feed(data[start : start + step])
            start += step
        messages += splitter.end()
        for message in messages:
            assert message.raw is None or len(message.raw) <= limit
            assert message.raw is None or len(message.raw) == message.size
            bare_cr = message.raw is not None and b"\r" in message.raw.replace(b"\r\n", b"")
            if message.raw is not None and not bare_cr:  # rewritten, it reads back the same
                again = MboxSplitter(limit * 4)
                entry = mbox_entry(to_crlf(message.raw), "a@b", when)
                [back] = again.feed(entry) + again.end()
                assert back.raw is not None
                expected = to_crlf(message.raw)
                if expected and not expected.endswith(b"\r\n"):
                    expected += b"\r\n"
                assert to_crlf(back.raw) == expected or not expected.strip(b"\r\n"), entry

    return Target("mbox", seeds, run, (MailFileError,))


def target_smtp_server() -> Target:
    """The SMTP core (``internet_mail.smtp``): mutated sessions in random chunks give
    only well-formed replies; the core's questions get random answers; held input stays
    within ``max_pending_input`` and a message is never larger than the limit."""
    from internet_mail.smtp import (
        AuthenticationRequested,
        MessageReceived,
        RecipientCheckRequested,
        RecipientVerdict,
        Role,
        SmtpConfig,
        SmtpServerConnection,
        StartTlsRequested,
    )

    config = SmtpConfig(max_message_size=4096, max_errors=50, max_recipients=5)
    submission = SmtpConfig(role=Role.SUBMISSIONS, max_message_size=4096, max_errors=50)
    seeds = [
        b"EHLO c\r\nMAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<d@localhost>\r\n"
        b"RCPT TO:<u%x@localhost>\r\nRCPT TO:<@r.example:v@x.example>\r\nDATA\r\n"
        b"Subject: x\r\n\r\n..a\r\n.\r\nQUIT\r\n",
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nBDAT 5\r\nab\r\nBDAT 0 LAST\r\n"
        b"RSET\r\nVRFY x\r\nHELP\r\nNOOP\r\n",
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<d@localhost>\r\nDATA\r\nx\n.\n"
        b"MAIL FROM:<e@f.example>\r\nDATA\r\nx\r\n.\r\n",
        b"EHLO c\r\nAUTH PLAIN AGRlbW8Ac2VjcmV0\r\nAUTH LOGIN\r\nZGVtbw==\r\nc2VjcmV0\r\n"
        b'MAIL FROM:<"q@x"@b.example> SMTPUTF8\r\nRCPT TO:<j\xc3\xa9@x.example>\r\n',
        b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\n",
    ]

    def run(data: bytes) -> None:
        rng = random.Random(data)
        conn = SmtpServerConnection(submission if data[:1] == b"S" else config)
        out = bytearray(conn.data_to_send())
        pos = 0
        while pos < len(data) and not conn.closed:
            step = rng.randint(1, 64)
            events = conn.receive_data(data[pos : pos + step])
            pos += step
            while events:
                event = events.pop(0)
                if isinstance(event, RecipientCheckRequested):
                    events += conn.recipient_checked(rng.choice(list(RecipientVerdict)))
                elif isinstance(event, AuthenticationRequested):
                    events += conn.authentication_result(rng.choice([None, event.username]))
                elif isinstance(event, MessageReceived):
                    assert len(event.data) <= config.max_message_size
                    events += conn.message_stored(rng.random() < 0.8)
                elif isinstance(event, StartTlsRequested):
                    events += conn.tls_started()
            assert len(conn._input) <= config.max_pending_input + 64
            out += conn.data_to_send()
        conn.receive_data(b"")
        out += conn.data_to_send()
        for line in bytes(out).split(b"\r\n")[:-1]:
            assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line

    return Target("smtp_server", seeds, run, ())


def target_smtp_replies() -> Target:
    """The outbound SMTP client's reply reader (``internet_mail.smtp.replies``) and the
    client core over it (``internet_mail.smtp.client``): a peer's mutated replies in
    random chunks give replies (codes 200-599, at most ``MAX_LINES`` lines, held bytes
    within a line) or ReplyError; the client gives an outcome for every recipient (QUIT
    queued only once the driver took it) or ClientProtocolError."""
    from internet_mail.smtp.client import (
        ClientOptions,
        ClientProtocolError,
        Finished,
        SmtpClient,
        Transaction,
    )
    from internet_mail.smtp.replies import MAX_LINE, MAX_LINES, ReplyError, ReplyReader

    tx = Transaction(
        "a@local.test", ("x@remote.test", "y@remote.test"), b"Subject: t\r\n\r\n.x\r\n"
    )
    seeds = [
        b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
        b"250-8BITMIME\r\n250 SMTPUTF8\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n"
        b"550 5.1.1 no such user\r\n354 go\r\n250 2.0.0 queued as 1\r\n221 bye\r\n",
        b"220 hi\r\n500 what\r\n250 hello\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"
        b"451 4.3.0 try later\r\n",
        b"220-first\r\n220 second\n250-x\r\n250 STARTTLS\r\n454 4.7.0 no tls\r\n"
        b"553 5.1.8 bad sender\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n554 no valid recipients\r\n",
        b"554 5.7.1 go away\r\n",
    ]

    def run(data: bytes) -> None:
        rng = random.Random(data)
        reader = ReplyReader()
        try:
            pos = 0
            while pos < len(data):
                step = rng.randint(1, 64)
                reader.feed(data[pos : pos + step])
                pos += step
                while (reply := reader.next_reply()) is not None:
                    assert 200 <= reply.code <= 599 and 1 <= len(reply.lines) <= MAX_LINES
                    assert not reply.enhanced or reply.enhanced[0] == str(reply.code)[0]
                assert reader.buffered <= MAX_LINE
        except ReplyError:
            pass
        tls = rng.choice(["none", "opportunistic"])
        client = SmtpClient(ClientOptions(helo_name="me.test", tls=tls), tx)  # type: ignore[arg-type]
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 64)
            client.receive_data(data[pos : pos + step] or b"x")
            pos += step
            client.data_to_send()
            event = client.next_event()
            if isinstance(event, Finished):
                assert set(event.results) == set(tx.recipients)
                assert not event.acknowledged or any(r.positive for r in event.results.values())
                assert client.data_to_send() == b"QUIT\r\n"
                return
            assert b"QUIT" not in client.data_to_send()

    return Target("smtp_replies", seeds, run, (ClientProtocolError,))


def target_queue_envelope() -> Target:
    """The outbound queue's envelope files (``internet_mail.outbound.state.decode``): a
    damaged file gives EnvelopeError or an envelope the runner can use (times finite
    and in range, addresses sendable as UTF-8, within the limits) that encodes and
    decodes back to itself."""
    import math

    from internet_mail.outbound.state import (
        MAX_RECIPIENTS,
        EnvelopeError,
        RecipientState,
        decode,
        encode,
        new_envelope,
    )

    first = new_envelope("18c0ffee-0a1b2c", "a@local.test", ["x@remote.test", "y@r.test"], 1.7e9)
    first.recipients[1] = RecipientState(
        "y@r.test", "failed", 3, 1.7e9 + 900, "550 5.1.1 no such user", "5.1.1", "mx.r.test",
        True,
    )  # fmt: skip
    report = new_envelope("ndr-" + "0" * 40, "", ["a@remote.test"], 1.7e9)
    done = new_envelope("x", "é@local.test", ["b@remote.test"], 0.0)
    done.recipients[0].status = "done"
    seeds = [encode(e) for e in (first, report, done)]

    def mutate(rng: random.Random, pool: list[Any]) -> bytes:
        data = mutate_bytes(rng, pool)
        if rng.random() < 0.3:  # JSON-aware: a value swapped for another kind
            text = rng.choice(pool).decode()
            values = ['NaN', 'Infinity', '-1', '1e999', '"\\ud800"', 'null', '[]', '{}',
                      'true', '"\\u0000"', '1' + '0' * 30, '"' + 'a' * 600 + '"']  # fmt: skip
            keys = [":" + v for v in ("1.7e9", "0", "false", '"pending"', '"a@local.test"')]
            key = rng.choice(keys)
            if key in text:
                text = text.replace(key, ":" + rng.choice(values), 1)
            data = text.encode()
        return data

    def run(data: bytes) -> None:
        envelope = decode(data)
        assert 1 <= len(envelope.recipients) <= MAX_RECIPIENTS
        assert math.isfinite(envelope.created)
        for address in (envelope.sender, *(r.address for r in envelope.recipients)):
            address.encode("utf-8")
            assert not any(c in address for c in "\r\n\0<>")
        for rcpt in envelope.recipients:
            assert math.isfinite(rcpt.next_try) and 0 <= rcpt.attempts < 1 << 31
        assert decode(encode(envelope)) == envelope

    return Target("queue_envelope", seeds, run, (EnvelopeError,), mutate)


def target_imap_parser() -> Target:
    """The IMAP core (``internet_mail.imap``): a session over the in-memory backend is fed
    mutated conversations in random chunks; it may answer anything, raise nothing, and
    hold no more than its limits (parser buffers, queued output drained each call)."""
    from internet_mail.imap import CloseRequested, ImapLimits, ImapSession
    from internet_mail.imap.testing import MemoryBackend

    limits = ImapLimits(max_line=2048, max_command=8192, max_literal=4096, max_append=8192)
    message = b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n"
    encoded = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\na=3Db=\r\nc\r\n--b\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--b--\r\n"
    )
    seeds = [
        b"a LOGIN alice secret\r\nb SELECT INBOX (CONDSTORE)\r\n"
        b"c FETCH 1:* (FLAGS BODY.PEEK[1.HEADER.FIELDS (FROM)]<0.10> BODYSTRUCTURE ENVELOPE)\r\n"
        b"d UID SEARCH RETURN (MIN COUNT SAVE) OR (FROM x SINCE 1-Feb-2024) NOT SEEN 1:*\r\n"
        b"e UID STORE $ (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Deleted)\r\nf UID EXPUNGE 1:*\r\n",
        b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\nb APPEND INBOX (\\Seen) {%d+}\r\n%s\r\n"
        b'c LIST (SUBSCRIBED) "" (INBOX "%%") RETURN (STATUS (MESSAGES UNSEEN))\r\n'
        b"d IDLE\r\nDONE\r\ne STATUS INBOX (UIDNEXT SIZE)\r\nf LOGOUT\r\n"
        % (len(message), message),
        b"a LOGIN {5}\r\nalice {4294967295}\r\nb FETCH *:* BINARY[1]\r\n"
        b"c SEARCH " + b"(" * 40 + b"ALL" + b")" * 40 + b"\r\nd FETCH 1:4294967295 FLAGS\r\n",
        b"a LOGIN alice secret\r\nb SELECT INBOX\r\nc MOVE 1 Trash\r\nd COPY 1:* Sent\r\n"
        b"e APPEND INBOX ~{6+}\r\na\x00b\r\nc\r\n",
        # QRESYNC (VANISHED) and BINARY over transfer-encoded parts.
        b"a LOGIN alice secret\r\nb ENABLE QRESYNC\r\nc SELECT INBOX (QRESYNC (1001 1 1:9 (1 1)))"
        b"\r\nd STORE 1 +FLAGS (\\Deleted)\r\ne EXPUNGE\r\nf APPEND INBOX {%d+}\r\n%s\r\n"
        b"g NOOP\r\nh FETCH 1:* (BINARY.PEEK[1]<1.5> BINARY.SIZE[2] BINARY[2])\r\n"
        b"i UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n" % (len(encoded), encoded),
    ]
    bound = limits.max_line + 2 + limits.max_command + limits.max_append

    def run(data: bytes) -> None:
        backend = MemoryBackend()
        backend.append("INBOX", message, frozenset(), None)
        session = ImapSession(backend, limits, tls=True)
        rng = random.Random(len(data))
        at = 0
        while at < len(data):
            step = rng.randrange(1, 64)
            events = session.receive_data(data[at : at + step])
            at += step
            session.data_to_send()
            assert session.buffered <= bound, session.buffered
            if any(isinstance(e, CloseRequested) for e in events):
                break

    return Target("imap_parser", seeds, run, ())


def target_pop3_session() -> Target:
    """The POP3 core (``internet_mail.pop3``): a session over the in-memory maildrop is
    fed mutated sessions in random chunks, its authentication events answered; it may
    answer anything, raise nothing, hold no more input than its limits, and remove
    messages only at QUIT."""
    from internet_mail.pop3 import (
        AuthenticationRequested,
        Pop3Limits,
        Pop3Session,
        StartTLSRequested,
    )
    from internet_mail.pop3.testing import MemoryBackend, MemoryStore

    limits = Pop3Limits(max_line=255, max_hard_line=1024, max_input_buffer=4096)
    seeds = [
        b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nLIST 2\r\nUIDL\r\n"
        b"UIDL 1\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nDELE 2\r\nNOOP\r\nQUIT\r\n",
        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nRETR 2\r\nTOP 1 4294967295\r\nDELE 9\r\nQUIT\r\n",
        b"AUTH PLAIN\r\nYWxpY2UAYWxpY2UAc2VjcmV0\r\nLIST 0\r\nRETR 99999999999\r\n*\r\n",
        b"STLS\r\nUSER alice\r\nPASS secret\r\nCAPA\r\nAUTH\r\nAUTH PLAIN =\r\n",
        b"USER alice\nPASS bad\nPASS secret\nUSER alice\nPASS secret\nQUIT\n" + b"A" * 300,
    ]
    message = b"Subject: x\n\n.\n..\nbody\r\n.\r\n"

    def run(data: bytes) -> None:
        store = MemoryStore()
        uids = {store.add("alice", message), store.add("alice", b"no header end")}
        session = Pop3Session(MemoryBackend(store), limits, tls=len(data) % 2 == 0)
        rng = random.Random(len(data))
        at = 0
        signed_off = False
        while not session.closed and (at < len(data) or not session.wants_read):
            if session.wants_read:
                step = rng.randrange(1, 64)
                events = session.receive_data(data[at : at + step])
                at += step
            else:  # output backlog: run the held commands, feed nothing
                events = session.resume()
            while events:
                event = events.pop(0)
                if isinstance(event, AuthenticationRequested):
                    events += session.authentication_result(event.password == "secret")
                elif isinstance(event, StartTLSRequested):
                    session.tls_established()
            out = session.data_to_send()
            signed_off |= b"+OK POP3 server signing off (" in out
            for line in out.split(b"\r\n")[:-1]:
                assert b"\n" not in line and b"\r" not in line, line
            assert session.buffered <= limits.max_input_buffer, session.buffered
        session.receive_data(b"")
        assert not store.locked
        if not signed_off:  # deletions only at QUIT
            assert set(store.maildrops["alice"]) == uids

    return Target("pop3_session", seeds, run, ())


# -- the run --------------------------------------------------------------------------------


def where(exc: BaseException) -> str:
    """The innermost frame of the project in the traceback (``file:line``), and the
    innermost frame of all when that differs (a library raised)."""
    frames = traceback.extract_tb(exc.__traceback__)

    def ours(filename: str) -> bool:
        return filename.startswith(str(ROOT)) and "/.venv/" not in filename

    project = [f for f in frames if ours(f.filename) and not f.filename.endswith("fuzz.py")]
    text = ""
    if project:
        text = f"{Path(project[-1].filename).relative_to(ROOT)}:{project[-1].lineno}"
    last = frames[-1]
    if not project or last is not project[-1]:
        text += f" (raised in {Path(last.filename).name}:{last.lineno})"
    return text.strip()


def reproducer(value: Any) -> str:
    if isinstance(value, bytes):
        return value[:160].hex() + ("..." if len(value) > 160 else "")
    text = repr(value)
    return text[:300] + ("..." if len(text) > 300 else "")


def fuzz(target: Target, seconds: float, rng: random.Random) -> None:
    mutate = target.mutate or mutate_bytes
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    queue: Iterator[Any] = iter(target.seeds)
    while time.perf_counter() < deadline:
        value = next(queue, None)
        if value is None:
            value = mutate(rng, target.seeds)
        target.inputs += 1
        began = time.perf_counter()
        try:
            target.run(value)
        except target.allowed:
            pass
        except RecursionError as exc:
            target.failures.setdefault(f"RecursionError at {where(exc)}", reproducer(value))
        except Exception as exc:
            key = f"{type(exc).__name__} at {where(exc)}"
            target.failures.setdefault(key, f"{reproducer(value)} ({str(exc)[:120]})")
        took = time.perf_counter() - began
        if took > SLOW:
            target.slow += 1
            target.failures.setdefault(f"slow input ({took:.1f} s)", reproducer(value))
    target.seconds = time.perf_counter() - start


def write_section(title: str, lines: list[str], path: Path) -> None:
    text = path.read_text() if path.exists() else "# Reliability\n"
    header = f"## {title}\n"
    body = header + "\n" + "\n".join(lines) + "\n"
    if header in text:
        begin = text.index(header)
        end = text.find("\n## ", begin + len(header))
        text = text[:begin] + body + ("\n" + text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="budget per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated target names")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    fixture = StoreFixture()
    try:
        targets = [
            target_pdu(),
            target_framing(),
            target_server_core(),
            target_ndr_stubs(),
            target_ndr_nspi(),
            target_towers(),
            target_rts(),
            target_h1_channel(),
            target_h2_glue(),
            target_store_batch(fixture),
            target_store_service(fixture),
            target_restrictions(),
            target_control(),
            target_ntlm(),
            target_spnego(),
            target_sec_trailer(),
            target_server_auth(),
            target_http_auth(),
            target_mime(),
            target_mbox(),
            target_imap_parser(),
            target_smtp_server(),
            target_smtp_replies(),
            target_queue_envelope(),
            target_pop3_session(),
        ]
        only = {name for name in args.only.split(",") if name}
        rng = random.Random(args.seed)
        rows = []
        for target in targets:
            if only and target.name not in only:
                continue
            fuzz(target, args.seconds, rng)
            print(
                f"{target.name}: {target.inputs} inputs in {target.seconds:.1f} s, "
                f"failures: {len(target.failures)}",
                flush=True,
            )
            for key, value in target.failures.items():
                print(f"  {key}\n    reproducer: {value}", flush=True)
            rows.append(target)
    finally:
        fixture.close()
    total = sum(len(t.failures) for t in rows)
    print(f"total: {sum(t.inputs for t in rows)} inputs, failures: {total}")
    if not args.no_docs:
        lines = [
            "| decoder | inputs | time, s | failures |",
            "|---|---:|---:|---:|",
            *(f"| {t.name} | {t.inputs} | {t.seconds:.0f} | {len(t.failures)} |" for t in rows),
            "",
        ]
        for t in rows:
            for key, value in t.failures.items():
                lines.append(f"- {t.name}: {key} (reproducer `{value[:200]}`)")
        if total:
            lines.append("")
        lines.append(
            f"Run {time.strftime('%Y-%m-%d')}: `python bench/fuzz.py --seconds {args.seconds:g} "
            f"--seed {args.seed}` on Python {sys.version.split()[0]}, {os.cpu_count()} cores."
        )
        write_section("Fuzzing the decoders (bench/fuzz.py)", lines, args.docs)
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
