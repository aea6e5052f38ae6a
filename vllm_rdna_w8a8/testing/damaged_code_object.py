"""Damaged copies of a code object image, for the fault tests of both ELF readers (the
launcher's, vllm_rdna_w8a8/runtime/code_object.py, and the stand-in runtime's): one
header field, one section header field, or one metadata argument offset changed; and a
way to run code on the emulated device against such a copy."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
SH_OFFSET = 24  # Elf64_Shdr.sh_offset
SH_SIZE = 32  # Elf64_Shdr.sh_size
# Elf64_Ehdr field -> (byte position, struct format)
ELF_HEADER_FIELDS = {
    "e_ident[EI_OSABI]": (7, "<B"),
    "e_type": (16, "<H"),
    "e_machine": (18, "<H"),
    "e_flags machine": (48, "<B"),  # the low byte: EF_AMDGPU_MACH
    "e_shoff": (40, "<Q"),
}


def with_header_field(image: bytes, field: str, value: int) -> bytes:
    position, fmt = ELF_HEADER_FIELDS[field]
    damaged = bytearray(image)
    struct.pack_into(fmt, damaged, position, value)
    return bytes(damaged)


def section_index(image: bytes, name: str) -> int:
    """The index of the section called `name` (e.g. ".symtab") in `image`'s section table."""
    header = _ELF_HEADER.unpack_from(image, 0)
    table, count, names_index = header[6], header[12], header[13]
    names_offset = _SECTION_HEADER.unpack_from(image, table + names_index * _SECTION_HEADER.size)[4]
    for index in range(count):
        start = names_offset + _SECTION_HEADER.unpack_from(image, table + index * _SECTION_HEADER.size)[0]
        if image[start:image.index(b"\0", start)].decode() == name:
            return index
    raise KeyError(f"no section {name}")


def _section_header_position(image: bytes, name: str) -> int:
    return _ELF_HEADER.unpack_from(image, 0)[6] + section_index(image, name) * _SECTION_HEADER.size


def with_section_field(image: bytes, name: str, field_position: int, value: int) -> bytes:
    """`image` with the 8-byte field at `field_position` (SH_OFFSET, SH_SIZE) of section
    `name`'s header set to `value`."""
    damaged = bytearray(image)
    struct.pack_into("<Q", damaged, _section_header_position(image, name) + field_position, value)
    return bytes(damaged)


def with_first_symbol_name_offset(image: bytes, table: str, name_offset: int) -> bytes:
    """`image` with the st_name of the first named symbol of section `table` set."""
    symbols = struct.unpack_from("<Q", image, _section_header_position(image, table) + SH_OFFSET)[0]
    damaged = bytearray(image)
    struct.pack_into("<I", damaged, symbols + 24, name_offset)  # symbol 0 is the null symbol
    return bytes(damaged)


def with_argument_offset_moved(image: bytes, old: int, new: int) -> bytes:
    """`image` with every metadata argument at offset `old` moved to `new` (both < 128,
    msgpack positive fixints, so the note keeps its size)."""
    if not (0 <= old < 128 and 0 <= new < 128):
        raise ValueError("offsets must be below 128")
    pattern = b"\xa7.offset" + bytes([old])
    if pattern not in image:
        raise ValueError(f"no argument at offset {old} in the metadata")
    return image.replace(pattern, b"\xa7.offset" + bytes([new]))


def copy_with_damage(target_dir: Path, objects_dir: Path, name: str, damage: Callable[[bytes], bytes]) -> Path:
    """Copy the code objects of `target_dir` (e.g. <objects>/gfx1100) into
    `objects_dir`/<target>, then damage the copy of `name`; returns the damaged file."""
    copy = objects_dir / target_dir.name
    shutil.copytree(target_dir, copy)
    damaged = copy / name
    damaged.write_bytes(damage(damaged.read_bytes()))
    return damaged


def run_emulated_on(objects_dir: Path, code: str, target: str = "gfx1100",
                    timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter on the emulated `target` device, the default
    launcher reading the code objects of `objects_dir` (a crash shows as a negative
    return code instead of ending the caller)."""
    prologue = ("from pathlib import Path\nfrom vllm_rdna_w8a8.runtime import launcher\n"
                f"launcher._default = launcher.Launcher(Path({str(objects_dir)!r}))\n")
    env = {**os.environ, "VLLM_RDNA_W8A8_EMULATE": target}
    env.pop("VLLM_RDNA_W8A8_OPS", None)
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


PAST_THE_END = 0x7FFF00000000


def shipped_with_section_past_the_end(objects_dir: Path, name: str, section: str, target: str = "gfx1100") -> Path:
    """Copy the shipped `target` code objects into `objects_dir`, with the header of
    `section` (".symtab", ".strtab") in the copy of `name` pointing at PAST_THE_END."""
    from vllm_rdna_w8a8.runtime.launcher import OBJECTS_DIR

    return copy_with_damage(OBJECTS_DIR / target, objects_dir, name,
                            lambda image: with_section_field(image, section, SH_OFFSET, PAST_THE_END))
