"""The kernel ABI facts Python repeats (flag bits, the quantization block, tile limits) equal
the C++ constants they copy: a change on one side without the other fails here."""

from __future__ import annotations

import math
import re

import pytest

from kernel_harness import KERNELS_DIR
from vllm_rdna_w8a8.dispatch import tile_configs
from vllm_rdna_w8a8.ops import hip_backend

_CONSTANT = re.compile(r"^constexpr\s+(?:int|uint32_t)\s+(k\w+)\s*=\s*([0-9 *]+);", re.M)

# (kernel source, C++ constant) -> the Python value that must equal it
PYTHON_COPIES = {
    ("common/epilogue.h", "kFlagPerTokenAScale"): hip_backend.A_SCALE_PER_TOKEN,
    ("common/epilogue.h", "kFlagPerChannelBScale"): hip_backend.B_SCALE_PER_CHANNEL,
    ("common/epilogue.h", "kFlagOutputBf16"): hip_backend.OUTPUT_BF16,
    ("common/decode_quant.h", "kFlagFusedStaticScale"): hip_backend.FUSED_STATIC_SCALE,
    ("common/decode_quant.h", "kFlagFusedAsymmetric"): hip_backend.FUSED_ASYMMETRIC,
    ("quant_int8.hip", "kFlagStaticScale"): hip_backend.STATIC_SCALE,
    ("quant_int8.hip", "kFlagAsymmetric"): hip_backend.ASYMMETRIC,
    ("quant_int8.hip", "kQuantMaxThreads"): hip_backend.QUANT_BLOCK_THREADS,
    ("common/gemm.h", "kMaxLdsBytesPerWorkgroup"): tile_configs.LDS_BYTES_PER_WORKGROUP,
    ("common/gemm.h", "kMaxThreadsPerWorkgroup"): tile_configs.MAX_WORKGROUP_THREADS,
    ("common/gemm.h", "kLdsRowPadBytes"): tile_configs.LDS_ROW_PADDING_BYTES,
    ("common/gemm.h", "kMaxAccumulatorVgprs"): tile_configs.MAX_ACCUMULATOR_VGPRS,
    ("common/hip_compat.h", "kWaveSize"): tile_configs.WAVE_SIZE,
    ("common/wmma.h", "kWmmaDim"): tile_configs.WMMA_TILE,
    ("common/wmma.h", "kOperandBytesI8"): tile_configs.OPERAND_BYTES_PER_LANE,
    ("common/wmma.h", "kAccValues"): tile_configs.ACCUMULATOR_VGPRS_PER_WMMA_TILE,
}


def cpp_constants(source: str) -> dict[str, int]:
    """The integer `constexpr` constants at namespace level of kernels/<source>."""
    text = (KERNELS_DIR / source).read_text()
    return {name: math.prod(int(factor) for factor in value.split("*")) for name, value in _CONSTANT.findall(text)}


@pytest.mark.parametrize(("source", "name"), list(PYTHON_COPIES), ids=[name for _, name in PYTHON_COPIES])
def test_python_copy_equals_the_kernel_constant(source: str, name: str) -> None:
    constants = cpp_constants(source)
    assert name in constants, f"{name} is no longer a constexpr of kernels/{source}"
    assert constants[name] == PYTHON_COPIES[(source, name)], f"kernels/{source} {name} vs its Python copy"
