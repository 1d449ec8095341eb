"""SQL lives in query files only: ``pmq_core/sql/queries.sql`` (run by the
store, ``pmq_core/store.py``) and migrations, and each plugin's own
``sql/`` folder. Python code names queries; it never holds their text."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmq_core.queries import load_queries

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "pmq_core"
#: The first-party plugins' packages (their tests are not scanned: a test
#: may read or seed tables directly).
PLUGIN_PACKAGES = sorted(p.parent for p in (ROOT / "plugins").glob("*/pmq_*/__init__.py"))

#: What SQL looks like in a string: statements written in capitals, the way
#: the query files write them, and PostgreSQL's advisory-lock and
#: notification functions in any case. Capitals keep English prose ("select
#: a plugin", "update the schema") out of it.
SQL = re.compile(
    r"\b(SELECT\s+\S|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|DATABASE|FUNCTION)"
    r"|DROP\s+(TABLE|INDEX|DATABASE)|ALTER\s+TABLE|TRUNCATE\s|COPY\s+\w+\s*\(|LISTEN\s+\w|NOTIFY\s+\w"
    r"|SHOW\s+\w|SET\s+\w+\s*=)"
    r"|(?i:pg_(try_)?advisory|pg_notify)"
)
#: Strings that look like SQL and are not, each with the reason. Empty: keep
#: it so, or say here why an entry is needed.
ALLOWED: dict[tuple[str, str], str] = {}


def python_files() -> Iterator[Path]:
    yield from sorted(CORE.rglob("*.py"))
    for package in PLUGIN_PACKAGES:
        yield from sorted(package.rglob("*.py"))


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes: prose, which may name SQL."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def sql_strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = docstrings(tree)
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            and SQL.search(node.value)]


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_scan_sees_sql_in_its_forms():
    for text in ["SELECT id FROM jobs", "INSERT INTO jobs (id) VALUES (1)", "UPDATE jobs SET status = 'x'",
                 "DELETE FROM jobs", "CREATE DATABASE {}", 'DROP DATABASE IF EXISTS "x"', "LISTEN pmq_jobs_v1",
                 "SHOW data_directory", "SELECT pg_try_advisory_lock(%s)", "COPY jobs (id) FROM STDIN",
                 "SET plan_cache_mode = force_generic_plan"]:
        assert SQL.search(text), text
    for prose in ["select a plugin that declares some", "run `pmq db upgrade`", "Update the schema first",
                  "nothing was written", "job 3: payload is not a JSON object"]:
        assert not SQL.search(prose), prose


@pytest.mark.parametrize("path", list(python_files()), ids=name)
def test_no_sql_text_outside_the_query_files(path: Path):
    found = [text for text in sql_strings(path) if (name(path), text) not in ALLOWED]
    assert not found, f"{name(path)} holds SQL; put it in a query file and run it by name: {found}"


def called_names(path: Path, functions: set[str]) -> set[str]:
    """The string literals passed first to calls of ``functions`` in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if callee in functions and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


#: The calls of the store that name a query.
STATEMENTS = {"Query", "Count", "Copy", "_rows", "q"}


def test_every_core_query_is_run_by_the_store_and_every_name_run_exists():
    queries = set(load_queries("pmq_core"))
    named = called_names(CORE / "store.py", STATEMENTS)
    assert queries - named == set(), "queries nothing runs: delete them"
    assert named - queries == set(), "names with no query in queries.sql"
    elsewhere = {name(p): called_names(p, STATEMENTS) for p in CORE.rglob("*.py") if p.name != "store.py"}
    assert {path: names for path, names in elsewhere.items() if names} == {}, "only the store runs queries"


@pytest.mark.parametrize("package", PLUGIN_PACKAGES, ids=lambda p: p.name)
def test_every_plugin_query_is_used_and_every_name_used_exists(package: Path):
    queries = set(load_queries(package.name)) if (package / "sql" / "queries.sql").exists() else set()
    named = set().union(*(called_names(path, {"q"}) for path in package.rglob("*.py")))
    assert queries - named == set(), f"{package.name}: queries nothing runs"
    assert named - queries == set(), f"{package.name}: names with no query in its queries.sql"
