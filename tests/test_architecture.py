"""Structural promises: the core stays transport-free, and migrations match the models."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from rbac_core import Database
from rbac_core.store.models import Base

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "rbac_core"
FORBIDDEN = (
    "slack_bolt",
    "slack_sdk",
    "flask",
    "werkzeug",
    "httpx",
    "requests",
    "gunicorn",
    "bot",
    "handlers",
    "pyotp_qr",
    "prometheus_client",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_rbac_core_imports_nothing_from_slack_flask_http_or_whatsapp_code() -> None:
    offenders = {
        str(path.relative_to(CORE)): sorted(_imports(path) & set(FORBIDDEN))
        for path in CORE.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_migrations_build_exactly_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


# Ways a file in the repository could name a place beside it: a relative climb
# out of the clone, the workplace's shared folder, or an ancestor of the root.
_OUTSIDE = re.compile(r"\.\./|(?<![\w.])shared/|parents\[[2-9]\]|REPO\.parent|ROOT\.parent")


def test_no_test_script_or_benchmark_reads_outside_the_repository() -> None:
    """A fresh clone with nothing beside it must test itself (CI clones main alone)."""
    places = [REPO / "scripts", REPO / ".ci", REPO / "tests", REPO / "bench"]
    offenders = []
    for place in places:
        for path in sorted(place.rglob("*")):
            if not path.is_file() or path.suffix in {".json", ".pyc"} or path == Path(__file__):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if _OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


HANDLERS = REPO / "handlers"


STORE = "rbac_core.store"


def _is_store(module: str | None, names: list[ast.alias]) -> bool:
    """`rbac_core.store`, any module in it, or `from rbac_core import store`."""
    if module == "rbac_core":
        return any(alias.name == "store" for alias in names)
    return module is not None and (module == STORE or module.startswith(STORE + "."))


def test_handlers_never_touch_the_store_or_the_models() -> None:
    """Surfaces act only through gate actions and the reads the gate hands out
    (`Gate.peek`, `Gate.snapshot_for`): no import of the store or the ORM models, and
    no reaching for the gate's `db` (issue 13)."""
    offenders: dict[str, list[str]] = {}
    for path in HANDLERS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            found = None
            if isinstance(node, ast.ImportFrom) and _is_store(node.module, node.names):
                found = node.module
            elif isinstance(node, ast.Import):
                found = next((a.name for a in node.names if _is_store(a.name, [])), None)
            elif isinstance(node, ast.Attribute) and node.attr == "db":
                found = f"line {node.lineno}: .db"
            if found:
                offenders.setdefault(path.name, []).append(found)
    assert offenders == {}


# The store's own bookkeeping around the gate: leases of outbox rows and scheduled
# periods, inbound events already taken in, verified webhook bodies, numbers' send
# slots, the schema. Everything else a person,
# the scheduler or an operator causes is written by a gate action.
WRITERS = {
    "rbac_core/store/db.py",
    "rbac_core/gate/core.py",
    "rbac_core/gate/auditing.py",
    "rbac_core/gate/batching.py",
    "rbac_core/outbox/queue.py",
    "rbac_core/outbox/slots.py",
    "rbac_core/store/job_runs.py",
    "rbac_core/store/inbound.py",
    "rbac_core/store/webhook_inbox.py",
    "rbac_core/store/migrate.py",
}


def _opens_write_transactions(path: Path) -> list[int]:
    """Lines calling `.transaction(write=True)` or `.write()`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        writes = any(
            k.arg == "write" and not (isinstance(k.value, ast.Constant) and not k.value.value)
            for k in node.keywords
        )
        if (node.func.attr == "transaction" and writes) or (
            node.func.attr == "write" and not node.args and not node.keywords
        ):
            lines.append(node.lineno)
    return lines


def test_nothing_outside_the_gate_opens_a_write_transaction() -> None:
    found = {}
    for package in ("rbac_core", "handlers", "bot"):
        for path in (REPO / package).rglob("*.py"):
            name = str(path.relative_to(REPO))
            lines = _opens_write_transactions(path)
            if lines and name not in WRITERS:
                found[name] = lines
    assert found == {}


def test_the_write_transaction_finder_finds_them() -> None:
    """The test above must be able to fail: it sees both spellings."""
    sample = REPO / "tests" / "data" / "opens_writes.py.txt"
    assert _opens_write_transactions(sample) == [2, 4]


def _functions(path: Path) -> list[tuple[str, int]]:
    """(name, lines) of every function and method in a module, nested ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_the_gate_is_a_chain_of_short_stages() -> None:
    """No function of the gate over 60 lines, no gate module over 400: each stage reads
    as one concern (issue 13)."""
    for path in sorted((REPO / "rbac_core" / "gate").glob("*.py")):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, path.name
        long = [(name, n) for name, n in _functions(path) if n > 60]
        assert long == [], f"{path.name}: {long}"


def test_every_module_is_small_and_every_function_short() -> None:
    """No module over 400 lines and no function over 80 in the three packages: a part
    that grows past that is asking to be split before it hides another part (issue 13)."""
    too_long: dict[str, object] = {}
    for package in ("bot", "rbac_core", "handlers"):
        for path in sorted((REPO / package).rglob("*.py")):
            name = str(path.relative_to(REPO))
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > 400:
                too_long[name] = f"{lines} lines"
            long = [(function, n) for function, n in _functions(path) if n > 80]
            if long:
                too_long[f"{name} functions"] = long
    assert too_long == {}
