"""gptcore.conversion.tf_bundle against checkpoints written by real TensorFlow, without TensorFlow.

The fixtures under tests/conversion/fixtures/ were written by its make_openai_tf_checkpoint.py;
their `expected.npz` holds what TensorFlow itself held for each variable. Failure cases that
TensorFlow will not produce on request (unsupported dtypes, sliced variables, big-endian or
snappy-compressed bundles, several shards) use small bundles written by `_write_bundle` below.
"""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gptcore.conversion.tf_bundle import _crc32c, _masked_crc32c, _read_index, _resolve_prefix, read_tf_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
OPENAI = FIXTURES / "openai_tf_tiny"
DTYPES = FIXTURES / "tf_dtypes_tiny"
DATA_FILE = "model.ckpt.data-00000-of-00001"


def _expected(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "expected.npz") as npz:
        return {name: npz[name] for name in npz.files}


def _assert_matches_expected(tensors: dict[str, torch.Tensor], folder: Path) -> None:
    expected = _expected(folder)
    names = {name.removesuffix("@bfloat16bits") for name in expected}
    assert sorted(tensors) == sorted(names)
    for name, value in expected.items():
        if name.endswith("@bfloat16bits"):
            tensor = tensors[name.removesuffix("@bfloat16bits")]
            assert tensor.dtype == torch.bfloat16
            np.testing.assert_array_equal(tensor.view(torch.int16).numpy().view(np.uint16), value)
        else:
            tensor = tensors[name]
            assert tensor.numpy().dtype == value.dtype, name
            assert tuple(tensor.shape) == value.shape, name
            np.testing.assert_array_equal(tensor.numpy(), value, err_msg=name)


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


# --- real TensorFlow checkpoints --------------------------------------------------------------


def test_reads_openai_layout_exactly() -> None:
    tensors = read_tf_checkpoint(OPENAI, verify_checksums=True)
    _assert_matches_expected(tensors, OPENAI)
    n_layer, n_embd = 2, 16
    assert len(tensors) == 2 + 12 * n_layer + 2
    assert tensors["model/h1/attn/c_attn/w"].shape == (1, n_embd, 3 * n_embd)
    assert tensors["model/h0/mlp/c_proj/w"].shape == (1, 4 * n_embd, n_embd)


def test_reads_every_supported_dtype() -> None:
    tensors = read_tf_checkpoint(DTYPES, verify_checksums=True)
    _assert_matches_expected(tensors, DTYPES)
    assert tensors["dtypes/scalar"].shape == ()
    assert tensors["dtypes/empty"].shape == (0, 3)
    assert abs(int(tensors["dtypes/int64"][0])) > 2**31  # really read as 64-bit


def test_tensors_are_writable_and_independent() -> None:
    tensors = read_tf_checkpoint(OPENAI)
    tensors["model/wte"].add_(1.0)  # must not warn or fail on a read-only buffer
    assert not torch.equal(tensors["model/wte"], read_tf_checkpoint(OPENAI)["model/wte"])


def test_reports_dtypes_and_shapes() -> None:
    listing = {name: (t.dtype, tuple(t.shape)) for name, t in read_tf_checkpoint(OPENAI).items()}
    assert listing == {name: (torch.float32, value.shape) for name, value in _expected(OPENAI).items()}
    bfloat16 = read_tf_checkpoint(DTYPES)["dtypes/bfloat16"]
    assert (bfloat16.dtype, tuple(bfloat16.shape)) == (torch.bfloat16, (2, 3))


@pytest.mark.parametrize("form", ["folder", "folder_str", "prefix", "index_file"])
def test_accepts_folder_prefix_or_index_path(form: str) -> None:
    path = {
        "folder": OPENAI,
        "folder_str": str(OPENAI),
        "prefix": OPENAI / "model.ckpt",
        "index_file": OPENAI / "model.ckpt.index",
    }[form]
    _assert_matches_expected(read_tf_checkpoint(path), OPENAI)


def test_stale_absolute_path_in_checkpoint_file(tmp_path: Path) -> None:
    folder = _copy(OPENAI, tmp_path)
    (folder / "checkpoint").write_text('model_checkpoint_path: "/nowhere/moved/model.ckpt"\n')
    _assert_matches_expected(read_tf_checkpoint(folder), OPENAI)


# --- user errors on real checkpoints ------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        read_tf_checkpoint(missing)


def test_folder_without_checkpoint_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "checkpoint"))):
        read_tf_checkpoint(tmp_path)


def test_missing_index(tmp_path: Path) -> None:
    folder = _copy(OPENAI, tmp_path)
    (folder / "model.ckpt.index").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder / "model.ckpt.index"))):
        read_tf_checkpoint(folder)


def test_missing_data_file(tmp_path: Path) -> None:
    folder = _copy(OPENAI, tmp_path)
    (folder / DATA_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder / DATA_FILE))):
        read_tf_checkpoint(folder)


def test_truncated_data_file(tmp_path: Path) -> None:
    folder = _copy(OPENAI, tmp_path)
    data = folder / DATA_FILE
    data.write_bytes(data.read_bytes()[:-6])
    with pytest.raises(ValueError) as info:
        read_tf_checkpoint(folder)
    message = str(info.value)
    assert str(data) in message
    match = re.search(r"tensor '([^']+)' needs (\d+) bytes at offset \d+, found (\d+)", message)
    assert match, message
    assert match.group(1) in _expected(OPENAI)
    assert int(match.group(3)) == int(match.group(2)) - 6


def test_corrupted_data_caught_by_checksum(tmp_path: Path) -> None:
    folder = _copy(OPENAI, tmp_path)
    data = folder / DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data.write_bytes(bytes(raw))
    read_tf_checkpoint(folder)  # without verification the flipped bit goes unnoticed
    with pytest.raises(ValueError, match=r"checksum mismatch for tensor '.+'") as info:
        read_tf_checkpoint(folder, verify_checksums=True)
    assert str(data) in str(info.value)


def test_index_with_bad_magic(tmp_path: Path) -> None:
    folder = _copy(OPENAI, tmp_path)
    index = folder / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="magic") as info:
        read_tf_checkpoint(folder)
    assert str(index) in str(info.value)


def test_index_with_corrupted_block(tmp_path: Path) -> None:
    folder = _copy(OPENAI, tmp_path)
    index = folder / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    position = raw.index(b"model/h0/attn")  # a full key: later ones share its prefix
    raw[position] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch in the block"):
        read_tf_checkpoint(folder)


# --- hand-written bundles for what TensorFlow does not write on request -------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _entry(dtype: int, shape: tuple[int, ...], offset: int, size: int, shard: int = 0, extra: bytes = b"") -> bytes:
    dims = b"".join(_field(2, _field(1, d)) for d in shape)
    return _field(1, dtype) + _field(2, dims) + _field(3, shard) + _field(4, offset) + _field(5, size) + extra


def _block(items: list[tuple[bytes, bytes]], compression: int = 0) -> bytes:
    # No prefix compression and a single restart point: valid, just not compact.
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in items)
    body += struct.pack("<II", 0, 1) + bytes([compression])
    return body + struct.pack("<I", _masked_crc32c(body))


def _write_bundle(
    folder: Path,
    entries: dict[str, bytes],
    shards: list[bytes],
    endianness: int = 0,
    compression: int = 0,
) -> Path:
    """Write `<folder>/model.ckpt.{index,data-*}`; returns the prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    header = _field(1, len(shards)) + _field(2, endianness) + _field(3, _field(1, 1))
    items = [(b"", header)] + sorted((name.encode(), value) for name, value in entries.items())
    data_block = _block(items, compression)
    index_block = _block([(items[-1][0], _varint(0) + _varint(len(data_block) - 5))])
    meta_block = _block([])
    table = data_block + index_block + meta_block
    handles = _varint(len(data_block) + len(index_block)) + _varint(len(meta_block) - 5)
    handles += _varint(len(data_block)) + _varint(len(index_block) - 5)
    table += handles.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    (folder / "model.ckpt.index").write_bytes(table)
    for k, shard in enumerate(shards):
        (folder / f"model.ckpt.data-{k:05d}-of-{len(shards):05d}").write_bytes(shard)
    return folder / "model.ckpt"


def _two_shard_bundle(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.array([7, -8], dtype="<i8")
    entries = {
        "a": _entry(1, (2, 3), 0, 24),
        "b": _entry(9, (2,), 4, 16, shard=1),
        # TF2's object-based saver adds this string tensor; it is metadata and must be skipped.
        "_CHECKPOINTABLE_OBJECT_GRAPH": _entry(7, (), 0, 0),
    }
    return _write_bundle(folder, entries, [a.tobytes(), b"pad!" + b.tobytes()]), a, b


def test_handwritten_bundle_with_two_shards(tmp_path: Path) -> None:
    prefix, a, b = _two_shard_bundle(tmp_path)
    tensors = read_tf_checkpoint(prefix)
    assert sorted(tensors) == ["a", "b"]
    np.testing.assert_array_equal(tensors["a"].numpy(), a)
    np.testing.assert_array_equal(tensors["b"].numpy(), b)


def test_missing_second_shard(tmp_path: Path) -> None:
    prefix, _, _ = _two_shard_bundle(tmp_path)
    (tmp_path / "model.ckpt.data-00001-of-00002").unlink()
    with pytest.raises(FileNotFoundError, match="model.ckpt.data-00001-of-00002"):
        read_tf_checkpoint(prefix)


@pytest.mark.parametrize(
    ("entries", "options", "message"),
    [
        ({"names": _entry(7, (1,), 0, 4)}, {}, r"tensor 'names' has TensorFlow dtype enum 7"),
        ({"flags": _entry(10, (4,), 0, 4)}, {}, r"tensor 'flags' has TensorFlow dtype enum 10"),
        ({"part": _entry(1, (2,), 0, 8, extra=_field(7, b""))}, {}, r"tensor 'part' is a partitioned"),
        ({"w": _entry(1, (2, 3), 0, 20)}, {}, r"tensor 'w' of shape \[2, 3\] is recorded as 20 bytes, expected 24"),
        ({"w": _entry(1, (2,), 0, 8)}, {"endianness": 1}, "big-endian"),
        ({"w": _entry(1, (2,), 0, 8)}, {"compression": 1}, "snappy"),
    ],
    ids=["string", "bool", "sliced", "size", "big_endian", "snappy"],
)
def test_unsupported_bundles_are_named(tmp_path: Path, entries: dict, options: dict, message: str) -> None:
    prefix = _write_bundle(tmp_path, entries, [b"\0" * 64], **options)
    with pytest.raises(ValueError, match=message) as info:
        read_tf_checkpoint(prefix)
    assert str(tmp_path / "model.ckpt.index") in str(info.value)


# --- CRC32C ---------------------------------------------------------------------------------


# The check value and the iSCSI test vectors of RFC 3720 (B.4), which define CRC-32C.
@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_known_values(data: bytes, crc: int) -> None:
    assert _crc32c(data) == crc


@pytest.mark.parametrize("folder", [OPENAI, DTYPES], ids=["openai", "dtypes"])
def test_masked_crc32c_matches_what_tensorflow_stored(folder: Path) -> None:
    """Every tensor of the TensorFlow-written fixtures has the masked CRC32C TensorFlow recorded in the index."""
    _, entries = _read_index(_resolve_prefix(folder))
    data = (folder / DATA_FILE).read_bytes()
    stored = {e.name: e.crc32c for e in entries if e.crc32c is not None}
    assert len(stored) == len(_expected(folder))  # TensorFlow records a CRC for every tensor
    for entry in entries:
        assert _masked_crc32c(data[entry.offset : entry.offset + entry.size]) == stored[entry.name], entry.name
