"""Fixtures of the build tests: a real clang and a scratch copy of the probe kernels."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import Clang, CompilerNotFound, find_clang

PROBE_KERNELS = Path(__file__).parent / "kernels"


@pytest.fixture(scope="session")
def clang() -> Clang:
    try:
        return find_clang()
    except CompilerNotFound as exc:
        pytest.skip(f"no gfx11-capable clang here: {exc}")


@pytest.fixture
def kernels_dir(tmp_path: Path) -> Path:
    """A writable copy of tests/build/kernels (tests edit and add sources)."""
    copy = tmp_path / "kernels"
    shutil.copytree(PROBE_KERNELS, copy)
    return copy
