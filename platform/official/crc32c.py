"""CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum TensorFlow stores for
each tensor of a checkpoint, in the "masked" form of LevelDB and TensorFlow.

numpy has no CRC and a byte loop in Python reads a few MB/s, so a long buffer is cut into
2^k equal lanes whose CRCs advance together, one byte of every lane per numpy step; the lane
CRCs are then joined pairwise. Joining uses the linearity of the CRC over GF(2):
crc(A + B) = Z_|B|(crc(A)) xor crc(B), where Z_n is the 32x32 bit matrix that feeds n zero
bytes through the CRC register (zlib's `crc32_combine`). A matrix is stored as its 32
columns, the images of the single bits.
"""

from __future__ import annotations

import numpy as np

POLY = 0x82F63B78
MASK_DELTA = 0xA282EAD8
ALL_ONES = 0xFFFFFFFF
LANE_BYTES = 256  # the shortest lane worth a numpy step
MAX_LANES = 1 << 16


def _byte_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (POLY if c & 1 else 0)
        table[i] = c
    return table


TABLE = _byte_table()
_TABLE = TABLE.tolist()


def value(data: bytes) -> int:
    """CRC-32C of `data` (initial value and final xor all ones)."""
    lanes = _lanes(len(data))
    if lanes < 2:
        return _serial(data)
    chunk = len(data) // lanes
    body = np.frombuffer(data, dtype=np.uint8, count=lanes * chunk).reshape(lanes, chunk)
    crcs = np.full(lanes, ALL_ONES, dtype=np.uint32)
    for column in np.ascontiguousarray(body.T):
        crcs = TABLE[(crcs ^ column) & 0xFF] ^ (crcs >> 8)
    crcs ^= np.uint32(ALL_ONES)
    shift = zeros_operator(chunk)
    while len(crcs) > 1:  # join neighbours: lane 2j is followed by lane 2j+1
        crcs = apply(shift, crcs[0::2]) ^ crcs[1::2]
        shift = compose(shift, shift)
    total, tail = int(crcs[0]), data[lanes * chunk :]
    if tail:
        total = int(apply(zeros_operator(len(tail)), np.array([total], np.uint32))[0])
        total ^= _serial(tail)
    return total


def masked(data: bytes) -> int:
    """The masked CRC-32C TensorFlow writes: rotate right by 15 bits, add a constant."""
    crc = value(data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & ALL_ONES


def _lanes(n: int) -> int:
    lanes = min(MAX_LANES, n // LANE_BYTES)
    return 1 << (lanes.bit_length() - 1) if lanes else 0


def _serial(data: bytes) -> int:
    crc = ALL_ONES
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ ALL_ONES


def apply(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The bit matrix (32 columns) times each uint32 of `vectors`, over GF(2)."""
    out = np.zeros_like(vectors)
    for bit in range(32):
        out ^= matrix[bit] * ((vectors >> np.uint32(bit)) & np.uint32(1))
    return out


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The matrix of `a` after `b`."""
    return apply(a, b)


def zeros_operator(n_bytes: int) -> np.ndarray:
    """Z_n: the register fed n zero bytes (8n zero bits), by repeated squaring."""
    one_bit = np.array([POLY] + [1 << (i - 1) for i in range(1, 32)], dtype=np.uint32)
    result = np.array([1 << i for i in range(32)], dtype=np.uint32)
    bits, power = 8 * n_bytes, one_bit
    while bits:
        if bits & 1:
            result = compose(power, result)
        power, bits = compose(power, power), bits >> 1
    return result
