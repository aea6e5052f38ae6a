"""The explicit arguments of our kernels as `ops/hip_backend.py` packs them: (name, kind) in order,
laid out as C lays out the kernel's parameter list (docs/architecture.md).

The launcher checks every indexed kernel's metadata against these (`expected_kernel_args`),
so a code object whose argument layout differs is declined instead of launched with
arguments at offsets the kernel does not read. No torch import: the plugin's start-up
check reads this.
"""

from __future__ import annotations

KernelArgs = tuple[tuple[str, str], ...]

QUANT_KERNEL_ARGS: KernelArgs = (
    ("x", "pointer"), ("q", "pointer"), ("scale", "pointer"), ("azp", "pointer"),
    ("M", "int32"), ("K", "int32"), ("ldx", "int32"), ("ldq", "int32"), ("flags", "uint32"),
)
GEMM_KERNEL_ARGS: KernelArgs = (
    ("a", "pointer"), ("b", "pointer"), ("c", "pointer"), ("a_scale", "pointer"),
    ("b_scale", "pointer"), ("azp", "pointer"), ("azp_adj", "pointer"), ("bias", "pointer"),
    ("M", "int32"), ("N", "int32"), ("K", "int32"), ("lda", "int32"), ("ldb", "int32"),
    ("ldc", "int32"), ("flags", "uint32"),
)
# The fused decode GEMMs (kernels/common/decode_quant.h): fp16/bf16 activations quantized in
# the kernel with scale x_scale / zero point x_azp when static.
FUSED_DECODE_GEMM_KERNEL_ARGS: KernelArgs = (
    ("x", "pointer"), ("b", "pointer"), ("c", "pointer"), ("x_scale", "pointer"),
    ("x_azp", "pointer"), ("b_scale", "pointer"), ("azp_adj", "pointer"), ("bias", "pointer"),
    ("M", "int32"), ("N", "int32"), ("K", "int32"), ("ldx", "int32"), ("ldb", "int32"),
    ("ldc", "int32"), ("flags", "uint32"),
)
# The MoE grouped GEMMs (kernels/moe_gemm.hip): A rows gathered through sorted_slots, one
# expert per row block (block_experts), one output row per slot.
MOE_GEMM_KERNEL_ARGS: KernelArgs = (
    ("a", "pointer"), ("b", "pointer"), ("c", "pointer"), ("a_scale", "pointer"),
    ("b_scale", "pointer"), ("sorted_slots", "pointer"), ("block_experts", "pointer"),
    ("blocks", "int32"), ("slots", "int32"), ("slots_per_a_row", "int32"), ("N", "int32"),
    ("K", "int32"), ("lda", "int32"), ("ldb", "int32"), ("ldc", "int32"), ("flags", "uint32"),
)
# SiLU-and-mul of the MoE gate_up rows fused with their dynamic per-row int8 quantization
# (kernels/quant_int8.hip).
SILU_MUL_QUANT_KERNEL_ARGS: KernelArgs = (
    ("gate_up", "pointer"), ("q", "pointer"), ("scale", "pointer"),
    ("rows", "int32"), ("I", "int32"), ("ld_gate_up", "int32"), ("ldq", "int32"),
)
# Kernel name prefix -> its argument list (kernels/quant_int8.hip, kernels/common/gemm.h,
# kernels/common/decode_quant.h, kernels/moe_gemm.hip).
_BY_PREFIX: tuple[tuple[str, KernelArgs], ...] = (
    ("w8a8_quant_i8_", QUANT_KERNEL_ARGS),
    ("w8a8_silu_mul_quant_i8_", SILU_MUL_QUANT_KERNEL_ARGS),
    ("w8a8_i8_gemm_", GEMM_KERNEL_ARGS),
    ("w8a8_f8_gemm_", GEMM_KERNEL_ARGS),
    ("w8a8_i8q_", FUSED_DECODE_GEMM_KERNEL_ARGS),
    ("w8a8_i8_moe_", MOE_GEMM_KERNEL_ARGS),
    ("w8a8_f8_moe_", MOE_GEMM_KERNEL_ARGS),
)


def kinds(args: KernelArgs) -> tuple[str, ...]:
    return tuple(kind for _name, kind in args)


def expected_kernel_args(kernel_name: str) -> KernelArgs | None:
    """The arguments the ops pass to `kernel_name`, or None for a kernel they never launch."""
    return next((args for prefix, args in _BY_PREFIX if kernel_name.startswith(prefix)), None)
