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
from vllm_rdna_w8a8.tune.run import best_measured, merge_into_user_table, write_measured

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


# Issue 11: each of these made the merge raise, and the new measurements were never written.
BAD_EXISTING_TABLES = {
    "not UTF-8": lambda path: path.write_bytes(b"\xff\xfe{"),
    "superscript bucket": lambda path: path.write_text(json.dumps(
        {"format_version": 1, "target": "gfx1100", "configs": {"i8": {"N=64,K=64": {"\u00b2": {}}}}})),
    "deep nesting": lambda path: path.write_text("[" * 200_000 + "]" * 200_000),
    "directory": lambda path: path.mkdir(),
    "link loop": lambda path: path.symlink_to(path),
}


@pytest.mark.parametrize("problem", sorted(BAD_EXISTING_TABLES))
def test_measurements_survive_a_bad_existing_table(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   problem: str) -> None:
    tags = [config.tag for config in load_tile_configs()]
    path = tmp_path / "gfx1100.json"
    BAD_EXISTING_TABLES[problem](path)
    merge_into_user_table(path, "gfx1100", "i8", {"N=64,K=64": {"1": {
        "tag": tags[0], "source": "measured", "device_name": "d", "date": "2026-11-27", "measured_us": 1.0}}})
    table = tables.parse_table(json.loads(path.read_text()), "gfx1100", frozenset(tags), str(path))
    assert table.lookup("i8", 64, 64, 1).tag == tags[0]
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("gfx1100.json.invalid-")]
    assert f"moved the invalid table {path} aside to {aside}" in capsys.readouterr().err
    assert aside.is_symlink() if problem == "link loop" else aside.exists()  # kept, not deleted


def test_measurements_that_cannot_be_written_are_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tag = load_tile_configs()[0].tag
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    measured = {"N=64,K=64": {"1": {"tag": tag, "source": "measured", "device_name": "d", "date": "2026-11-27",
                                    "measured_us": 1.0}}}
    assert write_measured(blocker, "gfx1100", "i8", measured) == 1
    out, err = capsys.readouterr()
    assert tables.parse_table(json.loads(out), "gfx1100", frozenset([tag]), "stdout").lookup("i8", 64, 64, 1).tag == tag
    assert f"error: cannot write {blocker / 'gfx1100.json'}" in err


def test_measured_row_arithmetic() -> None:
    row = measured_row("gfx1100", SHAPE, 1, "t", {"ours": 20.0, "triton_scaled_mm": 30.0, "int_mm_dequant": None})
    assert row["x_triton"] == pytest.approx(1.5)
    assert row["x_int_mm"] is None
    assert row["TOPS"] == pytest.approx(2 * 4096 * 4096 / 20e-6 / 1e12)
    failed = measured_row("gfx1100", SHAPE, 1, "t", {"ours": None, "triton_scaled_mm": 30.0, "int_mm_dequant": 5.0})
    assert failed["TOPS"] is None and failed["x_triton"] is None
