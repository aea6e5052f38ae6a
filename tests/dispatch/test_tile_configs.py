from __future__ import annotations

from pathlib import Path

import pytest

from vllm_rdna_w8a8.dispatch.tile_configs import (
    LDS_DOUBLE_BUFFER,
    STREAM_WEIGHTS,
    TileConfig,
    TileConfigError,
    load_tile_configs,
    parse_tile_configs,
    validate_tile_config,
)


def test_fixture_table_parses_in_order(fixture_def: Path, fixture_tags: tuple[str, ...]) -> None:
    configs = load_tile_configs(fixture_def)
    assert tuple(config.tag for config in configs) == fixture_tags
    prefill = configs[0]
    assert prefill == TileConfig("m128n128k64_w2x2x1", 128, 128, 64, 2, 2, 1, LDS_DOUBLE_BUFFER)
    assert prefill.threads == 128
    assert prefill.block() == (128, 1, 1)
    assert configs[4].threads == 256  # 8 waves splitting K


def test_grid_is_ceil_tiles() -> None:
    config = TileConfig("m128n128k64_w2x2x1", 128, 128, 64, 2, 2, 1, LDS_DOUBLE_BUFFER)
    assert config.grid(1, 1) == (1, 1, 1)
    assert config.grid(128, 128) == (1, 1, 1)
    assert config.grid(129, 128) == (2, 1, 1)
    assert config.grid(4096, 14336) == (32 * 112, 1, 1)
    with pytest.raises(ValueError, match="M >= 1"):
        config.grid(0, 5)


def test_kernel_names() -> None:
    config = TileConfig("m16n32k256_w1x1x4", 16, 32, 256, 1, 1, 4, STREAM_WEIGHTS)
    assert config.kernel_name("i8") == "w8a8_i8_gemm_m16n32k256_w1x1x4"
    assert config.kernel_name("f8") == "w8a8_f8_gemm_m16n32k256_w1x1x4"
    with pytest.raises(ValueError, match="kind must be one of"):
        config.kernel_name("int8")
    assert config.moe_kernel_name("bf16") == "w8a8_i8_moe_bf16_gemm_m16n32k256_w1x1x4"
    assert config.moe_kernel_name("f16", "f8") == "w8a8_f8_moe_f16_gemm_m16n32k256_w1x1x4"
    with pytest.raises(ValueError, match="MoE kernel activations must be one of"):
        config.moe_kernel_name("f32")


def test_lds_bytes_hand_checked() -> None:
    # prefill: double-buffered (128 + 128) rows of (64 + 16) bytes
    assert TileConfig("a", 128, 128, 64, 2, 2, 1, LDS_DOUBLE_BUFFER).lds_bytes == 2 * 256 * 80
    # decode: 4 int32 partial 16x32 tiles, one per K-split wave
    assert TileConfig("b", 16, 32, 256, 1, 1, 4, STREAM_WEIGHTS).lds_bytes == 4 * 16 * 32 * 4
    assert TileConfig("b", 16, 32, 256, 1, 1, 4, STREAM_WEIGHTS).is_decode


def test_accumulator_vgprs_hand_checked() -> None:
    assert TileConfig("a", 128, 128, 64, 2, 2, 1, LDS_DOUBLE_BUFFER).accumulator_vgprs == 16 * 8  # 64x64 per wave
    assert TileConfig("b", 16, 64, 256, 1, 1, 8, STREAM_WEIGHTS).accumulator_vgprs == 4 * 8


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("W8A8_GEMM_CONFIG(t, 128, 128, 64, 2, 2, 1)", "takes 8 values"),
        ("W8A8_GEMM_CONFIG(t, 128, 128, 0x40, 2, 2, 1, lds_double_buffer)", "plain decimal integers"),
        ("W8A8_GEMM_CONFIG(t, 0, 128, 64, 1, 1, 1, lds_double_buffer)", "BLOCK_M must be a positive integer"),
        ("W8A8_GEMM_CONFIG(t, 48, 128, 64, 2, 2, 1, lds_double_buffer)", r"BLOCK_M=48 must be a multiple of 16 x WAVES_M = 32"),
        ("W8A8_GEMM_CONFIG(t, 16, 16, 64, 1, 1, 8, stream_weights)", r"BLOCK_K=64 must be a multiple of 16 x WAVES_K = 128"),
        ("W8A8_GEMM_CONFIG(t, 256, 256, 64, 4, 4, 4, lds_double_buffer)", "exceeds the 1024-thread workgroup limit"),
        ("W8A8_GEMM_CONFIG(t, 128, 128, 256, 2, 2, 1, lds_double_buffer)", "LDS 139264 bytes exceeds the 65536-byte workgroup limit"),
        ("W8A8_GEMM_CONFIG(t, 256, 256, 64, 2, 2, 1, lds_double_buffer)", "needs 512 accumulator VGPRs, more than 128"),
        ("W8A8_GEMM_CONFIG(t, 16, 32, 256, 1, 1, 1, stream_weights)", None),
        ("W8A8_GEMM_CONFIG(t, 32, 32, 256, 2, 1, 1, lds_double_buffer)", None),
        ("W8A8_GEMM_CONFIG(t, 64, 64, 128, 2, 2, 2, lds_double_buffer)", "WAVES_K > 1.*stream_weights main loop only"),
        ("W8A8_GEMM_CONFIG(t, 48, 16, 64, 3, 1, 1, lds_double_buffer)", r"whole passes.*multiples of the 24 rows"),
        ("W8A8_GEMM_CONFIG(t, 96, 96, 64, 2, 2, 1, lds_double_buffer)", None),
        ("W8A8_GEMM_CONFIG(t, 16, 64, 64, 1, 2, 1, lds_double_buffer)", None),
        ("W8A8_GEMM_CONFIG(t, 32, 32, 64, 2, 1, 1, stream_weights)", "stream_weights main loop.*BLOCK_M must be 16, got 32"),
        ("W8A8_GEMM_CONFIG(t, 64, 64, 64, 2, 2, 1, lds_double_bufer)", "MAIN_LOOP must be one of lds_double_buffer, stream_weights"),
        ("W8A8_GEMM_CONFIG(t, 64, 128, 32, 2, 4, 1, lds_double_buffer)", r"whole passes.*multiples of the 128 rows one pass covers"),
        ("W8A8_GEMM_CONFIG(t, 16, 128, 512, 1, 2, 8, stream_weights)", "fused decode kernel's LDS 67712 bytes exceeds"),
        ("W8A8_GEMM_CONFIG(t, 16, 64, 512, 1, 1, 8, stream_weights)", None),
        ("W8A8_GEMM_CONFIG(9bad, 128, 128, 64, 2, 2, 1, lds_double_buffer)", "C identifier"),
        ("W8A8_GEMM_CONFIG(m64n64k64_w2x2x1, 128, 128, 64, 2, 2, 1, lds_double_buffer)", "the tag states"),
        ("GEMM(t, 128, 128, 64, 2, 2, 1, lds_double_buffer)", "expected W8A8_GEMM_CONFIG"),
    ],
)
def test_bad_rows_are_rejected_with_the_line(row: str, message: str | None) -> None:
    text = "// header\nW8A8_GEMM_CONFIG(ok, 64, 64, 64, 2, 2, 1, lds_double_buffer)\n" + row + "\n"
    if message is None:  # a valid neighbour of the bad rows: accepted
        assert parse_tile_configs(text)[-1].tag == "t"
        return
    with pytest.raises(TileConfigError, match=message) as error:
        parse_tile_configs(text, source="x.def")
    assert "x.def:3" in str(error.value)


def test_duplicate_tag_and_empty_table() -> None:
    row = "W8A8_GEMM_CONFIG(a, 64, 64, 64, 2, 2, 1, lds_double_buffer)\n"
    with pytest.raises(TileConfigError, match="already defined on line 1"):
        parse_tile_configs(row + row)
    with pytest.raises(TileConfigError, match="no W8A8_GEMM_CONFIG rows"):
        parse_tile_configs("// only a comment\n")


def test_validate_rejects_non_int_fields() -> None:
    with pytest.raises(TileConfigError, match="WAVES_N must be a positive integer"):
        validate_tile_config(TileConfig("a", 64, 64, 64, 2, 2.0, 1, LDS_DOUBLE_BUFFER))  # type: ignore[arg-type]


def test_missing_table_names_where_it_looked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vllm_rdna_w8a8.dispatch import tile_configs

    monkeypatch.setattr(tile_configs, "DEFAULT_DEF_PATHS", (tmp_path / "nope.def",))
    with pytest.raises(FileNotFoundError, match="nope.def"):
        tile_configs.find_def_file()


def test_repository_kernel_table_is_valid_when_present() -> None:
    """The real kernels/gemm_configs.def (kernels engineer) passes the same validation."""
    from vllm_rdna_w8a8.dispatch import tile_configs

    real = [path for path in tile_configs.DEFAULT_DEF_PATHS if path.is_file()]
    if not real:
        pytest.skip("kernels/gemm_configs.def not written yet")
    configs = load_tile_configs(real[0])
    assert configs and all(config.threads % 32 == 0 for config in configs)
