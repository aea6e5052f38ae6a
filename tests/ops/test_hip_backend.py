"""What the HIP backend hands the launcher: kernel, geometry, argument order, flags, stream."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from vllm_rdna_w8a8.dispatch import TileConfig
from vllm_rdna_w8a8.dispatch.tile_configs import configs_by_tag, load_tile_configs
from vllm_rdna_w8a8.ops import hip_backend


class _Launches(list):
    prepared: list[str]


@pytest.fixture(autouse=True)
def fresh_plans() -> None:
    """Each test's layers get their own plans (the fixture's recorders are per test)."""
    hip_backend._thread_plans().clear()


@pytest.fixture
def launches(monkeypatch) -> _Launches:
    """Records launches instead of running them; device 0 is an emulated gfx1100."""
    recorded = _Launches()

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def launch_values(self, grid, block, kinds, values, stream) -> None:
            recorded.append(dict(name=self.name, grid=grid, block=block, args=list(zip(kinds, values)),
                                 stream=stream))

        def prepare(self, block, kinds, values, variable) -> PreparedRecorder:
            prepared.append(self.name)
            return PreparedRecorder(self, block, kinds, values, variable)

    class PreparedRecorder:
        """A PreparedLaunch's contract: the prepared values, the variable ones replaced per launch."""

        def __init__(self, kernel: Recorder, block, kinds, values, variable) -> None:
            self.kernel, self.block, self.kinds, self.values, self.variable = kernel, block, kinds, values, variable

        def launch(self, grid, stream, *values) -> None:
            full = list(self.values)
            for index, value in zip(self.variable, values, strict=True):
                full[index] = value
            self.kernel.launch_values(grid, self.block, self.kinds, full, stream)

    prepared: list[str] = []
    recorded.prepared = prepared  # the kernel names prepared so far (once per layer plan and tile)
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


@pytest.fixture
def fused_pick(monkeypatch) -> Callable[[str | None], None]:
    """Sets the dispatcher's fused-decode answer by tag (None: two launches)."""
    answer: dict[str, TileConfig | None] = {}
    monkeypatch.setattr(hip_backend, "fused_decode_config", lambda target, m, n, k: answer["config"])

    def answer_with(tag: str | None) -> None:
        answer["config"] = None if tag is None else configs_by_tag(load_tile_configs())[tag]

    return answer_with


def _int8_layer(n: int = 24, k: int = 64, out_dtype: torch.dtype = torch.bfloat16) -> dict:
    return dict(b=torch.zeros((n, k), dtype=torch.int8), x_scale=None, x_azp=None, symmetric=True,
                b_scale=torch.ones(n), out_dtype=out_dtype, azp_adj=None, bias=torch.zeros(n, dtype=out_dtype))


def test_fused_layer_launch_follows_the_documented_argument_list(launches, fused_pick) -> None:
    fused_pick("m16n32k256_w1x1x4")
    layer = _int8_layer()
    x = torch.zeros((3, 64), dtype=torch.float16)
    out = hip_backend.int8_quant_scaled_mm(x, **layer)
    assert out.shape == (3, 24) and out.dtype == torch.bfloat16
    (launch,) = launches
    assert launch["name"] == "w8a8_i8q_f16_gemm_m16n32k256_w1x1x4"
    assert launch["grid"] == (1, 1, 1) and launch["block"] == (128, 1, 1) and launch["stream"] == 0
    pointers = [x, layer["b"], out, None, None, layer["b_scale"], None, layer["bias"]]
    assert launch["args"] == [("pointer", 0 if t is None else t.data_ptr()) for t in pointers] + [
        ("int32", 3), ("int32", 24), ("int32", 64), ("int32", 64), ("int32", 64), ("int32", 24),
        ("uint32", 2 | 4)]


def test_layer_plan_serves_new_rows_and_never_a_stale_weight(launches, fused_pick) -> None:
    fused_pick("m16n32k256_w1x1x4")
    layer = _int8_layer()
    for _ in range(3):  # new rows and outputs each call, one plan
        x = torch.randn((1, 64)).to(torch.float16)
        out = hip_backend.int8_quant_scaled_mm(x, **layer)
        assert [value for _, value in launches[-1]["args"][:3]] == [x.data_ptr(), layer["b"].data_ptr(),
                                                                    out.data_ptr()]
    assert launches.prepared == ["w8a8_i8q_f16_gemm_m16n32k256_w1x1x4"]
    # The same tensor objects with new storage or a new layout: a new plan, the new facts launched.
    layer["b"].data = torch.zeros((24, 64), dtype=torch.int8)
    layer["b_scale"].resize_(1)
    hip_backend.int8_quant_scaled_mm(x, **layer)
    args = launches[-1]["args"]
    assert args[1] == ("pointer", layer["b"].data_ptr()) and args[-1] == ("uint32", 4)  # per tensor now
    assert len(launches.prepared) == 2


@pytest.mark.parametrize(("rows", "error", "match"), [
    (torch.zeros((64, 2), dtype=torch.float16).T, ValueError, r"x needs contiguous rows"),
    (torch.zeros((2, 64)), TypeError, "x must be float16, bfloat16, got float32"),
    (torch.zeros((2, 80), dtype=torch.float16), ValueError, "padded_k must be a multiple of 16 and >= K=80"),
    (torch.zeros((1, 2, 64), dtype=torch.float16), ValueError, r"x must be 2-D \[M, K\]"),
])
def test_a_planned_layer_still_refuses_bad_rows(launches, fused_pick, rows, error, match) -> None:
    fused_pick("m16n32k256_w1x1x4")
    layer = _int8_layer()
    hip_backend.int8_quant_scaled_mm(torch.zeros((2, 64), dtype=torch.float16), **layer)  # the plan exists
    with pytest.raises(error, match=match):
        hip_backend.int8_quant_scaled_mm(rows, **layer)
    assert len(launches) == 1


@pytest.mark.parametrize("static", [False, True])
def test_two_launch_layer_hands_the_gemm_the_quantizers_outputs(launches, fused_pick, pick, static) -> None:
    fused_pick(None)
    questions, answer_with = pick
    answer_with("m64n64k64_w2x2x1")
    m, n, k, k_padded = 20, 24, 40, 48
    layer = _int8_layer(n, k_padded, torch.float16)
    layer.update(symmetric=False, azp_adj=torch.ones(n, dtype=torch.int32), bias=None)
    if static:
        layer.update(x_scale=torch.ones(1), x_azp=torch.full((1,), 3, dtype=torch.int32))
    x = torch.zeros((m, 56), dtype=torch.float16)[:, :k]  # row stride 56
    out = hip_backend.int8_quant_scaled_mm(x, **layer)
    quant, gemm = launches
    assert questions == [("gfx1100", m, n, k_padded, "i8")]
    assert quant["name"] == "w8a8_quant_i8_f16" and quant["grid"] == (m, 1, 1) and quant["block"] == (256, 1, 1)
    assert gemm["name"] == "w8a8_i8_gemm_m64n64k64_w2x2x1" and gemm["grid"] == (1, 1, 1)
    q, scale, azp = (value for _, value in quant["args"][1:4])
    if static:  # the given scale and zero point; the GEMM takes no per-token zero point (folded)
        assert (scale, azp) == (layer["x_scale"].data_ptr(), layer["x_azp"].data_ptr())
    else:  # rows, then M scales, then M zero points, in one scratch allocation
        assert (scale, azp) == (q + m * k_padded, q + m * k_padded + 4 * m)
    assert quant["args"][4:] == [("int32", m), ("int32", k), ("int32", 56), ("int32", k_padded),
                                 ("uint32", (1 if static else 0) | 2)]
    gemm_pointers = [q, layer["b"].data_ptr(), out.data_ptr(), scale, layer["b_scale"].data_ptr(),
                     0 if static else azp, layer["azp_adj"].data_ptr(), 0]
    assert gemm["args"] == [("pointer", address) for address in gemm_pointers] + [
        ("int32", m), ("int32", n), ("int32", k_padded), ("int32", k_padded), ("int32", k_padded),
        ("int32", n), ("uint32", (0 if static else 1) | 2)]


def test_each_thread_launches_from_its_own_plan(launches, fused_pick) -> None:
    """A prepared launch rewrites its own kernarg buffer per call: threads must not share one."""
    fused_pick("m16n32k256_w1x1x4")
    layer = _int8_layer()
    hip_backend.int8_quant_scaled_mm(torch.zeros((1, 64), dtype=torch.float16), **layer)
    thread = threading.Thread(target=hip_backend.int8_quant_scaled_mm,
                              args=(torch.zeros((1, 64), dtype=torch.float16),), kwargs=layer)
    thread.start()
    thread.join()
    assert len(launches) == 2
    assert launches.prepared == ["w8a8_i8q_f16_gemm_m16n32k256_w1x1x4"] * 2


def test_gemm_plan_serves_new_rows_and_scales_and_never_a_stale_weight(launches, pick) -> None:
    """The fp8 layers' GEMM (and the bare int8 GEMM): the weight side prepared once per plan and
    tile, each call's a, output, a_scale, M, lda and per-token flag launched."""
    _, answer_with = pick
    answer_with("m64n64k64_w2x2x1")
    b, b_scale, bias = torch.zeros((20, 64), dtype=torch.float8_e4m3fn), torch.ones(20), torch.zeros(20)
    bias = bias.to(torch.bfloat16)
    for m, lda in [(9, 64), (1, 64), (5, 80)]:  # per-token scales (flag 1) only where M > 1
        a = torch.zeros((m, lda), dtype=torch.float8_e4m3fn)[:, :64]
        a_scale = torch.rand(m)
        out = hip_backend.fp8_scaled_mm(a, b, a_scale, b_scale, torch.bfloat16, bias)
        pointers = [a, b, out, a_scale, b_scale, None, None, bias]
        assert launches[-1]["args"] == [("pointer", 0 if t is None else t.data_ptr()) for t in pointers] + [
            ("int32", m), ("int32", 20), ("int32", 64), ("int32", lda), ("int32", 64), ("int32", 20),
            ("uint32", (1 if m > 1 else 0) | 2 | 4)]
    assert launches.prepared == ["w8a8_f8_gemm_m64n64k64_w2x2x1"]
    # The same tensor objects with new storage or a new layout: a new plan, the new facts launched.
    b.data = torch.zeros((20, 64), dtype=torch.float8_e4m3fn)
    b_scale.resize_(1)
    hip_backend.fp8_scaled_mm(a, b, a_scale, b_scale, torch.bfloat16, bias)
    args = launches[-1]["args"]
    assert args[1] == ("pointer", b.data_ptr()) and args[-1] == ("uint32", 1 | 4)  # per-tensor b_scale now
    assert len(launches.prepared) == 2


@pytest.mark.parametrize(("change", "error", "match"), [
    (dict(a_scale=torch.ones(3)), ValueError, r"a_scale must have shape \[5\] or \[1\]"),
    (dict(a_scale=torch.ones(5, dtype=torch.float64)), TypeError, "a_scale must be float32, got float64"),
    (dict(a_scale=torch.ones(5, 2)[:, 0]), ValueError, "a_scale must be contiguous"),
    (dict(a=torch.zeros((64, 5), dtype=torch.float8_e4m3fn).T), ValueError, r"a needs contiguous rows"),
    (dict(a=torch.zeros(5 * 64 + 1, dtype=torch.float8_e4m3fn)[1:].view(5, 64)), ValueError,
     "a must start on a 16-byte boundary"),
    (dict(a=torch.zeros((5, 64), dtype=torch.int8)), TypeError, "a must be float8_e4m3fn, got int8"),
    (dict(a=torch.zeros((5, 48), dtype=torch.float8_e4m3fn)), ValueError, "K differs"),
])
def test_a_planned_gemm_still_refuses_bad_per_call_arguments(launches, pick, change, error, match) -> None:
    _, answer_with = pick
    answer_with("m64n64k64_w2x2x1")
    args = dict(a=torch.zeros((5, 64), dtype=torch.float8_e4m3fn), b=torch.zeros((20, 64), dtype=torch.float8_e4m3fn),
                a_scale=torch.ones(5), b_scale=torch.ones(20), out_dtype=torch.float16, bias=None)
    hip_backend.fp8_scaled_mm(**args)  # the plan exists
    with pytest.raises(error, match=match):
        hip_backend.fp8_scaled_mm(**{**args, **change})
    assert len(launches) == 1


def test_a_planned_int8_gemm_still_needs_azp_adj_for_a_zero_point(launches, pick) -> None:
    _, answer_with = pick
    answer_with("m64n64k64_w2x2x1")
    a, b = torch.zeros((5, 64), dtype=torch.int8), torch.zeros((20, 64), dtype=torch.int8)
    hip_backend.int8_scaled_mm(a, b, torch.ones(5), torch.ones(20), torch.float16)
    with pytest.raises(ValueError, match="azp given without azp_adj"):
        hip_backend.int8_scaled_mm(a, b, torch.ones(5), torch.ones(20), torch.float16, torch.zeros(5, dtype=torch.int32))
    assert len(launches) == 1
