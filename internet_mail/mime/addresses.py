"""Mail addresses: header lists to MAPI address properties and back, one-off entry ids.

Theory of operation
-------------------
Reading: :func:`parse_addresses` splits a raw address-list header value with the
standard library's lenient RFC 5322 splitter (:func:`email.utils.getaddresses`; when it
recurses too deep into nested comments, the addr-specs are picked out instead) *before*
decoding RFC 2047 words in the display names, so an encoded comma cannot split an
address. Group syntax (``undisclosed-recipients:;``) gives no address, and an entry
without a usable address (a name alone) is dropped, as the renderer drops it.

Each address becomes the MAPI properties of [MS-OXCMAIL] 2.2.3.2.x: display name,
address type ``SMTP``, e-mail address, SMTP address, a search key
(``SMTP:<ADDRESS>\\0``, [MS-OXCDATA] 2.2.5.x "address type, colon, upper-case
address") and a one-off entry id ([MS-OXCDATA] 2.2.5.1), the form Outlook keeps for
an address that is in no address book.

Writing: :func:`address_units` renders one address for a header: the display name
as it is, quoted when it holds specials, or as RFC 2047 words when it is not ASCII.
"""

from __future__ import annotations

import re
import struct
from email.utils import getaddresses
from typing import Final

from internet_mail.mime.text import clean, decode_words, encode_words, fix_8bit, one_line, unfold
from mapi.model import proptags as pt
from mapi.model.properties import PropData

#: The one-off entry id provider UID ([MS-OXCDATA] 2.2.5.1).
ONE_OFF_UID: Final = bytes.fromhex("812B1FA4BEA310199D6E00DD010F5402")
_MAPI_UNICODE: Final = 0x8000
_MAPI_SEND_NO_RICH_INFO: Final = 0x0001
_ADDR_SPEC = re.compile(r"[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+")
_USABLE = re.compile(
    r'(?:"[^"\\\r\n]*"|[^\s<>(),;:"\\@\[\]]+)'
    r'(?:@(?:\[[^\]\s\\]*\]|[^\s<>(),;:"\\@\[\]]+))?'
)
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def one_off_entry_id(name: str, address: str, addrtype: str = "SMTP") -> bytes:
    """A one-off entry id for ``name <address>`` ([MS-OXCDATA] 2.2.5.1, Unicode form)."""
    flags = _MAPI_UNICODE | _MAPI_SEND_NO_RICH_INFO
    head = struct.pack("<I", 0) + ONE_OFF_UID + struct.pack("<HH", 0, flags)
    body = b"".join(
        (s.replace("\x00", "") + "\x00").encode("utf-16-le") for s in (name, addrtype, address)
    )
    return head + body


def parse_one_off(entry_id: bytes) -> tuple[str, str, str] | None:
    """(name, address type, address) of a one-off entry id, or None if it is not one."""
    if len(entry_id) < 24 or entry_id[4:20] != ONE_OFF_UID:
        return None
    flags = struct.unpack_from("<H", entry_id, 22)[0]
    rest = entry_id[24:]
    if flags & _MAPI_UNICODE:
        units = rest.decode("utf-16-le", "replace").split("\x00")
    else:
        units = rest.decode("cp1252", "replace").split("\x00")
    if len(units) < 3:
        return None
    return clean(units[0]), clean(units[1]), clean(units[2])


def flat_entry_list(entry_ids: list[bytes]) -> bytes:
    """A FlatEntryList ([MS-OXCDATA] 2.3.3): count, size, then each id with its length,
    padded to 4 bytes."""
    body = b""
    for eid in entry_ids:
        body += struct.pack("<I", len(eid)) + eid + b"\x00" * (-len(eid) % 4)
    return struct.pack("<II", len(entry_ids), len(body)) + body


def parse_flat_entry_list(data: bytes) -> list[bytes]:
    """The entry ids of a FlatEntryList; what is malformed is left out."""
    if len(data) < 8:
        return []
    count, size = struct.unpack_from("<II", data)
    out: list[bytes] = []
    pos, end = 8, min(len(data), 8 + size)
    while len(out) < count and pos + 4 <= end:
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if pos + length > end:
            break
        out.append(data[pos : pos + length])
        pos += length + (-length % 4)
    return out


def search_key(address: str, addrtype: str = "SMTP") -> bytes:
    """A search key: ``ADDRTYPE:ADDRESS`` in upper case, NUL-terminated."""
    return (addrtype + ":" + address).upper().encode("utf-8") + b"\x00"


def usable_address(address: str) -> bool:
    """True when ``address`` is an addr-spec a header can carry and a reader gets back
    (a local part, plain or quoted, and an optional domain or domain literal)."""
    return _USABLE.fullmatch(address) is not None


def parse_addresses(raw_values: list[str], *, limit: int) -> list[tuple[str, str]]:
    """(display name, address) pairs of raw address-list header values, at most
    ``limit + 1`` of them (so the caller sees that there were too many)."""
    cleaned = [unfold(fix_8bit(value)) for value in raw_values]
    out: list[tuple[str, str]] = []
    try:
        pairs = getaddresses(cleaned)
    except RecursionError:  # the splitter recurses into nested comments
        pairs = [("", found) for value in cleaned for found in _ADDR_SPEC.findall(value)]
    for name, address in pairs:
        name = clean(one_line(decode_words(name)))
        address = clean(one_line(address))
        if not usable_address(address):
            continue  # a name alone, or the splitter's leftovers of a broken list
        out.append((name, address))
        if len(out) > limit:
            break
    return out


def person_props(name: str, address: str) -> dict[str, PropData]:
    """Name, address type, address, SMTP address, search key and entry id of one person,
    keyed by the suffix of the property group's names (``NAME``, ``EMAIL_ADDRESS``...)."""
    shown = name or address
    return {
        "NAME": shown,
        "ADDRTYPE": "SMTP",
        "EMAIL_ADDRESS": address,
        "SMTP_ADDRESS": address,
        "SEARCH_KEY": search_key(address),
        "ENTRYID": one_off_entry_id(shown, address),
    }


_GROUPS: Final = {
    "SENDER": {
        "NAME": pt.PR_SENDER_NAME_W, "ADDRTYPE": pt.PR_SENDER_ADDRTYPE_W,
        "EMAIL_ADDRESS": pt.PR_SENDER_EMAIL_ADDRESS_W, "SMTP_ADDRESS": pt.PR_SENDER_SMTP_ADDRESS_W,
        "SEARCH_KEY": pt.PR_SENDER_SEARCH_KEY, "ENTRYID": pt.PR_SENDER_ENTRYID,
    },
    "SENT_REPRESENTING": {
        "NAME": pt.PR_SENT_REPRESENTING_NAME_W,
        "ADDRTYPE": pt.PR_SENT_REPRESENTING_ADDRTYPE_W,
        "EMAIL_ADDRESS": pt.PR_SENT_REPRESENTING_EMAIL_ADDRESS_W,
        "SMTP_ADDRESS": pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W,
        "SEARCH_KEY": pt.PR_SENT_REPRESENTING_SEARCH_KEY,
        "ENTRYID": pt.PR_SENT_REPRESENTING_ENTRYID,
    },
    "RECIPIENT": {
        "NAME": pt.PR_DISPLAY_NAME_W, "ADDRTYPE": pt.PR_ADDRTYPE_W,
        "EMAIL_ADDRESS": pt.PR_EMAIL_ADDRESS_W, "SMTP_ADDRESS": pt.PR_SMTP_ADDRESS_W,
        "SEARCH_KEY": pt.PR_SEARCH_KEY, "ENTRYID": pt.PR_ENTRYID,
    },
}  # fmt: skip


def group_props(group: str, name: str, address: str) -> dict[int, PropData]:
    """The properties of ``group`` (``SENDER``, ``SENT_REPRESENTING``, ``RECIPIENT``)
    for one person."""
    tags = _GROUPS[group]
    return {tags[key]: value for key, value in person_props(name, address).items()}


def group_person(group: str, props: dict[int, PropData]) -> tuple[str, str] | None:
    """(display name, address) a property group names, or None when it has no address."""
    tags = _GROUPS[group]
    address = ""
    for key in ("SMTP_ADDRESS", "EMAIL_ADDRESS"):
        value = props.get(tags[key])
        if isinstance(value, str) and value.strip():
            address = value.strip()
            break
    name = props.get(tags["NAME"])
    shown = name.strip() if isinstance(name, str) else ""
    if not address and not shown:
        return None
    return ("" if shown == address else shown), address


def address_units(name: str, address: str) -> list[str]:
    """One address as header folding units: ``name <address>`` or ``address``."""
    name = one_line(name)
    address = one_line(address)
    if not usable_address(address):  # a name alone is no recipient (readers drop it)
        return []
    if not name:
        return [address]
    if not name.isascii() or "=?" in name:
        words = encode_words(name)
    elif _SPECIALS.search(name):
        words = ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    else:
        words = name.split(" ")
    return [*words, f"<{address}>"]
