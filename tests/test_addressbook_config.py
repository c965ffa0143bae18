"""``[addressbook]``: the organisation in legacy DNs and the address book's worker
tunables, read from the configuration file and used by a real ``serve``.

The file's section is checked (defaults, values, every refusal with a message that
names the key), and a ``serve`` started with a custom organisation answers impacket's
NSPI calls with DNs under it: NspiGetProps gives ``PR_EMAIL_ADDRESS`` as
``/o=<organization>/...``, and NspiDNToMId finds the user from that DN (and no longer
from the default organisation's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from impacket.dcerpc.v5 import nspi

from mapi.addressbook.gal import DEFAULT_ORGANIZATION, legacy_dn
from mapi_anywhere.config import (
    DEFAULT_CONFIG_TOML,
    AddressBookSection,
    Config,
    ConfigError,
    EndpointMapperSection,
    ImapSection,
    Pop3Section,
    ServerSection,
    SmtpSection,
    SubmissionSection,
    TunnelSection,
    parse_config,
)
from tests.test_addressbook_e2e import connect
from tunnel.config import TunnelConfig

ORG = "Contoso Research Ltd."
DN = 0x3003001F


def test_default_file_gives_the_defaults() -> None:
    section = parse_config(DEFAULT_CONFIG_TOML).addressbook
    assert section == AddressBookSection()
    assert section.organization == DEFAULT_ORGANIZATION


def test_values_are_read() -> None:
    config = parse_config(
        '[addressbook]\norganization = "Contoso Research Ltd."\nthreads = 2\n'
        "call_seconds = 1\nrefresh_seconds = 0.5\n"
    )
    assert config.addressbook == AddressBookSection(
        organization=ORG, threads=2, call_seconds=1.0, refresh_seconds=0.5
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('"Research/Labs"', "'/'"),
        ('"o=Contoso"', "'='"),
        ('"Tab\\there"', "'\\t'"),
        ('"Bell\\u0007"', "'\\x07'"),
        ('"Zürich AG"', "'ü'"),
        ('""', "1 to 64 characters"),
        ('" padded"', "leading or trailing spaces"),
        (f'"{"x" * 65}"', "1 to 64 characters"),
        ("42", "expected str"),
    ],
)
def test_organization_must_fit_a_legacy_dn(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"[addressbook]\norganization = {value}\n")
    message = str(err.value)
    assert "[addressbook]" in message and "organization" in message, message
    assert why in message, message


@pytest.mark.parametrize(
    "line",
    ["threads = 0", "threads = 1000", "call_seconds = 0", "refresh_seconds = -1", "nope = 1"],
)
def test_other_keys_are_checked(line: str) -> None:
    with pytest.raises(ConfigError, match=r"\[addressbook\]"):
        parse_config(f"[addressbook]\n{line}\n")


async def test_serve_answers_dns_under_the_configured_organization(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    from mapi_anywhere.serve import run_server

    config = Config(
        server=ServerSection(data_dir=tmp_path / "data"),
        endpoint_mapper=EndpointMapperSection(port=0),
        tunnel=TunnelSection(settings=TunnelConfig(port=0)),
        smtp=SmtpSection(enabled=False),
        submission=SubmissionSection(enabled=False),
        imap=ImapSection(enabled=False),
        pop3=Pop3Section(enabled=False),
        addressbook=AddressBookSection(organization=ORG, threads=2),
    )
    server = await nursery.start(run_server, config)
    await trio.to_thread.run_sync(lambda: server.store.add_user("alice", "pw-alice-1"))
    await server.gal.refresh()
    ours = legacy_dn(ORG, "alice")
    assert ours.startswith(f"/o={ORG}/ou=")

    def client() -> dict[str, Any]:
        dce = connect(server.epm_port)
        try:
            handle = nspi.hNspiBind(dce)["contextHandle"]
            resolved = nspi.hNspiResolveNamesW(dce, handle, pPropTags=[DN], paStr=["alice"])
            mid = int(resolved["ppMIds"]["aulPropTag"][0]["Data"])
            props = nspi.hNspiGetProps(dce, handle, CurrentRec=mid, pPropTags=[DN])
            found = nspi.hNspiDNToMId(dce, handle, [ours, legacy_dn(DEFAULT_ORGANIZATION, "alice")])
            return {
                "mid": mid,
                "dn": nspi.simplifyPropertyRow(props["ppRows"])[DN],
                "resolved_dn": nspi.simplifyPropertyRowSet(resolved["ppRows"])[0][DN],
                "dn_mids": [int(m["Data"]) for m in found["ppOutMIds"]["aulPropTag"]],
            }
        finally:
            dce.disconnect()

    with trio.fail_after(60):
        got = await trio.to_thread.run_sync(client)
    assert got["dn"] == got["resolved_dn"] == ours
    assert got["dn_mids"] == [got["mid"], 0]
