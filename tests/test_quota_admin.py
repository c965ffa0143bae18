"""``mapi-anywhere quota``: a user's mailbox size and limit, and a limit of its own, set
through the running server (which enforces it at once) or on the files."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_admin_cli import WAIT, cli, logged_on, one_line_error, run_cli, serving

from mapi.model import errors
from mapi_anywhere.serve import parse_quota_limit


def test_limits_are_parsed_like_an_administrator_writes_them():
    assert parse_quota_limit("") == (False, None)
    assert parse_quota_limit("default") == (True, None)
    assert parse_quota_limit("0") == (True, 0)
    assert parse_quota_limit("1500") == (True, 1500)
    assert parse_quota_limit("500k") == (True, 500 << 10)
    assert parse_quota_limit("2G") == (True, 2 << 30)
    for bad in ("-1", "1.5G", "lots", "G"):
        with pytest.raises(ValueError):
            parse_quota_limit(bad)


async def test_a_limit_set_on_the_running_server_is_enforced_at_once(tmp_path: Path):
    data = tmp_path / "data"
    with serving(data) as server:
        await run_cli("adduser", "alice", "--password-stdin", data_dir=data, stdin="pw\n")
        with trio.fail_after(WAIT):
            async with logged_on(server.address, "alice", "pw") as session:
                store = await session.open_store()
                shown = await run_cli("quota", "alice", data_dir=data)
                assert shown.returncode == 0, shown.stderr
                assert shown.stdout.strip() == "alice: 0 bytes used, no limit"
                set_ = await run_cli("quota", "alice", "--set", "10K", data_dir=data)
                assert "a limit of 10.0 KiB (its own)" in set_.stdout, set_.stderr
                inbox = await store.open_folder(await store.special_folder("inbox"))
                message = await inbox.create_message()
                await message.set_props({"PR_SUBJECT": "big", "PR_BODY": "x" * 20_000})
                with pytest.raises(errors.NotEnoughDisk):
                    await message.save()
                back = await run_cli("quota", "alice", "--set", "default", data_dir=data)
                assert "no limit" in back.stdout, back.stderr
                await message.save()
        error = one_line_error(await run_cli("quota", "nobody", data_dir=data))
        assert error.startswith("mapi-anywhere: quota:") or "quota:" in error


def test_quota_works_on_the_files_without_a_server(tmp_path: Path):
    data = tmp_path / "data"
    assert cli("adduser", "bob", "--password-stdin", data_dir=data, stdin="pw\n").returncode == 0
    result = cli("quota", "bob", "--set", "1M", data_dir=data)
    assert result.returncode == 0, result.stderr
    assert "bob: " in result.stdout and "a limit of 1.0 MiB (its own)" in result.stdout
    assert "lots" in one_line_error(cli("quota", "bob", "--set", "lots", data_dir=data))
