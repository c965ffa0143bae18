"""The tree stays ruff-clean and mypy-strict-clean, and honours DESIGN.md's layering."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["dcerpc", "endpoint_mapper", "mapi", "tunnel", "clients", "mapi_anywhere"]

#: What each layer may import from the project (DESIGN.md "Layers": imports point down).
ALLOWED = {
    "dcerpc": {"dcerpc"},
    "endpoint_mapper": {"dcerpc", "endpoint_mapper"},
    "mapi": {"dcerpc", "endpoint_mapper", "mapi"},
    "tunnel": {"dcerpc", "endpoint_mapper", "tunnel"},
    "clients": {"dcerpc", "endpoint_mapper", "tunnel", "mapi", "clients"},
    "mapi_anywhere": set(PACKAGES),
}
#: Modules that may do I/O (trio, sockets, TLS, clocks, threads); every other module of
#: a protocol package or of the store is sans-IO. Each says why it is a driver.
DRIVERS = {
    "dcerpc/server.py",
    "dcerpc/client.py",
    "dcerpc/trio_util.py",
    "endpoint_mapper/client.py",
    "mapi/rpc/service.py",
    "mapi/rpc/workers.py",  # the store's worker threads (trio limiters, cancellation)
    # Public import paths that only re-export the trio drivers of tunnel/drivers/.
    "tunnel/proxy.py",
    "tunnel/tls.py",
    "tunnel/transport.py",
}
IO_MODULES = {
    "trio",
    "socket",
    "ssl",
    "time",
    "asyncio",
    "selectors",
    "threading",
    "_thread",
    "concurrent",
    "multiprocessing",
    "subprocess",
}
#: The store core runs in worker threads by design (DESIGN.md: store code runs in
#: worker threads), so these of its modules may use ``threading`` (locks, thread-local
#: state); no other sans-IO module may.
MAPI_THREADING = {
    "mapi/budget.py": "the work budget of the call running in this thread (thread-local)",
    "mapi/access/directory.py": "one lock over the directory's SQLite connection",
    "mapi/storage/guard.py": "the inline-path flag (thread-local), mailbox locks that never wait",
    "mapi/notify/subscriptions.py": "one lock over subscriptions and queues, shared by threads",
    "mapi/rpc/ops.py": "a msgpack packer per worker thread (thread-local)",
    "mapi/store.py": "one lock over the table of open mailboxes, shared by threads",
}
#: Loaded by a core module's imports, directly or not: never. (``time`` is loaded at
#: start-up and ``threading`` by ``logging``, so those two are checked directly only.)
IO_LOADED = IO_MODULES - {"time", "threading"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


PRESENT = [p for p in PACKAGES if (ROOT / p / "__init__.py").is_file()]


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package: str) -> None:
    for path in _modules(package):
        project = _imports(path) & set(PACKAGES)
        assert project <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {project}"


CORE_PACKAGES = ["dcerpc", "endpoint_mapper", "mapi", "tunnel"]


def _core_modules(package: str) -> list[str]:
    """The sans-IO modules of ``package``, as paths relative to the root."""
    rels = (path.relative_to(ROOT).as_posix() for path in _modules(package))
    return [rel for rel in rels if rel not in DRIVERS and not rel.startswith(f"{package}/drivers/")]


@pytest.mark.parametrize("package", CORE_PACKAGES)
def test_protocol_cores_are_sans_io(package: str) -> None:
    for rel in _core_modules(package):
        io = _imports(ROOT / rel) & IO_MODULES
        if rel in MAPI_THREADING:
            io -= {"threading"}
        assert not io, f"{rel} is a core module but imports {io}"


def test_listed_drivers_and_threading_modules_exist() -> None:
    """The exemptions above name modules that are there (a moved module is listed anew)."""
    missing = [rel for rel in (*DRIVERS, *MAPI_THREADING) if not (ROOT / rel).is_file()]
    assert missing == [], f"listed in tests/test_quality.py but not in the tree: {missing}"


_PROBE = """
import importlib, json, sys
watched = set(sys.argv[1].split(","))
found = {}
for module in sys.argv[2:]:
    before = set(sys.modules)
    importlib.import_module(module)
    loaded = {name.split(".")[0] for name in set(sys.modules) - before} & watched
    if loaded:
        found[module] = sorted(loaded)
print(json.dumps(found))
"""


def _module_name(rel: str) -> str:
    return rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


@pytest.mark.parametrize("package", CORE_PACKAGES)
def test_protocol_cores_load_no_io_module_transitively(package: str) -> None:
    """Importing a core module, in a fresh interpreter, loads no I/O module through what
    it imports (a package ``__init__`` re-exporting a driver, a heavy standard module);
    each core module is named with what its import added first."""
    modules = [_module_name(rel) for rel in _core_modules(package)]
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(sorted(IO_LOADED)), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    hint = "(`python -X importtime -c 'import <module>'` shows the chain)"
    assert found == {}, f"core modules whose import loads I/O modules: {found} {hint}"


def test_ruff_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *PRESENT, "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *(arg for p in PRESENT for arg in ("-p", p))],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
