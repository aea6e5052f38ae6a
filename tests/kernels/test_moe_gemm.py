"""The MoE grouped GEMMs `w8a8_i8_moe_{f16,bf16}_gemm_<tag>` (kernels/moe_gemm.hip) through
their host binding (moe/hip_backend.py) on the sanitized emulator (ASan + UBSan), in a subprocess
on the CPU tensors of the production path:
- `int8_moe` bit for bit against moe.reference.int8_moe for every tile config (forced), fp16
  and bf16: decode sizes (1, 5, 16 tokens), a prefill size whose busiest expert spans several
  row blocks of every config, experts that receive no token, a token routed to every expert
  (top_k == E), H and I not multiples of 16 (K padded to 48 and 32), weights as the checkpoint
  gives them and as prepare_int8_moe_weights stores them;
- the grouped GEMM's int32 sums exactly: small operands and unit scales make every output the
  sum itself (|sum| <= 160, exact in bf16 and fp16), with N = 32 (the epilogue's 16-byte row
  chunks, each to its slot's row) and N = 20 (rows not 16-byte aligned: element stores);
in both thread orders of the emulator (a missing barrier shows as a difference).

The fp8 grouped GEMMs `w8a8_f8_moe_{f16,bf16}_gemm_<tag>` the same way (`fp8_moe` against
moe.reference.fp8_moe), where the kernel sums in float32 and the reference exactly in float64:
- the layer with weights in {0, +-1} (their scales carry the magnitudes): every e4m3fn value is
  a multiple of 2^-9 and at most 448, so every partial sum of K_pad <= 48 products is a multiple
  of 2^-9 below 48 * 448 < 2^15, exact in float32's 24 bits in any order. The kernel's sums are
  then the reference's, and so is every later step: the tolerance is zero, bit for bit, through
  both GEMMs, the fp8 quantizations between them (dynamic per token and static per tensor) and
  the combine; per-channel and per-tensor weight scales, the same routing cases as int8;
- the grouped GEMM alone with arbitrary e4m3fn bytes (+-448 rows, subnormal rows, a zero row):
  the dense fp8 GEMM tests' rule (tests/kernels/test_gemm_fp8.py): within half an output ulp
  plus the fp32 epilogue's rounding plus the fp32 sum's bound (K + 8) eps32 sum|a||b|, times
  the scales."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from kernel_harness import REPO, tile_configs

# The layer cases both schemes' scripts run (sys.argv[1]: the code objects to load).
LAYER_CASES = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from vllm_rdna_w8a8.dispatch import forced_gemm_config, load_tile_configs
    from vllm_rdna_w8a8.moe import reference
    from vllm_rdna_w8a8.moe import hip_backend as moe_hip
    from vllm_rdna_w8a8.runtime import launcher

    launcher._default = launcher.Launcher(Path(sys.argv[1]))  # this checkout's kernels, built for the test
    HIDDEN, INTERMEDIATE, EXPERTS = 40, 24, 4  # K of the two GEMMs padded to 48 and 32
    generator = torch.Generator().manual_seed(14)

    def ids_routed(tokens, top_k):
        return reference.route(torch.randn(tokens, EXPERTS, generator=generator), top_k, True)

    def cases():
        weights, ids = ids_routed(1, 2)
        yield "decode-1", weights, ids
        ids = torch.tensor([[0, 2]] * 5, dtype=torch.int32)  # experts 1 and 3 receive no token
        yield "decode-5-idle-experts", torch.rand(5, 2, generator=generator), ids
        weights, ids = ids_routed(16, EXPERTS)  # every token to every expert
        yield "decode-16-every-expert", weights, ids
        weights, ids = ids_routed(150, 2)
        ids[:, 0], ids[:, 1] = 1, torch.where(ids[:, 1] == 1, 0, ids[:, 1])  # expert 1: 150 slots
        yield "prefill-150", weights, ids.to(torch.int64)
    """
)
SCRIPT = LAYER_CASES + textwrap.dedent(
    """
    checked = 0
    for config in load_tile_configs():
        with forced_gemm_config(config):
            for dtype in (torch.float16, torch.bfloat16):
                w13 = torch.randint(-128, 128, (EXPERTS, 2 * INTERMEDIATE, HIDDEN), dtype=torch.int8,
                                    generator=generator)
                w2 = torch.randint(-128, 128, (EXPERTS, HIDDEN, INTERMEDIATE), dtype=torch.int8, generator=generator)
                w13_scale = torch.rand(EXPERTS, 2 * INTERMEDIATE, generator=generator) / 500
                w2_scale = torch.rand(EXPERTS, HIDDEN, generator=generator) / 500
                for name, weights, ids in cases():
                    x = (torch.randn(ids.shape[0], HIDDEN, generator=generator) * 3).to(dtype)
                    x[0, :5] = 0  # part of a row zero; a whole zero row below
                    if x.shape[0] > 2:
                        x[2] = 0
                    want = reference.int8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids)
                    # The checkpoint's weights (re-stored per call: K = 40) and, for one case,
                    # the stored ones with 128 bytes of row padding (H = 2048 elsewhere).
                    layouts = [(w13, w2)]
                    if name == "decode-5-idle-experts":
                        layouts.append(moe_hip.prepare_int8_moe_weights(w13, w2))
                    for w13_given, w2_given in layouts:
                        got = moe_hip.int8_moe(x, w13_given, w13_scale, w2_given, w2_scale, weights, ids)
                        what = (config.tag, str(dtype), name, w13_given is w13)
                        assert got.dtype == dtype and got.shape == x.shape, what
                        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), what
                        checked += 1

                # int32 sums: operands in [-2, 2] over K = 40, unit scales -> out == sum exactly;
                # N = 32 (16-byte row-chunk stores) and N = 20 (ldc % 8 != 0: element stores)
                weights, ids = ids_routed(7, 2)
                a = torch.zeros(7, 48, dtype=torch.int8)
                a[:, :HIDDEN] = torch.randint(-2, 3, (7, HIDDEN), dtype=torch.int8, generator=generator)
                for n in (32, 20):
                    weight = torch.randint(-2, 3, (EXPERTS, n, HIDDEN), dtype=torch.int8, generator=generator)
                    out = moe_hip.grouped_gemm(a, torch.ones(7), weight, torch.ones(EXPERTS, n), ids, 2, dtype)
                    slots = torch.arange(14)
                    sums = (a[slots // 2, :HIDDEN].long().unsqueeze(1) * weight[ids.reshape(-1).long()].long()).sum(-1)
                    assert torch.equal(out.double(), sums.double()), (config.tag, str(dtype), n)
                    checked += 1
    print("CHECKED", checked)
    """
)
# per config and dtype: 4 layer cases, one of them in a second weight layout, the int32 sums at two N
EXPECTED = len(tile_configs()) * 2 * (4 + 1 + 2)
RUN_TIMEOUT_S = 1800


FP8_SCRIPT = LAYER_CASES + textwrap.dedent(
    """
    import numpy as np

    sys.path.insert(0, "tests/kernels")
    from kernel_harness import E4M3FN_MAX_BYTE, E4M3FN_NAN_BYTES, assert_within_output_rounding, e4m3fn_values

    rng = np.random.default_rng(16)
    VALUES = e4m3fn_values()
    FINITE = np.array([byte for byte in range(256) if byte not in E4M3FN_NAN_BYTES], np.uint8)

    def unit_weight(n, k):  # values in {0, +-1}: exact float32 sums (module docstring)
        return torch.randint(-1, 2, (EXPERTS, n, k), generator=generator).to(torch.float8_e4m3fn)

    def fp8_bytes(shape):
        return torch.from_numpy(rng.choice(FINITE, size=shape)).view(torch.float8_e4m3fn)

    checked = 0
    for config in load_tile_configs():
        with forced_gemm_config(config):
            for dtype in (torch.float16, torch.bfloat16):
                bf16 = dtype == torch.bfloat16
                w13, w2 = unit_weight(2 * INTERMEDIATE, HIDDEN), unit_weight(HIDDEN, INTERMEDIATE)
                # per channel for one stage, per tensor for the other, swapped with the dtype
                w13_scale = torch.rand(EXPERTS, 1 if bf16 else 2 * INTERMEDIATE, generator=generator) / 50
                w2_scale = torch.rand(EXPERTS, HIDDEN if bf16 else 1, generator=generator) / 50
                for index, (name, weights, ids) in enumerate(cases()):
                    x = (torch.randn(ids.shape[0], HIDDEN, generator=generator) * 3).to(dtype)
                    x[0, :5] = 0
                    if x.shape[0] > 2:
                        x[2] = 0
                    # dynamic per-token scales, then static per-tensor ones (x clamps to +-448)
                    static = (torch.tensor([0.004]), torch.tensor([0.002])) if index % 2 else (None, None)
                    want = reference.fp8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids, *static)
                    got = moe_hip.fp8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids, *static)
                    what = (config.tag, str(dtype), name, static[0] is None)
                    assert got.dtype == dtype and got.shape == x.shape, what
                    assert torch.equal(got.view(torch.int16), want.view(torch.int16)), what
                    checked += 1

                # the grouped GEMM on arbitrary e4m3fn bytes, within the dense fp8 rule: K = 40
                # (the weight re-stored with zero padding) and K = 48 (read in place)
                weights, ids = ids_routed(7, 2)
                for k, per_token, per_channel in ((HIDDEN, True, True), (48, False, False)):
                    a = torch.zeros(7, 48, dtype=torch.float8_e4m3fn)  # zero past K, as quantized
                    a[:, :k] = fp8_bytes((7, k))
                    a.view(torch.uint8)[0, :k] = E4M3FN_MAX_BYTE  # 448
                    a.view(torch.uint8)[1, :k] = torch.from_numpy(rng.choice([1, 2, 5, 7, 0x81, 0x86], k))
                    a[2] = 0
                    weight = fp8_bytes((EXPERTS, 32, k))
                    weight.view(torch.uint8)[:, 0] = E4M3FN_MAX_BYTE | 0x80  # -448
                    assert moe_hip._readable_in_place(weight) == (k == 48)
                    a_scale = torch.rand(7 if per_token else 1, generator=generator) / 100
                    weight_scale = torch.rand(EXPERTS, 32 if per_channel else 1, generator=generator) / 100
                    out = moe_hip.grouped_gemm(a, a_scale, weight, weight_scale, ids, 2, dtype)
                    rows, experts = np.arange(14) // 2, ids.reshape(-1).long().numpy()
                    a_values = VALUES[a.view(torch.uint8)[rows, :k].numpy()]
                    b_values = VALUES[weight.view(torch.uint8)[experts].numpy()]
                    scales = (a_scale.double().numpy()[rows if per_token else [0] * 14][:, None]
                              * weight_scale.double().numpy()[experts])
                    exact = scales * np.einsum("sk,snk->sn", a_values, b_values)
                    sum_error = scales * (k + 8) * np.finfo(np.float32).eps * np.einsum(
                        "sk,snk->sn", np.abs(a_values), np.abs(b_values))
                    assert_within_output_rounding(out.double().numpy(), exact, np.abs(exact), bf16,
                                                  str((config.tag, str(dtype), k)), sum_error)
                    checked += 1
    print("CHECKED", checked)
    """
)
# per config and dtype: 4 layer cases, 2 grouped GEMMs on arbitrary bytes
FP8_EXPECTED = len(tile_configs()) * 2 * (4 + 2)
SCHEMES = {"int8": (SCRIPT, EXPECTED), "fp8": (FP8_SCRIPT, FP8_EXPECTED)}


# A few minutes each under ASan on this 2-core box: the reverse thread order only with the slow tests.
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("schedule", ["forward", pytest.param("reverse", marks=pytest.mark.slow)])
def test_moe_layer_on_the_grouped_gemms_equals_the_reference(
        kernel_objects: Path, sanitized_ops_env: Callable[[str], dict[str, str]], schedule: str, scheme: str) -> None:
    script, expected = SCHEMES[scheme]
    result = subprocess.run([sys.executable, "-c", script, str(kernel_objects)], env=sanitized_ops_env(schedule),
                            cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert f"CHECKED {expected}" in result.stdout, result.stdout[-3000:]


MODEL_SHAPE_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from vllm_rdna_w8a8.moe import hip_backend, reference
    from vllm_rdna_w8a8.runtime import launcher

    launcher._default = launcher.Launcher(Path(sys.argv[1]))
    # A Qwen3-30B-A3B expert layer: E = 128, H = 2048, I = 768, top_k = 8 (H_pad = 2048: the stored
    # rows carry 128 bytes of anti-aliasing padding), the dispatch's own tiles.
    generator = torch.Generator().manual_seed(15)
    experts, hidden, intermediate, top_k = 128, 2048, 768, 8
    w13 = torch.randint(-127, 128, (experts, 2 * intermediate, hidden), dtype=torch.int8, generator=generator)
    w2 = torch.randint(-127, 128, (experts, hidden, intermediate), dtype=torch.int8, generator=generator)
    w13_scale = torch.rand(experts, 2 * intermediate, generator=generator) / 3000
    w2_scale = torch.rand(experts, hidden, generator=generator) / 3000
    stored13, stored2 = hip_backend.prepare_int8_moe_weights(w13, w2)
    assert stored13.stride(1) == hidden + 128
    for tokens in (1, 4):
        x = torch.randn(tokens, hidden, generator=generator).to(torch.bfloat16)
        weights, ids = reference.route(torch.randn(tokens, experts, generator=generator), top_k, True)
        got = hip_backend.int8_moe(x, stored13, w13_scale, stored2, w2_scale, weights, ids)
        want = reference.int8_moe(x, w13, w13_scale, w2, w2_scale, weights, ids)
        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), tokens
    print("MODEL SHAPE OK")
    """
)


@pytest.mark.slow
def test_a_real_model_expert_layer_at_decode_equals_the_reference(
        kernel_objects: Path, sanitized_ops_env: Callable[[str], dict[str, str]]) -> None:
    result = subprocess.run([sys.executable, "-c", MODEL_SHAPE_SCRIPT, str(kernel_objects)], env=sanitized_ops_env(),
                            cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "MODEL SHAPE OK" in result.stdout
