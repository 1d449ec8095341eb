"""The docs keep up with the code: every hook's docstring (the hook
reference's one source) names its arguments and version, docs/hooks.md
generates a section for every hook, every hook has a test named after it,
and the complete example of docs/plugins.md works as printed."""

from __future__ import annotations

import ast
import functools
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


def test_hooks_are_found():
    assert "pmq_register_job_types" in HOOKS and "pmq_wrap_job" in HOOKS and len(HOOKS) >= 10


def test_the_hook_reference_generates_one_section_per_hook():
    """Each ``::: pmq_core.hookspecs.NAME`` line renders that hook's docstring."""
    generated = re.findall(r"^::: pmq_core\.hookspecs\.(\w+)$", HOOKS_DOC.read_text(), flags=re.M)
    assert sorted(generated) == HOOKS


def test_the_hook_reference_overview_lists_every_hook():
    listed = re.findall(r"^\| \[`(\w+)`\]\(#pmq_core\.hookspecs\.\1\) \|", HOOKS_DOC.read_text(), flags=re.M)
    assert sorted(listed) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_each_docstring_names_the_arguments_and_version_of_its_hook(hook):
    func = getattr(hookspecs, hook)
    doc = inspect.getdoc(func) or ""
    for argument in inspect.signature(func).parameters:
        assert re.search(rf"^Args:\n(?:    .*\n)*?    {argument}: \S", doc, flags=re.M), (
            f"{hook}: argument {argument} has no entry under Args:")
    assert re.search(r"^Since \d+\.\d+\.$", doc, flags=re.M), (
        f"the docstring of {hook} does not say since which version it exists")


@functools.cache
def names_of_test_functions() -> frozenset[str]:
    """The names of every test function and method, in pmq's tests and the
    first-party plugins' tests."""
    files = [*ROOT.glob("tests/**/test_*.py"), *ROOT.glob("plugins/*/tests/**/test_*.py")]
    return frozenset(node.name for path in files for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_each_hook_has_a_test_named_after_it(hook):
    named = [name for name in names_of_test_functions() if hook in name]
    assert named, f"no test function has {hook} in its name"


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
    shipped = project["tool"]["setuptools"]["package-data"]["pmq_greetings"]
    assert {"sql/*.sql", "sql/migrations/*.sql"} <= set(shipped)  # else a built wheel has no sql/

    namespace: dict[str, object] = {}
    exec(compile(code_block(text, "# tests/test_greetings.py"), "test_greetings.py", "exec"), namespace)
    tests = {name: func for name, func in namespace.items() if name.startswith("test_") and callable(func)}
    assert len(tests) == 3
    for func in tests.values():
        wanted = inspect.signature(func).parameters
        func(**{name: {"pmq_runtime": pmq_runtime}[name] for name in wanted})


def test_the_plugin_settings_example_reads_and_refuses_as_printed(tmp_path):
    """The settings class of docs/plugins.md, read from its pmq.toml; the
    printed error is what the misspelt key and a bad variable give."""
    from pmq_core import ConfigurationError
    from pmq_core.plugin_settings import read

    text = PLUGINS_DOC.read_text()
    namespace: dict[str, object] = {}
    exec(compile(code_block(text, "# pmq_greetings/settings.py"), "settings.py", "exec"), namespace)
    declared = {"greetings": namespace["GreetingSettings"]}
    (tmp_path / "pmq.toml").write_text(code_block(text, "# pmq.toml"))
    value = read(declared, tmp_path, {"PMQ_GREETINGS_MAX_LENGTH": "80"})["greetings"]
    assert (value.punctuation, value.max_length, value.api_key) == (".", 80, None)
    [printed] = re.findall(r"^pmq: error: (invalid plugin settings: .*)$", text, flags=re.M)
    (tmp_path / "pmq.toml").write_text('[greetings]\npunctation = "."\n')
    with pytest.raises(ConfigurationError) as caught:
        read(declared, tmp_path, {"PMQ_GREETINGS_MAX_LENGTH": "80.5"})
    assert str(caught.value) == printed
