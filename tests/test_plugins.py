"""The plugin host: finding plugins through entry points, selecting them, and
refusing bad ones with one message that names the plugin and its
distribution.

Distributions are written to a temporary directory on ``sys.path`` (a
``.dist-info`` folder and a module), which is all importlib.metadata looks
at: the same discovery as for a pip-installed plugin, at no install cost.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from pmq_core import PluginError, hookimpl
from pmq_core.plugins import Plugins

HEADER = "from pmq_core import JobType, hookimpl\n\ndef handler(job):\n    return 'done'\n\n"


class Distributions:
    """Writes throw-away plugin distributions into a directory on sys.path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.suffix = uuid.uuid4().hex[:8]

    def add(self, dist: str, entry: str, source: str, version: str = "1.2.3") -> str:
        """Install distribution ``dist`` with entry point ``entry`` whose
        module holds ``source``; returns the entry point's name."""
        module = f"{entry}_{self.suffix}"
        (self.root / f"{module}.py").write_text(HEADER + textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[pmq]\n{entry}_{self.suffix} = {module}\n")
        return f"{entry}_{self.suffix}"


@pytest.fixture
def dists(tmp_path, monkeypatch) -> Distributions:
    monkeypatch.syspath_prepend(str(tmp_path))
    return Distributions(tmp_path)


DECLARES_SHARED = """
@hookimpl
def pmq_register_job_types():
    return [JobType(name="shared:job", handler=handler)]
"""


def test_plugins_are_found_through_entry_points_with_their_distribution(dists):
    name = dists.add("pmq-alpha", "alpha", DECLARES_SHARED, version="2.0.1")
    host = Plugins([name]).load()
    [info] = host.infos
    assert (info.name, info.distribution, info.version) == (name, "pmq-alpha", "2.0.1")
    assert info.hooks == ("pmq_register_job_types",)
    assert [jt.name for jt in info.job_types] == ["shared:job"]
    assert host.job_type("shared:job").handler(None) == "done"


def test_selection_loads_only_the_selected_plugins(dists):
    alpha = dists.add("pmq-alpha", "alpha", DECLARES_SHARED)
    other = dists.add("pmq-other", "other", """
        raise RuntimeError("the unselected plugin was imported")
    """)
    host = Plugins([alpha]).load()
    assert [info.name for info in host.infos] == [alpha]
    assert f"{other}" not in sys.modules


def test_nothing_is_imported_before_first_need(dists):
    name = dists.add("pmq-lazy", "lazy", DECLARES_SHARED)
    host = Plugins([name])
    assert name not in sys.modules
    assert host.job_type("shared:job") is not None
    assert name in sys.modules


def test_two_plugins_claiming_one_job_type_are_named_in_one_message(dists):
    alpha = dists.add("pmq-alpha", "alpha", DECLARES_SHARED)
    beta = dists.add("pmq-beta", "beta", DECLARES_SHARED)
    with pytest.raises(PluginError) as caught:
        Plugins([alpha, beta]).load()
    message = str(caught.value)
    assert "'shared:job' is declared by two plugins" in message
    assert f"'{alpha}' (distribution pmq-alpha)" in message
    assert f"'{beta}' (distribution pmq-beta)" in message
    assert "--plugins" in message
    # Selecting one of them resolves it.
    assert [i.name for i in Plugins([beta]).load().infos] == [beta]


def test_a_plugin_that_fails_to_import_is_named_with_its_distribution(dists):
    name = dists.add("pmq-broken", "broken", """
        import a_module_that_does_not_exist_anywhere
    """)
    with pytest.raises(PluginError) as caught:
        Plugins([name]).load()
    message = str(caught.value)
    assert f"plugin '{name}' (distribution pmq-broken) failed to import" in message
    assert "a_module_that_does_not_exist_anywhere" in message


def test_a_handler_that_is_not_callable_is_refused(dists):
    name = dists.add("pmq-bad-handler", "badhandler", """
        @hookimpl
        def pmq_register_job_types():
            return [JobType(name="bad:handler", handler="handler")]
    """)
    with pytest.raises(PluginError) as caught:
        Plugins([name]).load()
    message = str(caught.value)
    assert f"plugin '{name}' (distribution pmq-bad-handler) failed to declare its job types" in message
    assert "handler of job type 'bad:handler' is not callable: 'handler'" in message


def test_pmq_register_job_types_must_return_job_types(dists):
    name = dists.add("pmq-dicts", "dicts", """
        @hookimpl
        def pmq_register_job_types():
            return [{"name": "a:dict", "handler": handler}]
    """)
    with pytest.raises(PluginError) as caught:
        Plugins([name]).load()
    message = str(caught.value)
    assert f"plugin '{name}' (distribution pmq-dicts) returned {{'name': 'a:dict'" in message
    assert "expected pmq_core.JobType instances" in message


def test_selecting_a_plugin_that_is_not_installed_is_refused(dists):
    alpha = dists.add("pmq-alpha", "alpha", DECLARES_SHARED)
    with pytest.raises(PluginError) as caught:
        Plugins([alpha, "no-such-plugin"]).load()
    message = str(caught.value)
    assert message.startswith("plugin(s) 'no-such-plugin' not installed; installed: ")
    assert alpha in message


def test_a_misspelt_hook_is_refused_with_a_suggestion():
    class Misspelt:
        @hookimpl
        def pmq_job_succeded(self, job):
            pass

    with pytest.raises(PluginError) as caught:
        Plugins(None, [Misspelt()], entry_points=False).load()
    message = str(caught.value)
    assert "plugin 'Misspelt'" in message
    assert "unknown hook(s) 'pmq_job_succeded' (did you mean 'pmq_job_succeeded'?)" in message


def test_a_misspelt_hook_in_an_installed_plugin_names_its_distribution(dists):
    name = dists.add("pmq-typo", "typo", """
        @hookimpl
        def pmq_worker_start(worker_id):
            pass
    """)
    with pytest.raises(PluginError, match=r"\(distribution pmq-typo\) implements unknown hook\(s\) "
                                          r"'pmq_worker_start' \(did you mean 'pmq_worker_started'\?\)"):
        Plugins([name]).load()


def test_a_hook_argument_the_spec_does_not_have_is_refused():
    class WrongArgument:
        @hookimpl
        def pmq_job_succeeded(self, job, outcome):
            pass

    expected = r"(?s)plugin 'WrongArgument' \(distribution not installed\) cannot be registered.*'outcome'"
    with pytest.raises(PluginError, match=expected):
        Plugins(None, [WrongArgument()], entry_points=False).load()


def test_an_implementation_may_take_fewer_arguments_than_its_spec():
    seen = []

    class Frugal:
        @hookimpl
        def pmq_job_failed(self, error):
            seen.append(error)

    host = Plugins(None, [Frugal()], entry_points=False)
    boom = ValueError("boom")
    host.hooks.job_failed(job=None, error=boom, will_retry=False, retry_in=None)
    assert seen == [boom]


def test_loading_order_is_entry_points_by_name_then_objects_in_code(dists):
    second = dists.add("pmq-zeta", "zeta", "")
    first = dists.add("pmq-eta", "eta", "")

    class InCode:
        pass

    host = Plugins([second, first], [InCode()]).load()
    assert [info.name for info in host.infos] == [first, second, "InCode"]
    assert [info.distribution for info in host.infos] == ["pmq-eta", "pmq-zeta", None]
