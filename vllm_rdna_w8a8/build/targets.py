"""The gfx11 (RDNA3 / RDNA3.5) targets we compile for, and their hardware facts.

Facts from AMD's public spec tables (collected in the team's rdna3-wmma.md notes): the
performance model and the ISA report read them; the compiler only needs the names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# A SIMD holds at most this many waves, whatever the register use.
MAX_WAVES_PER_SIMD = 16
# A single wave addresses at most this many VGPRs.
MAX_VGPRS_PER_WAVE = 256
# Two CUs of two SIMDs each form a WGP; in WGP mode (the compiler's default on gfx11) a
# workgroup's waves spread over its four SIMDs and share its 128 KiB of LDS.
SIMDS_PER_WGP = 4
LDS_BYTES_PER_WGP = 128 * 1024


@dataclass(frozen=True)
class GfxTarget:
    """One gfx11 target. `cu_count` is the largest product's CU count."""

    name: str
    products: str
    cu_count: int
    vgprs_per_simd: int  # wave32 VGPR file per SIMD
    vgpr_alloc_granule: int  # VGPRs are allocated to a wave in blocks of this size
    lds_bytes_per_workgroup: int
    isa_version: int  # value of @__oclc_ISA_version in the device library

    @property
    def family(self) -> str:
        return "RDNA3.5" if self.name.startswith("gfx115") else "RDNA3"


_KIB = 1024
GFX11_TARGETS: dict[str, GfxTarget] = {
    t.name: t
    for t in (
        GfxTarget("gfx1100", "RX 7900 XTX / XT / GRE, W7900", 96, 1536, 24, 64 * _KIB, 11000),
        GfxTarget("gfx1101", "RX 7800 XT / 7700 XT, W7800", 60, 1536, 24, 64 * _KIB, 11001),
        GfxTarget("gfx1102", "RX 7600 / 7600 XT", 32, 1024, 16, 64 * _KIB, 11002),
        GfxTarget("gfx1103", "Radeon 780M / 760M (APU)", 12, 1024, 16, 64 * _KIB, 11003),
        GfxTarget("gfx1150", "Radeon 890M (Strix Point)", 16, 1024, 16, 64 * _KIB, 11500),
        GfxTarget("gfx1151", "Radeon 8060S (Strix Halo)", 40, 1536, 24, 64 * _KIB, 11501),
    )
}

ARCH_ENV = "PYTORCH_ROCM_ARCH"


def get_target(name: str) -> GfxTarget:
    """The target named `name` (feature suffixes such as ':xnack-' are ignored)."""
    if not isinstance(name, str):
        raise TypeError(f"target name must be a str, got {type(name).__name__}")
    base = name.strip().split(":", 1)[0]
    try:
        return GFX11_TARGETS[base]
    except KeyError:
        known = ", ".join(GFX11_TARGETS)
        raise ValueError(f"unknown gfx11 target {name!r}; known targets: {known}") from None


def parse_arch_list(arch_list: str) -> list[GfxTarget]:
    """The gfx11 targets named in a PYTORCH_ROCM_ARCH-style list (';' or ',' separated).

    Feature suffixes are dropped, non-gfx11 entries are ignored, duplicates removed
    (order kept). Raises ValueError when no gfx11 target is left.
    """
    selected: list[GfxTarget] = []
    for entry in arch_list.replace(",", ";").split(";"):
        base = entry.strip().split(":", 1)[0]
        target = GFX11_TARGETS.get(base)
        if target is not None and target not in selected:
            selected.append(target)
    if not selected:
        known = ", ".join(GFX11_TARGETS)
        raise ValueError(
            f"{ARCH_ENV}={arch_list!r} names no gfx11 target this package supports "
            f"(supported: {known}); unset it to build for all of them"
        )
    return selected


def selected_targets(environ: dict[str, str] | None = None) -> list[GfxTarget]:
    """The targets to compile for: all six, or those PYTORCH_ROCM_ARCH names."""
    env = os.environ if environ is None else environ
    arch_list = env.get(ARCH_ENV, "").strip()
    if not arch_list:
        return list(GFX11_TARGETS.values())
    return parse_arch_list(arch_list)
