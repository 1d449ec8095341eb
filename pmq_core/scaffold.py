"""``pmq new-plugin NAME``: a plugin package that works from its first
minute, so that an author starts from what the docs describe instead of
copying it by hand (and forgetting, say, the package data that puts
``sql/`` in the wheel).

The files come from templates shipped in ``pmq_core/templates/plugin``:
a pyproject with the ``pmq`` entry point and the package data, a typed job
type with an attrs payload class, its own table and query, a connection
pool from ``pmq_worker_resources``, a test using the testing kit, and a
README. Its tests pass right after ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import string
import tempfile
from importlib import resources
from pathlib import Path

from pmq_core.errors import ConfigurationError, shown

#: A plugin name: the entry point's name and the prefix of its queues, so
#: lower-case words joined by single hyphens (it also names a Python
#: package and a table, with underscores).
NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_NAME = 40

#: Each file written, relative to the new directory, and its template.
FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "{package}/__init__.py": "__init__.py.tmpl",
    "{package}/plugin.py": "plugin.py.tmpl",
    "{package}/py.typed": None,
    "{package}/sql/queries.sql": "queries.sql.tmpl",
    "{package}/sql/migrations/0001_greetings.sql": "0001_greetings.sql.tmpl",
    "tests/test_{package}.py": "test_plugin.py.tmpl",
}


def check_name(name: str) -> str:
    """``name`` if it can name a plugin, else ValueError saying why."""
    if not NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ValueError(f"{shown(name)} cannot name a plugin: use 1-{MAX_NAME} lower-case letters and digits, "
                         "starting with a letter, with single hyphens between words (like 'thumbnails' or "
                         "'image-resize')")
    return name


def _pmq_requirement() -> str:
    """The pmq versions the new plugin is tested with: this minor series."""
    major, minor, *_ = importlib.metadata.version("pmq").split(".")
    return f"pmq>={major}.{minor},<{major}.{int(minor) + 1}"


def new_plugin(name: str, parent: Path) -> Path:
    """Write the plugin ``name`` into ``parent/pmq-<name>`` and return that
    directory. Refuses a bad name (ValueError) or an existing directory
    (ConfigurationError); either way, or on any failure, nothing is left
    behind: the files are written into a temporary directory beside it,
    which is renamed into place once complete."""
    check_name(name)
    package = "pmq_" + name.replace("-", "_")
    values = {"name": name, "package": package, "distribution": f"pmq-{name}", "queue": f"{name}:hello",
              "table": f"{package}_greetings", "pmq_requirement": _pmq_requirement()}
    target = parent / values["distribution"]
    if target.exists():
        raise ConfigurationError(f"{target} already exists: choose another name or directory (nothing was written)")
    templates = resources.files("pmq_core").joinpath("templates", "plugin")
    staging = Path(tempfile.mkdtemp(prefix=f".{values['distribution']}-", dir=parent))
    try:
        for relative, template in FILES.items():
            path = staging / relative.format(package=package)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = templates.joinpath(template).read_text(encoding="utf-8") if template else ""
            path.write_text(string.Template(text).substitute(values), encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
