"""The tunnel's end of a virtual connection's backend: where the client's RPC bytes go
and where the server's PDUs come from.

Two kinds, one interface (:class:`Backend`):

- :class:`StreamBackend`: a byte stream to the target (TCP, or any
  ``HalfCloseableStream``); :meth:`~Backend.relay` reads it in its own task.
- :class:`AttachedBackend`: a service of this very process (``serve`` runs the
  endpoint mapper, the store and the tunnel together), attached without a stream
  (:meth:`dcerpc.server.RpcServer.attach`). The task that sends the client's bytes also
  runs the calls answered at once and hands their replies to ``deliver``: no byte-stream
  pair, no server reading task, no backend reader, hence two task switches fewer per
  call than a stream.

``deliver`` is the relay's sink (the OUT writer's queue for HTTP/1.1, the h2 stream's
DATA for HTTP/2). It may wait, which is the backpressure: a client that does not read
stops the server's replies, then the reads of its requests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from dcerpc.errors import DecodeError
from dcerpc.framing import PduFramer

log = logging.getLogger("tunnel")

#: Takes PDUs (``framed``) or stream bytes for the client, in order; may wait.
Deliver = Callable[[list[bytes]], Awaitable[None]]

#: What an ``ncacn_http`` endpoint sends first; an ``ncacn_ip_tcp`` one does not.
GREETING = b"ncacn_http/1.0"


class AttachedService(Protocol):
    """An in-process service's connection (:class:`dcerpc.server.AttachedConnection`)."""

    closed: trio.Event

    async def receive_data(self, data: bytes | bytearray) -> None: ...

    async def serve_timeouts(self) -> None: ...

    async def aclose(self) -> None: ...


class LocalService(Protocol):
    """A service of this process the tunnel may attach to (:class:`dcerpc.server.RpcServer`)."""

    def attach(
        self,
        nursery: trio.Nursery,
        deliver: Deliver,
        *,
        peer: tuple[str, int] | None = None,
        proxy_user: str | None = None,
    ) -> AttachedService: ...


class Backend(trio.abc.AsyncResource):
    """One virtual connection's backend."""

    #: True for an in-process service: :meth:`send_all` runs calls, whose replies
    #: reach ``deliver`` from the sending task, so that ``deliver`` must never wait for
    #: something only that task could bring (an HTTP/1.1 relay holds the client's
    #: PDUs back instead, see :mod:`tunnel.drivers.h1_vc`).
    attached = False

    async def send_all(self, data: bytes | bytearray) -> None:
        """Forward the client's bytes (the caller bounds the time).

        Raises:
            trio.BrokenResourceError: the backend is gone.
        """
        raise NotImplementedError

    async def send_eof(self) -> None:
        """The client will send nothing more."""
        raise NotImplementedError

    async def relay(self, deliver: Deliver, *, framed: bool) -> None:
        """Hand everything the backend sends to ``deliver`` until it closes: whole PDUs
        when ``framed`` (a leading ``ncacn_http`` greeting dropped), else bytes as they
        come. Returns when the backend closed or broke; ``deliver``'s errors propagate.
        """
        raise NotImplementedError


class StreamBackend(Backend):
    """A backend reached through a byte stream."""

    def __init__(
        self, stream: trio.abc.HalfCloseableStream, *, max_fragment: int, receive_size: int
    ) -> None:
        self.stream = stream
        self._max_fragment = max_fragment
        self._receive_size = receive_size

    async def send_all(self, data: bytes | bytearray) -> None:
        await self.stream.send_all(data)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def relay(self, deliver: Deliver, *, framed: bool) -> None:
        try:
            if framed:
                await self._relay_pdus(deliver)
            else:
                while data := await self.stream.receive_some(self._receive_size):
                    await deliver([bytes(data)])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _relay_pdus(self, deliver: Deliver) -> None:
        framer = PduFramer(self._max_fragment)
        head = b""
        greeting_checked = False
        while data := await self.stream.receive_some(self._receive_size):
            if not greeting_checked:
                head += data
                if len(head) < len(GREETING) and GREETING.startswith(head):
                    continue
                data, greeting_checked = head.removeprefix(GREETING), True
            framer.feed(data)
            pdus: list[bytes] = []
            bad: DecodeError | None = None
            try:
                while (pdu := framer.next_pdu()) is not None:
                    pdus.append(pdu)
            except DecodeError as exc:
                bad = exc
            if pdus:
                await deliver(pdus)
            if bad is not None:
                log.warning("backend sent a bad PDU: %s", bad)
                return


class AttachedBackend(Backend):
    """A service of this process, attached without a stream.

    ``proxy_user`` is the user the tunnel authenticated; the service's handlers see it
    (``RpcServer.attach(proxy_user=)``). :meth:`send_all` waits only for what
    ``deliver`` waits for. Replies produced
    before :meth:`relay` gave a sink wait for it (the drivers start the relay with the
    virtual connection, before the client's first PDU can arrive).
    """

    attached = True

    def __init__(
        self,
        service: LocalService,
        nursery: trio.Nursery,
        peer: tuple[str, int] | None = None,
        *,
        proxy_user: str | None = None,
    ) -> None:
        self._sink: Deliver | None = None
        self._sink_ready = trio.Event()
        self._conn = service.attach(nursery, self._deliver, peer=peer, proxy_user=proxy_user)

    async def _deliver(self, pdus: list[bytes]) -> None:
        if self._sink is None:
            await self._sink_ready.wait()
        assert self._sink is not None
        await self._sink(pdus)

    async def send_all(self, data: bytes | bytearray) -> None:
        if data:
            await self._conn.receive_data(data)
        else:
            await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await self._conn.aclose()

    async def aclose(self) -> None:
        await self._conn.aclose()

    async def relay(self, deliver: Deliver, *, framed: bool) -> None:
        # The service delivers whole PDUs, and no greeting, either way. Its idle and
        # receive timeouts run here, for as long as the relay does.
        self._sink = deliver
        self._sink_ready.set()
        await self._conn.serve_timeouts()
