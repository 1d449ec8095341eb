"""The docs keep up with the code: every hook has a section in
docs/hooks.md that names its arguments and version, and a test that uses
it; the complete example of docs/plugins.md works as printed."""

from __future__ import annotations

import inspect
import re
import sys
import tomllib
from pathlib import Path

import pytest

from pmq_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS_DOC = ROOT / "docs" / "hooks.md"
PLUGINS_DOC = ROOT / "docs" / "plugins.md"

HOOKS = sorted(name for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(func, f"{hookspecs.PROJECT}_spec"))


def sections(text: str) -> dict[str, str]:
    """docs/hooks.md's hook sections by hook name: the text from a
    ``### `name``` heading to the next heading."""
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    found = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        match = re.fullmatch(r"### `(\w+)`", heading.strip())
        if match:
            found[match[1]] = body
    return found


def test_hooks_are_found():
    assert "pmq_register_job_types" in HOOKS and "pmq_wrap_job" in HOOKS and len(HOOKS) >= 10


def test_every_hook_has_a_section_and_no_section_is_stale():
    documented = sections(HOOKS_DOC.read_text())
    assert sorted(documented) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_each_section_names_the_arguments_and_version_of_its_hook(hook):
    body = sections(HOOKS_DOC.read_text())[hook]
    func = getattr(hookspecs, hook)
    for argument in inspect.signature(func).parameters:
        assert f"`{argument}`" in body or f"{argument}:" in body, f"{hook}: argument {argument} is not documented"
    since = re.search(r"Since (\d+\.\d+)", func.__doc__ or "")
    assert since, f"the docstring of {hook} does not say since which version it exists"
    assert f"Since {since[1]}." in body, f"docs/hooks.md does not say {hook} exists since {since[1]}"


@pytest.mark.parametrize("hook", HOOKS)
def test_each_hook_is_used_by_a_test(hook):
    files = [*ROOT.glob("tests/**/test_*.py"), *ROOT.glob("plugins/*/tests/**/test_*.py")]
    users = [f for f in files if f.name != Path(__file__).name and hook in f.read_text(encoding="utf-8")]
    assert users, f"no test mentions {hook}"


def code_block(text: str, first_line: str) -> str:
    """The fenced code block of ``text`` whose first line is ``first_line``."""
    for block in re.findall(r"^```\w*\n(.*?)^```", text, flags=re.M | re.S):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"docs/plugins.md has no code block starting with {first_line!r}")


def test_the_plugin_example_is_a_working_distribution(tmp_path, monkeypatch, pmq_runtime):
    """Installs the example's package on sys.path and runs the example's
    own tests, the one on real servers included."""
    text = PLUGINS_DOC.read_text()
    package = tmp_path / "pmq_greetings"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(code_block(text, "# pmq_greetings/plugin.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pmq_greetings", raising=False)
    monkeypatch.delitem(sys.modules, "pmq_greetings.plugin", raising=False)

    project = tomllib.loads(code_block(text, "# pyproject.toml"))
    assert project["project"]["entry-points"]["pmq"] == {"greetings": "pmq_greetings.plugin"}
    assert "pmq>=0.1" in project["project"]["dependencies"]

    namespace: dict[str, object] = {}
    exec(compile(code_block(text, "# tests/test_greetings.py"), "test_greetings.py", "exec"), namespace)
    tests = {name: func for name, func in namespace.items() if name.startswith("test_") and callable(func)}
    assert len(tests) == 3
    for func in tests.values():
        wanted = inspect.signature(func).parameters
        func(**{name: {"pmq_runtime": pmq_runtime}[name] for name in wanted})
