"""Host and device read the same rows: every config the picker can return is a compiled
kernel, with the LDS size and workgroup size the Python side computes."""

from __future__ import annotations

import pytest

from vllm_rdna_w8a8.build.compile import DEFAULT_OBJECTS_DIR as OBJECTS_DIR
from vllm_rdna_w8a8.build.targets import GFX11_TARGETS
from vllm_rdna_w8a8.dispatch import tile_configs
from vllm_rdna_w8a8.runtime.code_object import KernelMetadata, read_code_object



def compiled_kernels(target: str) -> dict[str, KernelMetadata]:
    kernels: dict[str, KernelMetadata] = {}
    for path in sorted((OBJECTS_DIR / target).glob("*.hsaco")):
        kernels.update(read_code_object(path).kernels)
    return kernels


@pytest.mark.parametrize("target", sorted(GFX11_TARGETS))
def test_every_table_row_is_compiled_as_the_host_computes_it(target: str) -> None:
    kernels = compiled_kernels(target)
    if not kernels:
        pytest.skip(f"no code objects for {target} (python -m vllm_rdna_w8a8.build)")
    configs = tile_configs.load_tile_configs()
    for kind in tile_configs.KERNEL_KINDS:  # int8 and fp8: the plugin serves both
        for config in configs:
            name = config.kernel_name(kind)
            assert name in kernels, f"{name} is in the kernel table but not compiled for {target}"
            metadata = kernels[name]
            assert metadata.group_segment_fixed_size == config.lds_bytes, (
                f"{name} on {target}: LDS {metadata.group_segment_fixed_size} bytes compiled, "
                f"{config.lds_bytes} computed by TileConfig.lds_bytes")
            assert config.threads <= metadata.max_flat_workgroup_size, (name, target)
