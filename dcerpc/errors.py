"""Errors of the DCE/RPC runtime.

Shaped after h11's ``_util.py``: an abstract :class:`ProtocolError` with a local
subclass (we misused the API: a bug on our side) and a remote one (the peer sent
something invalid). A remote error carries the ``nca_s_*`` status that the fault
PDU answering it must carry, as h2's exceptions carry their wire ``error_code``.
"""

from __future__ import annotations

import enum


class FaultStatus(enum.IntEnum):
    """Status codes of fault PDUs ([C706] Appendix E, [MS-RPCE] 2.2.2.14, [MS-ERREF])."""

    ACCESS_DENIED = 0x00000005  # ERROR_ACCESS_DENIED / nca_s_fault_access_denied alias
    CANT_PERFORM = 0x000006D8  # EPT_S_CANT_PERFORM_OP
    FAULT_NDR = 0x000006F7  # RPC_X_BAD_STUB_DATA: stub data could not be unmarshalled
    SEC_PKG_ERROR = 0x00000721
    OP_RNG_ERROR = 0x1C010002  # nca_s_op_rng_error: opnum out of range
    UNK_IF = 0x1C010003  # nca_s_unk_if: unknown interface / presentation context
    PROTO_ERROR = 0x1C01000B  # nca_s_proto_error
    OUT_ARGS_TOO_BIG = 0x1C010013  # nca_s_out_args_too_big
    SERVER_TOO_BUSY = 0x1C010014  # nca_s_server_too_busy
    UNSPEC_REJECT = 0x1C000009  # nca_s_unspec_reject
    FAULT_CANCEL = 0x1C00000D  # nca_s_fault_cancel: the call was cancelled
    FAULT_UNSPEC = 0x1C000012  # nca_s_fault_unspec: the server failed for its own reasons
    FAULT_CONTEXT_MISMATCH = 0x1C00001A  # nca_s_fault_context_mismatch: bad context handle
    FAULT_REMOTE_NO_MEMORY = 0x1C00001B  # nca_s_fault_remote_no_memory


def fault_status_name(status: int) -> str:
    """A readable name for a fault status, keeping unknown integers (as h2's errors.py does)."""
    try:
        return FaultStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


class ProtocolError(Exception):
    """Abstract base: the DCE/RPC protocol was violated by one side.

    Do not raise this directly; raise :class:`LocalProtocolError` or
    :class:`RemoteProtocolError`.
    """

    def __init__(self, msg: str, status: int = FaultStatus.PROTO_ERROR) -> None:
        if type(self) is ProtocolError:
            raise TypeError("tried to directly instantiate ProtocolError")
        super().__init__(msg)
        self.status = status


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol (or the connection's state) forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid. ``status`` is the fault status to answer with."""


class DecodeError(RemoteProtocolError):
    """Bytes could not be decoded: short, overlong, misaligned or out of limits."""

    def __init__(self, msg: str, status: int = FaultStatus.PROTO_ERROR) -> None:
        super().__init__(msg, status)


class NdrError(DecodeError):
    """Stub data could not be unmarshalled; answered with ``nca_s_fault_ndr``."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, FaultStatus.FAULT_NDR)


class RpcFault(Exception):
    """A call ended in a fault.

    Raised by interface handlers to make the runtime answer with a fault PDU, and
    raised by the client when the server answered a call with a fault PDU.
    """

    def __init__(self, status: int, msg: str = "") -> None:
        super().__init__(msg or f"RPC fault {fault_status_name(status)}")
        self.status = status


class BindRejected(Exception):
    """The server refused a bind or alter_context (bind_nak or a rejected context)."""

    def __init__(self, msg: str, *, result: int = 0, reason: int = 0) -> None:
        super().__init__(msg)
        self.result = result
        self.reason = reason


class ConnectionClosed(Exception):
    """The transport under an RPC connection closed or broke."""
