"""``pmq new-plugin NAME`` writes a plugin package whose own tests pass
right after ``pip install -e`` of it, on the servers this suite uses, and
whose wheel carries its ``sql/`` files.

The package is installed into a fresh virtualenv layered over this one (it
sees this environment's distributions, pmq's testing kit included, through
``site.addsitedir``), so that the editable install never touches the
environment the rest of the suite runs in. Nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pmq_core.cli import cli
from pmq_core.scaffold import new_plugin


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_a_new_plugin_passes_its_own_tests_once_installed_and_its_wheel_has_its_sql(tmp_path, pmq_servers):
    result = CliRunner().invoke(cli, ["new-plugin", "hello-world", "--directory", str(tmp_path)])
    assert result.exit_code == 0, result.output
    project = tmp_path / "pmq-hello-world"
    assert f"created {project}/" in result.output

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    (site / "over_the_test_environment.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "-e", project, cwd=tmp_path, env=env)

    # Its tests, on this suite's servers (the kit makes its own database).
    servers = {"PMQ_DATABASE_URL": pmq_servers.database_url, "PMQ_REDIS_URL": pmq_servers.redis_url}
    report = run(python, "-m", "pytest", "-p", "no:cacheprovider", "-q", cwd=project, env={**env, **servers})
    assert "2 passed" in report, report
    run(sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", ".", cwd=project, env=env)
    pmq = (python, "-c", "import sys; from pmq_core.cli import main; main(sys.argv[1:])")
    listed = run(*pmq, "plugins", "--plugins", "hello-world", cwd=tmp_path, env=env)
    assert "job type hello-world:hello" in listed

    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", tmp_path / "dist", project, cwd=tmp_path, env=env)
    (wheel,) = (tmp_path / "dist").glob("pmq_hello_world-0.1.0-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"pmq_hello_world/sql/queries.sql", "pmq_hello_world/sql/migrations/0001_greetings.sql",
            "pmq_hello_world/plugin.py", "pmq_hello_world/py.typed"} <= names


@pytest.mark.parametrize("name", ["", "Hello", "hello_world", "_x", "x-", "a--b", "9lives", "x" * 41, "a b", "é"])
def test_a_bad_name_is_refused_with_one_line_and_nothing_written(tmp_path, name):
    result = CliRunner().invoke(cli, ["new-plugin", name, "--directory", str(tmp_path)])
    assert result.exit_code == 2
    assert "cannot name a plugin: use 1-40 lower-case letters and digits" in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_not_touched(tmp_path):
    (tmp_path / "pmq-taken").mkdir()
    (tmp_path / "pmq-taken" / "mine.txt").write_text("keep me")
    with pytest.raises(Exception, match=r"pmq-taken already exists: choose another name or directory"):
        new_plugin("taken", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["pmq-taken"]
    assert [p.name for p in (tmp_path / "pmq-taken").iterdir()] == ["mine.txt"]
