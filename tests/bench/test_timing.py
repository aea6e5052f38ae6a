from __future__ import annotations

import csv
from pathlib import Path

import pytest

from vllm_rdna_w8a8.bench import timing


def test_rates_hand_checked() -> None:
    # M=1, N=K=4096 in 17.5 us: 33.5 Mop and 16.8 MB
    rates = timing.rates("gfx1100", 1, 4096, 4096, 17.5)
    ops = 2 * 4096 * 4096
    moved = 4096 + 4096 * 4096 + 2 * 4096 + 4 * 4097
    assert rates.tops == pytest.approx(ops / 17.5e-6 / 1e12)
    assert rates.gb_per_s == pytest.approx(moved / 17.5e-6 / 1e9)  # ~960 GB/s
    assert rates.percent_of_bandwidth == pytest.approx(100 * moved / 17.5e-6 / 960e9)
    assert rates.percent_of_peak == pytest.approx(100 * ops / 17.5e-6 / 122.88e12)
    with pytest.raises(ValueError, match="time must be positive"):
        timing.rates("gfx1100", 1, 16, 16, 0.0)


def test_rotation_exceeds_the_infinity_cache() -> None:
    weight_bytes = 4096 * 4096
    sets = timing.input_sets_needed(weight_bytes)
    assert sets * weight_bytes >= 2 * 96 * 1024 * 1024
    assert (sets - 1) * weight_bytes < 2 * 96 * 1024 * 1024
    assert timing.input_sets_needed(10**10) == 2  # huge operands: still alternate two sets
    assert timing.input_sets_needed(16) == timing.MAX_INPUT_SETS
    with pytest.raises(ValueError, match="positive"):
        timing.input_sets_needed(0)


def test_geometric_mean() -> None:
    assert timing.geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive values"):
        timing.geometric_mean([1.0, 0.0])
    with pytest.raises(ValueError, match="positive values"):
        timing.geometric_mean([])


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = [{"layer": "qkv_proj", "M": 1, "ours_us": 26.5, "triton_us": None},
            {"layer": "o_proj", "M": 2, "ours_us": 17.0, "triton_us": 30.1}]
    path = tmp_path / "out" / "bench.csv"
    timing.write_csv(path, rows)
    with path.open() as handle:
        read = list(csv.DictReader(handle))
    assert read == [{"layer": "qkv_proj", "M": "1", "ours_us": "26.5", "triton_us": ""},
                    {"layer": "o_proj", "M": "2", "ours_us": "17.0", "triton_us": "30.1"}]
    with pytest.raises(ValueError, match="no rows"):
        timing.write_csv(path, [])


def test_format_table_aligns_columns() -> None:
    text = timing.format_table([{"layer": "qkv_proj", "us": 1.23456}, {"layer": "o", "us": 12345.678}])
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "us"]
    assert lines[1].split() == ["qkv_proj", "1.235"]
    assert lines[2].split() == ["o", "12345.7"]
    assert len({len(line) for line in lines}) == 1


def test_refuses_without_a_gfx11_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(timing.EMULATE_ENV, raising=False)
    with pytest.raises(timing.NoGfx11Error, match="no ROCm GPU 0 visible"):
        timing.require_gfx11()  # this machine has CPU torch only
    monkeypatch.setenv(timing.EMULATE_ENV, "gfx1100")
    with pytest.raises(timing.NoGfx11Error, match="CPU emulator"):
        timing.require_gfx11()


def test_refuses_a_non_gfx11_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv(timing.EMULATE_ENV, raising=False)
    monkeypatch.setattr(torch.version, "hip", "6.2.0", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: type("Props", (), {"gcnArchName": "gfx90a:sramecc+:xnack-"})())
    with pytest.raises(timing.NoGfx11Error, match="GPU 0 is gfx90a, not gfx11"):
        timing.require_gfx11()
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: type("Props", (), {"gcnArchName": "gfx1100"})())
    assert timing.require_gfx11() == "gfx1100"
