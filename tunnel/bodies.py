"""Channel bodies counted past h11 ([MS-RPCH] 2.1.2.1.1, 2.1.2.1.2; [RFC 9112] 6.2, 6.3).

Theory of operation
-------------------
Each channel of an MS-RPCH virtual connection is one HTTP/1.1 message with a long,
Content-Length framed body: the client's ``RPC_IN_DATA`` request and the proxy's
``200 Success`` answer to ``RPC_OUT_DATA`` (1 GiB each by default). h11 parses the
heads. For such a body it would only count bytes, at a few microseconds per read and
per write, per small call; so both ends of a channel count the body themselves once
its head is through (the proxy's :class:`tunnel.channel.ServerChannel`, the client's
:class:`tunnel.client_channel.ClientChannel`):

* :class:`BodyWriter` counts the bytes we send against the Content-Length we
  announced; h11 never sees them.
* :class:`BodyReader` counts the bytes the peer sends: first what h11 delivers as
  ``Data`` (whatever arrived with the head sits in h11's buffer), then, once h11 needs
  data inside the body (:meth:`BodyReader.bypass`), the rest, cut at the end of the
  body without h11.

Nothing may follow such a body on its connection: MS-RPCH recycles channels on new
connections, and h11, which never saw the body's bytes, could not parse a next message
anyway. :meth:`BodyReader.split` hands the bytes past the end back for the caller to
refuse. A body is counted here only when Content-Length alone frames it
(:func:`framing_length`): with Transfer-Encoding too, h11 reads chunks (RFC 9112 6.3)
and keeps the body.

Pure bookkeeping: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import h11


def framing_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length that frames a message with these (lower-cased) headers, or
    None when h11 must frame the body (no Content-Length, a malformed one, or
    Transfer-Encoding too)."""
    length = headers.get("content-length", "")
    if "transfer-encoding" in headers or not length.isdigit():
        return None
    return int(length)


class BodyWriter:
    """The rest of a body we send past h11."""

    __slots__ = ("left",)

    def __init__(self, content_length: int) -> None:
        #: Body bytes we may still send.
        self.left = content_length

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes; False (nothing counted) when they would pass the
        Content-Length."""
        if size > self.left:
            return False
        self.left -= size
        return True


class BodyReader:
    """A body the peer sends, counted past h11 once h11's buffer is drained."""

    __slots__ = ("left", "length", "seen")

    def __init__(self, content_length: int | None) -> None:
        #: The Content-Length that frames the body (None: h11 frames it, see
        #: :func:`framing_length`; it is never bypassed).
        self.length = content_length
        #: Body bytes h11 delivered.
        self.seen = 0
        #: Once bypassing h11: the body bytes still to come (0: the body is complete).
        self.left: int | None = None

    @property
    def bypassing(self) -> bool:
        """True once the body's bytes go to :meth:`split`, not to h11."""
        return self.left is not None

    def delivered(self, size: int) -> None:
        """h11 delivered ``size`` bytes of the body as ``Data``."""
        self.seen += size

    def bypass(self, conn: h11.Connection) -> bool:
        """Call when ``conn`` needs data: from now on, if it can, the body goes around
        h11 (it is inside the body, and Content-Length alone frames it). True when the
        caller must pass the body's bytes to :meth:`split`."""
        if self.left is None and self.length is not None and conn.their_state is h11.SEND_BODY:
            self.left = self.length - self.seen
        return self.left is not None

    def finish(self) -> None:
        """h11 delivered the whole body (it came with the head): what follows goes
        around h11 too, to be refused."""
        self.left = 0

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """Received bytes, cut into the body's part (counted) and what follows the body."""
        assert self.left is not None, "split before bypass"
        if len(data) <= self.left:
            self.left -= len(data)
            return data, b""
        body, extra = data[: self.left], data[self.left :]
        self.left = 0
        return body, extra
