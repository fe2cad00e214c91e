"""Read TensorFlow checkpoints, such as OpenAI's original GPT-2 release, without TensorFlow.

A TF checkpoint ("tensor bundle", written by `tf.compat.v1.train.Saver`) is a prefix such as
`.../model.ckpt` plus files named after it:

- `<prefix>.index`: a LevelDB-style SSTable. The file ends in a 48-byte footer (two block
  handles, i.e. varint offset/size pairs, then padding and a magic number) pointing at an index
  block, whose values are the handles of the data blocks. Each block is a run of key/value
  entries whose keys share a prefix with the previous key (`shared`, `non_shared` and value
  length as varints, then the key suffix and the value), followed by an array of restart
  offsets; after the block come one compression-type byte and a masked CRC32C of block + type.
  The keys are tensor names; each value is a serialized `BundleEntryProto` (dtype, shape,
  shard id, byte offset, byte size, masked CRC32C of the bytes). The empty key holds the
  `BundleHeaderProto` (number of data shards, endianness).
- `<prefix>.data-0000K-of-0000N`: the tensors' raw bytes at (offset, size) in shard K.
- `<prefix>.meta`: the graph; not needed to read the weights.

A release folder also holds a text file `checkpoint` whose `model_checkpoint_path` names the
prefix. Protobuf decoding is done by hand (a few varint fields) to avoid depending on TensorFlow
or protobuf for one small message.

Not supported (each raises ValueError): snappy-compressed index blocks (TensorFlow writes bundle
indexes uncompressed), partitioned/sliced variables, big-endian bundles, and dtypes other than
float32/float64/float16/bfloat16/int32/int64.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["read_tf_checkpoint"]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER_SIZE = 5  # compression-type byte + masked crc32c
# Metadata that TF2's object-based saver adds as a string tensor; it is not a weight.
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

# TensorFlow DataType enum -> (name, little-endian numpy dtype of the stored bytes, torch dtype).
# bfloat16 has no numpy dtype: its bytes are read as int16 and reinterpreted by torch.
_DTYPES: dict[int, tuple[str, str, torch.dtype]] = {
    1: ("float32", "<f4", torch.float32),
    2: ("float64", "<f8", torch.float64),
    3: ("int32", "<i4", torch.int32),
    9: ("int64", "<i8", torch.int64),
    14: ("bfloat16", "<i2", torch.bfloat16),
    19: ("float16", "<f2", torch.float16),
}


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored; None when the writer did not record one


# --- protobuf wire format -------------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _parse_proto(buf: bytes) -> dict[int, list[int | bytes]]:
    """Field number -> values; varints and fixed ints as int, length-delimited fields as bytes."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire_type == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise ValueError("truncated protobuf field")
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields: dict[int, list], number: int, default: int = 0) -> int:
    # proto3 omits fields equal to their default, and the last occurrence of a scalar wins.
    return fields[number][-1] if number in fields else default


def _parse_entry(name: str, value: bytes) -> _Entry:
    # BundleEntryProto: 1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c, 7 slices.
    # TensorShapeProto: 2 dim (repeated Dim: 1 size), 3 unknown_rank.
    fields = _parse_proto(value)
    if 7 in fields:
        raise ValueError(f"tensor {name!r} is a partitioned (sliced) variable, which is not supported")
    shape = []
    for shape_proto in fields.get(2, []):
        shape_fields = _parse_proto(shape_proto)
        if _last(shape_fields, 3):
            raise ValueError(f"tensor {name!r} has an unknown rank")
        for dim in shape_fields.get(2, []):
            shape.append(_last(_parse_proto(dim), 1))
    return _Entry(
        name=name,
        dtype=_last(fields, 1),
        shape=tuple(shape),
        shard_id=_last(fields, 3),
        offset=_last(fields, 4),
        size=_last(fields, 5),
        crc32c=fields[6][-1] if 6 in fields else None,
    )


def _dtype_info(dtype: int, tensor: str) -> tuple[str, str, torch.dtype]:
    """The reader's view of TF dtype enum `dtype`, or a ValueError naming `tensor`."""
    if dtype not in _DTYPES:
        supported = ", ".join(name for name, _, _ in _DTYPES.values())
        raise ValueError(
            f"tensor {tensor!r} has TensorFlow dtype enum {dtype}, which this reader does not "
            f"support (supported: {supported}); convert it with TensorFlow first"
        )
    return _DTYPES[dtype]


# --- CRC32C (Castagnoli), as used by LevelDB tables and tensor bundles ------------------------


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # the reflected Castagnoli polynomial
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def _crc32c(data: bytes | memoryview) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc32c(data: bytes | memoryview) -> int:
    """The CRC32C as TensorFlow and LevelDB store it: rotated and offset, so that a CRC of data holding
    CRCs does not degenerate."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- SSTable (errors here say what is wrong; _read_index adds which file) --------------------


def _read_block(table: bytes, handle: bytes) -> bytes:
    offset, pos = _read_varint(handle, 0)
    size, _ = _read_varint(handle, pos)
    end = offset + size
    if end + _BLOCK_TRAILER_SIZE > len(table):
        raise ValueError(f"the file is truncated (a block ends at byte {end + _BLOCK_TRAILER_SIZE} of {len(table)})")
    compression = table[end]
    (stored_crc,) = struct.unpack_from("<I", table, end + 1)
    if _masked_crc32c(table[offset : end + 1]) != stored_crc:
        raise ValueError(f"checksum mismatch in the block at byte {offset}; the file is corrupted")
    if compression == 1:
        raise ValueError(f"the block at byte {offset} is snappy-compressed, which is not supported")
    if compression != 0:
        raise ValueError(f"the block at byte {offset} has unknown compression type {compression}")
    return table[offset:end]


def _block_items(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ValueError(f"a block of {len(block)} bytes is too short")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    entries_end = len(block) - 4 - 4 * n_restarts  # the restart array is only a search aid
    items, key, pos = [], b"", 0
    while pos < entries_end:
        shared, pos = _read_varint(block, pos)
        non_shared, pos = _read_varint(block, pos)
        value_len, pos = _read_varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > entries_end:
            raise ValueError("a block entry runs past its block")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        items.append((key, block[pos : pos + value_len]))
        pos += value_len
    return items


def _read_table(table: bytes) -> list[tuple[bytes, bytes]]:
    if len(table) < _FOOTER_SIZE or struct.unpack_from("<Q", table, len(table) - 8)[0] != _TABLE_MAGIC:
        raise ValueError(
            "it does not end in the table magic number, so it is truncated, corrupted, or not a "
            "`.index` file written by tf.train.Saver"
        )
    footer = table[-_FOOTER_SIZE:]
    _, pos = _read_varint(footer, _read_varint(footer, 0)[1])  # skip the metaindex handle
    index_handle = footer[pos:]
    items = []
    for _, data_handle in _block_items(_read_block(table, index_handle)):
        items.extend(_block_items(_read_block(table, data_handle)))
    return items


# --- bundle ---------------------------------------------------------------------------------


def _index_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def _resolve_prefix(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        state_file = path / "checkpoint"
        if not state_file.is_file():
            raise FileNotFoundError(
                f"{state_file} not found; pass a folder containing TensorFlow's `checkpoint` file "
                f"or a checkpoint prefix such as {path / 'model.ckpt'}"
            )
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', state_file.read_text(), re.MULTILINE)
        if match is None:
            raise ValueError(f"{state_file} has no model_checkpoint_path line; pass the checkpoint prefix instead")
        prefix = path / match.group(1)  # an absolute path in the file replaces `path`
        alongside = path / prefix.name
        if not _index_path(prefix).exists() and _index_path(alongside).exists():
            # Absolute paths in `checkpoint` go stale when a folder is moved; the files are here.
            logger.info("%s points to %s, which does not exist; using %s", state_file, prefix, alongside)
            prefix = alongside
    elif path.suffix == ".index":
        prefix = path.with_suffix("")
    else:
        prefix = path
    if not _index_path(prefix).is_file():
        raise FileNotFoundError(
            f"TensorFlow checkpoint index {_index_path(prefix)} not found; pass the release folder (the one "
            "with the `checkpoint` file) or the checkpoint prefix, e.g. .../model.ckpt"
        )
    return prefix


def _read_index(prefix: Path) -> tuple[int, list[_Entry]]:
    """The number of data shards and the checked entries of the bundle at `prefix`."""
    index_path = _index_path(prefix)
    num_shards, entries = None, []
    try:
        for key, value in _read_table(index_path.read_bytes()):
            if key == b"":
                header = _parse_proto(value)  # BundleHeaderProto: 1 num_shards, 2 endianness
                num_shards = _last(header, 1)
                if _last(header, 2) != 0:
                    raise ValueError("the bundle is big-endian, which is not supported")
                continue
            if key.startswith(b"\x00"):  # how TF encodes the keys of a partitioned variable's slices
                raise ValueError("it holds a partitioned (sliced) variable, which is not supported")
            name = key.decode("utf-8")
            if name == _OBJECT_GRAPH_KEY:
                logger.debug("skipping %s in %s: object-graph metadata, not a weight", name, index_path)
                continue
            entry = _parse_entry(name, value)
            _, np_dtype, _ = _dtype_info(entry.dtype, name)
            expected_size = math.prod(entry.shape) * np.dtype(np_dtype).itemsize
            if entry.size != expected_size:
                raise ValueError(
                    f"tensor {name!r} of shape {list(entry.shape)} is recorded as {entry.size} bytes, "
                    f"expected {expected_size}"
                )
            entries.append(entry)
        if num_shards is None:
            raise ValueError("it has no bundle header, so it is not a TensorFlow V2 checkpoint index")
        for entry in entries:
            if not 0 <= entry.shard_id < num_shards:
                raise ValueError(f"tensor {entry.name!r} is in shard {entry.shard_id}, but there are {num_shards}")
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read TensorFlow checkpoint index {index_path}: {error}") from error
    return num_shards, entries


def read_tf_checkpoint(path: str | os.PathLike, *, verify_checksums: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of a TF checkpoint as a CPU torch tensor, keyed by TF variable name.

    `path` is a folder with a `checkpoint` file (like OpenAI's GPT-2 release), or a checkpoint
    prefix such as `.../model.ckpt`. Sizes are always checked against the data files, and the
    index's own blocks against their checksums. `verify_checksums` also checks each tensor's
    CRC32C against the index; it is off by default because the CRC is computed in pure Python
    (no C extension is a dependency), byte by byte, which takes far longer than reading the bytes.
    """
    prefix = _resolve_prefix(path)
    num_shards, entries = _read_index(prefix)
    shard_paths = [prefix.with_name(f"{prefix.name}.data-{k:05d}-of-{num_shards:05d}") for k in range(num_shards)]
    for shard_path in shard_paths:
        if not shard_path.is_file():
            raise FileNotFoundError(
                f"TensorFlow checkpoint data file {shard_path} not found; it belongs next to {_index_path(prefix)}"
            )

    tensors: dict[str, torch.Tensor] = {}
    for shard_id, shard_path in enumerate(shard_paths):
        file_size = shard_path.stat().st_size
        with shard_path.open("rb") as file:
            for entry in (e for e in entries if e.shard_id == shard_id):
                if entry.offset + entry.size > file_size:
                    found = max(0, file_size - entry.offset)
                    raise ValueError(
                        f"{shard_path} is truncated: tensor {entry.name!r} needs {entry.size} bytes at "
                        f"offset {entry.offset}, found {found}; re-download or re-copy the checkpoint"
                    )
                # readinto a fresh array: one copy, and the result is writable, which torch expects.
                raw = np.empty(entry.size, dtype=np.uint8)
                file.seek(entry.offset)
                file.readinto(raw)
                if verify_checksums and entry.crc32c is not None and _masked_crc32c(memoryview(raw)) != entry.crc32c:
                    raise ValueError(f"{shard_path} is corrupted: checksum mismatch for tensor {entry.name!r}")
                _, np_dtype, torch_dtype = _DTYPES[entry.dtype]
                values = raw.view(np_dtype).reshape(entry.shape)
                if not values.dtype.isnative:  # only on big-endian hosts
                    values = values.astype(values.dtype.newbyteorder("="))
                tensor = torch.from_numpy(values)
                tensors[entry.name] = tensor.view(torch_dtype) if torch_dtype == torch.bfloat16 else tensor
    logger.info("read %d tensors from TensorFlow checkpoint %s", len(tensors), prefix)
    return tensors
