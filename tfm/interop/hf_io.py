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

from tfm import files
from tfm.files import TfmError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_JSON_BYTES = 64 << 20  # config.json, the index: larger is refused before reading
MAX_HEADER_BYTES = 100 << 20  # a safetensors header (the format's own limit)


class HFFormatError(TfmError, ValueError):
    """A model directory that cannot be read or does not fit the model (names the file/tensor)."""


# ---------------------------------------------------------------------- reading
def read_config(directory: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a model directory."""
    directory = pathlib.Path(directory).expanduser()
    if not directory.is_dir():
        raise HFFormatError(f"{directory} is not a directory")
    path = directory / CONFIG_FILE
    if not os.path.lexists(path):
        raise HFFormatError(f"{directory} is not a Hugging Face model directory: {CONFIG_FILE} is missing")
    return read_json(path)


def read_json(path: pathlib.Path, expect: type = dict):
    """A JSON file of a model directory through :mod:`tfm.files` (regular files only, size
    capped); HFFormatError naming it."""
    try:
        return files.read_json(path, limit=MAX_JSON_BYTES, expect=expect)
    except files.FileError as e:
        raise HFFormatError(str(e)) from None


def hub_blobs(directory: pathlib.Path) -> tuple[str, ...]:
    """``(.../blobs,)`` for a snapshot of the Hugging Face Hub cache
    (``models--org--name/snapshots/<revision>``), whose files are symlinks into ``blobs``;
    () otherwise."""
    real = pathlib.Path(os.path.realpath(directory))
    blobs = real.parent.parent / "blobs"
    return (str(blobs),) if real.parent.name == "snapshots" and blobs.is_dir() else ()


def weights_path(directory: pathlib.Path, name: str, named_by: pathlib.Path | None = None,
                 tensor: str = "") -> pathlib.Path:
    """``directory/name`` of a weights file (``named_by``: the index naming it for ``tensor``,
    whose names must stay inside ``directory``), which must be a regular file."""
    try:
        if named_by is not None:
            path = pathlib.Path(files.inside(directory, name, named_by=named_by, also=hub_blobs(directory)))
            if not os.path.lexists(path):
                raise HFFormatError(f"{path} is missing (listed in {named_by} for tensor {tensor!r})")
        else:
            path = directory / name
        files.check_regular(path)
    except files.FileError as e:
        raise HFFormatError(str(e)) from None
    return path


def weight_files(directory: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Tensor name -> the safetensors file holding it (one file, or the shards of the index)."""
    directory = pathlib.Path(directory).expanduser()
    single, index = directory / WEIGHTS_FILE, directory / INDEX_FILE
    if os.path.lexists(index):
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise HFFormatError(f"{index} is not a safetensors index: its weight_map must map tensor names "
                                "to file names")
        out, checked = {}, {}
        for name, shard in weight_map.items():
            if shard not in checked:
                checked[shard] = weights_path(directory, shard, named_by=index, tensor=name)
            out[name] = checked[shard]
        return out
    if os.path.lexists(single):
        return {name: single for name in _header(weights_path(directory, WEIGHTS_FILE))[0]}
    others = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.h5"))
    hint = (f"; it has {', '.join(others)}: tfm reads safetensors only (no torch at run time), "
            "convert with transformers' save_pretrained(..., safe_serialization=True)") if others else ""
    raise HFFormatError(f"{directory} has no weights: neither {WEIGHTS_FILE} nor {INDEX_FILE}{hint}")


def _header(path: pathlib.Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file (name -> dtype, shape, data_offsets) and where its
    data start, every entry checked against the file's size (a truncated file, a crafted header
    length or offsets are an HFFormatError naming the file, before anything is mapped)."""
    try:
        with files.open_read(path) as f:
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise HFFormatError(f"{path} is not a safetensors file: {file_size} bytes, shorter than "
                                    "its 8-byte header length")
            (size,) = struct.unpack("<Q", head)
            if size > min(MAX_HEADER_BYTES, file_size - 8):
                raise HFFormatError(f"{path} is not a safetensors file (or is truncated): its header "
                                    f"length {size:,} exceeds the file ({file_size:,} bytes) or "
                                    f"{MAX_HEADER_BYTES:,}")
            header = json.loads(f.read(size))
    except files.FileError as e:
        raise HFFormatError(str(e)) from None
    except (OSError, ValueError, RecursionError) as e:
        raise HFFormatError(f"{path} is not a safetensors file: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(header, dict):
        raise HFFormatError(f"{path} is not a safetensors file: its header is not a JSON object")
    header.pop("__metadata__", None)
    data_size = file_size - 8 - size
    for name, info in header.items():
        _check_entry(path, name, info, data_size)
    return header, 8 + size


def _check_entry(path: pathlib.Path, name: str, info, data_size: int) -> None:
    def bad(why: str):
        raise HFFormatError(f"tensor {name!r} in {path}: {why} (the file is damaged or not safetensors)")

    if not isinstance(info, dict):
        bad("its header entry is not an object")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(info.get("dtype"), str):
        bad("no dtype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40
                                              for d in shape):
        bad(f"shape {shape!r} is not a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        bad(f"data_offsets {offsets!r} are not [start, end]")
    if offsets[1] > data_size:
        bad(f"its data end at byte {offsets[1]:,} of {data_size:,} (the file is truncated)")


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
        self._data_start: dict[pathlib.Path, int] = {}
        for path in sorted(set(self.files.values())):
            header, self._data_start[path] = _header(path)
            for name, info in header.items():
                if self.files.get(name) == path:
                    self._info[name] = info
        self._shapes = {name: tuple(info["shape"]) for name, info in self._info.items()}
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
    _written(lambda: files.write_json(pathlib.Path(directory) / CONFIG_FILE, config))


def _written(write):
    """``write()``; a refused or failed write (a read-only or full file system) is an
    HFFormatError naming the file."""
    try:
        return write()
    except files.FileError as e:
        raise HFFormatError(str(e)) from None


def _save_safetensors(path: pathlib.Path, tensors: dict, metadata: dict) -> None:
    from safetensors.numpy import save_file

    def write():
        with files.atomic_path(path) as tmp:
            try:
                save_file(tensors, tmp, metadata=metadata)
            except OSError:
                raise
            except Exception as e:  # noqa: BLE001 - safetensors wraps the OS error in its own
                raise OSError(getattr(e, "errno", None) or 5, str(e).splitlines()[0][:200]) from None

    _written(write)


def write_tensors(directory: str | os.PathLike, tensors: dict[str, np.ndarray],
                  max_shard_bytes: int | None = None) -> list[str]:
    """Writes ``model.safetensors`` (or shards of at most ``max_shard_bytes`` + the index).

    Returns the file names written.
    """
    directory = pathlib.Path(directory)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    metadata = {"format": "pt"}
    total = sum(v.nbytes for v in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        _save_safetensors(directory / WEIGHTS_FILE, tensors, metadata)
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
        _save_safetensors(directory / fname, shard, metadata)
        names.append(fname)
        weight_map.update({k: fname for k in shard})
    index = {"metadata": {"total_size": int(total)}, "weight_map": weight_map}
    _written(lambda: files.write_json(directory / INDEX_FILE, index))
    return names + [INDEX_FILE]
