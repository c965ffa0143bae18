"""Folder rights: the [MS-OXCPERM] 2.2.7 ``PidTagMemberRights`` bits and the roles.

A value of the property model, shared by the store (:mod:`mapi.access.permissions` keeps
the per-folder ACL and checks it) and clients (``mapi-cli share``): the roles
clients offer are fixed combinations of the bits, Exchange's (:data:`ROLES`).
"""

from __future__ import annotations

from typing import Final

from mapi.model import errors

READ_ANY: Final = 0x00000001
CREATE: Final = 0x00000002
EDIT_OWNED: Final = 0x00000008
DELETE_OWNED: Final = 0x00000010
EDIT_ANY: Final = 0x00000020
DELETE_ANY: Final = 0x00000040
CREATE_SUBFOLDER: Final = 0x00000080
FOLDER_OWNER: Final = 0x00000100
FOLDER_CONTACT: Final = 0x00000200
FOLDER_VISIBLE: Final = 0x00000400
ALL_RIGHTS: Final = 0x000007FB

#: Exchange's roles, most rights first. The "author" roles' own-item rights grant
#: nothing more than their other bits in this store (see :mod:`mapi.access.permissions`).
ROLES: Final[dict[str, int]] = {
    "owner": 0x000007FB,
    "publishing_editor": 0x000004FB,
    "editor": 0x0000047B,
    "publishing_author": 0x0000049B,
    "author": 0x0000041B,
    "nonediting_author": 0x00000413,
    "reviewer": 0x00000401,
    "contributor": 0x00000402,
    "none": 0x00000000,
}


def role_name(rights: int) -> str:
    """The role whose rights are exactly ``rights``, else "custom"."""
    for name, value in ROLES.items():
        if value == rights:
            return name
    return "custom"


def parse_rights(text: str) -> int:
    """A role name (any case, "-" or "_") or a rights mask ("0x401", "1025").

    Raises:
        InvalidParameter: neither a role nor a valid mask.
    """
    key = text.strip().lower().replace("-", "_")
    if key in ROLES:
        return ROLES[key]
    try:
        value = int(key, 0)
    except ValueError:
        roles = ", ".join(ROLES)
        raise errors.InvalidParameter(f"unknown role {text!r} (roles: {roles})") from None
    return check_rights(value)


def check_rights(rights: int) -> int:
    """Validate a rights mask (only the defined bits)."""
    if not isinstance(rights, int) or rights & ~ALL_RIGHTS & ~FOLDER_CONTACT or rights < 0:
        raise errors.InvalidParameter(f"bad rights mask {rights!r}")
    return rights


#: The ACL member that stands for everyone without a row of their own ([MS-OXCPERM]
#: "Default" user).
DEFAULT_MEMBER: Final = "default"
