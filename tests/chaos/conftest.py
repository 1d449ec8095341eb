"""The chaos test runs only when asked for (``pytest -m chaos``): it takes
minutes and starts servers of its own, too much for a plain ``pytest``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the chaos test runs only with -m chaos")
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(skip)
