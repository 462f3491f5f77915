"""Every file tfm reads is untrusted: the one place that opens names read from inside files and
that writes into a workdir or an export directory (ARCHITECTURE.md, principle 9).

Model directories come from the internet and workdirs get copied, shared and hand-edited, so:

* **Names from inside a file** (a tokenizer's file list, a safetensors shard map) are resolved by
  :func:`inside`: relative to the folder holding that file, and refused when they are absolute,
  hold ``..``, or resolve (through symlinks) outside the folder.
* **Reading** (:func:`read_bytes`, :func:`read_text`, :func:`read_json`, :func:`open_read`,
  :func:`check_regular`) refuses anything but a regular file -- a FIFO, a device or a directory
  -- before it could block: a FIFO is never opened without ``O_NONBLOCK``. Sizes can be capped.
* **Writing** (:func:`write_bytes`, :func:`write_json`, :func:`atomic_path`, :func:`open_append`,
  :func:`open_lock`) never goes through a symlink or into a non-regular file: a file is
  replaced atomically (a fresh temporary file beside it, created exclusively, then a rename) and
  the temporary file is removed when anything fails (a full disk leaves no ``spm.model.tmp``);
  appends and locks open with ``O_NOFOLLOW``.

Every refusal or failure is a :class:`FileError`: one line naming the file and the cause (no
traceback). :class:`TfmError` is the base of all of tfm's own errors (HFFormatError,
WorkdirError, CheckpointError, ...): what the command lines print as one line.

This module imports nothing from tfm (the bottom of the house).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO, Any

# Files tfm reads whole (configs, tokenizers, indexes) are small; anything larger is refused
# before it is read (a crafted multi-GB "config.json" must not exhaust memory).
DEFAULT_LIMIT = 1 << 30  # 1 GiB


class TfmError(Exception):
    """The base of tfm's own errors: bad input, one line naming the file or field and the cause."""


class FileError(TfmError, ValueError):
    """A file that is refused (outside its folder, not a regular file, too large, not text/JSON)
    or cannot be read or written; the message names it."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def _reason(e: OSError) -> str:
    return e.strerror or os.strerror(e.errno or 0) or type(e).__name__


# ---------------------------------------------------------------------- names from inside files
def inside(directory: str | os.PathLike, name: Any, *, named_by: str | os.PathLike,
           also: tuple[str | os.PathLike, ...] = ()) -> str:
    """``directory/name`` for a ``name`` read from inside the file ``named_by``; FileError when
    the name is not a non-empty string, is absolute, holds ``..`` or resolves outside
    ``directory`` (through symlinks; ``also``: further folders its symlinks may point into, e.g.
    the Hugging Face Hub cache's ``blobs``)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise FileError(f"{named_by} names the file {name!r}, which is not a file name")
    if os.path.isabs(name) or name.startswith("~"):
        raise FileError(f"{named_by} names the file {name!r}, an absolute path: only names inside "
                        f"{directory} are read")
    if ".." in name.replace("\\", "/").split("/"):
        raise FileError(f"{named_by} names the file {name!r}, which leads out of {directory} ('..')")
    path = os.path.join(os.fspath(directory), name)
    real = os.path.realpath(path)
    roots = [os.path.realpath(directory)] + [os.path.realpath(a) for a in also]
    if not any(os.path.commonpath([root, real]) == root for root in roots):
        raise FileError(f"{named_by} names the file {name!r}, which resolves to {real}, outside "
                        f"{directory} (a symlink): refused")
    return path


def plain_name(name: Any, *, named_by: str) -> str:
    """``name`` when it is one plain file name (no folder, not ``.``/``..``); FileError otherwise.
    For names written into a directory (an export's tokenizer files)."""
    if (not isinstance(name, str) or not name or "\0" in name or "/" in name or "\\" in name
            or name in (".", "..")):
        raise FileError(f"{named_by}: {name!r} is not a plain file name; refusing to write it")
    return name


# ---------------------------------------------------------------------- reading
def check_regular(path: str | os.PathLike) -> os.stat_result:
    """The stat of ``path`` (symlinks followed) when it is a regular file; FileError otherwise
    (missing, a FIFO, a device, a directory), without opening it."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise FileError(f"{os.fspath(path)} cannot be read: {_reason(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"{os.fspath(path)} is {_kind(st.st_mode)}, not a regular file: refused")
    return st


def _regular_fd(fd: int, path: str | os.PathLike) -> int:
    """``fd`` (opened with O_NONBLOCK) if fstat says it is a regular file, back in blocking mode;
    otherwise it is closed and the file refused (what the path named may have changed after a stat)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileError(f"{os.fspath(path)} is {_kind(st.st_mode)}, not a regular file: refused")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def _open_fd(path: str | os.PathLike) -> int:
    """A read-only descriptor of the regular file ``path``: opened with O_NONBLOCK (a FIFO that
    appeared after the stat cannot block) and checked again with fstat."""
    check_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise FileError(f"{os.fspath(path)} cannot be read: {_reason(e)}") from None
    return _regular_fd(fd, path)


def open_read(path: str | os.PathLike) -> IO[bytes]:
    """``path`` opened for reading in binary (a regular file only; see :func:`check_regular`)."""
    return os.fdopen(_open_fd(path), "rb")


def read_bytes(path: str | os.PathLike, *, limit: int = DEFAULT_LIMIT) -> bytes:
    """The contents of the regular file ``path``; FileError when it is larger than ``limit``."""
    with open_read(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileError(f"{os.fspath(path)} is {size:,} bytes, more than the {limit:,} tfm reads "
                            "for such a file: refused")
        try:
            return f.read(limit + 1)[:limit]
        except OSError as e:
            raise FileError(f"{os.fspath(path)} cannot be read: {_reason(e)}") from None


def read_text(path: str | os.PathLike, *, limit: int = DEFAULT_LIMIT) -> str:
    """The UTF-8 text of ``path``; FileError naming it when it is not UTF-8."""
    data = read_bytes(path, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(f"{os.fspath(path)} is not UTF-8 text (byte {e.start}: {e.reason})") from None


def read_json(path: str | os.PathLike, *, limit: int = DEFAULT_LIMIT, expect: type | None = dict) -> Any:
    """The parsed JSON of ``path`` (``expect``: the type its top level must have, None: any)."""
    text = read_text(path, limit=limit)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise FileError(f"{os.fspath(path)} is not valid JSON: {str(e)[:200]}") from None
    if expect is not None and not isinstance(value, expect):
        raise FileError(f"{os.fspath(path)} does not hold a JSON {_json_name(expect)} "
                        f"(it holds a {type(value).__name__})")
    return value


def _json_name(t: type) -> str:
    return {dict: "object", list: "array", str: "string"}.get(t, t.__name__)


# ---------------------------------------------------------------------- writing
def check_write_target(path: str | os.PathLike) -> None:
    """FileError when ``path`` exists as a symlink or as anything but a regular file (tfm never
    writes through a symlink, nor into a FIFO, device or directory)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise FileError(f"cannot write {os.fspath(path)}: {_reason(e)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise FileError(f"{os.fspath(path)} is a symlink (to {os.readlink(path)}); tfm never writes "
                        "through one: refused")
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"{os.fspath(path)} is {_kind(st.st_mode)}, not a regular file; refusing to "
                        "write it")


def write_failed(path: str | os.PathLike, e: OSError) -> FileError:
    """One line for a failed write of ``path`` (a full disk, a read-only file system...)."""
    return FileError(f"cannot write {os.fspath(path)}: {_reason(e)}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A fresh temporary path beside ``path`` for the caller to write (e.g. a library that takes
    a file name); on success it replaces ``path`` atomically, on any failure it is removed and an
    OSError becomes a FileError naming ``path``."""
    path = os.fspath(path)
    check_write_target(path)
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise write_failed(path, e) from None
    os.close(fd)
    try:
        yield tmp
        check_write_target(path)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise write_failed(path, e) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``data`` as the file ``path``, atomically (see :func:`atomic_path`), flushed to disk."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644 & ~_UMASK)  # mkstemp's 0600 -> what open() would have made


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dump_args: Any) -> None:
    """``obj`` as JSON (``dump_args``: json.dumps options; default indented, keys sorted)."""
    dump_args = dump_args or {"indent": 2, "sort_keys": True}
    write_text(path, json.dumps(obj, **dump_args) + "\n")


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import (os.umask cannot be read without setting it)


def _open_regular_for_writing(path: str | os.PathLike, flags: int) -> int:
    path = os.fspath(path)
    check_write_target(path)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileError(f"{path} is a symlink; tfm never writes through one: refused") from None
        if e.errno == errno.ENXIO:
            raise FileError(f"{path} is a FIFO (named pipe), not a regular file: refused") from None
        raise write_failed(path, e) from None
    return _regular_fd(fd, path)


def open_append(path: str | os.PathLike) -> IO[str]:
    """``path`` opened to append UTF-8 text (created if missing; never through a symlink). The
    descriptor is also readable (``os.pread`` of its last byte)."""
    return os.fdopen(_open_regular_for_writing(path, os.O_RDWR | os.O_APPEND), "a", encoding="utf-8")


def open_lock(path: str | os.PathLike) -> int:
    """A read-write descriptor of the lock file ``path`` (created if missing; never through a
    symlink, never a non-regular file)."""
    return _open_regular_for_writing(path, os.O_RDWR)


def make_dirs(path: str | os.PathLike) -> None:
    """``os.makedirs(path, exist_ok=True)``, refusing a path that exists as something else; an
    OSError (read-only or full file system) is a FileError naming it."""
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FileError(f"{path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise FileError(f"cannot create the directory {path}: {_reason(e)}") from None


__all__ = ["DEFAULT_LIMIT", "FileError", "TfmError", "atomic_path", "check_regular", "check_write_target",
           "inside", "make_dirs", "open_append", "open_lock", "open_read", "plain_name", "read_bytes",
           "read_json", "read_text", "write_bytes", "write_failed", "write_json", "write_text"]
