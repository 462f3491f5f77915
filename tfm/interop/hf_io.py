"""Files of a model directory in Hugging Face's layout: ``config.json`` and safetensors weights.

Reading needs no torch: the safetensors files (``model.safetensors``, or the shards that
``model.safetensors.index.json`` lists) are memory-mapped as the format intends -- a JSON
header, then each tensor's little-endian bytes -- and the converted parameters are copied
once out of the mapping, into NumPy or straight onto the device (bfloat16, which NumPy cannot
hold, is widened to float32). :class:`TensorReader` hands them out
by name and shape and, at the end, refuses any tensor nobody asked for, so a checkpoint that
does not fit the model fails with the name of the tensor and the file instead of loading wrong.

Writing produces what ``save_pretrained`` does: ``config.json`` and ``model.safetensors`` (with
the ``{"format": "pt"}`` metadata transformers checks), or shards plus the index when a size
limit is given.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import struct
from collections.abc import Iterable

import ml_dtypes
import numpy as np

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class HFFormatError(ValueError):
    """A model directory that cannot be read or does not fit the model (names the file/tensor)."""


# ---------------------------------------------------------------------- reading
def read_config(directory: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a model directory."""
    directory = pathlib.Path(directory).expanduser()
    if not directory.is_dir():
        raise HFFormatError(f"{directory} is not a directory")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise HFFormatError(f"{directory} is not a Hugging Face model directory: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HFFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise HFFormatError(f"{path} does not hold a JSON object")
    return config


def weight_files(directory: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Tensor name -> the safetensors file holding it (one file, or the shards of the index)."""
    directory = pathlib.Path(directory).expanduser()
    single, index = directory / WEIGHTS_FILE, directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise HFFormatError(f"{index} is not a safetensors index (no weight_map): {e}") from None
        files = {}
        for name, shard in weight_map.items():
            path = directory / shard
            if not path.is_file():
                raise HFFormatError(f"{path} is missing (listed in {index} for tensor {name!r})")
            files[name] = path
        return files
    if single.is_file():
        return {name: single for name in _header(single)}
    others = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.h5"))
    hint = (f"; it has {', '.join(others)}: tfm reads safetensors only (no torch at run time), "
            "convert with transformers' save_pretrained(..., safe_serialization=True)") if others else ""
    raise HFFormatError(f"{directory} has no weights: neither {WEIGHTS_FILE} nor {INDEX_FILE}{hint}")


def _header(path: pathlib.Path) -> dict:
    """The JSON header of a safetensors file (name -> dtype, shape, data_offsets)."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFFormatError(f"{path} is not a safetensors file: {e}") from None
    header.pop("__metadata__", None)
    return header


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}


def _read_tensor(path: pathlib.Path, name: str, info: dict, data_start: int, dtype) -> np.ndarray:
    """Tensor ``name`` of ``path`` (header entry ``info``; data from byte ``data_start``) as a
    new array of ``dtype``, copied once out of a memory mapping of just its bytes (unmapped when
    this returns, so a whole checkpoint is never resident twice). bfloat16 is kept as
    ``ml_dtypes.bfloat16`` when ``dtype`` is bfloat16, else widened exactly to float32 first."""
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    target = np.dtype(dtype)
    dtype = "<u2" if info["dtype"] == "BF16" else _DTYPES.get(info["dtype"])
    if dtype is None:
        raise HFFormatError(f"tensor {name!r} in {path} has dtype {info['dtype']}, which tfm does not read")
    count = int(np.prod(shape, dtype=np.int64))
    if end - start != count * np.dtype(dtype).itemsize:
        raise HFFormatError(f"tensor {name!r} in {path}: {end - start} bytes for shape {list(shape)} "
                            f"of {info['dtype']} (the file is damaged)")
    if count == 0:
        return np.zeros(shape, target)
    array = np.memmap(path, dtype=dtype, mode="r", offset=data_start + start, shape=shape)
    try:
        if info["dtype"] == "BF16":
            if target == np.dtype(ml_dtypes.bfloat16):
                return np.array(array.view(ml_dtypes.bfloat16), copy=True)
            return (array.astype(np.uint32) << 16).view(np.float32).astype(target, copy=False)
        return np.array(array, dtype=target, copy=True)
    finally:
        array._mmap.close()  # noqa: SLF001 - unmap now, not at garbage collection


def _data_start(path: pathlib.Path) -> int:
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


class TensorReader:
    """Hands out a directory's tensors by name, checking shapes; :meth:`finish` refuses leftovers.

    Args:
      directory: the model directory.
      ignore: regular expressions of tensor names that may be present and unused (buffers such
        as GPT-2's causal mask ``h.N.attn.bias``).
      dtype: the dtype :meth:`take` returns by default (float32; bfloat16 keeps a bfloat16
        checkpoint at its size).
    """

    def __init__(self, directory: str | os.PathLike, ignore: Iterable[str] = (), dtype=np.float32):
        self.directory = pathlib.Path(directory).expanduser()
        self.dtype = np.dtype(dtype)
        self.files = weight_files(self.directory)
        self._info: dict[str, dict] = {}
        for path in sorted(set(self.files.values())):
            for name, info in _header(path).items():
                if self.files.get(name) == path:
                    self._info[name] = info
        self._shapes = {name: tuple(info["shape"]) for name, info in self._info.items()}
        self._data_start = {path: _data_start(path) for path in set(self.files.values())}
        missing = sorted(set(self.files) - set(self._shapes))
        if missing:
            raise HFFormatError(f"{INDEX_FILE} lists tensors its shards do not hold: {missing[:5]}")
        self._ignore = [re.compile(p) for p in ignore]
        self.used: set[str] = set()

    def names(self) -> list[str]:
        return sorted(self.files)

    def has(self, name: str) -> bool:
        return name in self.files

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def take(self, name: str, shape: tuple[int, ...], dtype=None) -> np.ndarray:
        """Tensor ``name`` as a new array of ``dtype`` (default: the reader's); HFFormatError if
        it is missing or not of ``shape``. The array owns its memory: a later change to the file
        does not change it."""
        if name not in self.files:
            raise HFFormatError(f"tensor {name!r} is missing from {self._where(name)}")
        if self._shapes[name] != tuple(shape):
            raise HFFormatError(
                f"tensor {name!r} in {self.files[name]} has shape {list(self._shapes[name])}, but "
                f"the model (from {CONFIG_FILE}) needs {list(shape)}")
        self.used.add(name)
        path = self.files[name]
        return _read_tensor(path, name, self._info[name], self._data_start[path], self.dtype if dtype is None else dtype)

    def finish(self) -> None:
        """HFFormatError naming the tensors that were neither used nor ignorable."""
        extra = [n for n in self.names() if n not in self.used and not any(p.search(n) for p in self._ignore)]
        if extra:
            shown = ", ".join(f"{n!r} ({self.files[n].name})" for n in extra[:8])
            more = f" and {len(extra) - 8} more" if len(extra) > 8 else ""
            raise HFFormatError(
                f"unexpected tensor(s) in {self.directory}: {shown}{more}; the model described by "
                f"{CONFIG_FILE} has no place for them")

    def _where(self, name: str) -> str:
        files = sorted({p.name for p in self.files.values()})
        return f"{self.directory} ({', '.join(files)})"


# ---------------------------------------------------------------------- writing
def write_config(directory: str | os.PathLike, config: dict) -> None:
    path = pathlib.Path(directory) / CONFIG_FILE
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_tensors(directory: str | os.PathLike, tensors: dict[str, np.ndarray],
                  max_shard_bytes: int | None = None) -> list[str]:
    """Writes ``model.safetensors`` (or shards of at most ``max_shard_bytes`` + the index).

    Returns the file names written.
    """
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    metadata = {"format": "pt"}
    total = sum(v.nbytes for v in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata=metadata)
        return [WEIGHTS_FILE]
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        t = tensors[name]
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += t.nbytes
    names, weight_map = [], {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / fname), metadata=metadata)
        names.append(fname)
        weight_map.update({k: fname for k in shard})
    index = {"metadata": {"total_size": int(total)}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return names + [INDEX_FILE]
