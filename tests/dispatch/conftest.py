"""Shared fixtures of the dispatch tests: a kernel table of our own and empty table dirs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from vllm_rdna_w8a8 import dispatch
from vllm_rdna_w8a8.dispatch import tables, tile_configs

FIXTURE_DEF = Path(__file__).with_name("fixture_gemm_configs.def")
FIXTURE_TAGS = ("m128n128k64_w2x2x1", "m64n64k64_w2x2x1", "m16n32k256_w1x1x4",
                "m16n64k256_w1x2x4", "m16n16k512_w1x1x8")


@pytest.fixture
def fixture_tags() -> tuple[str, ...]:
    return FIXTURE_TAGS


@pytest.fixture
def fixture_def() -> Path:
    return FIXTURE_DEF


@pytest.fixture
def fixture_kernel_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Dispatch reads the fixture .def, no shipped tables, no user table."""
    monkeypatch.setattr(tile_configs, "DEFAULT_DEF_PATHS", (FIXTURE_DEF,))
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(tables, "SHIPPED_TABLES_DIR", shipped)
    monkeypatch.delenv(tables.TUNING_DIR_ENV, raising=False)
    dispatch.clear_dispatch_caches()
    yield shipped
    dispatch.clear_dispatch_caches()


@pytest.fixture
def write_table() -> Callable[..., Path]:
    """Write `<target>.json` into a directory from a {(kind, N, K, bucket): tag} mapping."""

    def write(directory: Path, target: str, entries: dict[tuple[str, int, int, int], str],
              source: str = "measured", **overrides: Any) -> Path:
        configs: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        for (kind, n, k, bucket), tag in entries.items():
            entry: dict[str, Any] = {"tag": tag, "source": source}
            if source == "measured":
                entry.update(device_name="AMD Radeon RX 7900 XTX", date="2026-11-27", measured_us=1.0)
            configs.setdefault(kind, {}).setdefault(f"N={n},K={k}", {})[str(bucket)] = entry
        document = {"format_version": 1, "target": target, "configs": configs, **overrides}
        path = directory / f"{target}.json"
        path.write_text(json.dumps(document))
        return path

    return write
