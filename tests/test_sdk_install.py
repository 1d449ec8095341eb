"""A plugin pip-installed into a fresh virtualenv is found through its entry
point, selected (or left out) by name, and listed by ``pmq plugins``.

The pmq checkout, the pmq-webhook plugin and a throw-away plugin written
here are built into wheels and installed with pip into a new virtualenv,
exactly as a user would install them. Only their third-party dependencies
(pluggy, psycopg, ...) are borrowed from the running environment, through a
``.pth`` file naming a directory of links to those distributions alone: no
pmq and no pmq plugin is visible there, which the test checks before
installing anything, so whatever is found afterwards was found through an
installed entry point. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK = ROOT / "plugins" / "pmq-webhook"
ENTRY_POINT_GROUP = "pmq"

TINY_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "pmq-tiny"
version = "3.1.4"
dependencies = ["pmq"]

[project.entry-points.pmq]
tiny = "pmq_tiny"
"""

TINY_MODULE = """\
from pmq_core import JobType, hookimpl


def count(job):
    return len(job.payload)


@hookimpl
def pmq_register_job_types():
    return [JobType(name="tiny:count", handler=count, priority=40, timeout=5.0)]
"""


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def copy_project(source: Path, target: Path, packages: list[str]) -> Path:
    """The files a build needs, copied so that building leaves no trace in
    the working tree."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    for package in packages:
        shutil.copytree(source / package, target / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return target


def dependency_links(target: Path) -> Path:
    """A directory of links to every distribution of this environment except
    pmq and its plugins: what the fresh environment may borrow."""
    target.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = (dist.metadata["Name"] or "").lower()
        if name == "pmq" or any(ep.group == ENTRY_POINT_GROUP for ep in dist.entry_points):
            continue
        tops = {Path(str(f)).parts[0] for f in dist.files or []}  # RECORD lists the .dist-info too
        for top in tops:
            if top.startswith(("..", "__editable__")) or top.endswith(".pth") or top == "__pycache__":
                continue
            if (site / top).exists() and not (target / top).exists():
                (target / top).symlink_to(site / top)
    return target


@pytest.mark.slow
def test_an_installed_plugin_is_found_selected_and_listed(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PMQ_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    work = tmp_path / "work"
    work.mkdir()

    # Build the three distributions, as `pip wheel` would for a user.
    tiny = tmp_path / "pmq-tiny"
    (tiny / "pmq_tiny").mkdir(parents=True)
    (tiny / "pyproject.toml").write_text(TINY_PYPROJECT)
    (tiny / "pmq_tiny" / "__init__.py").write_text(TINY_MODULE)
    wheels = tmp_path / "wheels"
    sources = [copy_project(ROOT, tmp_path / "pmq", ["pmq_core"]),
               copy_project(WEBHOOK, tmp_path / "pmq-webhook", ["pmq_webhook"]), tiny]
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", wheels, *sources, cwd=work, env=env)

    # A fresh virtualenv that sees the dependencies but no pmq at all.
    venv = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work, env=env)
    python, pmq = venv / "bin" / "python", venv / "bin" / "pmq"
    fresh_site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                          cwd=work, env=env).strip())
    (fresh_site / "borrowed_dependencies.pth").write_text(f"{dependency_links(tmp_path / 'deps')}\n")
    probe = ("import importlib.metadata as m, importlib.util as u; "
             "print(u.find_spec('pmq_core') is None, len(m.entry_points(group='pmq')))")
    assert run(python, "-c", probe, cwd=work, env=env).split() == ["True", "0"]

    # pip resolves pmq-webhook's and pmq-tiny's dependency on pmq from the
    # wheels, and pmq's own from what is already there. (This pip runs with
    # the fresh interpreter and installs into it: pip's --python.)
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(*pip, "install", "--quiet", "--no-index", "--find-links", wheels, "pmq-webhook", "pmq-tiny",
        cwd=work, env=env)
    run(*pip, "check", cwd=work, env=env)

    listed = {p["name"]: p for p in json.loads(run(pmq, "plugins", "--json", cwd=work, env=env))}
    assert sorted(listed) == ["tiny", "webhook"]
    assert (listed["webhook"]["distribution"], listed["webhook"]["version"]) == ("pmq-webhook", "0.1.0")
    assert [jt["name"] for jt in listed["webhook"]["job_types"]] == ["webhook:process"]
    assert listed["webhook"]["job_types"][0]["timeout"] == 15.0
    assert (listed["tiny"]["distribution"], listed["tiny"]["version"]) == ("pmq-tiny", "3.1.4")
    assert [(jt["name"], jt["priority"]) for jt in listed["tiny"]["job_types"]] == [("tiny:count", 40)]

    only_tiny = json.loads(run(pmq, "plugins", "--json", "--plugins", "tiny", cwd=work, env=env))
    assert [p["name"] for p in only_tiny] == ["tiny"]
    only_webhook = json.loads(run(pmq, "plugins", "--json", cwd=work, env={**env, "PMQ_PLUGINS": "webhook"}))
    assert [p["name"] for p in only_webhook] == ["webhook"]

    script = textwrap.dedent("""\
        import json, sys
        from pmq_core.plugins import Plugins
        host = Plugins(["webhook"]).load()
        print(json.dumps({"job_types": sorted(host.job_types), "tiny_imported": "pmq_tiny" in sys.modules}))
    """)
    assert json.loads(run(python, "-c", script, cwd=work, env=env)) == {
        "job_types": ["webhook:process"], "tiny_imported": False}
