"""Suite-wide settings: Hypothesis runs derandomized, so CI gives the same answer every time;
the shared fixtures are the plugin ``tests/plugin.py``."""

from __future__ import annotations

from hypothesis import settings

pytest_plugins = ["tests.plugin"]

settings.register_profile("rds", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("rds")
