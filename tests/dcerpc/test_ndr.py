"""NDR32 codec: exact bytes, both byte orders, impacket's encodings, limits, fuzzing."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import dtypes
from impacket.dcerpc.v5.ndr import NDRCALL

from dcerpc.errors import NdrError
from dcerpc.ndr import (
    NULL_HANDLE,
    ContextHandle,
    NdrReader,
    NdrWriter,
    byteorder_from_drep,
)
from dcerpc.syntax import NDR

U = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")


def test_primitives_align_to_their_size_relative_to_stub_start():
    w = NdrWriter()
    w.u8(1)
    w.u16(0x0203)
    w.u8(4)
    w.u32(0x05060708)
    w.u8(9)
    w.u64(0x0A)
    assert w.getvalue() == bytes.fromhex("01 00 0302 04 000000 08070605 09 000000 0a00000000000000")


def test_uuid_syntax_id_and_context_handle_are_bytes_le_and_aligned():
    w = NdrWriter()
    w.u8(0xFF)
    w.uuid(U)
    w.syntax_id(NDR)
    w.context_handle(ContextHandle(7, U))
    data = w.getvalue()
    assert data[:4] == b"\xff\x00\x00\x00"
    assert data[4:20] == U.bytes_le
    assert data[20:40] == NDR.uuid.bytes_le + b"\x02\x00\x00\x00"
    assert data[40:] == b"\x07\x00\x00\x00" + U.bytes_le
    r = NdrReader(data)
    assert r.u8() == 0xFF
    assert r.uuid() == U
    assert r.syntax_id() == NDR
    assert r.context_handle() == ContextHandle(7, U)
    assert r.remaining == 0


def test_referent_ids_increment_from_one_and_null_is_zero():
    w = NdrWriter()
    assert w.pointer(True)
    assert not w.pointer(False)
    w.pointer(True)
    w.unique(None, NdrWriter.u32)
    w.unique(0xAB, NdrWriter.u32)
    assert struct.unpack("<6I", w.getvalue()) == (1, 0, 2, 0, 3, 0xAB)
    r = NdrReader(w.getvalue())
    assert [r.pointer(), r.pointer(), r.pointer()] == [1, 0, 2]
    assert r.unique(NdrReader.u32) is None
    assert r.unique(NdrReader.u32) == 0xAB


def test_deferred_pointees_follow_in_order_and_nested_ones_follow_their_parent():
    w = NdrWriter()

    def outer(w: NdrWriter) -> None:
        w.u32(0xA0)
        w.defer(lambda w: w.u32(0xA1))

    w.defer(outer)
    w.defer(lambda w: w.u32(0xB0))
    w.u32(0x11)
    with pytest.raises(ValueError):
        w.getvalue()  # unflushed pointees are a bug on our side
    w.flush_deferred()
    assert struct.unpack("<4I", w.getvalue()) == (0x11, 0xA0, 0xA1, 0xB0)


def test_wide_string_matches_impacket_wstr():
    ours = NdrWriter()
    ours.string("Ab\u00e9", wide=True)
    theirs = dtypes.WSTR()
    theirs["Data"] = "Ab\u00e9\x00"
    assert ours.getvalue() == theirs.getData()
    assert ours.getvalue() == struct.pack("<3I", 4, 0, 4) + "Ab\u00e9\x00".encode("utf-16-le")
    assert NdrReader(ours.getvalue()).string(wide=True) == "Ab\u00e9"


def test_char_string_counts_include_the_nul_and_max_count_may_be_larger():
    w = NdrWriter()
    w.string("host", max_count=10)
    assert w.getvalue() == struct.pack("<3I", 10, 0, 5) + b"host\x00"
    assert NdrReader(w.getvalue()).string() == "host"
    with pytest.raises(ValueError):
        NdrWriter().string("too long", max_count=3)


def test_varying_string_has_no_conformance():
    w = NdrWriter()
    w.varying_string("epm")
    assert w.getvalue() == struct.pack("<2I", 0, 4) + b"epm\x00"
    assert NdrReader(w.getvalue()).varying_string(max_count=64) == "epm"


class _DwordArrayCall(NDRCALL):
    """A top-level conformant array parameter, as impacket marshals it."""

    structure = (("arr", dtypes.DWORD_ARRAY),)


def test_conformant_array_matches_impacket_dword_array():
    ours = NdrWriter()
    ours.conformant_array([1, 2, 0xFFFFFFFF], NdrWriter.u32)
    theirs = _DwordArrayCall()
    theirs["arr"] = [1, 2, 0xFFFFFFFF]
    assert ours.getvalue() == theirs.getData()
    assert _DwordArrayCall(ours.getvalue())["arr"] == [1, 2, 0xFFFFFFFF]
    assert NdrReader(ours.getvalue()).conformant_array(NdrReader.u32, 4) == [1, 2, 0xFFFFFFFF]


def test_conformant_varying_array_round_trip_and_bounds():
    w = NdrWriter()
    w.conformant_varying_array([7, 8], NdrWriter.u16, max_count=5)
    assert w.getvalue() == struct.pack("<3I2H", 5, 0, 2, 7, 8)
    assert NdrReader(w.getvalue()).conformant_varying_array(NdrReader.u16, 2) == [7, 8]
    with pytest.raises(ValueError):
        NdrWriter().conformant_varying_array([1, 2], NdrWriter.u16, max_count=1)


def test_big_endian_input_is_read_in_its_own_order():
    data = struct.pack(">HxxI", 0x1234, 0xDEADBEEF) + struct.pack(">I", 9) + U.bytes
    r = NdrReader(data, ">")
    assert r.u16() == 0x1234
    assert r.u32() == 0xDEADBEEF
    assert r.context_handle() == ContextHandle(9, U)
    wide = struct.pack(">3I", 3, 0, 3) + "hi\x00".encode("utf-16-be")
    assert NdrReader(wide, ">").string(wide=True) == "hi"


def test_byteorder_from_drep():
    assert byteorder_from_drep(b"\x10\x00\x00\x00") == "<"
    assert byteorder_from_drep(b"\x00\x00\x00\x00") == ">"
    with pytest.raises(NdrError):
        byteorder_from_drep(b"")


def test_null_handle():
    assert NULL_HANDLE.is_null
    assert not ContextHandle(0, U).is_null
    assert NdrReader(bytes(20)).context_handle() == NULL_HANDLE


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (b"\x01\x00\x00", NdrReader.u32),
        (b"\x01", lambda r: (r.u8(), r.u16())),  # padding itself is missing
        (bytes(19), NdrReader.context_handle),
        (bytes(15), NdrReader.uuid),
        # max_count larger than the bytes that follow: refused before allocating
        (struct.pack("<I", 0xFFFFFFFF), lambda r: r.conformant_array(NdrReader.u32, 4)),
        (struct.pack("<I", 3) + bytes(8), lambda r: r.conformant_array(NdrReader.u32, 4)),
        # above the caller's limit even though the bytes are there
        (struct.pack("<I", 3) + bytes(12), lambda r: r.conformant_array(NdrReader.u32, 4, 2)),
        # offset + actual_count beyond max_count
        (
            struct.pack("<3I", 2, 1, 2) + bytes(8),
            lambda r: r.conformant_varying_array(NdrReader.u32, 4),
        ),
        (
            struct.pack("<3I", 2, 0, 3) + bytes(12),
            lambda r: r.conformant_varying_array(NdrReader.u32, 4),
        ),
        (struct.pack("<3I", 3, 0, 3) + b"abc", lambda r: r.string()),  # no NUL
        (struct.pack("<3I", 3, 0, 2) + b"a\x00\x00", lambda r: r.string(wide=True)),
        (struct.pack("<2I", 0, 65) + bytes(65), lambda r: r.varying_string(max_count=64)),
        (struct.pack("<3I", 70000, 0, 1) + b"\x00", lambda r: r.string()),
    ],
)
def test_bad_input_raises_ndr_error(data, read):
    with pytest.raises(NdrError):
        read(NdrReader(data))


def test_expect_end():
    r = NdrReader(b"\x01\x00\x00\x00\x02")
    r.u32()
    with pytest.raises(NdrError):
        r.expect_end()
    r.u8()
    r.expect_end()


_READS = [
    NdrReader.u8,
    NdrReader.u16,
    NdrReader.u32,
    NdrReader.u64,
    NdrReader.uuid,
    NdrReader.syntax_id,
    NdrReader.context_handle,
    NdrReader.pointer,
    lambda r: r.string(),
    lambda r: r.string(wide=True),
    lambda r: r.varying_string(max_count=64),
    lambda r: r.conformant_array(NdrReader.u32, 4),
    lambda r: r.conformant_varying_array(NdrReader.syntax_id, 20),
    lambda r: r.varying_array(NdrReader.u16, 2),
]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200),
    ops=st.lists(st.integers(0, len(_READS) - 1), max_size=12),
    byteorder=st.sampled_from(["<", ">"]),
)
def test_fuzz_reader_gives_values_or_ndr_error(data, ops, byteorder):
    r = NdrReader(data, byteorder)
    try:
        for op in ops:
            _READS[op](r)
    except NdrError:
        pass
    assert 0 <= r.pos <= len(data)


@settings(max_examples=200, deadline=None)
@given(
    numbers=st.lists(st.integers(0, 2**32 - 1), max_size=20),
    text=st.text(st.characters(codec="latin-1", exclude_characters="\x00"), max_size=30),
    wide=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30),
    handle=st.uuids(),
    big=st.integers(0, 2**64 - 1),
)
def test_round_trip(numbers, text, wide, handle, big):
    w = NdrWriter()
    w.u8(3)
    w.u64(big)
    w.string(text)
    w.conformant_varying_array(numbers, NdrWriter.u32)
    w.string(wide, wide=True)
    w.context_handle(ContextHandle(0, handle))
    r = NdrReader(w.getvalue())
    assert r.u8() == 3
    assert r.u64() == big
    assert r.string() == text
    assert r.conformant_varying_array(NdrReader.u32, 4) == numbers
    assert r.string(wide=True) == wide
    assert r.context_handle() == ContextHandle(0, handle)
    r.expect_end()
