"""The shipped tables are exactly what the model produces from the real kernel table."""

from __future__ import annotations

import pytest

from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import perf_model, tables
from vllm_rdna_w8a8.dispatch.model_shapes import moe_table_shapes, table_shapes
from vllm_rdna_w8a8.dispatch.tile_configs import FUSED_KIND, MOE_KINDS, load_tile_configs
from vllm_rdna_w8a8.tune import generate_tables


@pytest.fixture(scope="module")
def kernel_table_tags() -> frozenset[str]:
    return frozenset(config.tag for config in load_tile_configs())


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_shipped_table_loads_and_covers_the_model_list(target: str, kernel_table_tags: frozenset[str]) -> None:
    table = tables.load_table(tables.shipped_table_path(target), target, kernel_table_tags)
    assert table is not None, f"shipped table for {target} missing or invalid"
    for kind in tables.TABLE_KINDS:
        for n, k in moe_table_shapes() if kind in MOE_KINDS else table_shapes():
            for bucket in tables.FUSED_M_BUCKETS if kind == FUSED_KIND else tables.M_BUCKETS:
                entry = table.lookup(kind, n, k, bucket)
                assert entry is not None and entry.source == "model", (target, kind, n, k, bucket)


@pytest.mark.parametrize("target", ["gfx1100", "gfx1151"])
def test_shipped_moe_entries_are_the_grouped_models_picks(target: str) -> None:
    """Every MoE entry names the config the grouped model ranks first for the launch its bucket
    stands for (the expert shape's own model's routing), with that prediction's time."""
    configs = load_tile_configs()
    table_data = tables.read_table_data(tables.shipped_table_path(target))["configs"]
    for kind in MOE_KINDS:
        for (n, k), dims in moe_table_shapes().items():
            for bucket in tables.M_BUCKETS:
                load = generate_tables.moe_bucket_load(dims, bucket)
                best = perf_model.rank_grouped_configs(target, configs, load.active_experts, bucket, n, k, kind)[0]
                entry = table_data[kind][tables.shape_key(n, k)][str(bucket)]
                assert (entry["tag"], entry["predicted_us"]) == (best.config.tag, round(best.time_us, 3)), (
                    kind, n, k, bucket)


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_shipped_table_matches_the_model(target: str) -> None:
    path = tables.shipped_table_path(target)
    mode = generate_tables.recorded_occupancy_mode(path)
    if mode == "isa_report" and not generate_tables.occupancies_for(target, "auto")[1]:
        pytest.skip(f"{path.name} was generated from the ISA report; no code objects here to redo it")
    assert path.read_text() == generate_tables.render_table(target, load_tile_configs(), mode), (
        f"{path} drifted from the model: regenerate with python -m vllm_rdna_w8a8.tune --from-model")


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_isa_report_occupancy_agrees_with_shipped_choices(target: str) -> None:
    """Shipped tables estimate occupancy from the tile rows (so they depend on gemm_configs.def
    only); with the compiled objects' real occupancy the model must pick the same tiles (int8
    GEMMs and the grouped MoE launches)."""
    mode, occupancies = generate_tables.occupancies_for(target, "auto")
    if mode != "isa_report":
        pytest.skip(f"no code objects / ISA report for {target}")
    configs = load_tile_configs()
    compiled = {name for name in occupancies if name.startswith("w8a8_i8_gemm_")}
    if compiled != {config.kernel_name("i8") for config in configs}:
        pytest.skip(f"compiled objects for {target} do not match the kernel table (rebuild)")
    shipped = tables.load_table(tables.shipped_table_path(target), target, frozenset(c.tag for c in configs))
    assert shipped is not None
    measured_view = generate_tables.model_table(target, configs, occupancies, table_shapes())
    measured_view.update(generate_tables.moe_model_table(target, configs, occupancies, moe_table_shapes()))
    for kind in ("i8", *MOE_KINDS):
        for key, buckets in measured_view[kind].items():
            n, k = (int(part.split("=")[1]) for part in key.split(","))
            for bucket, entry in buckets.items():
                assert shipped.lookup(kind, n, k, int(bucket)).tag == entry["tag"], (target, kind, key, bucket)


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_no_shipped_streaming_pick_whose_rereads_alone_lose_to_prefill(target: str) -> None:
    """A stream_weights row streams B again per 16 rows. Wherever the bytes it re-reads from beyond
    L2 (`perf_model.reread_bytes`, at the paper DRAM bandwidth: a floor) take longer than the best
    prefill row's whole prediction, the shipped table must not pick it (the tables once picked
    m16n16k512 for int8 at M = 256 on 75 of 78 shapes on gfx1100, and at M = 4096 on 21)."""
    configs = load_tile_configs()
    by_tag = {config.tag: config for config in configs}
    prefill_rows = [config for config in configs if not config.is_decode]
    table = tables.load_table(tables.shipped_table_path(target), target, frozenset(by_tag))
    assert table is not None
    for kind in ("i8", "f8"):
        for n, k in table_shapes():
            for bucket in tables.M_BUCKETS:
                config = by_tag[table.lookup(kind, n, k, bucket).tag]
                if not config.is_decode:
                    continue
                rereads = perf_model.reread_bytes(target, config, bucket, n, k)
                reread_floor_us = (rereads["mall"] + rereads["dram"]) / perf_model.dram_bytes_per_s(target) * 1e6
                best_prefill_us = perf_model.rank_configs(target, prefill_rows, bucket, n, k, kind)[0].time_us
                assert reread_floor_us <= best_prefill_us, (kind, n, k, bucket, config.tag)
