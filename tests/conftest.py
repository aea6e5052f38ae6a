"""Fixtures shared across test folders."""

from __future__ import annotations

import pytest

from vllm_rdna_w8a8.build import Clang, CompilerNotFound, find_clang


@pytest.fixture(scope="session")
def clang() -> Clang:
    """The gfx11-capable clang the build module finds (installed by .ci/install-toolchain.sh)."""
    try:
        return find_clang()
    except CompilerNotFound as exc:
        pytest.skip(f"no gfx11-capable clang here: {exc}")
