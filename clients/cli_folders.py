"""Folder addressing and the folder commands of ``mapi-cli``: tree, mkdir, rmdir, rename.

Folders are named by path from the IPM subtree ("Top of Information Store"):
``Inbox``, ``Inbox/Projects``. A first component that is a special-folder role
(``inbox``, ``sent``, ``deleted``, ``drafts``...) means that folder wherever it is and
whatever it is called; a leading ``/`` forces a literal path (``/Sent`` is a folder
called "Sent" at the top). ``\\/`` escapes a slash inside a name. The resolver walks
the hierarchy: one round trip per level, in which the level's folder is opened, its
hierarchy table is restricted to the wanted name, queried, and released.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from clients.api import Call, Folder, MapiObject, Props, Session, Store, Table
from clients.cli_format import UsageError, dump_json, render_table
from clients.cli_safety import printable
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs

#: Roles the store knows (``Store.special_folder``), in tree order.
ROLES = (
    "inbox", "outbox", "sent", "deleted", "drafts", "calendar", "contacts", "tasks", "notes",
    "journal", "ipm_subtree", "root",
)  # fmt: skip
ROLE_ALIASES = {"trash": "deleted", "wastebasket": "deleted", "sentitems": "sent"}
#: RopDeleteFolder flags ([MS-OXCFOLD] 2.2.1.3.1).
DEL_MESSAGES = 0x01
DEL_FOLDERS = 0x04
DELETE_HARD_DELETE = 0x10
#: Hierarchy table flag: all descendants, with PR_DEPTH.
CONVENIENT_DEPTH = 0x01
PAGE = 1000


@dataclass
class Context:
    """What every command gets: the session, the store, the special folders, output."""

    session: Session
    store: Store
    roles: dict[str, bytes]
    json: bool = False
    progress: bool = False
    out: TextIO | None = None
    _role_by_id: dict[bytes, str] = field(default_factory=dict)

    def role_of(self, entry_id: bytes) -> str | None:
        """The special-folder role of a folder entry id, if it has one."""
        if not self._role_by_id:
            self._role_by_id = {eid: role for role, eid in self.roles.items()}
        return self._role_by_id.get(entry_id)

    def emit(self, data: Any, text: str | Callable[[], str]) -> None:
        """Print ``data`` as JSON with ``--json``, else ``text``."""
        if self.json:
            self.write(dump_json(data))
        else:
            rendered = text() if callable(text) else text
            if rendered:
                self.write(rendered)

    def write(self, text: str) -> None:
        """Print one line (or block) of output; the last guard against raw control
        characters (commands escape server text themselves, see :mod:`clients.cli_safety`)."""
        out = self.out if self.out is not None else sys.stdout
        out.write(printable(text, multiline=True) + "\n")
        out.flush()


async def open_context(session: Session, **options: Any) -> Context:
    """Open the store and learn every special folder's entry id, in one round trip."""
    store_call = session.open_store()
    role_calls: dict[str, Call[bytes]] = {}
    async with session.batch() as batch:
        store: Store = batch.add(store_call)
        for role in ROLES:
            role_calls[role] = batch.add(store.special_folder(role))
    return Context(session, store, {r: c.result for r, c in role_calls.items()}, **options)


def release_call(*objects: MapiObject) -> Call[None]:
    """A ``release`` of ``objects`` to queue in a batch after their last use."""
    session = objects[0].session
    handles = [obj.handle for obj in objects if obj.handle >= 0]
    for obj in objects:
        obj.handle = -1
    return Call(session, "release", {"handles": handles}, lambda hresult, value: None)


@dataclass
class Resolved:
    """A resolved folder: open, with its entry id and (when known) its parent's."""

    folder: Folder
    entry_id: bytes
    path: str
    parent_id: bytes | None


def split_path(spec: str) -> tuple[str, list[str]]:
    """Split a folder spec into a starting role and path components.

    ``"inbox/Projects"`` -> ``("inbox", ["Projects"])``;
    ``"/A/B"`` -> ``("ipm_subtree", ["A", "B"])``.
    """
    text = spec.strip()
    literal = text.startswith("/")
    parts = [p.replace("\\/", "/") for p in re.split(r"(?<!\\)/", text)]
    segments = [p for p in parts if p]
    if not literal and segments:
        role = segments[0].lower().replace(" ", "")
        role = ROLE_ALIASES.get(role, role)
        if role in ROLES:
            return role, segments[1:]
    return "ipm_subtree", segments


def _name_restriction(name: str) -> dict[str, Any]:
    return {"rt": rs.RES_PROPERTY, "relop": rs.RELOP_EQ, "tag": pt.PR_DISPLAY_NAME, "value": name}


async def find_child(ctx: Context, parent_id: bytes, name: str, where: str) -> bytes:
    """Entry id of the subfolder ``name`` of the folder ``parent_id`` (one round trip).

    Raises:
        NotFound: no such subfolder.
    """
    async with ctx.session.batch() as batch:
        folder: Folder = batch.add(ctx.store.open_folder(parent_id))
        table: Table = batch.add(folder.hierarchy_table())
        batch.add(table.set_columns([pt.PR_ENTRYID, pt.PR_DISPLAY_NAME]))
        batch.add(table.restrict(_name_restriction(name)))
        rows: Call[list[Props]] = batch.add(table.query_rows(10))
        batch.add(release_call(table, folder))
    matches = rows.result
    exact = [r for r in matches if r.get(pt.PR_DISPLAY_NAME) == name]
    if not matches:
        raise errors.NotFound(f"no folder {name!r} in {where}")
    return bytes((exact or matches)[0][pt.PR_ENTRYID])


async def resolve_id(ctx: Context, spec: str) -> tuple[bytes, bytes | None, str]:
    """(entry id, parent entry id or None, display path) of the folder ``spec``.

    The display path keeps the user's spelling of a role (``inbox/Projects``) and is
    empty for the top of the store; either way it is valid input again.
    """
    role, segments = split_path(spec)
    entry_id, parent_id = ctx.roles[role], None
    path = "" if role == "ipm_subtree" else re.split(r"(?<!\\)/", spec.strip())[0]
    for name in segments:
        parent_id = entry_id
        entry_id = await find_child(ctx, entry_id, name, path or "the top of the store")
        escaped = name.replace("/", "\\/")
        path = f"{path}/{escaped}" if path else escaped
    return entry_id, parent_id, path


async def resolve(ctx: Context, spec: str) -> Resolved:
    """Open the folder ``spec`` (see the module docstring).

    Raises:
        NotFound: a component does not exist.
    """
    entry_id, parent_id, path = await resolve_id(ctx, spec)
    folder = await ctx.store.open_folder(entry_id)
    return Resolved(folder, entry_id, path or "/", parent_id)


# --- Commands ---------------------------------------------------------------------------


async def cmd_tree(ctx: Context, args: argparse.Namespace) -> int:
    """The folder tree with item and unread counts."""
    top = await resolve(ctx, args.folder)
    columns = [
        pt.PR_ENTRYID, pt.PR_DISPLAY_NAME, pt.PR_DEPTH, pt.PR_CONTENT_COUNT,
        pt.PR_CONTENT_UNREAD, pt.PR_SUBFOLDERS,
    ]  # fmt: skip
    async with ctx.session.batch() as batch:
        table: Table = batch.add(top.folder.hierarchy_table(CONVENIENT_DEPTH))
        batch.add(table.set_columns(columns))
        first: Call[list[Props]] = batch.add(table.query_rows(PAGE))
    rows = list(first.result)
    if len(rows) == PAGE:
        rows += [row async for row in table.rows(PAGE)]
    await table.release()

    prefix = "" if top.path == "/" else top.path + "/"
    stack: list[str] = []
    folders = []
    for row in rows:
        depth = int(row.get(pt.PR_DEPTH) or 1)
        name = str(row.get(pt.PR_DISPLAY_NAME) or "")
        del stack[depth - 1 :]
        stack.append(name.replace("/", "\\/"))
        eid = bytes(row.get(pt.PR_ENTRYID) or b"")
        folders.append(
            {
                "path": prefix + "/".join(stack),
                "name": name,
                "depth": depth,
                "content_count": row.get(pt.PR_CONTENT_COUNT),
                "content_unread": row.get(pt.PR_CONTENT_UNREAD),
                "subfolders": row.get(pt.PR_SUBFOLDERS),
                "role": ctx.role_of(eid),
                "entry_id": eid.hex(),
            }
        )

    def text() -> str:
        body = [
            [
                "  " * (f["depth"] - 1) + printable(f["name"]),
                str(f["content_count"] or 0),
                str(f["content_unread"] or 0),
                f["role"] or "",
            ]
            for f in folders
        ]
        return render_table(["FOLDER", "ITEMS", "UNREAD", "ROLE"], body, right={1, 2})

    ctx.emit({"folder": top.path, "folders": folders}, text)
    return 0


async def cmd_mkdir(ctx: Context, args: argparse.Namespace) -> int:
    """Create a folder (with ``-p``, every missing folder on the way, in one round trip)."""
    role, segments = split_path(args.path)
    if not segments:
        raise UsageError(f"{args.path!r} names an existing special folder")
    if any(s.strip() in (".", "..") for s in segments):
        # Folder paths are names from the top, not a file system: "." and ".." would
        # create folders literally called so (mkdir -p x/../y makes three folders).
        raise UsageError(f"bad folder path {args.path!r}: no '.' or '..' components")
    if args.parents:
        parent_id, names = ctx.roles[role], segments
    else:
        spec = "/".join(s.replace("/", "\\/") for s in segments[:-1])
        if role != "ipm_subtree":
            spec = f"{role}/{spec}" if spec else role
        elif args.path.strip().startswith("/"):
            spec = "/" + spec
        parent_id = (await resolve_id(ctx, spec))[0]
        names = segments[-1:]
    async with ctx.session.batch() as batch:
        opened = [batch.add(ctx.store.open_folder(parent_id))]
        for name in names:
            opened.append(batch.add(opened[-1].create_folder(name, open_if_exists=args.parents)))
        props: Call[Props] = batch.add(opened[-1].get_props([pt.PR_ENTRYID]))
        batch.add(release_call(*opened))
    entry_id = bytes(props.result[pt.PR_ENTRYID])
    path = args.path.strip().lstrip("/")
    ctx.emit({"created": path, "entry_id": entry_id.hex()}, f"created {path}")
    return 0


async def cmd_rmdir(ctx: Context, args: argparse.Namespace) -> int:
    """Delete a folder: to Deleted Items, or for good with ``--hard``."""
    entry_id, parent_id, path = await resolve_id(ctx, args.path)
    if parent_id is None:
        folder = await ctx.store.open_folder(entry_id)
        props = await folder.get_props([pt.PR_PARENT_ENTRYID])
        await folder.release()
        parent_id = bytes(props[pt.PR_PARENT_ENTRYID])
    flags = (DEL_MESSAGES | DEL_FOLDERS) if args.recursive else 0
    flags |= DELETE_HARD_DELETE if args.hard else 0
    try:
        async with ctx.session.batch() as batch:
            parent: Folder = batch.add(ctx.store.open_folder(parent_id))
            batch.add(parent.delete_folder(entry_id, flags))
            batch.add(release_call(parent))
    except (errors.HasFolders, errors.HasMessages) as exc:
        what = "subfolders" if isinstance(exc, errors.HasFolders) else "messages"
        raise type(exc)(
            f"{path} is not empty (it has {what}); use rmdir -r to delete it with its contents"
        ) from None
    where = "deleted for good" if args.hard else "moved to Deleted Items"
    ctx.emit({"removed": path, "hard": bool(args.hard)}, f"{path}: {where}")
    return 0


async def cmd_rename(ctx: Context, args: argparse.Namespace) -> int:
    """Rename a folder in place."""
    target = await resolve(ctx, args.path)
    await target.folder.rename(args.newname)
    ctx.emit(
        {"renamed": target.path, "name": args.newname, "entry_id": target.entry_id.hex()},
        f"{target.path} -> {args.newname}",
    )
    return 0
