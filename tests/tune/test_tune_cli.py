"""`python -m vllm_rdna_w8a8.tune` as a user runs it: dry run, refusal without gfx11, the
shipped tables regenerated from the model and checked for drift."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

from vllm_rdna_w8a8.dispatch import tables
from vllm_rdna_w8a8.dispatch.tile_configs import load_tile_configs

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_tune_dry_run_lists_every_candidate(run_cli: Run) -> None:
    result = run_cli("vllm_rdna_w8a8.tune", "--model", "Qwen2.5-7B", "--tp", "2", "--dry-run", "--m", "1", "512")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PREDICTIONS")
    configs = load_tile_configs()
    headers = [line for line in result.stdout.splitlines() if "floors compute" in line]
    assert len(headers) == 4 * 2
    candidates = [line for line in result.stdout.splitlines() if " predicted " in line]
    assert len(candidates) == 4 * 2 * len(configs)
    assert sum(line.lstrip().startswith("*") for line in candidates) == 4 * 2  # one choice per shape


def test_tune_refuses_to_time_without_gfx11(run_cli: Run, tmp_path: Path) -> None:
    result = run_cli("vllm_rdna_w8a8.tune", "--model", "Meta-Llama-3-8B", "--output-dir", str(tmp_path))
    assert result.returncode == 3 and "refusing to tune" in result.stderr
    assert list(tmp_path.iterdir()) == []
    no_dir = run_cli("vllm_rdna_w8a8.tune", "--model", "Meta-Llama-3-8B")
    assert no_dir.returncode == 2 and tables.TUNING_DIR_ENV in no_dir.stderr


def test_tune_from_model_writes_valid_tables_and_checks_drift(run_cli: Run, tmp_path: Path) -> None:
    result = run_cli("vllm_rdna_w8a8.tune", "--from-model", "--targets", "gfx1102", "--occupancy", "assumed",
                     "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "gfx1102.json"
    table = tables.parse_table(json.loads(path.read_text()), "gfx1102",
                               frozenset(config.tag for config in load_tile_configs()), str(path))
    assert table.lookup("i8", 6144, 4096, 1) is not None
    check = ["--from-model", "--targets", "gfx1102", "--check", "--output-dir", str(tmp_path)]
    assert run_cli("vllm_rdna_w8a8.tune", *check).returncode == 0
    path.write_text(path.read_text().replace('"source": "model"', '"source": "model" ', 1))
    drifted = run_cli("vllm_rdna_w8a8.tune", *check)
    assert drifted.returncode == 1 and str(path) in drifted.stdout
