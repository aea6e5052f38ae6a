from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_rdna_w8a8.build import Clang
from vllm_rdna_w8a8.runtime.code_object import CodeObjectError, parse_code_object, read_code_object
from vllm_rdna_w8a8.runtime.launcher import OBJECTS_DIR
from vllm_rdna_w8a8.testing.damaged_code_object import (
    PAST_THE_END,
    SH_OFFSET,
    SH_SIZE,
    with_first_symbol_name_offset,
    with_header_field,
    with_section_field,
)

# Every field of KernelMetadata and the .note key llvm-readelf prints it under.
READELF_FIELDS = {
    "kernarg_segment_size": ".kernarg_segment_size",
    "vgpr_count": ".vgpr_count",
    "sgpr_count": ".sgpr_count",
    "vgpr_spill_count": ".vgpr_spill_count",
    "sgpr_spill_count": ".sgpr_spill_count",
    "group_segment_fixed_size": ".group_segment_fixed_size",
    "private_segment_fixed_size": ".private_segment_fixed_size",
    "wavefront_size": ".wavefront_size",
    "max_flat_workgroup_size": ".max_flat_workgroup_size",
}


def _readelf_kernels(clang: Clang, path: Path) -> dict[str, dict[str, str]]:
    """llvm-readelf's YAML view of the metadata, split per kernel (top-level keys only)."""
    text = subprocess.run([str(clang.llvm_tool("llvm-readelf")), "--notes", str(path)],
                          capture_output=True, text=True, check=True).stdout
    kernels: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n  - \.args:", text)[1:]:
        fields = dict(re.findall(r"^    (\.[a-z_]+):\s+(\S+)$", block, flags=re.M))
        kernels[fields[".name"]] = fields
    return kernels


@pytest.mark.parametrize("target", ["gfx1100", "gfx1151"])
def test_metadata_matches_llvm_readelf(clang: Clang, probe_objects: Path, target: str) -> None:
    path = probe_objects / target / "probe_args.hsaco"
    code_object = read_code_object(path)
    assert code_object.target == target
    assert code_object.target_id == f"amdgcn-amd-amdhsa--{target}"
    reference = _readelf_kernels(clang, path)
    assert set(code_object.kernels) == set(reference) == {"probe_args", "probe_fill"}
    for name, kernel in code_object.kernels.items():
        assert kernel.symbol == f"{name}.kd"
        for field, key in READELF_FIELDS.items():
            assert getattr(kernel, field) == int(reference[name][key]), (name, field)


def test_argument_layout_of_probe_args(probe_objects: Path) -> None:
    kernel = read_code_object(probe_objects / "gfx1100" / "probe_args.hsaco").kernels["probe_args"]
    explicit = [(a.offset, a.size, a.value_kind) for a in kernel.explicit_args]
    assert explicit == [
        (0, 8, "global_buffer"), (8, 8, "global_buffer"), (16, 4, "by_value"),
        (24, 8, "global_buffer"), (32, 4, "by_value"), (36, 4, "by_value"),
    ]
    # blockDim makes the compiler request hidden arguments after the explicit ones.
    hidden = [a for a in kernel.args if a.is_hidden]
    assert hidden and min(a.offset for a in hidden) >= 40
    assert kernel.max_flat_workgroup_size == 256
    assert kernel.wavefront_size == 32


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CodeObjectError, match="cannot read code object"):
        read_code_object(tmp_path / "absent.hsaco")


def test_truncated_file(probe_objects: Path) -> None:
    data = (probe_objects / "gfx1100" / "probe_args.hsaco").read_bytes()
    with pytest.raises(CodeObjectError, match="truncated"):
        parse_code_object(data[:40], "short.hsaco")
    with pytest.raises(CodeObjectError, match="truncated"):
        parse_code_object(data[: len(data) // 2], "half.hsaco")


def test_not_elf() -> None:
    with pytest.raises(CodeObjectError, match="x.hsaco: not an ELF file"):
        parse_code_object(b"#!/bin/sh\n" + b"\0" * 64, "x.hsaco")


def test_host_elf_is_not_amdgpu() -> None:
    with pytest.raises(CodeObjectError, match="is not AMDGPU"):
        read_code_object(Path(sys.executable).resolve())


def test_object_without_metadata_note(clang: Clang, probe_objects: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "no-note.hsaco"
    subprocess.run([str(clang.llvm_tool("llvm-objcopy")), "--remove-section=.note",
                    str(probe_objects / "gfx1100" / "probe_args.hsaco"), str(stripped)], check=True)
    with pytest.raises(CodeObjectError, match="no NT_AMDGPU_METADATA note"):
        read_code_object(stripped)


# Issue 11: damage that crashed the process (section offsets past the file, read by the
# stand-in runtime) or passed every check (OS/ABI, e_type, machine byte).
DAMAGE = {
    "symtab offset": (lambda image: with_section_field(image, ".symtab", SH_OFFSET, PAST_THE_END),
                      r"truncated or damaged \(section \d+, 0x7fff00000000 \+ \d+ bytes, lies past the end"),
    "strtab offset": (lambda image: with_section_field(image, ".strtab", SH_OFFSET, PAST_THE_END),
                      r"truncated or damaged \(section \d+, 0x7fff00000000"),
    "symtab size": (lambda image: with_section_field(image, ".symtab", SH_SIZE, PAST_THE_END),
                    r"truncated or damaged \(section \d+, 0x[0-9a-f]+ \+ 140733193388032 bytes"),
    "section table offset": (lambda image: with_header_field(image, "e_shoff", PAST_THE_END),
                             r"truncated or damaged \(section table at 0x7fff00000000 lies past"),
    "symbol name offset": (lambda image: with_first_symbol_name_offset(image, ".symtab", 0x7FFFFFFF),
                           r"a symbol name lies outside its string table"),
    "OS/ABI": (lambda image: with_header_field(image, "e_ident[EI_OSABI]", 0),
               r"ELF OS/ABI 0 is not AMDGPU HSA \(64\)"),
    "e_type": (lambda image: with_header_field(image, "e_type", 1),
               r"ELF type 1 is not a linked code object \(ET_DYN, 3\)"),
    "machine byte": (lambda image: with_header_field(image, "e_flags machine", 0x30),
                     r"ELF e_flags machine 0x30 is not one of gfx1100, gfx1101"),
}


@pytest.fixture(scope="module")
def shipped_gemm_image() -> bytes:
    return (OBJECTS_DIR / "gfx1100" / "int8_gemm.hsaco").read_bytes()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_code_object_is_refused_with_the_reason(shipped_gemm_image: bytes, damage: str) -> None:
    corrupt, reason = DAMAGE[damage]
    with pytest.raises(CodeObjectError, match=f"^int8_gemm.hsaco: {reason}"):
        parse_code_object(corrupt(shipped_gemm_image), "int8_gemm.hsaco")


def test_shipped_code_objects_pass_every_check() -> None:
    objects = sorted(OBJECTS_DIR.glob("gfx*/*.hsaco"))
    assert objects, f"no code objects built in {OBJECTS_DIR}"
    for path in objects:
        assert read_code_object(path).kernels, path
