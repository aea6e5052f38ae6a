"""The tuner's and the benchmark's logic around the GPU timer, with a fake timer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest

from vllm_rdna_w8a8.bench.run import measured_row
from vllm_rdna_w8a8.dispatch import tables
from vllm_rdna_w8a8.dispatch.model_shapes import LinearShape
from vllm_rdna_w8a8.dispatch.tile_configs import TileConfig, load_tile_configs
from vllm_rdna_w8a8.tune.run import best_measured, merge_into_user_table

SHAPE = LinearShape("o_proj", 4096, 4096)


def test_fastest_candidate_wins_and_the_model_pick_keeps_ties() -> None:
    configs = load_tile_configs()[:3]
    fake_times = {1: [20.0, 20.0, 25.0], 512: [300.0, 150.0, 150.0]}

    def timer(shape: LinearShape, m: int, candidates: Sequence[TileConfig]) -> list[float]:
        assert shape == SHAPE and list(candidates) == list(configs)
        return fake_times[m]

    measured = best_measured([SHAPE], [1, 512], lambda shape, m: configs, timer, "AMD Radeon RX 7900 XTX", "2026-11-27")
    entries = measured["N=4096,K=4096"]
    assert entries["1"] == {"tag": configs[0].tag, "source": "measured", "device_name": "AMD Radeon RX 7900 XTX",
                            "date": "2026-11-27", "measured_us": 20.0}
    assert entries["512"]["tag"] == configs[1].tag and entries["512"]["measured_us"] == 150.0


def test_timer_must_time_every_candidate() -> None:
    configs = load_tile_configs()[:2]
    with pytest.raises(ValueError, match="1 times for 2 candidates"):
        best_measured([SHAPE], [1], lambda shape, m: configs, lambda shape, m, c: [1.0], "x", "2026-11-27")


def test_measured_entries_merge_into_a_user_table(tmp_path: Path) -> None:
    tags = [config.tag for config in load_tile_configs()]
    path = tmp_path / "gfx1100.json"
    merge_into_user_table(path, "gfx1100", "i8", {"N=4096,K=4096": {"1": {
        "tag": tags[0], "source": "measured", "device_name": "d", "date": "2026-11-27", "measured_us": 1.0}}})
    merge_into_user_table(path, "gfx1100", "i8", {"N=4096,K=4096": {"16": {
        "tag": tags[1], "source": "measured", "device_name": "d", "date": "2026-11-28", "measured_us": 2.0}}})
    table = tables.parse_table(json.loads(path.read_text()), "gfx1100", frozenset(tags), str(path))
    assert table.lookup("i8", 4096, 4096, 1).tag == tags[0]  # kept from the first run
    assert table.lookup("i8", 4096, 4096, 16).tag == tags[1]
    path.write_text("{corrupt")
    merge_into_user_table(path, "gfx1100", "i8", {"N=64,K=64": {"1": {
        "tag": tags[0], "source": "measured", "device_name": "d", "date": "2026-11-27", "measured_us": 1.0}}})
    table = tables.parse_table(json.loads(path.read_text()), "gfx1100", frozenset(tags), str(path))
    assert table.lookup("i8", 64, 64, 1) is not None and table.lookup("i8", 4096, 4096, 1) is None


def test_measured_row_arithmetic() -> None:
    row = measured_row("gfx1100", SHAPE, 1, "t", {"ours": 20.0, "triton_scaled_mm": 30.0, "int_mm_dequant": None})
    assert row["x_triton"] == pytest.approx(1.5)
    assert row["x_int_mm"] is None
    assert row["TOPS"] == pytest.approx(2 * 4096 * 4096 / 20e-6 / 1e12)
    failed = measured_row("gfx1100", SHAPE, 1, "t", {"ours": None, "triton_scaled_mm": 30.0, "int_mm_dequant": 5.0})
    assert failed["TOPS"] is None and failed["x_triton"] is None
