from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from vllm_rdna_w8a8.bench.run import write_plot
from vllm_rdna_w8a8.dispatch.tile_configs import load_tile_configs

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_bench_dry_run_lists_predictions(run_cli: Run) -> None:
    result = run_cli("vllm_rdna_w8a8.bench", "--dry-run", "--model", "Meta-Llama-3-8B", "--target", "gfx1151")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "PREDICTIONS" in lines[0] and "NOT measurements" in lines[0]
    assert "gfx1151" in lines[1]
    header = lines[2].split()
    assert header[:5] == ["layer", "M", "N", "K", "config"] and "predicted_us" in header
    rows = [line.split() for line in lines[3:]]
    assert len(rows) == 4 * 13  # four layers x M in 1..4096
    tags = {config.tag for config in load_tile_configs()}
    assert all(row[4] in tags for row in rows)
    assert {row[-1] for row in rows} == {"memory", "compute"}


def test_bench_refuses_to_time_without_gfx11(run_cli: Run, tmp_path: Path) -> None:
    result = run_cli("vllm_rdna_w8a8.bench", "--model", "Meta-Llama-3-8B", "--csv", str(tmp_path / "b.csv"))
    assert result.returncode == 3
    assert "refusing to benchmark" in result.stderr and "--dry-run" in result.stderr
    assert not (tmp_path / "b.csv").exists()
    emulated = run_cli("vllm_rdna_w8a8.bench", env={"VLLM_RDNA_W8A8_EMULATE": "gfx1100"})
    assert emulated.returncode == 3 and "CPU emulator" in emulated.stderr


def test_bench_bad_input(run_cli: Run) -> None:
    result = run_cli("vllm_rdna_w8a8.bench", "--dry-run", "--model", "Meta-Llama-3-8B", "--tp", "3")
    assert result.returncode == 2 and "not divisible by tp=3" in result.stderr
    result = run_cli("vllm_rdna_w8a8.bench", "--dry-run", "--m", "0")
    assert result.returncode == 2 and "--m must be >= 1" in result.stderr


def test_plot_without_matplotlib_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    rows = [{"layer": "o_proj", "M": 1, "N": 4096, "K": 4096, "ours_us": 20.0}]
    message = write_plot(tmp_path / "p.png", rows, {"ours_us": "ours"}, "title")
    assert "matplotlib is not installed" in message
    assert not (tmp_path / "p.png").exists()


def test_plot_with_matplotlib(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [{"layer": "o_proj", "M": m, "N": 4096, "K": 4096, "ours_us": 20.0 * m} for m in (1, 2, 4)]
    assert write_plot(tmp_path / "p.png", rows, {"ours_us": "ours"}, "title") == f"plot: {tmp_path / 'p.png'}"
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_ceiling_column() -> None:
    from vllm_rdna_w8a8.bench.run import add_ceiling_column

    rows = [{"TOPS": 85.0}, {"TOPS": None}]
    add_ceiling_column(rows, "TOPS", 100.0)
    assert rows[0]["pct_ceiling"] == pytest.approx(85.0) and rows[1]["pct_ceiling"] is None


@pytest.mark.parametrize("module", ["vllm_rdna_w8a8.tune", "vllm_rdna_w8a8.bench"])
def test_malformed_model_config_is_one_line_not_a_traceback(run_cli: Run, tmp_path: Path, module: str) -> None:
    # Issue 11: 0 attention heads ended the dry run in ZeroDivisionError.
    (tmp_path / "config.json").write_text(json.dumps(
        {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 0}))
    result = run_cli(module, "--model", str(tmp_path), "--dry-run")
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'config.json'}: num_attention_heads must be a positive integer, got 0\n"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-3"])
def test_wmma_ceiling_must_be_positive_and_finite(capsys: pytest.CaptureFixture[str], value: str) -> None:
    # Issue 11: nan and inf were accepted.
    from vllm_rdna_w8a8.bench.run import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--dry-run", f"--wmma-ceiling-tops={value}"])
    assert exit_info.value.code == 2
    assert f"--wmma-ceiling-tops must be a positive finite number, got {float(value)}" in capsys.readouterr().err
