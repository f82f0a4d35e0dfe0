"""Where block checkpoints, live progress and previews live: a local directory or an S3-compatible bucket.

`Storage.from_uri("/mnt/shared/ckpt")` or `Storage.from_uri("s3://bucket/prefix")`. One code path for both,
through `pyarrow.fs` (the filesystem layer Ray Train itself uses, so the same object is handed to Ray as
`storage_filesystem`). Paths given to and returned by the methods are filesystem paths (`self.path(...)`), the
form Ray Train reports checkpoint paths in.

S3-compatible endpoints (MinIO, Ceph, moto): `AWS_ENDPOINT_URL=http://host:9000`; credentials come from the usual
AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), read where the storage is opened
(the coordinator and every worker need them).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs


class StorageError(ValueError):
    """A storage URI that cannot be used; the message says why."""


def _s3_filesystem() -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    options: dict = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError(f"AWS_ENDPOINT_URL {endpoint!r}: expected http(s)://host[:port]")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    return pafs.S3FileSystem(**options)


@dataclass(frozen=True)
class Storage:
    uri: str
    root: str  # the root as a path inside `fs`
    fs: pafs.FileSystem = field(compare=False, repr=False)

    @classmethod
    def from_uri(cls, uri: str | Path) -> Storage:
        uri = str(uri)
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise StorageError(f"{uri!r}: an s3:// URI needs a bucket (s3://bucket/prefix)")
            root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
            return cls(uri=uri.rstrip("/"), root=root, fs=_s3_filesystem())
        if parsed.scheme not in ("", "file"):
            raise StorageError(f"{uri!r}: unsupported storage scheme {parsed.scheme!r}; use a path or s3://")
        local = Path(parsed.path if parsed.scheme == "file" else uri).absolute()
        return cls(uri=str(local), root=str(local), fs=pafs.LocalFileSystem())

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def ray_storage(self) -> dict:
        """Keyword arguments for Ray Train's RunConfig: where Train writes its run and checkpoints."""
        if self.is_local:
            return {"storage_path": self.root}
        return {"storage_path": self.root, "storage_filesystem": self.fs}

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *(p.strip("/") for p in parts)])

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def write_bytes(self, path: str, data: bytes) -> None:
        """Readers see the old or the new content, never a part: one PUT on S3, write-then-rename locally."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.is_local:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode())

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def list_names(self, directory: str) -> list[str]:
        """File names directly inside `directory` (empty when it does not exist)."""
        selector = pafs.FileSelector(directory, allow_not_found=True, recursive=False)
        return sorted(info.base_name for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File)

    def list_dirs(self, directory: str) -> list[str]:
        """Directory names directly inside `directory` (empty when it does not exist)."""
        selector = pafs.FileSelector(directory, allow_not_found=True, recursive=False)
        infos = self.fs.get_file_info(selector)
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)

    def upload_dir(self, source: Path, path: str) -> None:
        """Copy a local directory to `path`, streamed (a checkpoint's files are not read into memory whole). Not
        atomic: a reader must learn of the directory only afterwards (workers/checkpoints.py writes a pointer)."""
        self.fs.create_dir(path, recursive=True)
        pafs.copy_files(
            str(Path(source).absolute()), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs
        )

    def download_dir(self, path: str, target: Path) -> None:
        """Copy the files directly inside `path` into the local directory `target`."""
        for name in self.list_names(path):
            self.download(f"{path}/{name}", Path(target) / name)

    def delete_dir(self, path: str) -> None:
        """Remove `path` and everything under it (nothing if it does not exist)."""
        if self.exists(path):
            self.fs.delete_dir(path)

    def download(self, path: str, target: Path) -> None:
        """Copy one file to a local path, atomically (a temporary name, then rename)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        with self.fs.open_input_stream(path) as source, open(tmp, "wb") as sink:
            while chunk := source.read(1 << 22):
                sink.write(chunk)
        tmp.replace(target)
