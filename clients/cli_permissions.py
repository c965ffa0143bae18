"""Folder sharing commands of ``mapi-cli``: share, permissions.

``share FOLDER USER ROLE`` grants USER (a login name, an e-mail address, or
``default`` for every other user) a role on one of your folders; ``share FOLDER USER
none`` takes it back. Roles are Exchange's ([MS-OXCPERM] rights, see
:data:`mapi.model.rights.ROLES`): owner, publishing_editor, editor, publishing_author,
author, nonediting_author, reviewer, contributor, none; a rights mask (``0x401``)
works too. Permissions are per folder and not inherited: to let someone read a
subfolder, share it as well. The other user then opens your mailbox with
``Session.open_store("you")``.

``permissions FOLDER`` lists a folder's members with their role and rights mask.
Both take one round trip after the folder is found (:mod:`clients.cli_folders`).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from clients.api import Call
from clients.cli_folders import Context, release_call, resolve
from clients.cli_format import UsageError, render_table
from mapi.model import errors
from mapi.model.rights import ROLES, parse_rights, role_name

Command = Callable[[Context, argparse.Namespace], Awaitable[int]]

ROLE_HELP = ", ".join(ROLES) + ", or a rights mask like 0x401"


def add_permission_commands(
    command: Callable[..., argparse.ArgumentParser], commands: dict[str, Command]
) -> None:
    """Add ``share`` and ``permissions`` to the parser (``command`` makes a subparser,
    as :func:`clients.cli.build_parser` does) and to its command table."""
    cmd = command("share", "give a user a role on one of your folders ('none' takes it back)")
    cmd.add_argument("folder")
    cmd.add_argument("member", metavar="USER", help="login name, e-mail address, or 'default'")
    cmd.add_argument("role", help=ROLE_HELP)
    cmd = command("permissions", "list who may do what in one of your folders")
    cmd.add_argument("folder")
    commands["share"] = cmd_share
    commands["permissions"] = cmd_permissions


def _rights(text: str) -> int:
    try:
        return parse_rights(text)
    except errors.InvalidParameter as exc:
        raise UsageError(str(exc).removeprefix("MAPI_E_INVALID_PARAMETER: ")) from None


async def cmd_share(ctx: Context, args: argparse.Namespace) -> int:
    """Set (or with role none, remove) a member's rights on a folder."""
    rights = _rights(args.role)
    target = await resolve(ctx, args.folder)
    async with ctx.session.batch() as batch:
        batch.add(target.folder.set_permission(args.member, rights))
        batch.add(release_call(target.folder))
    role = role_name(rights)
    data = {"folder": target.path, "member": args.member, "role": role, "rights": rights}
    if rights:
        text = f"{target.path}: {args.member} is {role} (rights 0x{rights:X})"
    else:
        text = f"{target.path}: {args.member} has no access any more"
    ctx.emit(data, text)
    return 0


async def cmd_permissions(ctx: Context, args: argparse.Namespace) -> int:
    """A folder's members, their roles and rights."""
    target = await resolve(ctx, args.folder)
    async with ctx.session.batch() as batch:
        rows: Call[list[list[Any]]] = batch.add(target.folder.get_permissions())
        batch.add(release_call(target.folder))
    members: list[dict[str, Any]] = []
    for row in rows.result:
        member_id, rights = str(row[0]), int(row[1])
        name = row[2] if len(row) > 2 else member_id  # an older server sends ids only
        members.append(
            {
                "member": name,
                "id": member_id,
                "role": role_name(rights),
                "rights": rights,
            }
        )

    def text() -> str:
        if not members:
            return f"{target.path}: not shared"
        body = [
            [
                m["member"] if m["member"] is not None else f"(deleted user {m['id']})",
                m["role"],
                f"0x{m['rights']:X}",
            ]
            for m in members
        ]
        return render_table(["MEMBER", "ROLE", "RIGHTS"], body, right=set())

    ctx.emit({"folder": target.path, "members": members}, text)
    return 0
