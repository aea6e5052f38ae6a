"""Fixtures for the tiny-model builder tests: each scheme built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_rdna_w8a8.testing.tiny_model import QUARK_SCHEMES, build_tiny_model


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_models(tiny_cache: Path) -> dict[str, Path]:
    """The tiny Llama's fp16 and compressed-tensors checkpoints, built into a private cache
    (the Quark schemes have their own slow tests: importing amd-quark alone takes ~30 s)."""
    return {scheme: build_tiny_model(scheme, cache_dir=tiny_cache) for scheme in ("fp16", "int8", "fp8")}


@pytest.fixture(scope="session")
def quark_models() -> dict[str, Path]:
    """The Quark checkpoints in the default cache (shared with the end-to-end tests)."""
    return {scheme: build_tiny_model(scheme) for scheme in QUARK_SCHEMES}
