"""The durable outbound queue: files in ``<data_dir>/queue/``, fsynced (a driver: file
I/O, a lock shared by threads, the clock).

Theory of operation
-------------------
:meth:`OutboundQueue.enqueue` writes the message to ``tmp/<id>.eml``, fsyncs it and
renames it to ``<id>.eml``; then the envelope (:mod:`internet_mail.outbound.state`) the
same way to ``<id>.json``; then fsyncs the directory. It returns the id only after all
of that, so a message whose ``enqueue`` returned survives a crash (kill -9, power loss
after the fsync). :meth:`save` replaces an envelope atomically (write, fsync, rename,
directory fsync): the runner records a peer's ``250`` this way before it does anything
else, so a restart never delivers an acknowledged message again. :meth:`remove` drops
the envelope first (the commit point), then the bytes.

On start (:meth:`load`) leftovers of an interrupted enqueue (bytes without an envelope,
files in ``tmp/``) are deleted: that enqueue never returned, its caller saw no success.
An envelope that cannot be read is moved to ``corrupt/`` and logged, never retried.

Every method is thread-safe (one lock); ``enqueue`` blocks for the fsyncs and then
calls the wake-up hook (:meth:`set_wakeup`) so the runner looks at the queue at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from internet_mail.outbound.state import (
    ID_PATTERN,
    Envelope,
    EnvelopeError,
    decode,
    encode,
    new_envelope,
)

log = logging.getLogger("internet_mail.outbound")

#: The largest message the queue takes (the store's and SMTP's limits are lower).
MAX_MESSAGE_BYTES = 256 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(tmp: Path, final: Path, data: bytes) -> None:
    """``data`` at ``final``, whole or not at all (the caller fsyncs the directory)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


class OutboundQueue:
    """The queue directory (see the module docstring)."""

    def __init__(self, directory: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self._tmp = self.directory / "tmp"
        self._clock = clock
        self._lock = threading.Lock()
        self._wakeup: Callable[[], None] | None = None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._tmp.mkdir(mode=0o700, exist_ok=True)

    def set_wakeup(self, hook: Callable[[], None] | None) -> None:
        """Call ``hook()`` (from the enqueuing thread) after each enqueue; it must be
        thread-safe (the runner passes a trio token's ``run_sync_soon``)."""
        self._wakeup = hook

    def _paths(self, qid: str) -> tuple[Path, Path]:
        return self.directory / f"{qid}.eml", self.directory / f"{qid}.json"

    def enqueue(self, sender: str, recipients: Sequence[str], data: bytes) -> str:
        """Queue ``data`` for ``recipients`` (forward paths) from ``sender`` (the reverse
        path, ``""`` for ``<>``); returns the queue id once message and envelope are on
        disk (fsynced). Blocking and thread-safe.

        Raises:
            EnvelopeError: no recipients, too many, an address that cannot be used, or
            a message over :data:`MAX_MESSAGE_BYTES`.
        """
        qid = f"{time.time_ns():x}-{secrets.token_hex(6)}"
        return self.enqueue_as(qid, sender, recipients, data)

    def enqueue_as(self, qid: str, sender: str, recipients: Sequence[str], data: bytes) -> str:
        """:meth:`enqueue` with a chosen id; an id already queued is left as it is (so a
        report made again after a crash is queued once)."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise EnvelopeError("message too large for the queue")
        envelope = new_envelope(qid, sender, list(recipients), self._clock())
        eml, env = self._paths(qid)
        with self._lock:
            if env.exists():
                return qid
            _write_durably(self._tmp / eml.name, eml, data)
            _write_durably(self._tmp / env.name, env, encode(envelope))
            _fsync_dir(self.directory)
        hook = self._wakeup
        if hook is not None:
            hook()
        return qid

    def save(self, envelope: Envelope) -> None:
        """Replace the envelope file atomically and durably."""
        _, env = self._paths(envelope.id)
        with self._lock:
            _write_durably(self._tmp / env.name, env, encode(envelope))
            _fsync_dir(self.directory)

    def remove(self, qid: str) -> None:
        """Take a message out of the queue (envelope first: the commit point)."""
        eml, env = self._paths(qid)
        with self._lock:
            env.unlink(missing_ok=True)
            _fsync_dir(self.directory)
            eml.unlink(missing_ok=True)

    def read_data(self, qid: str) -> bytes:
        eml, _ = self._paths(qid)
        return eml.read_bytes()

    def load(self) -> list[Envelope]:
        """Every queued envelope, oldest first, after clearing what interrupted
        enqueues left (see the module docstring)."""
        out = []
        with self._lock:
            for leftover in self._tmp.iterdir():
                leftover.unlink(missing_ok=True)
            for path in sorted(self.directory.glob("*.json")):
                qid = path.stem
                try:
                    if not ID_PATTERN.fullmatch(qid):
                        raise EnvelopeError("not a queue id")
                    envelope = decode(path.read_bytes())
                    if envelope.id != qid or not (self.directory / f"{qid}.eml").is_file():
                        raise EnvelopeError("envelope without its message")
                except (OSError, EnvelopeError) as exc:
                    log.error("queue: unreadable envelope %s moved aside: %s", path.name, exc)
                    corrupt = self.directory / "corrupt"
                    corrupt.mkdir(mode=0o700, exist_ok=True)
                    os.replace(path, corrupt / path.name)
                    continue
                out.append(envelope)
            for eml in self.directory.glob("*.eml"):
                if not (self.directory / f"{eml.stem}.json").exists():
                    eml.unlink(missing_ok=True)  # an enqueue that never returned
        out.sort(key=lambda e: (e.created, e.id))
        return out


__all__ = ["MAX_MESSAGE_BYTES", "OutboundQueue"]
