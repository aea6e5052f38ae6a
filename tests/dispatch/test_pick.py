from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from vllm_rdna_w8a8 import dispatch
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import tables

SHAPES = [(m, n, k) for m in (1, 3, 16, 17, 64, 300, 2048, 5000) for n, k in ((4096, 4096), (6144, 4096), (4096, 14336), (28672, 8192), (96, 32))]


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_picker_returns_only_table_configs(
    fixture_kernel_table: Path, fixture_tags: tuple[str, ...], target: str
) -> None:
    for m, n, k in SHAPES:
        for kind in ("i8", "f8"):
            config = dispatch.pick_gemm_config(target, m, n, k, kind)
            assert config.tag in fixture_tags


def test_model_prefers_decode_tiles_for_decode_and_big_tiles_for_prefill(fixture_kernel_table: Path) -> None:
    decode = dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096)
    prefill = dispatch.pick_gemm_config("gfx1100", 4096, 14336, 4096)
    assert decode.block_m == 16
    assert prefill.tag == "m128n128k64_w2x2x1"


def test_feature_suffix_and_cache(fixture_kernel_table: Path) -> None:
    assert dispatch.pick_gemm_config("gfx1100:xnack-", 1, 4096, 4096) == dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("gfx90a", 1, 16, 16), ValueError, "unknown gfx11 target"),
        (("gfx1100", 0, 16, 16), ValueError, "M must be >= 1"),
        (("gfx1100", 1, 16.0, 16), TypeError, "N must be an int"),
        (("gfx1100", 1, 16, 16, "int8"), ValueError, "kind must be one of"),
    ],
)
def test_bad_arguments(fixture_kernel_table: Path, args: tuple, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        dispatch.pick_gemm_config(*args)


def test_shipped_table_overrides_model_and_user_table_overrides_shipped(
    fixture_kernel_table: Path, fixture_tags: tuple[str, ...], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, write_table: Callable[..., Path],
) -> None:
    model_tag = dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096).tag
    shipped_tag = next(tag for tag in fixture_tags if tag != model_tag)
    write_table(fixture_kernel_table, "gfx1100", {("i8", 4096, 4096, 1): shipped_tag}, source="model")
    dispatch.clear_dispatch_caches()
    assert dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096).tag == shipped_tag
    # other kinds, shapes and buckets are not in the table: the model decides
    assert dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096, "f8").tag == dispatch.model_choice("gfx1100", 1, 4096, 4096, "f8").tag
    assert dispatch.pick_gemm_config("gfx1100", 2, 4096, 4096).tag == dispatch.model_choice("gfx1100", 2, 4096, 4096).tag

    user_dir = tmp_path / "user"
    user_dir.mkdir()
    user_tag = "m64n64k64_w2x2x1" if shipped_tag != "m64n64k64_w2x2x1" else "m16n16k512_w1x1x8"
    write_table(user_dir, "gfx1100", {("i8", 4096, 4096, 1): user_tag})
    monkeypatch.setenv(tables.TUNING_DIR_ENV, str(user_dir))
    dispatch.clear_dispatch_caches()
    assert dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096).tag == user_tag
    # a user table for another target does not apply here
    assert dispatch.pick_gemm_config("gfx1101", 1, 4096, 4096).tag == dispatch.model_choice("gfx1101", 1, 4096, 4096).tag


def test_m_bucket_lookup(fixture_kernel_table: Path, write_table: Callable[..., Path]) -> None:
    write_table(fixture_kernel_table, "gfx1100", {("i8", 4096, 4096, 64): "m16n16k512_w1x1x8"})
    dispatch.clear_dispatch_caches()
    for m in (33, 50, 64):
        assert dispatch.pick_gemm_config("gfx1100", m, 4096, 4096).tag == "m16n16k512_w1x1x8"
    assert tables.m_bucket(1) == 1
    assert tables.m_bucket(3) == 4
    assert tables.m_bucket(4096) == 4096
    assert tables.m_bucket(4097) == 8192
    assert tables.m_bucket(10**6) == 8192
    with pytest.raises(ValueError, match="positive int"):
        tables.m_bucket(0)


CORRUPT_TABLES = {
    "bad json": "{not json",
    "wrong target": {"format_version": 1, "target": "gfx1101", "configs": {}},
    "old format": {"format_version": 0, "target": "gfx1100", "configs": {}},
    "unknown kind": {"format_version": 1, "target": "gfx1100", "configs": {"i4": {}}},
    "bad shape key": {"format_version": 1, "target": "gfx1100", "configs": {"i8": {"N=4096;K=4096": {}}}},
    "bad bucket": {"format_version": 1, "target": "gfx1100",
                   "configs": {"i8": {"N=4096,K=4096": {"3": {"tag": "m64n64k64_w2x2x1", "source": "model"}}}}},
    "unknown tag": {"format_version": 1, "target": "gfx1100",
                    "configs": {"i8": {"N=4096,K=4096": {"1": {"tag": "m999", "source": "model"}}}}},
    "measured without date": {"format_version": 1, "target": "gfx1100",
                              "configs": {"i8": {"N=4096,K=4096": {"1": {
                                  "tag": "m64n64k64_w2x2x1", "source": "measured", "device_name": "x"}}}}},
    "fused entry beyond M = 16": {"format_version": 1, "target": "gfx1100",
                                  "configs": {"i8q": {"N=4096,K=4096": {"32": {
                                      "tag": "m16n32k256_w1x1x4", "source": "model"}}}}},
    "fused entry on a prefill row": {"format_version": 1, "target": "gfx1100",
                                     "configs": {"i8q": {"N=4096,K=4096": {"1": {
                                         "tag": "m64n64k64_w2x2x1", "source": "model"}}}}},
}


def _assert_ignored_once(path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> str:
    """Picks with the user table at `path` fall back to the model; one warning names the
    table. Returns that warning."""
    monkeypatch.setenv(tables.TUNING_DIR_ENV, str(path.parent))
    expected = dispatch.model_choice("gfx1100", 1, 4096, 4096)
    with caplog.at_level(logging.WARNING, logger="vllm_rdna_w8a8.dispatch.tables"):
        for m in (1, 2, 5, 1000):
            dispatch.pick_gemm_config("gfx1100", m, 4096, 4096)
        assert dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096) == expected
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "built-in choice" in warnings[0]
    return warnings[0]


@pytest.mark.parametrize("problem", sorted(CORRUPT_TABLES))
def test_corrupt_user_table_is_reported_once_and_ignored(
    fixture_kernel_table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, problem: str,
) -> None:
    content = CORRUPT_TABLES[problem]
    path = tmp_path / "gfx1100.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    _assert_ignored_once(path, monkeypatch, caplog)


def _table_with_bucket(bucket: str) -> str:
    return json.dumps({"format_version": 1, "target": "gfx1100", "configs": {"i8": {"N=4096,K=4096": {
        bucket: {"tag": "m64n64k64_w2x2x1", "source": "model"}}}}})


# Issue 11: each of these escaped load_table (every GEMM raised) or was ignored silently.
HOSTILE_TABLES: dict[str, tuple[Callable[[Path], object], str]] = {
    "superscript bucket": (lambda path: path.write_text(_table_with_bucket("\u00b2")),
                           "configs.i8.N=4096,K=4096.\u00b2: M bucket must be one of"),
    "deep nesting": (lambda path: path.write_text("[" * 200_000 + "]" * 200_000), "JSON nested too deeply"),
    "not UTF-8": (lambda path: path.write_bytes(b'{"target": "\xff"}'), "not UTF-8 text: invalid start byte at byte 12"),
    "huge integer": (lambda path: path.write_text('{"format_version": ' + "9" * 5000 + "}"), "not JSON: "),
    "directory": (lambda path: path.mkdir(), "a directory, not a table file"),
    "link loop": (lambda path: path.symlink_to(path), "a symbolic link to no file (missing target or a link loop)"),
    "dangling link": (lambda path: path.symlink_to(path.with_name("absent.json")),
                      "a symbolic link to no file"),
}


@pytest.mark.parametrize("problem", sorted(HOSTILE_TABLES))
def test_any_bytes_in_place_of_a_user_table_are_one_warning(
    fixture_kernel_table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, problem: str,
) -> None:
    make, reason = HOSTILE_TABLES[problem]
    path = tmp_path / "gfx1100.json"
    make(path)
    assert reason in _assert_ignored_once(path, monkeypatch, caplog)
    assert tables.describe_table(path, "gfx1100", frozenset()).startswith(f"ignored ({reason}")


def test_fused_launch_follows_the_fused_entries(fixture_kernel_table: Path, write_table: Callable[..., Path]) -> None:
    """An int8 layer at M <= 16 is launched with the table's fused (i8q) entry, not the int8
    GEMM's: the fused kernel's costs are its own (fp16 rows in, its quantization work)."""
    write_table(fixture_kernel_table, "gfx1100", {("i8", 4096, 4096, 1): "m16n32k256_w1x1x4",
                                                  ("i8q", 4096, 4096, 1): "m16n16k512_w1x1x8",
                                                  ("i8q", 4096, 4096, 16): "m16n64k256_w1x2x4"})
    assert dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096, "i8").tag == "m16n32k256_w1x1x4"
    assert dispatch.fused_decode_config("gfx1100", 1, 4096, 4096).tag == "m16n16k512_w1x1x8"
    assert dispatch.fused_decode_config("gfx1100", 9, 4096, 4096).tag == "m16n64k256_w1x2x4"
    assert dispatch.fused_decode_config("gfx1100", 17, 4096, 4096) is None
    # a shape the table lacks: the model's best fused launch, always a decode row
    model_pick = dispatch.fused_decode_config("gfx1100", 1, 1024, 1024)
    assert model_pick == dispatch.model_choice("gfx1100", 1, 1024, 1024, "i8q") and model_pick.is_decode
    with dispatch.forced_gemm_config(dispatch.load_tile_configs()[0]):  # a prefill row: two launches
        assert dispatch.fused_decode_config("gfx1100", 1, 4096, 4096) is None


def test_selection_cost_per_call_is_negligible(fixture_kernel_table: Path) -> None:
    dispatch.pick_gemm_config("gfx1100", 7, 4096, 4096)  # first call: tables and model
    calls = 100_000
    start = time.perf_counter()
    for _ in range(calls):
        dispatch.pick_gemm_config("gfx1100", 7, 4096, 4096)
    per_call_us = (time.perf_counter() - start) / calls * 1e6
    print(f"cached pick_gemm_config: {per_call_us:.3f} us per call")
    assert per_call_us < 5.0  # a decode GEMM takes >= ~10 us even on the fastest target


def test_forced_config_is_returned_inside_the_block_only(fixture_kernel_table: Path) -> None:
    configs = dispatch.load_tile_configs()
    normal = dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096)
    forced = next(config for config in configs if config != normal)
    with dispatch.forced_gemm_config(forced):
        assert dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096) == forced
        assert dispatch.pick_gemm_config("gfx1151", 4096, 64, 64, "f8") == forced
    assert dispatch.pick_gemm_config("gfx1100", 1, 4096, 4096) == normal
    stranger = dispatch.TileConfig("m32n32k32_w1x1x1", 32, 32, 32, 1, 1, 1, "lds_double_buffer")
    with pytest.raises(ValueError, match="not a row of the kernel table"):
        with dispatch.forced_gemm_config(stranger):
            pass


# Picks for shapes no shipped table holds (the model's path), printed with whether the ISA
# report (which runs llvm-objdump) was imported on the way.
MODEL_PATH_PICKS = """
import json, sys
from vllm_rdna_w8a8 import dispatch
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import tables
from vllm_rdna_w8a8.dispatch.tile_configs import load_tile_configs

tags = frozenset(config.tag for config in load_tile_configs())
picks = []
for target in sorted(GFX11_TARGETS):
    table = tables.load_table(tables.shipped_table_path(target), target, tags)
    for m, n, k in ((1, 1000, 1024), (40, 3000, 2048), (700, 5120, 1536)):
        for kind in ("i8", "f8"):
            assert table.lookup(kind, n, k, m) is None, (target, kind, n, k)
            picks.append(dispatch.pick_gemm_config(target, m, n, k, kind).tag)
print(json.dumps({"picks": picks, "isa_report_imported": "vllm_rdna_w8a8.tools.isa_report" in sys.modules}))
"""


def test_serving_picks_never_start_an_llvm_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shape missing from the tables gets the same tile whether LLVM's tools are installed
    or not, and picking it never loads the ISA report (a developer tool that disassembles)."""
    monkeypatch.delenv(tables.TUNING_DIR_ENV, raising=False)

    def picks(env: dict[str, str]) -> dict:
        result = subprocess.run([sys.executable, "-c", MODEL_PATH_PICKS], env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    with_tools = picks(dict(os.environ))
    without_tools = picks({**os.environ, "PATH": "/nonexistent", "LLVM_OBJDUMP": "/nonexistent/llvm-objdump"})
    assert not with_tools["isa_report_imported"] and not without_tools["isa_report_imported"]
    assert with_tools["picks"] == without_tools["picks"]
