"""A client process loads no server code: only the wire module and the property model.

DESIGN.md "Layers": ``clients/`` knows mapi's property schema, never its store. Each
check runs in a fresh interpreter, so what an earlier test imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT_MODULES = sorted(
    f"clients.{path.stem}" for path in (ROOT / "clients").glob("*.py") if path.stem != "__init__"
)

#: The store and the server: never in a client process.
FORBIDDEN = (
    "sqlite3",
    "_sqlite3",
    "mapi.rpc.service",
    "mapi.store",
    "mapi.storage",
    "mapi_anywhere",
)
#: What a client may load of ``mapi``: the wire constants (with the notification event
#: bits), the property model (tags, types, values, errors, limits, folder rights,
#: restrictions) with the work budget restrictions check, and the logon protocol's
#: pure client half. Package ``__init__`` modules hold only a docstring.
ALLOWED_MAPI = {
    "mapi",
    "mapi.wire",
    "mapi.budget",
    "mapi.model",
    "mapi.model.errors",
    "mapi.model.proptags",
    "mapi.model.properties",
    "mapi.model.limits",
    "mapi.model.rights",
    "mapi.model.restrictions",
    "mapi.access",
    "mapi.access.logon",
}


def _loaded_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def _forbidden(loaded: set[str]) -> list[str]:
    return sorted(
        name
        for name in loaded
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    )


def test_every_client_module_is_covered() -> None:
    assert {"clients.api", "clients.cli"} <= set(CLIENT_MODULES)


def test_client_modules_load_no_store_or_server_code() -> None:
    loaded = _loaded_after(CLIENT_MODULES)
    assert _forbidden(loaded) == []
    mapi_modules = {name for name in loaded if name == "mapi" or name.startswith("mapi.")}
    assert mapi_modules - ALLOWED_MAPI == set()


def test_each_client_module_alone_loads_no_store_or_server_code() -> None:
    for module in CLIENT_MODULES:
        assert _forbidden(_loaded_after([module])) == [], module


def test_wire_module_loads_nothing_of_the_store() -> None:
    loaded = _loaded_after(["mapi.wire"])
    assert _forbidden(loaded) == []
    assert "trio" not in loaded
    assert {name for name in loaded if name.startswith("mapi.")} == {"mapi.wire"}
