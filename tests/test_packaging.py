"""The installed package is the tree: `pip install .` (the Dockerfile's install) carries every Python package folder
of shared/, workers/, coordinator/ and benchmarks/ (an explicit package list once left coordinator/api out)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from tests.conftest import REPO

ROOTS = ("shared", "workers", "coordinator", "benchmarks")


def test_the_wheel_holds_every_package_folder(tmp_path):
    source = tmp_path / "source"  # a clean copy: no build/ left from an earlier build to fill the gaps
    for root in ROOTS:
        shutil.copytree(REPO / root, source / root, ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*pip, str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("dblocks-*.whl")
    packed = {name.rsplit("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    folders = {
        path.parent.relative_to(REPO).as_posix()
        for root in ROOTS
        for path in (REPO / root).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert folders - packed == set(), f"not in the wheel: {sorted(folders - packed)}"
    assert {"coordinator/api", "shared/tasks/text", "benchmarks"} <= packed
