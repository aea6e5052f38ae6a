"""Fixtures for the tiny-model builder tests: each scheme built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_rdna_w8a8.testing.tiny_model import SCHEMES, build_tiny_model


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_models(tiny_cache: Path) -> dict[str, Path]:
    """Checkpoint directory per scheme, built into a private cache."""
    return {scheme: build_tiny_model(scheme, cache_dir=tiny_cache) for scheme in SCHEMES}
