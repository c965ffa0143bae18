"""The conversion corpus through the whole path: each message of
tests/internet_mail/mime_corpus.py is delivered to a real ``serve`` by SMTP (Python's
smtplib), read back through our MAPI client and exported again (``mapi-cli export``'s
code), and must come back byte for byte, with the MAPI properties the corpus expects.

"Byte for byte" is the message as it went over SMTP: our listener prepends exactly one
``Received:`` field (RFC 5321 4.4) and changes nothing else. Messages written with bare
LF (names ending ``_lf``) are sent with CRLF line ends, as SMTP requires (our listener
refuses bare LF: the smuggling defence of tests/test_smtp_e2e.py).
"""

from __future__ import annotations

import re
import smtplib
from typing import Any

import pytest
import trio
from mime_corpus import EXPECTED, corpus
from serve_helpers import start_server

from clients.api import connect
from clients.mail_transfer import export_message, read_converted
from mapi.model import proptags as pt
from mapi_anywhere.config import SmtpSection

CORPUS = corpus()
PASSWORDS = {"bob": "bob-password"}
#: Properties the transport sets, not the message: our Received field is part of the
#: transport headers, and the delivery time is the arrival's.
TRANSPORT = {"PR_TRANSPORT_MESSAGE_HEADERS_W", "PR_MESSAGE_DELIVERY_TIME"}
_OUR_RECEIVED = re.compile(rb"\AReceived: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def _wire(raw: bytes) -> bytes:
    """``raw`` as a mail program sends it over SMTP: CRLF line ends, and a last line
    ended (smtplib ends an unended one, so ``b""`` goes as one empty line)."""
    wire = re.sub(rb"\r?\n", b"\r\n", raw)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


def _check(got: Any, expected: dict[str, Any], where: str) -> None:
    for key, want in expected.items():
        if key in TRANSPORT or key == "defects":
            continue
        if key == "recipients":
            rows = [
                (r[pt.PR_RECIPIENT_TYPE], r[pt.PR_DISPLAY_NAME_W], r[pt.PR_EMAIL_ADDRESS_W])
                for r in got.recipients
            ]
            assert rows == want, where
        elif key == "attachments":
            assert len(got.attachments) == len(want), where
            for i, (att, spec) in enumerate(zip(got.attachments, want, strict=True)):
                for akey, awant in spec.items():
                    if akey == "embedded":
                        assert att.embedded is not None, where
                        _check(att.embedded, awant, f"{where} attachment {i} embedded")
                    else:
                        value = att.props.get(pt.tag_from_name(akey))
                        assert value == awant, f"{where} attachment {i}: {akey} is {value!r}"
        else:
            value = got.props.get(pt.tag_from_name(key))
            assert value == want, f"{where}: {key} is {value!r}, expected {want!r}"


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True, smtp=SmtpSection(port=0)
    )


async def test_corpus_delivered_by_smtp_reads_and_exports_back(server):
    names = sorted(CORPUS)

    def send_all() -> None:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            for name in names:
                refused = client.sendmail(
                    "sender@outside.example", ["bob@example.org"], _wire(CORPUS[name])
                )
                assert refused == {}, name

    with trio.fail_after(120):
        await trio.to_thread.run_sync(send_all)
        async with connect(
            f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "bob", PASSWORDS["bob"]
        ) as bob:
            store = await bob.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            columns = [pt.PR_ENTRYID, pt.PR_MESSAGE_DELIVERY_TIME]
            rows = [row async for row in inbox.contents(columns)]
            assert len(rows) == len(names)
            # One connection, in order: the delivery order is the sending order.
            rows.sort(key=lambda r: (r[pt.PR_MESSAGE_DELIVERY_TIME], bytes(r[pt.PR_ENTRYID])))
            differences = []
            for name, row in zip(names, rows, strict=True):
                exported = await export_message(store, row[pt.PR_ENTRYID])
                received = _OUR_RECEIVED.match(exported.raw)
                assert received is not None, f"{name}: no Received field of ours first"
                assert b"by " in received.group(0) and b"with ESMTP" in received.group(0)
                if exported.raw[received.end() :] != _wire(CORPUS[name]):
                    differences.append(name)
                message = await store.open_message(row[pt.PR_ENTRYID])
                try:
                    _check(await read_converted(message), EXPECTED[name], name)
                finally:
                    await message.release()
            assert differences == [], f"not returned byte for byte: {differences}"
