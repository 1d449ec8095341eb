"""The unit tier: tests that need no server and no ``PMQ_*`` variable, and
run in seconds anywhere (``pytest tests/unit``).

Every test here runs with the ``PMQ_*`` variables removed, and asking for
the testing kit's servers fails, so that the tier stays runnable on a
machine with nothing installed.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_pmq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("PMQ_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def pmq_servers() -> None:
    pytest.fail("a unit test needs no server: move it to the integration tier (tests/)")
