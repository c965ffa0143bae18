"""Cut a byte stream into whole PDUs without trusting the peer's lengths.

The common header's ``frag_length`` frames CO PDUs on a stream transport
([C706] 12.6.1). :class:`PduFramer` validates each header as soon as its 16 bytes
are in, so a hostile ``frag_length`` is refused before any byte of its body is
buffered; at most one fragment (bounded by ``max_fragment``) is ever held.
"""

from __future__ import annotations

from dcerpc.pdu import HEADER_SIZE, frame_length


class PduFramer:
    """Accumulates received bytes and yields complete PDUs."""

    __slots__ = ("_buffer", "max_fragment")

    def __init__(self, max_fragment: int) -> None:
        self._buffer = bytearray()
        self.max_fragment = max_fragment

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def next_pdu(self) -> bytes | None:
        """The next complete PDU, or None when more bytes are needed.

        Raises:
            DecodeError: the next header is invalid or announces an oversized fragment.
        """
        buffer = self._buffer
        if len(buffer) < HEADER_SIZE:
            return None
        size = frame_length(buffer, self.max_fragment)
        if len(buffer) < size:
            return None
        if len(buffer) == size:  # the usual case: the read ended with the PDU
            pdu = bytes(buffer)
            buffer.clear()
            return pdu
        with memoryview(buffer) as view:  # one copy (a slice of the bytearray is two)
            pdu = bytes(view[:size])
        del buffer[:size]
        return pdu

    def head(self) -> bytes:
        """The buffered start of the next PDU (at most its header), for error replies."""
        return bytes(self._buffer[:HEADER_SIZE])

    @property
    def has_partial(self) -> bool:
        """True while part of a PDU is buffered (the driver then bounds the wait)."""
        return bool(self._buffer)
