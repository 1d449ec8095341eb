"""Shared test set-up: the pmq testing kit's fixtures come from the pytest
plugin pmq installs (pmq_core.testing)."""
