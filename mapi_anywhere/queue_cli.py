"""``mapi-anywhere queue``: what waits in the outbound queue, read from its files.

The queue is ``<data_dir>/queue/``: ``<id>.eml`` (the message) and ``<id>.json`` (its
envelope, :mod:`internet_mail.outbound.state`). This listing only reads them, so it is
safe while ``serve`` runs: it never clears leftovers or moves a damaged envelope aside
(the server does that when it loads the queue); a file that vanishes while it reads
(delivered just now) is left out, and an envelope it cannot read is listed as such.

Each message shows its id, sender (``<>`` for the null sender of a report), size and
when it was queued; each recipient its state (``pending``, ``done``, ``failed``), the
tries so far, when the next try is due and the last reply or error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from internet_mail.outbound.state import PENDING, Envelope, EnvelopeError, RecipientState, decode


@dataclass(frozen=True, slots=True)
class Queued:
    envelope: Envelope
    #: The message's size in bytes (None: its file is missing).
    size: int | None


@dataclass(frozen=True, slots=True)
class Listing:
    messages: list[Queued]
    #: ``(file name, why)`` of envelopes that cannot be read.
    unreadable: list[tuple[str, str]]


def read_queue(queue_dir: Path) -> Listing:
    """The queue's messages, oldest first (see the module docstring)."""
    messages: list[Queued] = []
    unreadable: list[tuple[str, str]] = []
    if not queue_dir.is_dir():
        return Listing(messages, unreadable)
    for path in sorted(queue_dir.glob("*.json")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # delivered (or reported) while we looked
        except OSError as exc:
            unreadable.append((path.name, str(exc)))
            continue
        try:
            envelope = decode(data)
        except EnvelopeError as exc:
            unreadable.append((path.name, str(exc)))
            continue
        try:
            size: int | None = (queue_dir / f"{path.stem}.eml").stat().st_size
        except OSError:
            size = None
        messages.append(Queued(envelope, size))
    messages.sort(key=lambda q: (q.envelope.created, q.envelope.id))
    return Listing(messages, unreadable)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _size(size: int | None) -> str:
    if size is None:
        return "message file missing"
    if size < 1024:
        return f"{size} bytes"
    if size < 1 << 20:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1 << 20):.1f} MB"


def print_text(listing: Listing, out: TextIO, *, now: float) -> None:
    """The listing for people: one block per message, one line per recipient."""
    for queued in listing.messages:
        env = queued.envelope
        print(
            f"{env.id}  from {env.sender or '<>'}  {_size(queued.size)}  "
            f"queued {_when(env.created)}",
            file=out,
        )
        for rcpt in env.recipients:
            due = ""
            if rcpt.status == PENDING:
                due = (
                    "  next try now"
                    if rcpt.next_try <= now
                    else f"  next try {_when(rcpt.next_try)}"
                )
            last = f"  last: {rcpt.reply}" if rcpt.reply else ""
            print(f"  {rcpt.address}  {rcpt.status}  tries {rcpt.attempts}{due}{last}", file=out)
    for name, why in listing.unreadable:
        print(f"{name}: unreadable envelope ({why})", file=out)
    pending = sum(1 for q in listing.messages for r in q.envelope.recipients if r.status == PENDING)
    if not listing.messages and not listing.unreadable:
        print("the outbound queue is empty", file=out)
    else:
        print(
            f"{len(listing.messages)} message(s), {pending} recipient(s) pending"
            + (f", {len(listing.unreadable)} unreadable" if listing.unreadable else ""),
            file=out,
        )


def _recipient(rcpt: RecipientState) -> dict[str, Any]:
    return {
        "address": rcpt.address, "status": rcpt.status, "attempts": rcpt.attempts,
        "next_try": rcpt.next_try if rcpt.status == PENDING else None,
        "last_reply": rcpt.reply, "remote_mta": rcpt.remote_mta,
    }  # fmt: skip


def as_json(listing: Listing) -> dict[str, Any]:
    """The listing for scripts (times in seconds since the epoch)."""
    messages = [
        {
            "id": q.envelope.id,
            "sender": q.envelope.sender,
            "size": q.size,
            "queued": q.envelope.created,
            "recipients": [_recipient(r) for r in q.envelope.recipients],
        }
        for q in listing.messages
    ]
    unreadable = [{"file": name, "error": why} for name, why in listing.unreadable]
    return {"messages": messages, "unreadable": unreadable}


def list_queue(data_dir: Path, out: TextIO, *, json_output: bool = False) -> None:
    """Print ``<data_dir>/queue/``'s contents (text, or JSON for scripts)."""
    listing = read_queue(data_dir / "queue")
    if json_output:
        json.dump(as_json(listing), out, indent=2)
        out.write("\n")
    else:
        print_text(listing, out, now=time.time())


__all__ = ["Listing", "Queued", "as_json", "list_queue", "print_text", "read_queue"]
