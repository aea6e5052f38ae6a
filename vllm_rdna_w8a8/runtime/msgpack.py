"""A small MessagePack decoder: enough for AMDGPU code-object metadata (no dependency)."""

from __future__ import annotations

import struct
from typing import Any


class MsgpackError(ValueError):
    """The bytes are not valid (or are truncated) MessagePack."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise MsgpackError(f"truncated: need {count} bytes at offset {self.pos}, "
                               f"have {len(self.data) - self.pos}")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]


# Fixed-width types: first byte -> struct format of the value that follows (big endian).
_SCALARS = {
    0xCA: ">f", 0xCB: ">d",
    0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
}
# Length-prefixed types: first byte -> (struct format of the length, kind).
_SIZED = {
    0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"),
    0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"),
    0xDC: (">H", "array"), 0xDD: (">I", "array"),
    0xDE: (">H", "map"), 0xDF: (">I", "map"),
}


def _decode(reader: _Reader, depth: int) -> Any:
    if depth > 64:
        raise MsgpackError("nesting deeper than 64 levels")
    tag = reader.unpack(">B")
    if tag <= 0x7F:
        return tag
    if tag >= 0xE0:
        return tag - 0x100
    if 0x80 <= tag <= 0x8F:
        return _decode_map(reader, tag & 0x0F, depth)
    if 0x90 <= tag <= 0x9F:
        return [_decode(reader, depth + 1) for _ in range(tag & 0x0F)]
    if 0xA0 <= tag <= 0xBF:
        return _decode_str(reader, tag & 0x1F)
    if tag == 0xC0:
        return None
    if tag in (0xC2, 0xC3):
        return tag == 0xC3
    if tag in _SCALARS:
        return reader.unpack(_SCALARS[tag])
    if tag in _SIZED:
        length_format, kind = _SIZED[tag]
        length = reader.unpack(length_format)
        if kind == "bin":
            return reader.take(length)
        if kind == "str":
            return _decode_str(reader, length)
        if kind == "array":
            return [_decode(reader, depth + 1) for _ in range(length)]
        return _decode_map(reader, length, depth)
    raise MsgpackError(f"unsupported MessagePack type byte 0x{tag:02x} at offset {reader.pos - 1}")


def _decode_str(reader: _Reader, length: int) -> str:
    raw = reader.take(length)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MsgpackError(f"invalid UTF-8 string at offset {reader.pos - length}") from exc


def _decode_map(reader: _Reader, length: int, depth: int) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for _ in range(length):
        key = _decode(reader, depth + 1)
        if isinstance(key, (list, dict)):
            raise MsgpackError("map key is a container")
        result[key] = _decode(reader, depth + 1)
    return result


def unpackb(data: bytes) -> Any:
    """Decode exactly one MessagePack value that spans all of `data`."""
    reader = _Reader(bytes(data))
    value = _decode(reader, 0)
    if reader.pos != len(reader.data):
        raise MsgpackError(f"{len(reader.data) - reader.pos} trailing bytes after the value")
    return value
