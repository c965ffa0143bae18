"""PDU codec: byte vectors both ways with impacket (an independent implementation),
big-endian input, framing limits, and fuzzing (only values or DecodeError)."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket import uuid as imp_uuid
from impacket.dcerpc.v5 import rpcrt

from dcerpc.errors import DecodeError
from dcerpc.framing import PduFramer
from dcerpc.pdu import (
    WHOLE,
    AlterContextPdu,
    BindAckPdu,
    BindNakPdu,
    BindPdu,
    ContextElement,
    ContextResult,
    FaultPdu,
    PfcFlags,
    RequestPdu,
    ResponsePdu,
    RtsPdu,
    ShutdownPdu,
    decode_pdu,
    parse_header,
    request_fragments,
    response_fragments,
)
from dcerpc.syntax import NDR, NDR64, SyntaxId, btfn_features

EPM = SyntaxId.parse("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3)


def impacket_bind(call_id: int = 7) -> bytes:
    """A bind PDU exactly as impacket builds it (DCERPC_v5.bind)."""
    bind = rpcrt.MSRPCBind()
    item = rpcrt.CtxItem()
    item["ContextID"] = 0
    item["TransItems"] = 1
    item["AbstractSyntax"] = imp_uuid.uuidtup_to_bin(
        ("e1af8308-5d1f-11c9-91a4-08002b14a0fa", "3.0")
    )
    item["TransferSyntax"] = imp_uuid.uuidtup_to_bin(
        ("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0")
    )
    bind.addCtxItem(item)
    packet = rpcrt.MSRPCHeader()
    packet["type"] = rpcrt.MSRPC_BIND
    packet["flags"] = 0x03
    packet["pduData"] = bind.getData()
    packet["call_id"] = call_id
    return packet.getData()


def test_impacket_bind_decodes():
    pdu = decode_pdu(impacket_bind(call_id=7))
    assert isinstance(pdu, BindPdu)
    assert pdu.call_id == 7
    assert (pdu.max_xmit_frag, pdu.max_recv_frag, pdu.assoc_group_id) == (4280, 4280, 0)
    assert pdu.contexts == (ContextElement(0, EPM, (NDR,)),)


def test_impacket_request_with_object_uuid_decodes():
    obj = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    req = rpcrt.MSRPCRequestHeader()
    req["type"] = rpcrt.MSRPC_REQUEST
    req["flags"] = 0x03 | 0x80
    req["call_id"] = 3
    req["ctx_id"] = 1
    req["op_num"] = 2
    req["alloc_hint"] = 5
    req["uuid"] = obj.bytes_le
    req["pduData"] = b"hello"
    pdu = decode_pdu(req.getData())
    assert isinstance(pdu, RequestPdu)
    assert (pdu.call_id, pdu.context_id, pdu.opnum, pdu.alloc_hint) == (3, 1, 2, 5)
    assert pdu.object_uuid == obj
    # impacket pads the stub to 4 bytes; padding is part of the stub for the runtime.
    assert pdu.stub.startswith(b"hello")


def test_our_bind_ack_parses_with_impacket():
    ack = BindAckPdu(
        call_id=9,
        max_xmit_frag=5840,
        max_recv_frag=4280,
        assoc_group_id=0x1234,
        secondary_address="1135",
        results=(ContextResult(0, 0, NDR), ContextResult(2, 2)),
    ).encode()
    parsed = rpcrt.MSRPCBindAck(ack)
    assert parsed["type"] == rpcrt.MSRPC_BINDACK
    assert parsed["call_id"] == 9
    assert parsed["frag_len"] == len(ack)
    assert (parsed["max_tfrag"], parsed["max_rfrag"]) == (5840, 4280)
    assert parsed["assoc_group"] == 0x1234
    assert parsed["SecondaryAddr"] == "1135"
    assert parsed["ctx_num"] == 2
    items = parsed["ctx_items"]
    first = rpcrt.CtxItemResult(items[:24])
    second = rpcrt.CtxItemResult(items[24:48])
    assert (first["Result"], first["Reason"]) == (0, 0)
    assert first["TransferSyntax"] == NDR.encode()
    assert (second["Result"], second["Reason"]) == (2, 2)
    # And we read back what we wrote.
    assert decode_pdu(ack) == BindAckPdu(
        call_id=9,
        max_xmit_frag=5840,
        max_recv_frag=4280,
        assoc_group_id=0x1234,
        secondary_address="1135",
        results=(ContextResult(0, 0, NDR), ContextResult(2, 2)),
    )


def test_our_response_and_fault_parse_with_impacket():
    resp = ResponsePdu(call_id=4, alloc_hint=3, context_id=1, stub=b"abc").encode()
    parsed = rpcrt.MSRPCRespHeader(resp)
    assert (parsed["type"], parsed["call_id"], parsed["ctx_id"]) == (rpcrt.MSRPC_RESPONSE, 4, 1)
    assert parsed["pduData"] == b"abc"
    fault = FaultPdu(call_id=4, status=0x1C010002).encode()
    parsed = rpcrt.MSRPCRespHeader(fault)
    assert parsed["type"] == rpcrt.MSRPC_FAULT
    assert len(fault) == 32
    assert struct.unpack_from("<L", parsed["pduData"])[0] == 0x1C010002


def test_bind_nak_parses_with_impacket():
    nak = BindNakPdu(call_id=1, reason=8).encode()
    header = rpcrt.MSRPCHeader(nak)
    assert header["type"] == rpcrt.MSRPC_BINDNAK
    body = rpcrt.MSRPCBindNak(header["pduData"])
    assert body["RejectedReason"] == 8
    assert body["SupportedVersions"][:3] == b"\x01\x05\x00"
    assert decode_pdu(nak) == BindNakPdu(call_id=1, reason=8)


@pytest.mark.parametrize(
    "pdu",
    [
        BindPdu(call_id=1, contexts=(ContextElement(0, EPM, (NDR, NDR64)),)),
        AlterContextPdu(call_id=2, assoc_group_id=5, contexts=(ContextElement(1, EPM, (NDR,)),)),
        BindAckPdu(call_id=3, results=(ContextResult(3, 2),)),
        RequestPdu(call_id=4, opnum=3, object_uuid=uuid.uuid4(), stub=b"\x01" * 17),
        ResponsePdu(call_id=5, stub=b"x" * 100, cancel_count=1),
        FaultPdu(call_id=6, status=0x6F7),
        ShutdownPdu(),
        RtsPdu(rts_flags=2, number_of_commands=1, commands=b"\x07\x00\x00\x00"),
        RequestPdu(
            call_id=8, stub=b"abcd", auth_verifier=b"\x0a\x02\x00\x00\x00\x00\x00\x00" + b"A" * 16
        ),
    ],
)
def test_round_trip(pdu):
    data = pdu.encode()
    assert parse_header(data).frag_length == len(data)
    decoded = decode_pdu(data)
    if isinstance(pdu, RequestPdu) and pdu.object_uuid is not None:
        assert decoded.pfc_flags & PfcFlags.OBJECT_UUID
        decoded = dataclasses.replace(decoded, pfc_flags=pdu.pfc_flags)
    assert decoded == pdu


def test_big_endian_request_decodes():
    obj = uuid.uuid4()
    body = struct.pack(">IHH", 4, 2, 9) + obj.bytes + b"stub"
    header = struct.pack(">BBBB4sHHI", 5, 0, 0, 0x83, b"\x00\x00\x00\x00", 16 + len(body), 0, 77)
    pdu = decode_pdu(header + body)
    assert isinstance(pdu, RequestPdu)
    assert (pdu.call_id, pdu.alloc_hint, pdu.context_id, pdu.opnum) == (77, 4, 2, 9)
    assert pdu.object_uuid == obj
    assert pdu.stub == b"stub"


def test_big_endian_bind_decodes():
    ctx = struct.pack(">HBx", 0, 1) + EPM.encode(">") + NDR.encode(">")
    body = struct.pack(">HHIB3x", 4280, 4280, 0, 1) + ctx
    header = struct.pack(">BBBB4sHHI", 5, 0, 11, 3, b"\x00\x00\x00\x00", 16 + len(body), 0, 1)
    pdu = decode_pdu(header + body)
    assert isinstance(pdu, BindPdu)
    assert pdu.contexts == (ContextElement(0, EPM, (NDR,)),)


def test_btfn_syntax_recognised():
    windows_btfn = SyntaxId.parse("6cb71c2c-9812-4540-0300-000000000000", 1)
    assert btfn_features(windows_btfn) == 3
    assert btfn_features(NDR) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x05\x00\x0b", "truncated"),
        (b"\x04\x00\x0b\x03\x10\x00\x00\x00\x10\x00\x00\x00\x01\x00\x00\x00", "version"),
        (b"\x05\x00\x0b\x03\x10\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00", "smaller"),
        (b"\x05\x00\x0b\x03\x10\x00\x00\x00\xff\xff\x00\x00\x01\x00\x00\x00", "exceeds"),
    ],
)
def test_bad_headers_rejected(data, message):
    with pytest.raises(DecodeError, match=message):
        parse_header(data, max_fragment=4280)


def test_unknown_ptype_rejected():
    data = bytearray(ShutdownPdu().encode())
    data[2] = 42
    with pytest.raises(DecodeError, match="unknown"):
        decode_pdu(bytes(data))


def test_truncated_bind_body_rejected():
    data = bytearray(impacket_bind())
    data[24] = 5  # claims five contexts but carries one
    with pytest.raises(DecodeError):
        decode_pdu(bytes(data))


def test_fragments_reassemble_and_respect_size():
    stub = bytes(range(256)) * 50
    frags = request_fragments(call_id=1, context_id=0, opnum=1, stub=stub, max_fragment=1432)
    assert len(frags) > 1
    pdus = [decode_pdu(f) for f in frags]
    assert all(len(f) <= 1432 for f in frags)
    assert pdus[0].pfc_flags & PfcFlags.FIRST_FRAG and not pdus[0].pfc_flags & PfcFlags.LAST_FRAG
    assert pdus[-1].pfc_flags & PfcFlags.LAST_FRAG
    assert pdus[0].alloc_hint == len(stub)
    assert b"".join(p.stub for p in pdus) == stub
    single = response_fragments(call_id=1, context_id=0, stub=b"x", max_fragment=1432)
    assert decode_pdu(single[0]).pfc_flags == WHOLE


@given(
    call_id=st.integers(0, 2**32 - 1),
    context_id=st.integers(0, 2**16 - 1),
    opnum=st.integers(0, 2**16 - 1),
    stub=st.binary(max_size=300),
    max_fragment=st.integers(64, 400),
)
def test_whole_fragment_fast_paths_match_the_dataclass_encoding(
    call_id, context_id, opnum, stub, max_fragment
):
    """request_fragments/response_fragments pack a one-fragment call directly; the bytes
    must be those of RequestPdu/ResponsePdu.encode(), and decode back to the same PDU."""
    requests = request_fragments(
        call_id=call_id, context_id=context_id, opnum=opnum, stub=stub, max_fragment=max_fragment
    )
    responses = response_fragments(
        call_id=call_id, context_id=context_id, stub=stub, max_fragment=max_fragment
    )
    if len(requests) == 1:
        want = RequestPdu(
            call_id=call_id, alloc_hint=len(stub), context_id=context_id, opnum=opnum, stub=stub
        )
        assert requests[0] == want.encode()
        assert decode_pdu(requests[0]) == want
    if len(responses) == 1:
        want_r = ResponsePdu(
            call_id=call_id, alloc_hint=len(stub), context_id=context_id, stub=stub
        )
        assert responses[0] == want_r.encode()
        assert decode_pdu(responses[0]) == want_r
    assert b"".join(decode_pdu(f).stub for f in requests) == stub
    assert b"".join(decode_pdu(f).stub for f in responses) == stub


@given(
    stub=st.binary(max_size=2000),
    max_fragment=st.integers(64, 700),
    with_uuid=st.booleans(),
)
def test_every_fragment_is_what_the_dataclass_encodes(stub, max_fragment, with_uuid):
    """Fragments are packed directly; each must re-encode to itself through the PDU
    dataclasses, carry the right flags and alloc_hint, and reassemble the stub."""
    object_uuid = uuid.UUID(int=0x0123456789ABCDEF0123456789ABCDEF) if with_uuid else None
    for frags in (
        request_fragments(
            call_id=7, context_id=1, opnum=3, stub=stub, max_fragment=max_fragment,
            object_uuid=object_uuid,
        ),
        response_fragments(call_id=7, context_id=1, stub=stub, max_fragment=max_fragment),
    ):  # fmt: skip
        pdus = [decode_pdu(f) for f in frags]
        assert [p.encode() for p in pdus] == frags
        assert all(len(f) <= max_fragment for f in frags)
        assert pdus[0].pfc_flags & PfcFlags.FIRST_FRAG and pdus[-1].pfc_flags & PfcFlags.LAST_FRAG
        assert not any(p.pfc_flags & PfcFlags.LAST_FRAG for p in pdus[:-1])
        assert b"".join(p.stub for p in pdus) == stub
        remaining = len(stub)
        for p in pdus:
            assert p.alloc_hint == remaining
            remaining -= len(p.stub)
    first = request_fragments(
        call_id=7, context_id=1, opnum=3, stub=stub, max_fragment=max_fragment,
        object_uuid=object_uuid,
    )[0]  # fmt: skip
    assert decode_pdu(first).object_uuid == object_uuid


@pytest.mark.parametrize("cut", [17, 23])
def test_truncated_request_and_response_bodies_rejected(cut):
    for pdu in (
        RequestPdu(call_id=1, opnum=2, stub=b"abc").encode(),
        ResponsePdu(call_id=1, stub=b"abc").encode(),
    ):
        short = bytearray(pdu[:cut])
        struct.pack_into("<H", short, 8, cut)  # a consistent frag_length, a short body
        with pytest.raises(DecodeError, match="truncated"):
            decode_pdu(bytes(short))


def test_framer_byte_by_byte_and_coalesced():
    pdus = [ShutdownPdu(call_id=i).encode() for i in range(3)] + [impacket_bind()]
    stream = b"".join(pdus)
    framer = PduFramer(65535)
    got = []
    for i in range(len(stream)):
        framer.feed(stream[i : i + 1])
        while (p := framer.next_pdu()) is not None:
            got.append(p)
    assert got == pdus
    framer.feed(stream)
    assert [framer.next_pdu() for _ in pdus] == pdus
    assert framer.next_pdu() is None and not framer.has_partial


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_framer_gives_the_pdus_back_however_the_stream_is_cut(data):
    """Random PDUs, cut at random places, each piece fed as bytes (cut in place) or as
    a bytearray (copied), with next_pdu drained at random moments: the same PDUs come
    back, in order, and nothing is left over."""
    pdus = [
        RequestPdu(call_id=i, opnum=1, stub=bytes([i]) * data.draw(st.integers(0, 300))).encode()
        for i in range(data.draw(st.integers(1, 8)))
    ]
    stream = b"".join(pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    framer = PduFramer(65535)
    got = []
    for piece in pieces:
        framer.feed(piece if data.draw(st.booleans()) else bytearray(piece))
        if data.draw(st.booleans()):
            while (pdu := framer.next_pdu()) is not None:
                got.append(pdu)
    while (pdu := framer.next_pdu()) is not None:
        got.append(pdu)
    assert got == pdus
    assert all(type(p) is bytes for p in got)
    assert not framer.has_partial


def test_framer_head_names_the_bad_pdu_wherever_it_sits():
    good = ShutdownPdu(call_id=7).encode()
    bad = b"\x05\x00\x00\x03\x10\x00\x00\x00\x00\xf0\x00\x00\x09\x00\x00\x00"
    framer = PduFramer(4280)
    framer.feed(good + bad)  # cut in place
    assert framer.next_pdu() == good
    with pytest.raises(DecodeError):
        framer.next_pdu()
    assert framer.head() == bad


def test_framer_refuses_oversized_fragment_before_buffering_body():
    framer = PduFramer(4280)
    framer.feed(b"\x05\x00\x00\x03\x10\x00\x00\x00\x00\xf0\x00\x00\x01\x00\x00\x00")
    with pytest.raises(DecodeError, match="exceeds"):
        framer.next_pdu()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_give_pdu_or_decode_error(data):
    with contextlib.suppress(DecodeError):
        decode_pdu(data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_pdus(data):
    seeds = [
        impacket_bind(),
        RequestPdu(call_id=1, opnum=2, object_uuid=uuid.UUID(int=1), stub=b"s" * 30).encode(),
        BindAckPdu(results=(ContextResult(0, 0, NDR),), secondary_address="135").encode(),
        FaultPdu(status=5).encode(),
    ]
    raw = bytearray(data.draw(st.sampled_from(seeds)))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(DecodeError):
            decode_pdu(candidate)
        framer = PduFramer(4280)
        framer.feed(candidate)
        try:
            while framer.next_pdu() is not None:
                pass
        except DecodeError:
            pass
