"""The KServe v2 BYTES tensor as this service speaks it: the tensor names of its one model, and
the raw form of a BYTES tensor (each element behind its 4-byte little-endian length). The
server, the benchmarks' clients and the tests encode and decode with these functions.

No protobuf and no grpc here: a process that loads other protobuf descriptors under the same
names (tritonclient's) may import this module.
"""

from __future__ import annotations

INPUT_NAME = "TEXT"  # the input tensor: UTF-8 texts
OUTPUT_NAME = "CORRECTED"  # the output tensor: their corrections, in the same shape


class MalformedTensor(ValueError):
    """A raw BYTES tensor that does not parse (the server answers INVALID_ARGUMENT)."""


def pack_bytes(elements: list[bytes]) -> bytes:
    """The KServe v2 raw form of a BYTES tensor: each element behind its 4-byte LE length."""
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


def unpack_bytes(raw: bytes) -> list[bytes]:
    """The elements of a raw BYTES tensor; MalformedTensor if it is cut short."""
    elements, position = [], 0
    while position < len(raw):
        if position + 4 > len(raw):
            raise MalformedTensor("raw BYTES tensor is truncated (length prefix cut short)")
        size = int.from_bytes(raw[position : position + 4], "little")
        position += 4
        if position + size > len(raw):
            raise MalformedTensor("raw BYTES tensor is truncated (element shorter than its length)")
        elements.append(raw[position : position + size])
        position += size
    return elements
