"""The in-memory test streams behave as trio streams must (trio's own conformance
checks), and a writer facing a reader that never reads stops at the buffer limit."""

from __future__ import annotations

import trio
import trio.testing
from local_streams import local_stream_pair


async def test_conforms_to_trio_half_closeable_streams():
    async def maker():
        return local_stream_pair(limit=1024)

    await trio.testing.check_half_closeable_stream(maker, None)


async def test_a_reader_that_never_reads_bounds_the_buffer():
    writer, reader = local_stream_pair(limit=4096)
    with trio.move_on_after(0.5) as scope:
        await writer.send_all(b"x" * 1_000_000)
    assert scope.cancelled_caught  # the writer waited: nothing beyond the limit is kept
    assert len(await reader.receive_some()) <= 4096
