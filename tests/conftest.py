"""Suite-wide settings: Hypothesis runs derandomized, so CI gives the same answer every time."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("rds", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("rds")
