"""Reading the files of a data source through `pyarrow.fs` (local or S3), measured before they are read: a listing is
capped and, for a service caller's source, every file in it must resolve inside the source's folder; a file read
whole is checked against a byte limit first (docs/security.md, "Data")."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow.fs as pafs

from shared.data.errors import DataError
from shared.data.paths import is_under
from shared.storage import Storage

MAX_SOURCE_FILES = 2_000_000  # files under one folder or prefix; a longer listing is refused


@dataclass(frozen=True)
class ReadLimits:
    """How far a source is trusted. The defaults suit the machine's own user (`dblocks train`); for a source named
    over the API, `confined`: every file opened must resolve inside the source's own folder (a symlink cannot lead
    out of it), and a file read whole is at most `max_read_bytes` (the config's memory limit), measured first."""

    confined: bool = False
    max_read_bytes: int = 1 << 36


_DENIED = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "AccessDenied", "Forbidden")


def unreadable(what: str, err: OSError, verb: str = "read") -> DataError:
    """The error for a source that could not be opened: a denial says so and points at the credentials."""
    if any(code in str(err) for code in _DENIED):
        return DataError(
            f"{what}: access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy) ({err})"
        )
    return DataError(f"{what}: cannot be {verb} ({err})")


def file_info(storage: Storage, path: str) -> pafs.FileInfo:
    try:
        info = storage.fs.get_file_info(path)
    except OSError as err:  # unreachable endpoint, denied, no such bucket
        raise unreadable(storage.uri, err) from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"{storage.uri}: does not exist")
    return info


def list_files(storage: Storage, root: str, limits: ReadLimits = ReadLimits()) -> list[str]:
    """Paths of the files under `root` (recursive), relative to it, sorted; at most MAX_SOURCE_FILES. Confined:
    a file that resolves outside `root` (a symlink out of the folder) is refused, never opened."""
    try:
        infos = storage.fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as err:
        raise unreadable(storage.uri, err, "listed") from None
    prefix = root.rstrip("/") + "/"
    names = sorted(i.path[len(prefix) :] for i in infos if i.type == pafs.FileType.File)
    if len(names) > MAX_SOURCE_FILES:
        raise DataError(f"{storage.uri}: {len(names):,} files, more than {MAX_SOURCE_FILES:,} in one source")
    if limits.confined and storage.is_local:
        real_root = os.path.realpath(root)
        for name in names:
            if not is_under(os.path.realpath(prefix + name), real_root):
                raise DataError(f"{storage.uri}: {name!r} leads outside the source's folder (a symlink); not read")
    return names


def read_file(storage: Storage, path: str, limits: ReadLimits = ReadLimits()) -> bytes:
    """A whole file, after checking its size against `limits.max_read_bytes`."""
    try:
        size = storage.fs.get_file_info(path).size or 0
        if size > limits.max_read_bytes:
            raise DataError(f"{path}: {size:,} bytes, more than the {limits.max_read_bytes:,} read whole at once")
        with storage.fs.open_input_stream(path) as f:
            return f.read()
    except OSError as err:
        raise unreadable(path, err) from None
