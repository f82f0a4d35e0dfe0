"""Every program a test runs is one that `make system-deps` checks for (and installs), or one .venv provides: a fresh
machine passes `make test` without anything installed by hand. The programs come from the tests' own source (literal
`shutil.which` lookups and subprocess argument lists), the namespace hosts, and what the compose rehearsal execs
(each started service's command, entrypoint and health check, as `docker compose config` resolves them)."""

from __future__ import annotations

import os
import re
import shlex
import shutil

from tests.conftest import REPO
from tests.hosts import PROGRAMS as HOST_PROGRAMS
from tests.hosts import compose_config
from tests.test_compose_hosts import BIN, HTTP_CLIENTS, IMAGE_ENTRYPOINTS, SECRETS, SERVICES
from tests.test_observability import compose_binary

ESSENTIAL = {"sh", "bash"}  # Debian's Essential set: on every Debian system, never installed by a project


def makefile_programs() -> set[str]:
    """TEST_PROGRAMS of the Makefile: what `make system-deps` checks for by name."""
    line = next(line for line in (REPO / "Makefile").read_text().splitlines() if line.startswith("TEST_PROGRAMS"))
    return set(line.split(":=", 1)[1].split())


def shell_programs(script: str) -> set[str]:
    """The programs a POSIX shell script runs: the first word of each simple command (assignments and `exec`
    skipped, here-document bodies left out)."""
    lines, heredoc = [], None
    for line in script.splitlines():
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        match = re.search(r"<<-?\s*'?(\w+)'?", line)
        heredoc = match.group(1) if match else None
        lines.append(line)
    programs = set()
    for command in re.split(r"\|\|?|&&|;|\n", "\n".join(lines)):
        words = [w for w in shlex.split(command, posix=True) if not re.match(r"^\w+=", w)]
        words = words[1:] if words[:1] == ["exec"] else words
        if words:
            programs.add(words[0])
    return programs


def argv_programs(argv: list[str]) -> set[str]:
    argv = [arg.replace("$$", "$") for arg in argv]  # compose's escape
    if argv[:2] == ["sh", "-c"]:
        return {"sh"} | shell_programs(argv[2])
    return {argv[0]}


def compose_programs() -> set[str]:
    """What the rehearsal's hosts exec: commands (behind an image's entrypoint) and health checks."""
    model = compose_config(compose_binary(), [REPO / "docker-compose.yml"], {**os.environ, **SECRETS})
    programs = set()
    for name in SERVICES:
        service = model["services"][name]
        entrypoint = IMAGE_ENTRYPOINTS.get(service.get("image", "").split(":")[0], [])
        programs |= argv_programs([*entrypoint, *service["command"]])
        test = service.get("healthcheck", {}).get("test", [])
        if test:
            programs |= argv_programs(["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:])
    return programs


def programs_in_tests() -> set[str]:
    """Programs the tests name literally: in `shutil.which` lookups and as the first item of a subprocess's list."""
    programs = set(HOST_PROGRAMS)
    for path in (REPO / "tests").glob("*.py"):
        text = path.read_text()
        programs |= set(re.findall(r"which\(\s*\"([\w.+-]+)\"", text))
        programs |= set(re.findall(r"(?:Popen|run|check_output|call)\(\s*\[\s*\"([\w.+-]+)\"", text))
    return programs


def provided(program: str) -> bool:
    return program in ESSENTIAL or program in makefile_programs() or (BIN / program).exists()


def test_the_parsers_find_what_a_shell_script_and_an_argv_run():
    script = 'exec redis-server - --appendonly yes <<EOF\nrequirepass $X\nEOF\nA="b c" redis-cli ping | grep PONG'
    assert shell_programs(script) == {"redis-server", "redis-cli", "grep"}
    assert argv_programs(["ray", "start", "--head"]) == {"ray"}
    assert argv_programs(["sh", "-c", "exec prometheus --x && true"]) == {"sh", "prometheus", "true"}


def test_every_program_the_compose_rehearsal_execs_is_installed_by_the_project():
    programs = compose_programs()
    assert {"redis-server", "redis-cli", "ray", "dblocks", "prometheus"} <= programs, programs
    missing = sorted(p for p in programs - set(HTTP_CLIENTS) if not provided(p))
    assert not missing, f"the compose rehearsal execs programs neither .venv nor `make system-deps` provides: {missing}"


def test_every_program_a_test_runs_is_installed_by_the_project():
    programs = programs_in_tests()
    assert {"promtool", "chromium", "redis-check-rdb", "openssl", "ip"} <= programs, programs
    missing = sorted(p for p in programs if not provided(p))
    assert not missing, f"tests run programs neither .venv nor `make system-deps` provides: {missing}"


def test_every_program_make_system_deps_checks_for_is_on_path():
    missing = sorted(p for p in makefile_programs() if shutil.which(p) is None)
    assert not missing, f"not on PATH (run `make system-deps`, which installs them): {missing}"
