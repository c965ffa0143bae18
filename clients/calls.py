"""The client's call model: a :class:`Call` per operation, property values by tag or
name (:class:`Props`), and :class:`MapiObject`, the base of every object the server
holds open for a session (:mod:`clients.api` re-exports all of it).

A call is ``await``-ed on its own (one round trip) or queued in a batch
(:meth:`clients.session.Session.batch`); its ``decode`` turns the server's
``[hresult, value]`` into the Python value, and a MAPI error into its
:mod:`mapi.model.errors` class.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import DEFAULT_LIMITS

if TYPE_CHECKING:
    from clients.session import Session

T = TypeVar("T")
ObjT = TypeVar("ObjT", bound="MapiObject")
Tag = int | str
MAPI_W_ERRORS_RETURNED = 0x00040380
_PT_ERROR = int(pt.PropType.PT_ERROR)


def tag_of(tag: Tag) -> int:
    """A property tag from a tag or an MS-OXPROPS name (``"PR_SUBJECT"``)."""
    if isinstance(tag, int):
        return tag
    try:
        return pt.tag_from_name(tag)
    except KeyError:
        raise ValueError(f"unknown property name {tag!r}") from None


class Props(dict[int, Any]):
    """Property values by tag, also readable by name: ``props["PR_SUBJECT"]``.

    ``errors`` holds the per-property errors (tag -> HRESULT) of a ``get_props``.
    """

    def __init__(
        self, values: Iterable[tuple[int, Any]] = (), requested: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.errors: dict[int, int] = {}
        values = values if isinstance(values, list) else list(values)
        # Values come back in request order, so an error is reported under the tag asked
        # for (the wire carries it with type PT_ERROR, which loses the original type).
        asked = requested if requested is not None and len(requested) == len(values) else None
        for i, (tag, value) in enumerate(values):
            if tag & 0xFFFF == _PT_ERROR:
                self.errors[asked[i] if asked else pt.change_type(tag, 0)] = value
            else:
                dict.__setitem__(self, tag, value)

    def __getitem__(self, key: Tag) -> Any:
        return super().__getitem__(tag_of(key))

    def get(self, key: Tag, default: Any = None) -> Any:
        return super().get(tag_of(key), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int | str) and super().__contains__(tag_of(key))

    def named(self) -> dict[str, Any]:
        """The values keyed by property name (for display and JSON)."""
        return {pt.tag_name(tag): value for tag, value in self.items()}

    def __repr__(self) -> str:
        """``Props({'PR_SUBJECT': 'Hello', ...})``: names, not numeric tags, when printed;
        per-property errors follow by name too."""
        text = f"Props({self.named()!r})"
        if self.errors:
            failed = {pt.tag_name(t): errors.hresult_name(h) for t, h in self.errors.items()}
            text = f"Props({self.named()!r}, errors={failed!r})"
        return text

    __str__ = __repr__


def _raise_for(hresult: int, message: Any) -> None:
    if hresult & 0x80000000:
        raise errors.error_for(hresult, message if isinstance(message, str) else "")


class Call(Generic[T]):
    """One operation: ``await`` it, or ``batch.add()`` it."""

    def __init__(
        self,
        session: Session,
        name: str,
        args: dict[str, Any],
        decode: Callable[[int, Any], T],
    ) -> None:
        self.session = session
        self.name = name
        self.args = args
        self.decode = decode
        self._done = False
        self._value: T | None = None

    @property
    def result(self) -> T:
        """The value, once the batch holding this call has run."""
        if not self._done:
            raise RuntimeError("the call has not run yet")
        return self._value  # type: ignore[return-value]

    def resolve(self, hresult: int, value: Any) -> T:
        _raise_for(hresult, value)
        self._value = self.decode(hresult, value)
        self._done = True
        return self._value

    def __await__(self) -> Generator[Any, None, T]:
        return self._run().__await__()

    async def _run(self) -> T:
        (result,) = await self.session.execute([[self.name, self.args]])
        return self.resolve(*result)


def _value(hresult: int, value: Any) -> Any:
    return value


def _status(hresult: int, value: Any) -> int:
    """0, or a MAPI warning such as MAPI_W_PARTIAL_COMPLETION (0x00040680)."""
    return hresult


def _none(hresult: int, value: Any) -> None:
    return None


#: Largest string or binary value one ``set_props`` may carry: the server refuses
#: larger values of one call (its stub limit, ``max_value_bytes``: 1 MiB by default); a
#: value as large as a whole request fragment would cost the connection itself.
MAX_INLINE_VALUE = DEFAULT_LIMITS.max_value_bytes


def _inline_size(value: Any) -> int:
    """The size a value takes on the server (UTF-16 for strings), 0 for small types."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        # UTF-16: 2 bytes a character, 4 for astral ones. Short strings fit whatever
        # they hold, so only long ones are measured exactly.
        if 4 * len(value) <= MAX_INLINE_VALUE:
            return 2 * len(value)
        return len(value.encode("utf-16-le", "surrogatepass"))
    if isinstance(value, list | tuple):
        return sum(_inline_size(v) for v in value)
    return 0


def _too_big(tag: int, size: int | None = None) -> errors.MapiError:
    amount = f" ({size} bytes)" if size is not None else ""
    return errors.TooBig(
        f"{pt.tag_name(tag)}{amount} is too large for one set_props call: write it "
        f"through a stream, open_stream({pt.tag_name(tag)}, write=True, create=True)"
    )


def _problems(props: list[list[Any]]) -> Callable[[int, Any], list[list[int]]]:
    """Decode set_props' problem array; a MAPI_E_TOO_BIG problem is raised, not returned
    (a value silently not set is lost data), with a hint to use a stream."""

    def decode(hresult: int, value: Any) -> list[list[int]]:
        problems = value if isinstance(value, list) else []
        for problem in problems:
            if len(problem) >= 3 and problem[2] == errors.Hresult.MAPI_E_TOO_BIG:
                raise _too_big(int(problem[1]))
        return problems

    return decode


def _props_for(requested: Sequence[int] | None) -> Callable[[int, Any], Props]:
    return lambda hresult, value: Props(value, requested)


class MapiObject:
    """An object the server holds open for us under ``handle``."""

    def __init__(self, session: Session, handle: int) -> None:
        self.session = session
        self.handle = handle

    def _call(self, op: str, decode: Callable[[int, Any], T] = _value, /, **args: Any) -> Call[T]:
        return Call(self.session, op, {"h": self.handle, **args}, decode)

    def _open(self, op: str, cls: type[ObjT], /, **args: Any) -> Call[ObjT]:
        obj = cls(self.session, self.session.new_handle())
        return Call(
            self.session,
            op,
            {"h": self.handle, "out": obj.handle, **args},
            lambda hresult, value: obj,
        )

    def get_props(self, tags: Sequence[Tag] | None = None) -> Call[Props]:
        """Values of ``tags`` (all properties when None); missing ones land in ``.errors``."""
        wanted = None if tags is None else [tag_of(t) for t in tags]
        return self._call("get_props", _props_for(wanted), tags=wanted)

    def set_props(self, values: dict[Tag, Any]) -> Call[list[list[int]]]:
        """Set properties; returns the per-property problems ``[index, tag, hresult]``.

        Raises:
            TooBig: a value too large for one call (checked here before anything is
                sent, or answered MAPI_E_TOO_BIG by the server): write it through
                ``open_stream(tag, write=True, create=True)`` instead.
        """
        props = [[tag_of(t), v] for t, v in values.items()]
        for tag, value in props:
            if _inline_size(value) > MAX_INLINE_VALUE:
                raise _too_big(tag, _inline_size(value))
        return self._call("set_props", _problems(props), props=props)

    def delete_props(self, tags: Sequence[Tag]) -> Call[list[list[int]]]:
        return self._call("delete_props", tags=[tag_of(t) for t in tags])

    def get_prop_list(self) -> Call[list[int]]:
        return self._call("get_prop_list")

    async def release(self) -> None:
        """Let the server close the object (idempotent, never raises MAPI errors)."""
        await self.session.release(self)

    async def __aenter__(self: ObjT) -> ObjT:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
