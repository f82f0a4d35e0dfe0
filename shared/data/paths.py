"""Where a caller may point the service's data readers: a data source named over the API is parsed here once, into
the one path that is then opened, and refused unless it lies under the operator's roots (docs/security.md, "Data").

Accepted: an absolute local path, or `s3://bucket/key` under an s3:// root. Refused: relative paths, `file:` and
every other scheme, `..` and `.` segments, NUL and other control characters. A local path is resolved (symlinks
followed) before it is compared, and what is opened is that resolved path; files found inside a folder are
checked again where they are listed (`files.list_files`). Refusals name the field, never what lies at the path.
The local CLI (`dblocks train` by the machine's own user) reads without roots (`roots=None`).
"""

from __future__ import annotations

import os
import re

from shared.data.errors import DataError

CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def outside(field: str) -> DataError:
    return DataError(f"{field}: outside the data roots this service reads (DBLOCKS_DATA_ROOTS)")


def _segments(path: str, field: str) -> list[str]:
    parts = path.split("/")
    if any(p in (".", "..") for p in parts):
        raise DataError(f"{field}: '.' and '..' segments are not allowed in a data path")
    return [p for p in parts if p]


def _s3(uri: str, field: str) -> tuple[str, list[str]]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise DataError(f"{field}: {bucket!r} is not an S3 bucket name")
    return bucket, _segments(key, field)


def is_under(path: str, root: str) -> bool:
    """Whether `path` is `root` or inside it, by path component (both already normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def confine(uri: str, roots: tuple[str, ...], field: str) -> str:
    """The one form of `uri` that will be opened (a resolved absolute path, or s3://bucket/key), after checking
    that it lies under one of `roots`; DataError naming `field` otherwise."""
    if CONTROL.search(uri):
        raise DataError(f"{field}: control characters (NUL, newline, ...) are not allowed in a data path")
    if uri.startswith("s3://"):
        bucket, key = _s3(uri, field)
        for root in (r for r in roots if r.startswith("s3://")):
            root_bucket, root_key = _s3(root, "DBLOCKS_DATA_ROOTS")
            if bucket == root_bucket and key[: len(root_key)] == root_key:
                return "/".join([f"s3://{bucket}", *key])
        raise outside(field)
    if not uri.startswith("/"):
        raise DataError(f"{field}: expected an absolute path or s3://bucket/key (no other scheme, no relative path)")
    _segments(uri, field)
    resolved = os.path.realpath(uri)
    if any(is_under(resolved, os.path.realpath(root)) for root in roots if root.startswith("/")):
        return resolved
    raise outside(field)


def check_roots(roots: tuple[str, ...]) -> tuple[str, ...]:
    """The operator's roots, each an absolute local folder or an s3://bucket/prefix; ValueError otherwise."""
    for root in roots:
        if CONTROL.search(root) or not (root.startswith("/") or root.startswith("s3://")):
            raise ValueError(f"DBLOCKS_DATA_ROOTS: {root!r} is not an absolute path or s3://bucket/prefix")
        try:
            _s3(root, "DBLOCKS_DATA_ROOTS") if root.startswith("s3://") else _segments(root, "DBLOCKS_DATA_ROOTS")
        except DataError as err:
            raise ValueError(str(err)) from None
    return roots
