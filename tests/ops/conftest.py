"""Shared inputs for the op tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture
def activations() -> torch.Tensor:
    """[9, 40] fp16 rows with the awkward cases: zeros, a constant, extremes, ties."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(9, 40, generator=generator) * 3).to(torch.float16)
    x[1] = 0  # zero row
    x[2] = 1.5  # constant row
    x[3, :] = torch.tensor([65504.0, -65504.0] * 20, dtype=torch.float16)  # fp16 extremes
    x[4, 0] = 127.0  # absmax 127: scale exactly 1, so x * 127/absmax hits ties below
    x[4, 1:6] = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5], dtype=torch.float16)
    x[4, 6:] = 0
    return x


def _sat32(values: np.ndarray) -> np.ndarray:
    """float -> int32 as the GPU converts: NaN -> 0, saturating; as int64."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=2**31 - 1, neginf=-(2**31))
    return np.clip(values, -(2**31), 2**31 - 1).astype(np.int64)


@pytest.fixture
def numpy_quant():
    """The numpy transcription of vLLM's quantization kernel (below)."""
    return numpy_scaled_int8_quant


def numpy_scaled_int8_quant(x: np.ndarray, symmetric: bool, scale: float | None = None,
                            azp: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """vLLM's scaled_int8_quant CUDA kernel, transcribed into numpy float32 (the oracle's oracle)."""
    x = x.astype(np.float32)
    f32 = np.float32
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if scale is not None:
            if symmetric:
                q = np.clip(np.rint(x / f32(scale)), -128, 127)
            else:
                q = np.clip(np.rint(x * (f32(1) / f32(scale))) + azp, -128, 127)
            return q.astype(np.int8), np.array([scale], np.float32), None
        if symmetric:
            absmax = np.abs(x).max(axis=1)
            scales = (absmax / f32(127)).astype(np.float32)
            inverse = np.where(absmax == 0, f32(0), f32(127) / absmax).astype(np.float32)
            q = np.clip(np.rint(x * inverse[:, None]), -128, 127)
            return q.astype(np.int8), scales, None
        row_max, row_min = x.max(axis=1), x.min(axis=1)
        scales = ((row_max - row_min) / f32(255)).astype(np.float32)
        zps = _sat32(np.rint(f32(-128) - row_min / scales))
        inverse = (f32(1) / scales).astype(np.float32)
        shifted = _sat32(np.rint(x * inverse[:, None]))
        q = np.clip((shifted + zps[:, None] + 2**31) % 2**32 - 2**31, -128, 127)  # int32 add wraps
        return q.astype(np.int8), scales, zps.astype(np.int32)
