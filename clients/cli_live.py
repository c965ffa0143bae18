"""``mapi-cli watch`` (events as they arrive) and ``mapi-cli sync`` (mirror a folder).

``watch`` subscribes to a folder (or the whole store) and long-polls; when the
connection is cut it reconnects and *resumes* the session, so no event raised
meanwhile is lost and none is shown twice (the sequence numbers say so); events with
nothing to tell a person (a folder's count updates, the "created" twin of a "new
mail", empty table events) are not shown (:class:`NoiseFilter`). ``sync`` mirrors a
folder's messages into a local directory, one JSON file per message, and keeps it
current with incremental sync: only what changed since the saved state crosses the
wire; ``--follow`` prints a line when something changed, not at every wake-up.
Everything printed from an event is escaped (:mod:`clients.cli_safety`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import trio

from clients.api import Event, ResyncRequired, Session, connect
from clients.cli_folders import Context, resolve
from clients.cli_format import display_name, json_value
from clients.cli_safety import printable, safe_json
from dcerpc.errors import ConnectionClosed
from mapi.model import proptags as pt
from mapi.wire import EventType
from tunnel.errors import TunnelError

#: Every event kind watch subscribes to.
WATCH_MASK = (
    EventType.NEW_MAIL
    | EventType.OBJECT_CREATED
    | EventType.OBJECT_DELETED
    | EventType.OBJECT_MODIFIED
    | EventType.OBJECT_MOVED
    | EventType.OBJECT_COPIED
)
TABLE_EVENTS = {1: "changed", 3: "row added", 4: "row deleted", 5: "row modified",
                9: "reload"}  # fmt: skip
RECONNECT_ATTEMPTS = 10


#: Table events with nothing for a person to read: "something changed, re-read it".
_EMPTY_TABLE_EVENTS = frozenset({1, 9})
#: How many delivered entry ids :class:`NoiseFilter` remembers.
_REMEMBERED = 1024


class NoiseFilter:
    """Decides which events ``watch`` shows: not the empty or internal ones.

    Dropped: a folder's "object modified" (the store raises it whenever a folder's
    counts change, i.e. with every message: the message's own event says what
    happened); the "object created" that follows a "new mail" for the same message
    (one arrival, one line); table events that carry no row ("changed", "reload").
    """

    def __init__(self) -> None:
        self._delivered: dict[bytes, None] = {}  # insertion-ordered, bounded

    def shows(self, event: Event) -> bool:
        """True when ``event`` is worth a line."""
        entry_id = event.get("entry_id")
        if event.name == "new_mail" and isinstance(entry_id, bytes):
            self._delivered[entry_id] = None
            if len(self._delivered) > _REMEMBERED:
                del self._delivered[next(iter(self._delivered))]
            return True
        if event.name == "object_modified" and event.get("object_type") == pt.MAPI_FOLDER:
            return False
        if event.name == "object_created" and entry_id in self._delivered:
            return False
        if event.name == "table_modified":
            kind = int(event.get("table_event", 0))
            return kind not in _EMPTY_TABLE_EVENTS and (kind == 4 or bool(event.get("row")))
        return True


def _describe(event: Event, names: dict[bytes, str]) -> str:
    """One line for an event; everything taken from the event is escaped (untrusted)."""
    parts = [f"#{event.seq}", event.name.replace("_", " ")]
    if event.name == "table_modified":
        parts.append(TABLE_EVENTS.get(int(event.get("table_event", 0)), "?"))
        row = dict(event.get("row") or [])
        if pt.PR_SUBJECT in row:
            parts.append(printable(repr(row[pt.PR_SUBJECT])))
    folder = event.get("parent_id") or event.get("folder_id")
    if isinstance(folder, bytes):
        parts.append(f"in {printable(names.get(folder, folder.hex()[-12:]))}")
    if isinstance(event.get("entry_id"), bytes):
        parts.append(f"entry {event['entry_id'].hex()[-16:]}")
    if "message_class" in event:
        parts.append(printable(event["message_class"]))
    return "  ".join(parts)


def _event_json(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"event": event.name}
    for key, value in event.items():
        if key == "row" and isinstance(value, list):
            out["row"] = {display_name(t): json_value(t, v) for t, v in value}
        else:
            out[key] = value.hex() if isinstance(value, bytes) else value
    return out


async def _reconnect(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace, cut: Session
) -> Session:
    """``cut``'s session resumed on a new connection (entered on ``stack``)."""
    for attempt in range(RECONNECT_ATTEMPTS):
        try:
            return await stack.enter_async_context(
                connect(
                    args.server,
                    args.user,
                    args.password_value,
                    fingerprint=args.fingerprint,
                    http2=not args.http1,
                    resume=cut,
                    auth_level=args.auth_level,
                    auth_type=args.auth_type or "ntlm",
                )
            )
        except (ConnectionClosed, TunnelError, OSError):
            await trio.sleep(min(2**attempt * 0.2, 5))
    raise ConnectionClosed(f"could not reconnect to {args.server}")


async def cmd_watch(ctx: Context, args: argparse.Namespace) -> int:
    """Print events as they arrive; stop after --count events or --duration seconds."""
    names = {eid: role for role, eid in ctx.roles.items()}
    target = None
    if args.folder:
        resolved = await resolve(ctx, args.folder)
        target = resolved.entry_id
        names[target] = resolved.path
    await ctx.store.advise(WATCH_MASK, target)
    if target is not None:
        await ctx.store.advise_table(target, "contents", ["PR_SUBJECT"])

    def emit(data: dict[str, Any], text: str) -> None:
        # JSON lines: one object per event, so a reader can act on each as it comes.
        ctx.write(safe_json(data, compact=True) if ctx.json else text)

    what = args.folder or "the whole store"
    emit({"event": "watching", "folder": what}, f"watching {what} (Ctrl-C to stop)")
    session, seen, noise = ctx.session, 0, NoiseFilter()
    async with contextlib.AsyncExitStack() as reconnections:
        with trio.move_on_after(args.duration) if args.duration else trio.CancelScope():
            while args.count is None or seen < args.count:
                try:
                    events = await session.wait_for_events(poll_seconds=25)
                except ResyncRequired:
                    emit({"event": "resync_required"}, "events were lost: resync needed")
                    continue
                except (ConnectionClosed, TunnelError):
                    emit({"event": "reconnecting"}, "connection lost: reconnecting")
                    session = await _reconnect(reconnections, args, session)
                    continue
                shown = [e for e in events if noise.shows(e)]
                for event in shown[: None if args.count is None else args.count - seen]:
                    emit(_event_json(event), _describe(event, names))
                    seen += 1
    return 0


# -- sync ----------------------------------------------------------------------------------

SYNC_PROPS = [
    pt.PR_SUBJECT, pt.PR_SENDER_NAME, pt.PR_MESSAGE_DELIVERY_TIME, pt.PR_MESSAGE_SIZE,
    pt.PR_MESSAGE_FLAGS, pt.PR_MESSAGE_CLASS, pt.PR_BODY,
]  # fmt: skip
STATE_FILE = ".mapi-sync-state"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _apply_page(directory: Path, page: Any) -> tuple[int, int]:
    """Write one sync page into ``directory``; returns (changed, deleted) counts."""
    for entry_id, change_key, props in page.changed:
        doc = {display_name(t): json_value(t, v) for t, v in props.items()}
        doc["entry_id"] = entry_id.hex()
        doc["change_key"] = change_key.hex()
        _write_atomically(directory / f"{entry_id.hex()}.json",
                          json.dumps(doc, indent=1, sort_keys=True).encode())  # fmt: skip
    for entry_id in page.deleted:
        (directory / f"{entry_id.hex()}.json").unlink(missing_ok=True)
    for entry_id, read in page.read_changed:
        path = directory / f"{entry_id.hex()}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            flags = int(doc.get("PR_MESSAGE_FLAGS") or 0)
            doc["PR_MESSAGE_FLAGS"] = flags | 1 if read else flags & ~1
            _write_atomically(path, json.dumps(doc, indent=1, sort_keys=True).encode())
    _write_atomically(directory / STATE_FILE, page.state)
    return len(page.changed) + len(page.read_changed), len(page.deleted)


async def _sync_once(folder: Any, directory: Path) -> tuple[int, int]:
    state_path = directory / STATE_FILE
    state = await trio.to_thread.run_sync(
        lambda: state_path.read_bytes() if state_path.exists() else None
    )
    changed = deleted = 0
    while True:
        page = await folder.sync_contents(state, SYNC_PROPS)
        c, d = await trio.to_thread.run_sync(_apply_page, directory, page)
        changed, deleted, state = changed + c, deleted + d, page.state
        if not page.more:
            return changed, deleted


async def cmd_sync(ctx: Context, args: argparse.Namespace) -> int:
    """Mirror a folder into a directory; with --follow, keep it current until stopped."""
    directory = Path(args.directory)
    await trio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
    resolved = await resolve(ctx, args.folder)
    if args.follow:
        await ctx.store.advise(WATCH_MASK, resolved.entry_id)
    first = True
    with trio.move_on_after(args.duration) if args.duration else trio.CancelScope():
        while True:
            changed, deleted = await _sync_once(resolved.folder, directory)
            if first or changed or deleted:  # following: a line per change, not per wake-up
                ctx.emit(
                    {"folder": resolved.path, "changed": changed, "deleted": deleted},
                    f"{resolved.path} -> {directory}: {changed} new or changed, {deleted} deleted",
                )
            first = False
            if not args.follow:
                return 0
            # Wait until something changes (or the long-poll times out: sync anyway).
            with contextlib.suppress(ResyncRequired):
                await ctx.session.wait_for_events(poll_seconds=25)
    return 0
