"""RFC 5321 4.1.2 paths: ``<[@route,...:]local-part@domain>``, parsed strictly.

Theory of operation: a path is parsed into an :class:`Address`, or refused with a
:class:`PathError` that carries its SMTP reply. The parser knows nothing of which
domains are ours; it only reports the forms that matter to a relay check:

* Source routes (``<@a,@b:user@c>``) are *accepted and ignored*, as RFC 5321 4.1.2 and
  Appendix C tell servers to do: the address is the final mailbox ``user@c``, and the
  relay check applies to ``c``. A route never makes a local delivery go elsewhere.
* ``%`` and ``!`` in the local part (the "percent hack" and UUCP bang paths) and ``@``
  inside a quoted local part are flagged as :attr:`Address.relay_syntax`: a downstream
  system may read ``user%other.example@local`` as mail for ``other.example``. The core
  refuses such recipients as relay attempts unless the client authenticated.
* Domains are lower-cased; a trailing dot (``user@local.``), empty labels and other
  non-RFC-5321 domains are syntax errors (501 5.1.3), not a way around the local check.
* Non-ASCII local parts or domains need the SMTPUTF8 parameter (RFC 6531 3.3); without
  it they get 553 5.6.7.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: RFC 5321 4.5.3.1: local part, domain and path length limits (octets).
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATEXT_UTF8 = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_DOT_STRING_UTF8 = re.compile(rf"{_ATEXT_UTF8}+(?:\.{_ATEXT_UTF8}+)*")
#: qtextSMTP / quoted-pairSMTP (RFC 5321 4.1.2), plus UTF-8 when allowed.
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_LABEL_UTF8 = (
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*[A-Za-z0-9\u0080-\U0010ffff])?"
)
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOMAIN_UTF8 = re.compile(rf"{_LABEL_UTF8}(?:\.{_LABEL_UTF8})*")
_IPV4 = re.compile(r"\[(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\]")
_IPV6 = re.compile(r"\[IPv6:[0-9A-Fa-f:.]{2,45}\]", re.IGNORECASE)
_ROUTE = re.compile(rf"@{_LABEL}(?:\.{_LABEL})*(?:,@{_LABEL}(?:\.{_LABEL})*)*:")


class PathError(ValueError):
    """A path the core refuses, with the reply to send (code, enhanced code, text)."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(f"{code} {enhanced} {text}")
        self.code = code
        self.enhanced = enhanced
        self.text = text


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A mailbox from a path.

    Attributes:
        local_part: as written, quotes included (RFC 5321 says it is case-sensitive).
        domain: lower-cased; ``""`` only for the bare ``<postmaster>`` of RFC 5321 4.5.1.
        relay_syntax: the local part holds ``%``, ``!`` or a quoted ``@``: a relay attempt
            in disguise unless the client authenticated.
        had_route: a source route was given and ignored.
        utf8: the address has non-ASCII characters (SMTPUTF8).
    """

    local_part: str
    domain: str
    relay_syntax: bool = False
    had_route: bool = False
    utf8: bool = False

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain}" if self.domain else self.local_part

    @property
    def is_postmaster(self) -> bool:
        """The bare ``<postmaster>`` every server must accept (RFC 5321 4.5.1)."""
        return not self.domain and self.local_part.lower() == "postmaster"


def _syntax(what: str) -> PathError:
    subject = "1.7" if what == "sender" else "1.3"
    return PathError(501, f"5.{subject}", f"Bad {what} address syntax")


def split_path(text: str) -> tuple[str, str]:
    """Split ``<path> params`` (what follows ``FROM:``/``TO:``) into the path with its
    angle brackets and the parameter text. Raises ``PathError`` without brackets."""
    text = text.lstrip(" ")  # many clients write "MAIL FROM: <a@b>"; we are lenient here
    if not text.startswith("<"):
        raise PathError(501, "5.5.4", "Syntax: angle brackets required around the path")
    # A quoted local part may hold '>', so find the closing bracket outside quotes.
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return text[: index + 1], text[index + 1 :]
    raise PathError(501, "5.5.4", "Syntax: unterminated path")


def parse_path(path: str, *, utf8: bool, what: str, null_ok: bool) -> Address | None:
    """Parse ``<...>`` (with brackets) into an :class:`Address`.

    Args:
        path: the bracketed path from :func:`split_path`.
        utf8: the transaction asked for SMTPUTF8, so non-ASCII is allowed.
        what: ``"sender"`` or ``"recipient"``, for the enhanced code (5.1.7 / 5.1.3).
        null_ok: ``<>`` is allowed (the reverse path); it parses to ``None``.

    Raises:
        PathError: with the reply (501 5.1.3/5.1.7, 553 5.6.7 for non-ASCII).
    """
    if len(path.encode("utf-8")) > MAX_PATH + 2:
        raise PathError(501, "5.1.3" if what != "sender" else "5.1.7", "Path too long")
    inner = path[1:-1]
    if not inner:
        if null_ok:
            return None
        raise _syntax(what)
    had_route = False
    if inner.startswith("@"):
        route = _ROUTE.match(inner)
        if route is None:
            raise _syntax(what)
        inner = inner[route.end() :]
        had_route = True
    non_ascii = not inner.isascii()
    if non_ascii and not utf8:
        raise PathError(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    quoted_re, dot_re, domain_re = (
        (_QUOTED_UTF8, _DOT_STRING_UTF8, _DOMAIN_UTF8) if utf8 else (_QUOTED, _DOT_STRING, _DOMAIN)
    )
    if what == "recipient" and not had_route and inner.lower() == "postmaster":
        return Address(local_part=inner, domain="")
    match = quoted_re.match(inner) if inner.startswith('"') else dot_re.match(inner)
    if match is None or inner[match.end() : match.end() + 1] != "@":
        raise _syntax(what)
    local = match.group(0)
    domain = inner[match.end() + 1 :]
    if not (domain_re.fullmatch(domain) or _IPV4.fullmatch(domain) or _IPV6.fullmatch(domain)):
        raise _syntax(what)
    if len(local.encode("utf-8")) > MAX_LOCAL_PART or len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise _syntax(what)
    if local.startswith('"'):
        relay_syntax = any(c in local for c in "@%!")
    else:
        relay_syntax = "%" in local or "!" in local
    return Address(
        local_part=local,
        domain=domain.lower(),
        relay_syntax=relay_syntax,
        had_route=had_route,
        utf8=non_ascii,
    )
