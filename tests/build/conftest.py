"""Fixtures of the build tests: a scratch copy of the probe kernels (clang: tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROBE_KERNELS = Path(__file__).parent / "kernels"


@pytest.fixture
def kernels_dir(tmp_path: Path) -> Path:
    """A writable copy of tests/build/kernels (tests edit and add sources)."""
    copy = tmp_path / "kernels"
    shutil.copytree(PROBE_KERNELS, copy)
    return copy
