"""MAPI HRESULT errors.

Theory of operation
-------------------
Every failure of the store core is a :class:`MapiError` carrying the HRESULT that
the wire answer must carry ([MS-OXCDATA] 2.4 "Error Codes"; the MAPI names come from
``mapicode.h``). There is one subclass per code, so callers can ``except NotFound``,
and :func:`error_for` maps any integer back to its class, keeping unknown codes (the
way h2's ``errors.py`` keeps unknown integers) as a plain :class:`MapiError`.

Warnings (``MAPI_W_*``, severity bit clear) are not exceptions: they are returned as
values (e.g. :data:`MAPI_W_ERRORS_RETURNED` beside a row of ``PT_ERROR`` values).
"""

from __future__ import annotations

import enum


class Hresult(enum.IntEnum):
    """MAPI status codes ([MS-OXCDATA] 2.4.1 and 2.4.2; ``mapicode.h``)."""

    SUCCESS_SUCCESS = 0x00000000
    MAPI_E_CALL_FAILED = 0x80004005
    MAPI_E_NOT_ENOUGH_MEMORY = 0x8007000E
    MAPI_E_INVALID_PARAMETER = 0x80070057
    MAPI_E_INTERFACE_NOT_SUPPORTED = 0x80004002
    MAPI_E_NO_ACCESS = 0x80070005
    MAPI_E_NO_SUPPORT = 0x80040102
    MAPI_E_BAD_CHARWIDTH = 0x80040103
    MAPI_E_STRING_TOO_LONG = 0x80040105
    MAPI_E_UNKNOWN_FLAGS = 0x80040106
    MAPI_E_INVALID_ENTRYID = 0x80040107
    MAPI_E_INVALID_OBJECT = 0x80040108
    MAPI_E_OBJECT_CHANGED = 0x80040109
    MAPI_E_OBJECT_DELETED = 0x8004010A
    MAPI_E_BUSY = 0x8004010B
    MAPI_E_NOT_ENOUGH_DISK = 0x8004010D
    MAPI_E_NOT_ENOUGH_RESOURCES = 0x8004010E
    MAPI_E_NOT_FOUND = 0x8004010F
    MAPI_E_VERSION = 0x80040110
    MAPI_E_LOGON_FAILED = 0x80040111
    MAPI_E_SESSION_LIMIT = 0x80040112
    MAPI_E_USER_CANCEL = 0x80040113
    MAPI_E_TOO_COMPLEX = 0x80040117
    MAPI_E_BAD_COLUMN = 0x80040118
    MAPI_E_COMPUTED = 0x8004011A
    MAPI_E_CORRUPT_DATA = 0x8004011B
    MAPI_E_UNKNOWN_ENTRYID = 0x80040201
    MAPI_E_BAD_VALUE = 0x80040301
    MAPI_E_INVALID_TYPE = 0x80040302
    MAPI_E_TYPE_NO_SUPPORT = 0x80040303
    MAPI_E_UNEXPECTED_TYPE = 0x80040304
    MAPI_E_TOO_BIG = 0x80040305
    MAPI_E_UNEXPECTED_ID = 0x80040307
    MAPI_E_UNABLE_TO_COMPLETE = 0x80040400
    MAPI_E_TIMEOUT = 0x80040401
    MAPI_E_TABLE_EMPTY = 0x80040402
    MAPI_E_TABLE_TOO_BIG = 0x80040403
    MAPI_E_INVALID_BOOKMARK = 0x80040405
    MAPI_E_CORRUPT_STORE = 0x80040600
    MAPI_E_COLLISION = 0x80040604
    MAPI_E_NOT_INITIALIZED = 0x80040605
    MAPI_E_HAS_FOLDERS = 0x80040609
    MAPI_E_HAS_MESSAGES = 0x8004060A
    MAPI_E_FOLDER_CYCLE = 0x8004060B
    # Warnings: success codes, never raised.
    MAPI_W_ERRORS_RETURNED = 0x00040380
    MAPI_W_POSITION_CHANGED = 0x00040481
    MAPI_W_APPROX_COUNT = 0x00040482
    MAPI_W_PARTIAL_COMPLETION = 0x00040680


MAPI_W_ERRORS_RETURNED = Hresult.MAPI_W_ERRORS_RETURNED
MAPI_W_POSITION_CHANGED = Hresult.MAPI_W_POSITION_CHANGED
MAPI_W_PARTIAL_COMPLETION = Hresult.MAPI_W_PARTIAL_COMPLETION


def hresult_name(code: int) -> str:
    """The MAPI name of ``code``, or its hex spelling when unknown."""
    try:
        return Hresult(code).name
    except ValueError:
        return f"0x{code:08X}"


class MapiError(Exception):
    """A failed MAPI call; ``hresult`` is the code to put on the wire.

    Subclasses fix the code; ``MapiError(code)`` builds an error for any code (unknown
    codes included). ``error_for(code)`` picks the right subclass.
    """

    code: int = Hresult.MAPI_E_CALL_FAILED

    def __init__(self, hresult: int | None = None, message: str = "") -> None:
        if hresult is None:
            hresult = self.code
        if not 0 <= hresult <= 0xFFFFFFFF:
            raise ValueError(f"HRESULT out of range: {hresult}")
        if not hresult & 0x80000000:
            raise ValueError(f"not an error code (severity bit clear): 0x{hresult:08X}")
        self.hresult = int(hresult)
        text = hresult_name(hresult)
        super().__init__(f"{text}: {message}" if message else text)


class _FixedError(MapiError):
    """Base of the per-code subclasses: the code is fixed, only a message is taken."""

    def __init__(self, message: str = "") -> None:
        super().__init__(self.code, message)


class CallFailed(_FixedError):
    """MAPI_E_CALL_FAILED (0x80004005)."""

    code = Hresult.MAPI_E_CALL_FAILED


class NotEnoughMemory(_FixedError):
    """MAPI_E_NOT_ENOUGH_MEMORY (0x8007000E)."""

    code = Hresult.MAPI_E_NOT_ENOUGH_MEMORY


class InvalidParameter(_FixedError):
    """MAPI_E_INVALID_PARAMETER (0x80070057)."""

    code = Hresult.MAPI_E_INVALID_PARAMETER


class InterfaceNotSupported(_FixedError):
    """MAPI_E_INTERFACE_NOT_SUPPORTED (0x80004002)."""

    code = Hresult.MAPI_E_INTERFACE_NOT_SUPPORTED


class NoAccess(_FixedError):
    """MAPI_E_NO_ACCESS (0x80070005)."""

    code = Hresult.MAPI_E_NO_ACCESS


class NoSupport(_FixedError):
    """MAPI_E_NO_SUPPORT (0x80040102)."""

    code = Hresult.MAPI_E_NO_SUPPORT


class BadCharwidth(_FixedError):
    """MAPI_E_BAD_CHARWIDTH (0x80040103)."""

    code = Hresult.MAPI_E_BAD_CHARWIDTH


class StringTooLong(_FixedError):
    """MAPI_E_STRING_TOO_LONG (0x80040105)."""

    code = Hresult.MAPI_E_STRING_TOO_LONG


class UnknownFlags(_FixedError):
    """MAPI_E_UNKNOWN_FLAGS (0x80040106)."""

    code = Hresult.MAPI_E_UNKNOWN_FLAGS


class InvalidEntryId(_FixedError):
    """MAPI_E_INVALID_ENTRYID (0x80040107)."""

    code = Hresult.MAPI_E_INVALID_ENTRYID


class InvalidObject(_FixedError):
    """MAPI_E_INVALID_OBJECT (0x80040108)."""

    code = Hresult.MAPI_E_INVALID_OBJECT


class ObjectChanged(_FixedError):
    """MAPI_E_OBJECT_CHANGED (0x80040109)."""

    code = Hresult.MAPI_E_OBJECT_CHANGED


class ObjectDeleted(_FixedError):
    """MAPI_E_OBJECT_DELETED (0x8004010A)."""

    code = Hresult.MAPI_E_OBJECT_DELETED


class Busy(_FixedError):
    """MAPI_E_BUSY (0x8004010B)."""

    code = Hresult.MAPI_E_BUSY


class NotEnoughDisk(_FixedError):
    """MAPI_E_NOT_ENOUGH_DISK (0x8004010D)."""

    code = Hresult.MAPI_E_NOT_ENOUGH_DISK


class NotEnoughResources(_FixedError):
    """MAPI_E_NOT_ENOUGH_RESOURCES (0x8004010E)."""

    code = Hresult.MAPI_E_NOT_ENOUGH_RESOURCES


class NotFound(_FixedError):
    """MAPI_E_NOT_FOUND (0x8004010F)."""

    code = Hresult.MAPI_E_NOT_FOUND


class Version(_FixedError):
    """MAPI_E_VERSION (0x80040110)."""

    code = Hresult.MAPI_E_VERSION


class LogonFailed(_FixedError):
    """MAPI_E_LOGON_FAILED (0x80040111)."""

    code = Hresult.MAPI_E_LOGON_FAILED


class SessionLimit(_FixedError):
    """MAPI_E_SESSION_LIMIT (0x80040112)."""

    code = Hresult.MAPI_E_SESSION_LIMIT


class UserCancel(_FixedError):
    """MAPI_E_USER_CANCEL (0x80040113): the work was stopped (its caller went away, or
    the server is shutting down)."""

    code = Hresult.MAPI_E_USER_CANCEL


class TooComplex(_FixedError):
    """MAPI_E_TOO_COMPLEX (0x80040117)."""

    code = Hresult.MAPI_E_TOO_COMPLEX


class BadColumn(_FixedError):
    """MAPI_E_BAD_COLUMN (0x80040118)."""

    code = Hresult.MAPI_E_BAD_COLUMN


class Computed(_FixedError):
    """MAPI_E_COMPUTED (0x8004011A)."""

    code = Hresult.MAPI_E_COMPUTED


class CorruptData(_FixedError):
    """MAPI_E_CORRUPT_DATA (0x8004011B)."""

    code = Hresult.MAPI_E_CORRUPT_DATA


class UnknownEntryId(_FixedError):
    """MAPI_E_UNKNOWN_ENTRYID (0x80040201)."""

    code = Hresult.MAPI_E_UNKNOWN_ENTRYID


class BadValue(_FixedError):
    """MAPI_E_BAD_VALUE (0x80040301)."""

    code = Hresult.MAPI_E_BAD_VALUE


class InvalidType(_FixedError):
    """MAPI_E_INVALID_TYPE (0x80040302)."""

    code = Hresult.MAPI_E_INVALID_TYPE


class TypeNoSupport(_FixedError):
    """MAPI_E_TYPE_NO_SUPPORT (0x80040303)."""

    code = Hresult.MAPI_E_TYPE_NO_SUPPORT


class UnexpectedType(_FixedError):
    """MAPI_E_UNEXPECTED_TYPE (0x80040304)."""

    code = Hresult.MAPI_E_UNEXPECTED_TYPE


class TooBig(_FixedError):
    """MAPI_E_TOO_BIG (0x80040305)."""

    code = Hresult.MAPI_E_TOO_BIG


class UnexpectedId(_FixedError):
    """MAPI_E_UNEXPECTED_ID (0x80040307)."""

    code = Hresult.MAPI_E_UNEXPECTED_ID


class UnableToComplete(_FixedError):
    """MAPI_E_UNABLE_TO_COMPLETE (0x80040400)."""

    code = Hresult.MAPI_E_UNABLE_TO_COMPLETE


class Timeout(_FixedError):
    """MAPI_E_TIMEOUT (0x80040401)."""

    code = Hresult.MAPI_E_TIMEOUT


class TableEmpty(_FixedError):
    """MAPI_E_TABLE_EMPTY (0x80040402)."""

    code = Hresult.MAPI_E_TABLE_EMPTY


class TableTooBig(_FixedError):
    """MAPI_E_TABLE_TOO_BIG (0x80040403)."""

    code = Hresult.MAPI_E_TABLE_TOO_BIG


class InvalidBookmark(_FixedError):
    """MAPI_E_INVALID_BOOKMARK (0x80040405)."""

    code = Hresult.MAPI_E_INVALID_BOOKMARK


class CorruptStore(_FixedError):
    """MAPI_E_CORRUPT_STORE (0x80040600)."""

    code = Hresult.MAPI_E_CORRUPT_STORE


class Collision(_FixedError):
    """MAPI_E_COLLISION (0x80040604)."""

    code = Hresult.MAPI_E_COLLISION


class NotInitialized(_FixedError):
    """MAPI_E_NOT_INITIALIZED (0x80040605)."""

    code = Hresult.MAPI_E_NOT_INITIALIZED


class HasFolders(_FixedError):
    """MAPI_E_HAS_FOLDERS (0x80040609)."""

    code = Hresult.MAPI_E_HAS_FOLDERS


class HasMessages(_FixedError):
    """MAPI_E_HAS_MESSAGES (0x8004060A)."""

    code = Hresult.MAPI_E_HAS_MESSAGES


class FolderCycle(_FixedError):
    """MAPI_E_FOLDER_CYCLE (0x8004060B)."""

    code = Hresult.MAPI_E_FOLDER_CYCLE


_BY_CODE: dict[int, type[_FixedError]] = {
    cls.code: cls
    for cls in (
        CallFailed, NotEnoughMemory, InvalidParameter, InterfaceNotSupported, NoAccess,
        NoSupport, BadCharwidth, StringTooLong, UnknownFlags, InvalidEntryId, InvalidObject,
        ObjectChanged, ObjectDeleted, Busy, NotEnoughDisk, NotEnoughResources, NotFound,
        Version, LogonFailed, SessionLimit, UserCancel, TooComplex, BadColumn, Computed,
        CorruptData,
        UnknownEntryId, BadValue, InvalidType, TypeNoSupport, UnexpectedType, TooBig,
        UnexpectedId, UnableToComplete, Timeout, TableEmpty, TableTooBig, InvalidBookmark,
        CorruptStore, Collision, NotInitialized, HasFolders, HasMessages, FolderCycle,
    )
}  # fmt: skip


def error_for(hresult: int, message: str = "") -> MapiError:
    """The exception for ``hresult``: its subclass when known, else a plain MapiError."""
    cls = _BY_CODE.get(hresult)
    if cls is None:
        return MapiError(hresult, message)
    return cls(message)
