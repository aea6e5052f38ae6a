"""A one-rank vLLM distributed setup (linear layers ask for their TP group) and
helpers to build compressed-tensors configs and layers."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator

import pytest
import torch

W8A8_INT8 = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "ignore": ["lm_head", "model.layers.0.mlp.up_proj"],
    "kv_cache_scheme": None,
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                  "dynamic": True},
        }
    },
}


@pytest.fixture
def w8a8_int8() -> dict:
    """A standard compressed-tensors W8A8 int8 quantization_config (fresh copy)."""
    return copy.deepcopy(W8A8_INT8)


@pytest.fixture(scope="session", autouse=True)
def one_rank() -> None:
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.distributed.parallel_state import model_parallel_is_initialized

    if model_parallel_is_initialized():
        return
    with tempfile.NamedTemporaryFile(prefix="rdna_w8a8_dist_", delete=False) as handle:
        init_file = handle.name
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(world_size=1, rank=0, local_rank=0,
                                     distributed_init_method=f"file://{init_file}", backend="gloo")
        initialize_model_parallel(1, 1)


@pytest.fixture(autouse=True)
def model_dtype_fp16() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def ours_on_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Our kernel class first in the CPU list and usable (the ops then run the reference)."""
    from vllm.model_executor.kernels import linear
    from vllm.platforms import PlatformEnum

    from vllm_rdna_w8a8.scaled_mm import registry, support

    saved = [list(table[PlatformEnum.CPU]) for table in (linear._POSSIBLE_INT8_KERNELS, linear._POSSIBLE_FP8_KERNELS)]
    monkeypatch.setattr(support, "hip_kernels_usable", lambda *kernel_kind: (True, None))
    registry.insert_kernels(PlatformEnum.CPU)
    yield
    linear._POSSIBLE_INT8_KERNELS[PlatformEnum.CPU], linear._POSSIBLE_FP8_KERNELS[PlatformEnum.CPU] = saved
