"""The shipped tables are exactly what the model produces from the real kernel table."""

from __future__ import annotations

import pytest

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import generate_tables, tables
from vllm_rdna_w8a8.dispatch.model_shapes import table_shapes
from vllm_rdna_w8a8.dispatch.tile_configs import load_tile_configs


@pytest.fixture(scope="module")
def kernel_table_tags() -> frozenset[str]:
    return frozenset(config.tag for config in load_tile_configs())


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_shipped_table_loads_and_covers_the_model_list(target: str, kernel_table_tags: frozenset[str]) -> None:
    table = tables.load_table(tables.shipped_table_path(target), target, kernel_table_tags)
    assert table is not None, f"shipped table for {target} missing or invalid"
    for n, k in table_shapes():
        for kind in ("i8", "f8"):
            for bucket in tables.M_BUCKETS:
                entry = table.lookup(kind, n, k, bucket)
                assert entry is not None and entry.source == "model", (target, kind, n, k, bucket)


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_shipped_table_matches_the_model(target: str) -> None:
    path = tables.shipped_table_path(target)
    mode = generate_tables.recorded_occupancy_mode(path)
    if mode == "isa_report" and not generate_tables.occupancies_for(target, "auto")[1]:
        pytest.skip(f"{path.name} was generated from the ISA report; no code objects here to redo it")
    assert path.read_text() == generate_tables.render_table(target, load_tile_configs(), mode), (
        f"{path} drifted from the model: regenerate with python -m vllm_rdna_w8a8.tune --from-model")
