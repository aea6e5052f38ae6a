"""Reading AMDGPU code objects: ELF + the msgpack NT_AMDGPU_METADATA note (stdlib only).

The metadata (code object v4/v5) lists every kernel with its arguments' offsets, sizes and
kinds, its kernarg segment size and its resource use; the launcher packs arguments by it
and the ISA report and compile-policy tests read the resource figures from it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .msgpack import MsgpackError, unpackb

EM_AMDGPU = 224
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFOSABI_AMDGPU_HSA = 64
ET_DYN = 3  # a linked code object
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOTE = 7
SHT_NOBITS = 8  # occupies no file bytes
SHT_DYNSYM = 11
NT_AMDGPU_METADATA = 32
EF_AMDGPU_MACH_MASK = 0xFF
# e_flags machine numbers (LLVM's llvm/BinaryFormat/ELF.h) of the targets we ship.
EF_AMDGPU_MACH = {
    0x41: "gfx1100", 0x46: "gfx1101", 0x47: "gfx1102", 0x44: "gfx1103",
    0x43: "gfx1150", 0x4A: "gfx1151",
}
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")
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


_FieldType = TypeVar("_FieldType", int, str)


def _field(entry: dict[str, Any], key: str, kind: type[_FieldType], where: str,
           default: _FieldType | None = None) -> _FieldType:
    """entry[key], a str or a non-negative int as `kind` says (`default` when absent)."""
    value = entry.get(key, default)
    if value is None:
        raise CodeObjectError(f"{where}: metadata lacks {key}")
    if type(value) is not kind or (kind is int and value < 0):
        wanted = "a non-negative integer" if kind is int else "a string"
        raise CodeObjectError(f"{where}: metadata {key} is {value!r}, not {wanted}")
    return value


def _arg_info(arg: Any, index: int, where: str) -> ArgInfo:
    where = f"{where} argument {index}"
    if not isinstance(arg, dict):
        raise CodeObjectError(f"{where}: metadata is not a map")
    name = arg.get(".name")
    return ArgInfo(offset=_field(arg, ".offset", int, where), size=_field(arg, ".size", int, where),
                   value_kind=_field(arg, ".value_kind", str, where),
                   name=None if name is None else _field(arg, ".name", str, where))


def _kernel_metadata(kernel: Any, where: str) -> KernelMetadata:
    if not isinstance(kernel, dict):
        raise CodeObjectError(f"{where}: kernel metadata is not a map")
    name = _field(kernel, ".name", str, f"{where}: kernel")
    where = f"{where}: kernel {name}"
    args = kernel.get(".args", [])
    if not isinstance(args, list):
        raise CodeObjectError(f"{where}: metadata .args is not a list")
    return KernelMetadata(
        name=name,
        symbol=_field(kernel, ".symbol", str, where),
        args=tuple(_arg_info(arg, index, where) for index, arg in enumerate(args)),
        kernarg_segment_size=_field(kernel, ".kernarg_segment_size", int, where),
        vgpr_count=_field(kernel, ".vgpr_count", int, where),
        sgpr_count=_field(kernel, ".sgpr_count", int, where),
        vgpr_spill_count=_field(kernel, ".vgpr_spill_count", int, where, 0),
        sgpr_spill_count=_field(kernel, ".sgpr_spill_count", int, where, 0),
        group_segment_fixed_size=_field(kernel, ".group_segment_fixed_size", int, where),
        private_segment_fixed_size=_field(kernel, ".private_segment_fixed_size", int, where),
        wavefront_size=_field(kernel, ".wavefront_size", int, where),
        max_flat_workgroup_size=_field(kernel, ".max_flat_workgroup_size", int, where),
    )


@dataclass(frozen=True)
class _Section:
    index: int
    type: int
    offset: int
    size: int
    link: int
    entry_size: int


def _past_end(data: bytes, offset: int, size: int) -> bool:
    return offset + size > len(data)


def _check_program_headers(data: bytes, header: tuple, where: str) -> None:
    """Every segment the loader would copy lies inside the file."""
    table_offset, entry_size, count = header[5], header[9], header[10]
    if count == 0:
        return
    if entry_size != _PROGRAM_HEADER.size:
        raise CodeObjectError(f"{where}: unexpected ELF program header size {entry_size}")
    if _past_end(data, table_offset, count * entry_size):
        raise CodeObjectError(f"{where}: truncated or damaged (program header table at "
                              f"0x{table_offset:x} lies past the end of the file, {len(data)} bytes)")
    for index in range(count):
        fields = _PROGRAM_HEADER.unpack_from(data, table_offset + index * entry_size)
        offset, file_size = fields[2], fields[5]
        if _past_end(data, offset, file_size):
            raise CodeObjectError(f"{where}: truncated or damaged (segment {index}, 0x{offset:x} + "
                                  f"{file_size} bytes, lies past the end of the file, {len(data)} bytes)")


def _sections(data: bytes, header: tuple, where: str) -> list[_Section]:
    """The section table, every section's bytes checked to lie inside the file."""
    table_offset, entry_size, count = header[6], header[11], header[12]
    if entry_size != _SECTION_HEADER.size:
        raise CodeObjectError(f"{where}: unexpected ELF section header size {entry_size}")
    if count == 0:
        raise CodeObjectError(f"{where}: no section header table")
    if _past_end(data, table_offset, count * entry_size):
        raise CodeObjectError(f"{where}: truncated or damaged (section table at 0x{table_offset:x} lies "
                              f"past the end of the file, {len(data)} bytes)")
    sections = []
    for index in range(count):
        fields = _SECTION_HEADER.unpack_from(data, table_offset + index * entry_size)
        section = _Section(index, type=fields[1], offset=fields[4], size=fields[5], link=fields[6],
                           entry_size=fields[9])
        if section.type != SHT_NOBITS and _past_end(data, section.offset, section.size):
            raise CodeObjectError(f"{where}: truncated or damaged (section {index}, 0x{section.offset:x} + "
                                  f"{section.size} bytes, lies past the end of the file, {len(data)} bytes)")
        sections.append(section)
    return sections


def _symbol_names(data: bytes, sections: list[_Section], where: str) -> set[str]:
    """The names of every symbol in the symbol tables, each checked against its string table."""
    names: set[str] = set()
    for table in sections:
        if table.type not in (SHT_SYMTAB, SHT_DYNSYM):
            continue
        if table.entry_size != _SYMBOL.size or table.size % _SYMBOL.size:
            raise CodeObjectError(f"{where}: malformed symbol table (section {table.index})")
        if table.link >= len(sections) or sections[table.link].type != SHT_STRTAB:
            raise CodeObjectError(f"{where}: symbol table (section {table.index}) links to no string table")
        strings = sections[table.link]
        for position in range(table.offset, table.offset + table.size, _SYMBOL.size):
            name_offset = _SYMBOL.unpack_from(data, position)[0]
            end = data.find(b"\0", strings.offset + name_offset, strings.offset + strings.size)
            if name_offset >= strings.size or end < 0:
                raise CodeObjectError(f"{where}: a symbol name lies outside its string table "
                                      f"(section {strings.index})")
            names.add(data[strings.offset + name_offset:end].decode("utf-8", "replace"))
    return names


def _metadata_note(data: bytes, sections: list[_Section], where: str) -> bytes:
    """The descriptor of the AMDGPU NT_AMDGPU_METADATA note, found via the section table."""
    for section in sections:
        if section.type != SHT_NOTE:
            continue
        position, end = section.offset, section.offset + section.size
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
    header = _ELF_HEADER.unpack_from(data, 0)
    elf_type, machine, flags = header[1], header[2], header[7]
    if machine != EM_AMDGPU:
        raise CodeObjectError(f"{source}: ELF machine {machine} is not AMDGPU ({EM_AMDGPU})")
    if ident[7] != ELFOSABI_AMDGPU_HSA:
        raise CodeObjectError(f"{source}: ELF OS/ABI {ident[7]} is not AMDGPU HSA ({ELFOSABI_AMDGPU_HSA})")
    if elf_type != ET_DYN:
        raise CodeObjectError(f"{source}: ELF type {elf_type} is not a linked code object (ET_DYN, {ET_DYN})")
    flag_target = EF_AMDGPU_MACH.get(flags & EF_AMDGPU_MACH_MASK)
    if flag_target is None:
        raise CodeObjectError(f"{source}: ELF e_flags machine 0x{flags & EF_AMDGPU_MACH_MASK:x} is not "
                              f"one of {', '.join(EF_AMDGPU_MACH.values())}")
    _check_program_headers(data, header, source)
    sections = _sections(data, header, source)
    symbols = _symbol_names(data, sections, source)
    try:
        metadata = unpackb(_metadata_note(data, sections, source))
    except MsgpackError as exc:
        raise CodeObjectError(f"{source}: bad metadata: {exc}") from exc
    if not isinstance(metadata, dict):
        raise CodeObjectError(f"{source}: metadata is not a map")
    target_id = metadata.get("amdhsa.target", "")
    if not isinstance(target_id, str):
        raise CodeObjectError(f"{source}: metadata amdhsa.target is {target_id!r}, not a string")
    target = target_id.rsplit("--", 1)[-1].split(":", 1)[0] if target_id else flag_target
    if flag_target != target:
        raise CodeObjectError(f"{source}: metadata says {target} but ELF flags say {flag_target}")
    kernel_list = metadata.get("amdhsa.kernels", [])
    if not isinstance(kernel_list, list):
        raise CodeObjectError(f"{source}: metadata amdhsa.kernels is not a list")
    kernels = [_kernel_metadata(kernel, source) for kernel in kernel_list]
    for kernel in kernels:
        if kernel.symbol not in symbols:
            raise CodeObjectError(f"{source}: kernel {kernel.name}'s descriptor {kernel.symbol} is not in "
                                  f"the symbol table")
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
