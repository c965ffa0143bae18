"""The tree stays ruff-clean and mypy-strict-clean, and honours DESIGN.md's layering."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    "dcerpc",
    "endpoint_mapper",
    "mapi",
    "tunnel",
    "internet_mail",
    "clients",
    "mapi_anywhere",
]

#: What each layer may import from the project (DESIGN.md "Layers": imports point down).
ALLOWED = {
    "dcerpc": {"dcerpc"},
    "endpoint_mapper": {"dcerpc", "endpoint_mapper"},
    "mapi": {"dcerpc", "endpoint_mapper", "mapi"},
    "tunnel": {"dcerpc", "endpoint_mapper", "tunnel"},
    # The mail front doors (MIME, SMTP, IMAP, POP3) use the store core in-process, never
    # the tunnel or the client library.
    "internet_mail": {"dcerpc", "endpoint_mapper", "mapi", "internet_mail"},
    # The client converts mail files locally (mapi-cli import/export) with the MIME
    # codec, internet_mail.mime: sans-IO, bytes and properties in and out. It never uses
    # the mail front doors themselves (test_clients_use_only_the_mime_codec).
    "clients": {"dcerpc", "endpoint_mapper", "tunnel", "mapi", "internet_mail", "clients"},
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
    "internet_mail/smtp/driver.py",  # the SMTP core's trio driver (sockets, STARTTLS, timeouts)
    # The IMAP core's trio driver (sockets, TLS, worker threads, timeouts, IDLE wake-ups).
    "internet_mail/imap/driver.py",
    "internet_mail/pop3/driver.py",  # the POP3 core's trio driver (the same, and the lock's end)
    # The IMAP/POP3 backends bind the cores to the store (SQLite in worker threads):
    # locks over the state connections share (maildrop locks, watchers, the throttle).
    "internet_mail/store/imap.py",
    "internet_mail/store/pop3.py",
    "internet_mail/store/logons.py",  # also the throttle's clock (time.monotonic)
    "internet_mail/smtp/client_driver.py",  # the SMTP client's trio driver (sockets, TLS, DNS)
    "internet_mail/outbound/queue.py",  # the durable queue: files, fsync, a lock for threads
    "internet_mail/outbound/runner.py",  # the outbound queue's trio runner (sockets, clock)
    "internet_mail/outbound/dkim_sign.py",  # dkimpy loads dnspython, which imports socket
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
    "mapi/access/throttle.py": "one lock over the logon counters, shared by all doors",
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


def test_clients_use_only_the_mime_codec() -> None:
    """Of internet_mail, the client library imports the MIME codec only."""
    found = []
    for path in _modules("clients"):
        for name in _project_imports(path):
            if name.startswith("internet_mail") and not name.startswith("internet_mail.mime"):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []


CORE_PACKAGES = ["dcerpc", "endpoint_mapper", "mapi", "tunnel", "internet_mail"]


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


#: Standard modules loaded before the probe, each with the reason its I/O imports are
#: not the core's: ``email.utils`` imports ``socket`` at module level, for
#: ``make_msgid``'s ``getfqdn()``, which the MIME conversion never calls (it takes
#: Message-IDs from the properties). A core importing ``socket`` itself is still caught by
#: the direct check above.
PRELOADED = ("email.utils",)

_PROBE = """
import importlib, json, sys
for name in sys.argv[2].split(","):
    importlib.import_module(name)
watched = set(sys.argv[1].split(","))
found = {}
for module in sys.argv[3:]:
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
        [sys.executable, "-c", _PROBE, ",".join(sorted(IO_LOADED)), ",".join(PRELOADED), *modules],
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


# --- The store's structure (issue 17): one storage layer, sub-packages by job -----------

#: The layers of ``mapi``, lowest first: a module may import its own layer and those
#: below it, never one above. The property model knows nothing of storage; storage knows
#: nothing of the objects, tables, notifications and access rules built on it; the store
#: facade sits on those; the RPC edge on the facade.
MAPI_LAYERS = [
    {"mapi.model", "mapi.budget", "mapi.wire"},
    {"mapi.storage"},
    {"mapi.access", "mapi.objects", "mapi.tables", "mapi.notify"},
    {"mapi.store", "mapi.addressbook"},
    {"mapi.rpc"},
]
#: Statement text of SQL: a string that starts with one of these words (upper case, as
#: the project writes SQL).
_SQL = re.compile(
    r"\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|WITH|BEGIN|COMMIT|"
    r"ROLLBACK|REPLACE|VACUUM)\s"
)


def _mapi_layer(module: str) -> int:
    for rank, layer in enumerate(MAPI_LAYERS):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return rank
    raise AssertionError(f"{module} is in no layer of MAPI_LAYERS")


def _project_imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, as dotted names (``from p import m`` names
    ``p.m`` when ``p/m.py`` exists)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if (ROOT / (sub.replace(".", "/") + ".py")).is_file():
                    found.add(sub)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def test_mapi_layers_point_down() -> None:
    wrong = []
    for path in _modules("mapi"):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "mapi/__init__.py":
            continue
        own = _mapi_layer(_module_name(rel))
        for name in _project_imports(path):
            if name.startswith("mapi.") and _mapi_layer(name) > own:
                wrong.append(f"{rel} imports {name}")
    assert wrong == [], "a mapi module imports a layer above its own:\n" + "\n".join(wrong)


def _runtime_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports when it is loaded: module-level imports, not
    those under ``if TYPE_CHECKING:`` (annotations only) nor inside functions."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If):
                test = node.test
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_project_imports_of(node))

    def _project_imports_of(node: ast.Import | ast.ImportFrom) -> set[str]:
        holder = ast.Module(body=[node], type_ignores=[])
        out: set[str] = set()
        for inner in ast.walk(holder):
            if isinstance(inner, ast.Import):
                out.update(alias.name for alias in inner.names)
            elif isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                # ``from package import module`` loads the module; the package's
                # ``__init__`` counts only when a name is taken from it.
                for alias in inner.names:
                    sub = f"{inner.module}.{alias.name}"
                    if (ROOT / (sub.replace(".", "/") + ".py")).is_file():
                        out.add(sub)
                    else:
                        out.add(inner.module)
        return {name for name in out if name.split(".")[0] in PACKAGES}

    visit(tree.body)
    return found


def test_no_import_cycles() -> None:
    """No project module reaches itself through what it imports at load time."""
    graph: dict[str, set[str]] = {}
    for package in PRESENT:
        for path in _modules(package):
            name = _module_name(path.relative_to(ROOT).as_posix())
            graph[name] = {dep for dep in _runtime_imports(path) if dep != name}
    # A package's __init__ is loaded by its modules' imports, but ours hold docstrings or
    # re-exports; a cycle through one shows as a cycle through the modules it names.
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


#: Imports inside functions, each with its reason (none may just dodge a cycle).
LAZY_IMPORTS = {
    # The command line answers --help and user errors without loading the server.
    "mapi_anywhere/cli.py": "the CLI loads the server, the store or a client only for the "
    "command that runs",
    "tunnel/drivers/client.py": "a client loads the HTTP/1.1 or the HTTP/2 driver, the one it uses",
}


def test_no_function_level_imports() -> None:
    found = []
    for package in PRESENT:
        for path in _modules(package):
            rel = path.relative_to(ROOT).as_posix()
            if rel in LAZY_IMPORTS:
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    for inner in ast.walk(node):
                        if isinstance(inner, ast.Import | ast.ImportFrom):
                            found.append(f"{rel}:{inner.lineno}")
    assert found == [], "imports inside functions (hoist them, or list the reason):\n" + (
        "\n".join(sorted(set(found)))
    )


def test_sql_only_in_storage() -> None:
    """SQL text and ``sqlite3`` appear only in the storage layer (``mapi/storage/``)."""
    found = []
    for package in PRESENT:
        for path in _modules(package):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("mapi/storage/"):
                continue
            tree = ast.parse(path.read_text())
            if "sqlite3" in _imports(path):
                found.append(f"{rel}: imports sqlite3")
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and _SQL.match(node.value)
                ):
                    found.append(f"{rel}:{node.lineno}: {node.value.strip()[:40]!r}")
    assert found == [], "SQL outside mapi/storage/:\n" + "\n".join(found)


#: What the core may import of ``mapi/storage/``: the interface, the lock and inline
#: guard, the property bags it fills. The SQLite backend's own modules stay behind the
#: interface, so a second backend is a module beside them, not an edit of the core.
STORAGE_INTERFACE = {"mapi.storage.api", "mapi.storage.guard", "mapi.storage.propbag"}
#: Where a backend is chosen and opened (each names the SQLite modules it opens).
BACKEND_OPENERS = {
    "mapi/store.py": "opens mailboxes (MailboxDB) and their data file directories",
    "mapi/access/directory.py": "opens the user directory's database (SqliteDirectory)",
}


def test_the_core_reaches_storage_through_its_interface() -> None:
    found = []
    for path in _modules("mapi"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("mapi/storage/") or rel in BACKEND_OPENERS:
            continue
        for name in _project_imports(path):
            if name.startswith("mapi.storage.") and name not in STORAGE_INTERFACE:
                found.append(f"{rel} imports {name}")
    assert found == [], "core modules past the storage interface:\n" + "\n".join(found)
