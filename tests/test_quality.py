"""The tree stays ruff-clean and mypy-strict-clean, and honours DESIGN.md's layering."""

from __future__ import annotations

import ast
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
#: Modules that may do I/O (trio, sockets, TLS, clocks); every other module is sans-IO.
DRIVERS = {
    "dcerpc/server.py",
    "dcerpc/client.py",
    "dcerpc/trio_util.py",
    "endpoint_mapper/client.py",
    "mapi/service.py",
    "mapi/workers.py",  # the store's worker threads (trio limiters, cancellation)
}
IO_MODULES = {"trio", "socket", "ssl", "time", "asyncio", "selectors"}


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


@pytest.mark.parametrize("package", ["dcerpc", "endpoint_mapper", "mapi", "tunnel"])
def test_protocol_cores_are_sans_io(package: str) -> None:
    for path in _modules(package):
        rel = path.relative_to(ROOT).as_posix()
        if rel in DRIVERS or rel.startswith(f"{package}/drivers/"):
            continue
        io = _imports(path) & IO_MODULES
        assert not io, f"{rel} is a core module but imports {io}"


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
