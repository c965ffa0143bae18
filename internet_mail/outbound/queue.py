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

A caller that may hand the same message in twice (a MAPI submission made again after
a crash between its hand-off and its filing; an SMTP client retrying after a lost
``250``) gives a ``key``: the first enqueue with a key records it in ``keys/`` (after
the message, so a crash in between gives at worst a second copy, never a lost one),
and a later enqueue with that key returns the first one's id without queueing. Keys
are kept :data:`KEY_SECONDS` (longer than any retry), then forgotten at a start.

On start (:meth:`load`) leftovers of an interrupted enqueue (bytes without an envelope,
files in ``tmp/``) are deleted: that enqueue never returned, its caller saw no success.
An envelope that cannot be read is moved to ``corrupt/`` and logged, never retried.

Every method is thread-safe (one lock); ``enqueue`` blocks for the fsyncs and then
calls the wake-up hook (:meth:`set_wakeup`) so the runner looks at the queue at once.
"""

from __future__ import annotations

import hashlib
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
#: How long an enqueue key is remembered (seconds): well past the expiry of any
#: message, so a retry of a message still being delivered, or long delivered, queues
#: nothing.
KEY_SECONDS = 14 * 86400.0


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
        self._keys = self.directory / "keys"
        self._clock = clock
        self._lock = threading.Lock()
        self._wakeup: Callable[[], None] | None = None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._tmp.mkdir(mode=0o700, exist_ok=True)
        self._keys.mkdir(mode=0o700, exist_ok=True)

    def set_wakeup(self, hook: Callable[[], None] | None) -> None:
        """Call ``hook()`` (from the enqueuing thread) after each enqueue; it must be
        thread-safe (the runner passes a trio token's ``run_sync_soon``)."""
        self._wakeup = hook

    def _paths(self, qid: str) -> tuple[Path, Path]:
        return self.directory / f"{qid}.eml", self.directory / f"{qid}.json"

    def enqueue(
        self, sender: str, recipients: Sequence[str], data: bytes, *, key: bytes | None = None
    ) -> str:
        """Queue ``data`` for ``recipients`` (forward paths) from ``sender`` (the reverse
        path, ``""`` for ``<>``); returns the queue id once message and envelope are on
        disk (fsynced). Blocking and thread-safe. With ``key``, a message queued with the
        same key before (in the last :data:`KEY_SECONDS`) is not queued again: its id is
        returned.

        Raises:
            EnvelopeError: no recipients, too many, an address that cannot be used, or
            a message over :data:`MAX_MESSAGE_BYTES`.
        """
        if key is None:
            qid = f"{time.time_ns():x}-{secrets.token_hex(6)}"
            return self.enqueue_as(qid, sender, recipients, data)
        marker = self._keys / hashlib.sha256(key).hexdigest()
        with self._lock:
            try:
                return marker.read_text("ascii").strip()
            except FileNotFoundError:
                pass
            qid = f"{time.time_ns():x}-{secrets.token_hex(6)}"
            self._enqueue_locked(qid, sender, recipients, data)
            _write_durably(self._tmp / marker.name, marker, qid.encode("ascii"))
            _fsync_dir(self._keys)
        self._wake()
        return qid

    def enqueue_as(self, qid: str, sender: str, recipients: Sequence[str], data: bytes) -> str:
        """:meth:`enqueue` with a chosen id; an id already queued is left as it is (so a
        report made again after a crash is queued once)."""
        with self._lock:
            self._enqueue_locked(qid, sender, recipients, data)
        self._wake()
        return qid

    def _enqueue_locked(
        self, qid: str, sender: str, recipients: Sequence[str], data: bytes
    ) -> None:
        if len(data) > MAX_MESSAGE_BYTES:
            raise EnvelopeError("message too large for the queue")
        envelope = new_envelope(qid, sender, list(recipients), self._clock())
        eml, env = self._paths(qid)
        if env.exists():
            return
        _write_durably(self._tmp / eml.name, eml, data)
        _write_durably(self._tmp / env.name, env, encode(envelope))
        _fsync_dir(self.directory)

    def _wake(self) -> None:
        hook = self._wakeup
        if hook is not None:
            hook()

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
            forget_before = self._clock() - KEY_SECONDS
            for marker in self._keys.iterdir():
                try:
                    if marker.stat().st_mtime < forget_before:
                        marker.unlink(missing_ok=True)
                except OSError:
                    continue
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


__all__ = ["KEY_SECONDS", "MAX_MESSAGE_BYTES", "OutboundQueue"]
