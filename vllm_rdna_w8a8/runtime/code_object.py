"""Reading AMDGPU code objects: ELF + the msgpack NT_AMDGPU_METADATA note (stdlib only).

The metadata (code object v4/v5) lists every kernel with its arguments' offsets, sizes and
kinds, its kernarg segment size and its resource use; the launcher packs arguments by it
and the ISA report and compile-policy tests read the resource figures from it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .msgpack import MsgpackError, unpackb

EM_AMDGPU = 224
ELFCLASS64 = 2
ELFDATA2LSB = 1
SHT_NOTE = 7
NT_AMDGPU_METADATA = 32
EF_AMDGPU_MACH_MASK = 0xFF
# e_flags machine numbers (LLVM's llvm/BinaryFormat/ELF.h) of the targets we ship.
EF_AMDGPU_MACH = {
    0x41: "gfx1100", 0x46: "gfx1101", 0x47: "gfx1102", 0x44: "gfx1103",
    0x43: "gfx1150", 0x4A: "gfx1151",
}
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_NOTE_HEADER = struct.Struct("<III")


class CodeObjectError(ValueError):
    """The file is missing, truncated, not an AMDGPU code object, or has bad metadata."""


@dataclass(frozen=True)
class ArgInfo:
    offset: int
    size: int
    value_kind: str  # global_buffer, by_value, hidden_* ...
    name: str | None = None

    @property
    def is_hidden(self) -> bool:
        """Hidden arguments (block counts, queue pointers ...) are filled by the runtime."""
        return self.value_kind.startswith("hidden_")


@dataclass(frozen=True)
class KernelMetadata:
    name: str
    symbol: str
    args: tuple[ArgInfo, ...]
    kernarg_segment_size: int
    vgpr_count: int
    sgpr_count: int
    vgpr_spill_count: int
    sgpr_spill_count: int
    group_segment_fixed_size: int  # static LDS bytes
    private_segment_fixed_size: int  # scratch bytes per work-item
    wavefront_size: int
    max_flat_workgroup_size: int

    @property
    def explicit_args(self) -> tuple[ArgInfo, ...]:
        return tuple(arg for arg in self.args if not arg.is_hidden)


@dataclass(frozen=True)
class CodeObject:
    target: str  # e.g. gfx1100 (feature suffixes removed)
    target_id: str  # as in the metadata, e.g. amdgcn-amd-amdhsa--gfx1100
    kernels: dict[str, KernelMetadata]
    source: str  # file path or "<bytes>", for messages


def _field(kernel: dict[str, Any], key: str, where: str) -> Any:
    try:
        return kernel[key]
    except KeyError:
        raise CodeObjectError(f"{where}: kernel metadata lacks {key}") from None


def _kernel_metadata(kernel: Any, where: str) -> KernelMetadata:
    if not isinstance(kernel, dict):
        raise CodeObjectError(f"{where}: kernel metadata is not a map")
    name = _field(kernel, ".name", where)
    where = f"{where}: kernel {name}"
    args = tuple(
        ArgInfo(offset=_field(arg, ".offset", where), size=_field(arg, ".size", where),
                value_kind=_field(arg, ".value_kind", where), name=arg.get(".name"))
        for arg in kernel.get(".args", [])
    )
    return KernelMetadata(
        name=name,
        symbol=_field(kernel, ".symbol", where),
        args=args,
        kernarg_segment_size=_field(kernel, ".kernarg_segment_size", where),
        vgpr_count=_field(kernel, ".vgpr_count", where),
        sgpr_count=_field(kernel, ".sgpr_count", where),
        vgpr_spill_count=kernel.get(".vgpr_spill_count", 0),
        sgpr_spill_count=kernel.get(".sgpr_spill_count", 0),
        group_segment_fixed_size=_field(kernel, ".group_segment_fixed_size", where),
        private_segment_fixed_size=_field(kernel, ".private_segment_fixed_size", where),
        wavefront_size=_field(kernel, ".wavefront_size", where),
        max_flat_workgroup_size=_field(kernel, ".max_flat_workgroup_size", where),
    )


def _metadata_note(data: bytes, where: str) -> bytes:
    """The descriptor of the AMDGPU NT_AMDGPU_METADATA note, found via the section table."""
    header = _ELF_HEADER.unpack_from(data, 0)
    section_offset, section_entry_size, section_count = header[6], header[11], header[12]
    if section_entry_size != _SECTION_HEADER.size:
        raise CodeObjectError(f"{where}: unexpected ELF section header size {section_entry_size}")
    if section_offset + section_count * section_entry_size > len(data):
        raise CodeObjectError(f"{where}: truncated (section table past the end of the file)")
    for index in range(section_count):
        fields = _SECTION_HEADER.unpack_from(data, section_offset + index * section_entry_size)
        section_type, offset, size = fields[1], fields[4], fields[5]
        if section_type != SHT_NOTE:
            continue
        if offset + size > len(data):
            raise CodeObjectError(f"{where}: truncated (note section past the end of the file)")
        position, end = offset, offset + size
        while position + _NOTE_HEADER.size <= end:
            name_size, desc_size, note_type = _NOTE_HEADER.unpack_from(data, position)
            name_start = position + _NOTE_HEADER.size
            desc_start = name_start + ((name_size + 3) & ~3)
            desc_end = desc_start + desc_size
            if desc_end > end:
                raise CodeObjectError(f"{where}: truncated note")
            name = data[name_start:name_start + name_size].rstrip(b"\0")
            if name == b"AMDGPU" and note_type == NT_AMDGPU_METADATA:
                return data[desc_start:desc_end]
            position = desc_start + ((desc_size + 3) & ~3)
    raise CodeObjectError(f"{where}: no NT_AMDGPU_METADATA note (code object v2/v3 or stripped?)")


def parse_code_object(data: bytes, source: str = "<bytes>") -> CodeObject:
    """Parse an AMDGPU code object image; raises CodeObjectError naming `source`."""
    if len(data) < _ELF_HEADER.size:
        raise CodeObjectError(f"{source}: truncated ({len(data)} bytes, not even an ELF header)")
    ident = data[:16]
    if ident[:4] != b"\x7fELF":
        raise CodeObjectError(f"{source}: not an ELF file")
    if ident[4] != ELFCLASS64 or ident[5] != ELFDATA2LSB:
        raise CodeObjectError(f"{source}: not a 64-bit little-endian ELF file")
    machine, flags = _ELF_HEADER.unpack_from(data, 0)[2], _ELF_HEADER.unpack_from(data, 0)[7]
    if machine != EM_AMDGPU:
        raise CodeObjectError(f"{source}: ELF machine {machine} is not AMDGPU ({EM_AMDGPU})")
    try:
        metadata = unpackb(_metadata_note(data, source))
    except MsgpackError as exc:
        raise CodeObjectError(f"{source}: bad metadata: {exc}") from exc
    if not isinstance(metadata, dict):
        raise CodeObjectError(f"{source}: metadata is not a map")
    target_id = metadata.get("amdhsa.target", "")
    target = target_id.rsplit("--", 1)[-1].split(":", 1)[0] if target_id else ""
    if not target:
        target = EF_AMDGPU_MACH.get(flags & EF_AMDGPU_MACH_MASK, "")
    if not target:
        raise CodeObjectError(f"{source}: no target in the metadata and unknown e_flags 0x{flags:x}")
    flag_target = EF_AMDGPU_MACH.get(flags & EF_AMDGPU_MACH_MASK)
    if flag_target is not None and flag_target != target:
        raise CodeObjectError(f"{source}: metadata says {target} but ELF flags say {flag_target}")
    kernels = [_kernel_metadata(kernel, source) for kernel in metadata.get("amdhsa.kernels", [])]
    return CodeObject(target=target, target_id=target_id,
                      kernels={kernel.name: kernel for kernel in kernels}, source=source)


def read_code_object(path: str | Path) -> CodeObject:
    """Read and parse the code object file at `path`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CodeObjectError(f"{path}: cannot read code object: {exc.strerror}") from exc
    return parse_code_object(data, str(path))
