"""Reading a TensorFlow 2 checkpoint with numpy alone (TensorFlow is not a dependency).

A checkpoint `<prefix>` is two kinds of file:

- `<prefix>.index`: a sorted key -> value table in LevelDB's SSTable layout. The file ends in
  a 48-byte footer (two block handles, the metaindex's and the index's, as varint pairs
  (offset, size), zero padding, then the 8-byte magic number). The index block maps keys to
  the handles of data blocks. Every block is followed by a 5-byte trailer (compression type,
  masked CRC-32C); TensorFlow writes blocks uncompressed. A block holds entries
  (shared key length, own key length, value length as varints, the key's own bytes, the
  value) whose keys are prefix-compressed against the previous key, then an array of restart
  offsets (uint32) and their count (uint32).
- `<prefix>.data-0000N-of-0000M`: the tensors' raw bytes, little-endian, C order.

Each key is a variable's name; its value is a `BundleEntryProto` (dtype = 1, shape = 2,
shard_id = 3, offset = 4, size = 5, crc32c = 6 (masked CRC-32C of the bytes), slices = 7);
the empty key holds a `BundleHeaderProto` (num_shards = 1, endianness = 2). The few
protobuf fields needed are decoded by hand from the wire format.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pix2seqd.platform.official import crc32c

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER = 5
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

# TensorFlow DataType enum -> numpy dtype (little-endian); bfloat16 is widened on reading
DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    14: np.dtype("<u2"),  # bfloat16: the high half of a float32
    17: np.dtype("<u2"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
DT_STRING, DT_BFLOAT16 = 7, 14
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8"}
DTYPE_NAMES |= {7: "string", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16"}
DTYPE_NAMES |= {19: "float16", 22: "uint32", 23: "uint64"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a TensorFlow checkpoint; names the file."""


@dataclass(frozen=True)
class Entry:
    """One tensor of the checkpoint: where its bytes are and what they hold."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int | None
    sliced: bool

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, f"DataType {self.dtype}")


class TFCheckpoint:
    """The tensors of the TF2 checkpoint `prefix` (also accepted: the `.index` file, or a
    folder holding one checkpoint, named by its `checkpoint` state file or as its only
    `.index` file). `entries` lists every tensor by name; `read` returns one as numpy."""

    def __init__(self, prefix: str | Path):
        self.prefix = resolve_prefix(Path(prefix))
        self.index_path = Path(f"{self.prefix}.index")
        table = read_table(self.index_path)
        header = parse_fields(table.pop("", b""))
        self.num_shards = int(header.get(1, [1])[0])
        if header.get(2, [0])[0] != 0:
            raise CheckpointError(f"{self.index_path}: big-endian checkpoints are not supported")
        self.entries = {name: parse_entry(name, value) for name, value in table.items()}

    def data_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str, verify_crc: bool = True) -> np.ndarray:
        """The tensor `name` (bfloat16 widened to float32). CheckpointError naming the file and
        the tensor when its bytes are missing, of the wrong length or fail their checksum."""
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(f"{self.index_path}: no tensor named {name!r}")
        dtype = DTYPES.get(entry.dtype)
        if dtype is None or entry.sliced:
            what = "a partitioned variable" if entry.sliced else f"of dtype {entry.dtype_name}"
            raise CheckpointError(f"{self.index_path}: tensor {name!r} is {what}, not readable")
        raw = self._bytes(entry)
        count = int(np.prod(entry.shape, dtype=np.int64))
        if len(raw) != entry.size or entry.size != count * dtype.itemsize:
            raise CheckpointError(
                f"{self.data_path(entry.shard)}: tensor {name!r} ({entry.dtype_name}, shape "
                f"{list(entry.shape)}) needs {count * dtype.itemsize} bytes at offset "
                f"{entry.offset}, the index says {entry.size}, the file has {len(raw)}: "
                "truncated or not this checkpoint's data file"
            )
        if verify_crc and entry.crc is not None and crc32c.masked(raw) != entry.crc:
            raise CheckpointError(
                f"{self.data_path(entry.shard)}: tensor {name!r} fails its CRC-32C check "
                "(the data file is damaged or belongs to another checkpoint)"
            )
        array = np.frombuffer(raw, dtype=dtype).reshape(entry.shape)
        if entry.dtype == DT_BFLOAT16:
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.copy()

    def _bytes(self, entry: Entry) -> bytes:
        path = self.data_path(entry.shard)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such data file (tensor {entry.name!r})")
        with path.open("rb") as f:
            f.seek(entry.offset)
            return f.read(entry.size)


def resolve_prefix(path: Path) -> Path:
    """A checkpoint prefix from a prefix, its `.index` file, or a folder holding one."""
    if path.suffix == ".index":
        path = path.with_suffix("")
    if path.is_dir():
        return _prefix_in_folder(path)
    if not Path(f"{path}.index").is_file():
        raise CheckpointError(f"{path}.index: no such file (give the checkpoint's prefix)")
    return path


def _prefix_in_folder(folder: Path) -> Path:
    state = folder / "checkpoint"
    if state.is_file():
        for line in state.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model_checkpoint_path":
                name = Path(value.strip().strip('"'))
                return resolve_prefix(name if name.is_absolute() else folder / name.name)
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) != 1:
        raise CheckpointError(
            f"{folder}: expected one checkpoint (*.index) in the folder, found "
            f"{[p.name for p in indexes]}; give the checkpoint's prefix"
        )
    return indexes[0].with_suffix("")


def read_table(path: Path) -> dict[str, bytes]:
    """Every key -> value of an uncompressed SSTable file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    data = path.read_bytes()
    if len(data) < FOOTER_SIZE or struct.unpack("<Q", data[-8:])[0] != TABLE_MAGIC:
        raise CheckpointError(f"{path}: not a TensorFlow checkpoint index (no table footer)")
    footer = data[-FOOTER_SIZE:]
    _, pos = _handle(footer, 0)  # the metaindex: TensorFlow leaves it empty
    (index_offset, index_size), _ = _handle(footer, pos)
    table = {}
    for _, handle in _block_entries(path, data, index_offset, index_size):
        (offset, size), _ = _handle(handle, 0)
        for key, value in _block_entries(path, data, offset, size):
            table[key.decode("utf-8")] = value
    return table


def _block_entries(path: Path, data: bytes, offset: int, size: int) -> Iterator[tuple]:
    """(key, value) of the block at `offset` (`size` bytes before its trailer)."""
    if offset + size + BLOCK_TRAILER > len(data) or size < 4:
        raise CheckpointError(f"{path}: a block at {offset} runs past the end (truncated)")
    if data[offset + size] != 0:
        raise CheckpointError(f"{path}: compressed blocks are not supported")
    block = data[offset : offset + size]
    (restarts,) = struct.unpack("<I", block[-4:])
    end, pos, key = len(block) - 4 - 4 * restarts, 0, b""
    while pos < end:
        shared, pos = varint(block, pos)
        own, pos = varint(block, pos)
        length, pos = varint(block, pos)
        key = key[:shared] + block[pos : pos + own]
        pos += own
        yield key, block[pos : pos + length]
        pos += length


def _handle(data: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = varint(data, pos)
    size, pos = varint(data, pos)
    return (offset, size), pos


def varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at `pos`."""
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise CheckpointError("a varint runs past the end of its data")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def parse_fields(message: bytes) -> dict[int, list]:
    """Protobuf wire format -> {field number: [values]}: varints as ints, length-delimited
    fields as bytes, fixed32 / fixed64 as unsigned ints."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(message):
        tag, pos = varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = varint(message, pos)
        elif wire == 2:
            length, pos = varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value = int.from_bytes(message[pos : pos + width], "little")
            pos += width
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def parse_entry(name: str, value: bytes) -> Entry:
    """A BundleEntryProto; TensorShapeProto's dims are field 2, each with its size in field 1."""
    f = parse_fields(value)
    dims = [parse_fields(d).get(1, [0])[0] for d in parse_fields(f.get(2, [b""])[0]).get(2, [])]
    return Entry(
        name=name,
        dtype=f.get(1, [0])[0],
        shape=tuple(dims),
        shard=f.get(3, [0])[0],
        offset=f.get(4, [0])[0],
        size=f.get(5, [0])[0],
        crc=f[6][0] if 6 in f else None,
        sliced=7 in f,
    )
