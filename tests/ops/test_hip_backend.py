"""What the HIP backend hands the launcher: kernel, geometry, argument order, flags, stream."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from vllm_rdna_w8a8.dispatch import TileConfig
from vllm_rdna_w8a8.dispatch.tile_configs import configs_by_tag, load_tile_configs
from vllm_rdna_w8a8.ops import hip_backend


@pytest.fixture
def launches(monkeypatch) -> list:
    """Records launches instead of running them; device 0 is an emulated gfx1100."""
    recorded: list = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def launch_values(self, grid, block, kinds, values, stream) -> None:
            recorded.append(dict(name=self.name, grid=grid, block=block, args=list(zip(kinds, values)),
                                 stream=stream))

    monkeypatch.setattr(hip_backend, "_kernel", lambda device, name: Recorder(name))
    monkeypatch.setattr(hip_backend, "_target", lambda device: "gfx1100")
    return recorded


@pytest.fixture
def pick(monkeypatch) -> tuple[list, Callable[[str], None]]:
    """The dispatcher's answers, set by tag, and the questions the backend asked it: the
    expected launch then follows from the table row, not from the function under test."""
    questions: list = []
    answer: dict[str, TileConfig] = {}

    def pick_gemm_config(target: str, m: int, n: int, k: int, kind: str) -> TileConfig:
        questions.append((target, m, n, k, kind))
        return answer["config"]

    def answer_with(tag: str) -> None:
        answer["config"] = configs_by_tag(load_tile_configs())[tag]

    monkeypatch.setattr(hip_backend, "pick_gemm_config", pick_gemm_config)
    return questions, answer_with


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
def test_gemm_launch_follows_the_documented_argument_list(launches, pick, out_dtype) -> None:
    questions, answer_with = pick
    answer_with("m16n16k512_w1x1x4")
    m, n, k = 5, 24, 64
    a = torch.zeros((m, k), dtype=torch.int8)
    b = torch.zeros((n, k), dtype=torch.int8)
    a_scale, b_scale = torch.ones(m), torch.ones(n)
    azp, azp_adj = torch.zeros(m, dtype=torch.int32), torch.zeros(n, dtype=torch.int32)
    bias = torch.zeros(n, dtype=out_dtype)
    out = hip_backend.int8_scaled_mm(a, b, a_scale, b_scale, out_dtype, azp, azp_adj, bias)
    assert out.shape == (m, n) and out.dtype == out_dtype
    (launch,) = launches
    assert questions == [("gfx1100", m, n, k, "i8")]
    assert launch["name"] == "w8a8_i8_gemm_m16n16k512_w1x1x4"
    # grid: ceil(5 / 16) x ceil(24 / 16) tiles; block: 32 x WAVES_M x WAVES_N x WAVES_K = 32 x 1 x 1 x 4
    assert launch["grid"] == (2, 1, 1) and launch["block"] == (128, 1, 1)
    assert launch["stream"] == 0
    pointers = [a, b, out, a_scale, b_scale, azp, azp_adj, bias]
    flags = 1 | 2 | (4 if out_dtype == torch.bfloat16 else 0)
    assert launch["args"] == [("pointer", t.data_ptr()) for t in pointers] + [
        ("int32", m), ("int32", n), ("int32", k), ("int32", k), ("int32", k), ("int32", n), ("uint32", flags)]


def test_gemm_per_tensor_scales_and_null_pointers(launches) -> None:
    a = torch.zeros((3, 32), dtype=torch.int8)
    b = torch.zeros((4, 32), dtype=torch.int8)
    hip_backend.int8_scaled_mm(a, b, torch.ones(1), torch.ones(1), torch.float16, None, None, None)
    values = launches[0]["args"]
    assert values[5:8] == [("pointer", 0)] * 3
    assert values[-1] == ("uint32", 0)


def test_empty_batch_launches_nothing(launches) -> None:
    out = hip_backend.int8_scaled_mm(torch.zeros((0, 32), dtype=torch.int8), torch.zeros((4, 32), dtype=torch.int8),
                                      torch.ones(1), torch.ones(4), torch.float16, None, None, None)
    q, scale, _ = hip_backend.scaled_int8_quant(torch.zeros((0, 20), dtype=torch.float16), None, None, True, 32)
    assert out.shape == (0, 4) and q.shape == (0, 32) and scale.shape == (0,)
    assert launches == []


@pytest.mark.parametrize(("dtype", "kernel"), [(torch.float16, "w8a8_quant_i8_f16"), (torch.bfloat16, "w8a8_quant_i8_bf16")])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quant_launch_follows_the_documented_argument_list(launches, dtype, kernel, static, symmetric) -> None:
    x = torch.zeros((6, 20), dtype=dtype)
    scale = torch.ones(1) if static else None
    azp = torch.zeros(1, dtype=torch.int32) if static and not symmetric else None
    q, out_scale, out_azp = hip_backend.scaled_int8_quant(x, scale, azp, symmetric, 32)
    assert q.shape == (6, 32) and q.dtype == torch.int8
    if static:
        assert out_scale is scale and out_azp is azp
    else:
        assert out_scale.shape == (6,) and (out_azp is None) == symmetric
    (launch,) = launches
    assert launch["name"] == kernel and launch["grid"] == (6, 1, 1)
    flags = (1 if static else 0) | (0 if symmetric else 2)
    expected_pointers = [x, q, out_scale, out_azp]
    assert launch["args"] == [
        ("pointer", 0 if t is None else t.data_ptr()) for t in expected_pointers] + [
        ("int32", 6), ("int32", 20), ("int32", 20), ("int32", 32), ("uint32", flags)]


def test_fp8_gemm_launches_the_f8_kernel_without_zero_points(launches, pick) -> None:
    questions, answer_with = pick
    answer_with("m64n64k64_w2x2x1")
    a = torch.zeros((9, 64), dtype=torch.float8_e4m3fn)
    b = torch.zeros((20, 64), dtype=torch.float8_e4m3fn)
    out = hip_backend.fp8_scaled_mm(a, b, torch.ones(9), torch.ones(20), torch.bfloat16, None)
    assert out.shape == (9, 20)
    (launch,) = launches
    assert questions == [("gfx1100", 9, 20, 64, "f8")]
    assert launch["name"] == "w8a8_f8_gemm_m64n64k64_w2x2x1"
    assert launch["grid"] == (1, 1, 1) and launch["block"] == (128, 1, 1)
    values = launch["args"]
    assert values[5:8] == [("pointer", 0)] * 3 and values[-1] == ("uint32", 1 | 2 | 4)
