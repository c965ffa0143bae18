"""``mapi-anywhere adduser`` details and ``usermod``: on the files, and through the
running server's control socket (which rebuilds the GAL at once)."""

from __future__ import annotations

import io
import sys

import pytest
import trio

from mapi.store import ObjectStore
from mapi_anywhere.cli import main
from tests.serve_helpers import start_server


def run_cli(argv: list[str], stdin: str = "") -> int:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main(argv)
    finally:
        sys.stdin = old


def test_adduser_and_usermod_on_the_files(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert run_cli(["adduser", "--data-dir", data, "ann", "--password-stdin", "--title",
                    "Chief", "--department", "Ops", "--hidden"], "pw-ann-123\n") == 0  # fmt: skip
    assert run_cli(["usermod", "--data-dir", data, "ann", "--phone", "+1 555", "--title", "",
                    "--visible"]) == 0  # fmt: skip
    assert run_cli(["usermod", "--data-dir", data, "ann"]) == 2  # nothing to change
    assert run_cli(["usermod", "--data-dir", data, "nobody", "--title", "x"]) == 1
    store = ObjectStore(tmp_path / "data")
    try:
        ann = store.directory.get_user("ann")
    finally:
        store.close()
    assert (ann.title, ann.department, ann.phone, ann.hidden) == (None, "Ops", "+1 555", False)
    with pytest.raises(SystemExit):
        main(["usermod", "--help"])
    assert "--department" in capsys.readouterr().out


async def test_usermod_through_the_running_server(nursery, tmp_path):
    server = await start_server(nursery, tmp_path / "data", {"ann": "pw-ann-123"})
    data = str(tmp_path / "data")
    status = await trio.to_thread.run_sync(
        run_cli, ["usermod", "--data-dir", data, "ann", "--display-name", "Ann Other",
                  "--company", "ACME"],
    )  # fmt: skip
    assert status == 0
    entry = next(e for e in server.gal.current.entries if e.username == "ann")
    assert (entry.display_name, entry.company) == ("Ann Other", "ACME")
    status = await trio.to_thread.run_sync(
        run_cli, ["usermod", "--data-dir", data, "ann", "--hidden"]
    )
    assert status == 0
    assert all(e.username != "ann" for e in server.gal.current.entries)
