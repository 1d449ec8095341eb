"""A built wheel of pmq carries the files pmq reads at run time from its
package: the SQL, the Lua scripts and the templates of ``pmq new-plugin``; and every module, those of its
subpackages (``pmq_core.cli``) too. Built offline from a copy of the project, with the setuptools already
installed; no server needed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ("lua/*.lua", "sql/*.sql", "sql/migrations/*.sql", "templates/plugin/*.tmpl", "py.typed")


def test_the_wheel_carries_the_sql_and_the_lua_scripts(tmp_path):
    project = tmp_path / "pmq"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "pmq_core", project / "pmq_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(tmp_path / "wheels"), str(project)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "wheels").glob("pmq-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {path.relative_to(ROOT).as_posix() for pattern in DATA for path in (ROOT / "pmq_core").glob(pattern)}
    assert any(path.endswith(".lua") for path in wanted) and any(path.endswith(".tmpl") for path in wanted)
    assert wanted - shipped == set()
    # A subpackage not listed in [tool.setuptools] packages would be left out.
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "pmq_core").rglob("*.py")}
    assert modules - shipped == set()
