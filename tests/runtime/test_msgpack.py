from __future__ import annotations

import struct

import pytest

from vllm_rdna_w8a8.runtime.msgpack import MsgpackError, unpackb


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (b"\x00", 0),
        (b"\x7f", 127),
        (b"\xff", -1),
        (b"\xe0", -32),
        (b"\xcc\xff", 255),
        (b"\xcd\x01\x00", 256),
        (b"\xce\x00\x01\x00\x00", 65536),
        (b"\xcf" + struct.pack(">Q", 2**63), 2**63),
        (b"\xd0\x80", -128),
        (b"\xd1\x80\x00", -32768),
        (b"\xd2\x80\x00\x00\x00", -(2**31)),
        (b"\xd3" + struct.pack(">q", -(2**40)), -(2**40)),
        (b"\xca" + struct.pack(">f", 1.5), 1.5),
        (b"\xcb" + struct.pack(">d", -0.25), -0.25),
        (b"\xc0", None),
        (b"\xc2", False),
        (b"\xc3", True),
        (b"\xa3abc", "abc"),
        (b"\xd9\x05hello", "hello"),
        (b"\xda\x00\x02hi", "hi"),
        (b"\xc4\x02\x01\x02", b"\x01\x02"),
        (b"\x92\x01\xa1x", [1, "x"]),
        (b"\xdc\x00\x01\xc3", [True]),
        (b"\x82\xa1a\x01\xa1b\x91\x02", {"a": 1, "b": [2]}),
        (b"\xde\x00\x01\xa1k\xc0", {"k": None}),
    ],
)
def test_decodes_each_type(encoded: bytes, expected: object) -> None:
    assert unpackb(encoded) == expected


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"", "truncated"),
        (b"\xa5ab", "truncated"),
        (b"\x92\x01", "truncated"),
        (b"\xcd\x01", "truncated"),
        (b"\x01\x02", "1 trailing bytes"),
        (b"\xc1", "unsupported MessagePack type byte 0xc1"),
        (b"\xd4\x01\x00", "unsupported MessagePack type byte 0xd4"),  # ext types
        (b"\x81\x91\x01\x02", "map key is a container"),
        (b"\xa2\xff\xfe", "invalid UTF-8"),
        (b"\x91" * 70 + b"\x00", "deeper than 64"),
    ],
)
def test_rejects_bad_input(encoded: bytes, message: str) -> None:
    with pytest.raises(MsgpackError, match=message):
        unpackb(encoded)
