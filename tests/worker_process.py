"""A pmq worker with a migrator beside it, run as a separate process by tests
that signal or kill it. Settings come from the PMQ_* environment; the job
types are those of tests.plugin_samples."""

from pmq_core.config import Settings
from pmq_core.plugins import Plugins
from pmq_core.runner import run_worker
from tests.plugin_samples import Recorder, make_plugin

if __name__ == "__main__":
    run_worker(Settings.load(), plugins=Plugins(None, [make_plugin(Recorder())], entry_points=False),
               migrator=True)
