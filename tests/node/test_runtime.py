"""The allocator tuning applies on Linux/glibc and is harmless to call twice."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_tune_allocator_takes_effect_in_a_fresh_process() -> None:
    code = (
        "from rds_kernel.node.runtime import tune_allocator;"
        "assert tune_allocator() is True; assert tune_allocator() is True"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
