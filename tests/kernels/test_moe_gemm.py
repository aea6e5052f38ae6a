"""The MoE grouped GEMMs `w8a8_i8_moe_{f16,bf16}_gemm_<tag>` (kernels/moe_gemm.hip) through
their host binding (moe/hip_backend.py) on the sanitized emulator (ASan + UBSan), in a subprocess
on the CPU tensors of the production path:
- `int8_moe` bit for bit against moe.reference.int8_moe for every tile config (forced), fp16
  and bf16: decode sizes (1, 5, 16 tokens), a prefill size whose busiest expert spans several
  row blocks of every config, experts that receive no token, a token routed to every expert
  (top_k == E), H and I not multiples of 16 (K padded to 48 and 32), weights as the checkpoint
  gives them and as prepare_int8_moe_weights stores them;
- the grouped GEMM's int32 sums exactly: small operands and unit scales make every output the
  sum itself (|sum| <= 160, exact in bf16 and fp16);
in both thread orders of the emulator (a missing barrier shows as a difference)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from kernel_harness import REPO, tile_configs

SCRIPT = textwrap.dedent(
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

                # int32 sums: operands in [-2, 2] over K = 40, unit scales -> out == sum exactly
                weights, ids = ids_routed(7, 2)
                a = torch.zeros(7, 48, dtype=torch.int8)
                a[:, :HIDDEN] = torch.randint(-2, 3, (7, HIDDEN), dtype=torch.int8, generator=generator)
                weight = torch.randint(-2, 3, (EXPERTS, 32, HIDDEN), dtype=torch.int8, generator=generator)
                out = moe_hip.grouped_int8_gemm(a, torch.ones(7), weight, torch.ones(EXPERTS, 32), ids, 2, dtype)
                slots = torch.arange(14)
                sums = (a[slots // 2, :HIDDEN].long().unsqueeze(1) * weight[ids.reshape(-1).long()].long()).sum(-1)
                assert torch.equal(out.double(), sums.double()), (config.tag, str(dtype))
                checked += 1
    print("CHECKED", checked)
    """
)
# per config and dtype: 4 layer cases, one of them in a second weight layout, the int32 sums
EXPECTED = len(tile_configs()) * 2 * (4 + 1 + 1)
RUN_TIMEOUT_S = 1800


# A few minutes under ASan on this 2-core box: the reverse thread order only with the slow tests.
@pytest.mark.parametrize("schedule", ["forward", pytest.param("reverse", marks=pytest.mark.slow)])
def test_moe_layer_on_the_grouped_gemms_equals_the_reference(
        kernel_objects: Path, sanitized_ops_env: Callable[[str], dict[str, str]], schedule: str) -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(kernel_objects)], env=sanitized_ops_env(schedule),
                            cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert f"CHECKED {EXPECTED}" in result.stdout, result.stdout[-3000:]


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
