"""`dblocks bench api`: a load test of a real `dblocks serve` on loopback.

The bench starts the service as its own process (embedded Redis, its own local Ray cluster or RAY_ADDRESS's, a
fresh token, at most one block job at a time) and trains one tiny run to have an assembled model. Then, for
`duration_s`, it drives the service the way a busy team would: `clients` clients polling a run's status, a steady
stream of run submissions (they queue behind the one-at-a-time cap and train in turn, so the service also trains
throughout), three concurrent samplers asking for fresh grids (more than the 2 allowed at once: some 429s are
deliberate), a liveness probe and a run listing. It reports p50/p99 latency and status counts per route, errors
(5xx, transport errors, and 4xx other than the deliberate 429), and the reconcile tick's work time
(`dblocks_reconcile_tick_seconds`) before and during the load.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

# A run small enough to train in seconds on a CPU (2 blocks of 1 layer, 7x7 patches).
TINY_RUN = {
    "name": "bench-api",
    "model": {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 7},
    "blocks": {"num_blocks": 2},
    "train": {
        "steps_per_block": 20,
        "batch_size": 8,
        "warmup_steps": 2,
        "log_every_steps": 10,
        "checkpoint_every_steps": 10,
        "preview_every_steps": 0,
    },
    "sample": {"num_steps": 4, "num_per_class": 1},
}
ROUTE_OF = {  # request kind -> the route template the service's own metrics use
    "status": "GET /v1/runs/{run_id}",
    "submit": "POST /v1/runs",
    "sample": "GET /v1/runs/{run_id}/samples.png",
    "healthz": "GET /healthz",
    "list": "GET /v1/runs",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Recorder:
    """Latency and status of every request, per route (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def call(self, kind: str, http: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = http.request(method, path, **kwargs)
            status = str(response.status_code)
        except httpx.HTTPError as err:
            response, status = None, type(err).__name__
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latency[kind].append(elapsed)
            self.statuses[kind][status] += 1
        return response

    def report(self) -> dict:
        out = {}
        for kind, values in sorted(self.latency.items()):
            ms = np.asarray(values) * 1000
            out[ROUTE_OF[kind]] = {
                "requests": len(values),
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "max_ms": round(float(ms.max()), 2),
                "statuses": dict(sorted(self.statuses[kind].items())),
            }
        return out

    def errors(self) -> int:
        """5xx, transport errors, and 4xx other than the deliberate 429 of the sampling cap."""
        return sum(
            n
            for statuses in self.statuses.values()
            for status, n in statuses.items()
            if not (status.isdigit() and (int(status) < 400 or status == "429"))
        )


def _tick_totals(metrics_url: str) -> tuple[float, float]:
    """(sum, count) of dblocks_reconcile_tick_seconds from the service's /metrics."""
    total = count = 0.0
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("dblocks_reconcile_tick_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("dblocks_reconcile_tick_seconds_count"):
            count = float(line.split()[-1])
    return total, count


def _idle_ticks(metrics_url: str, idle_s: float, cap_s: float = 30.0) -> dict:
    """The tick's mean work time over at least `idle_s` of no load, extended (up to `cap_s`) until a tick has
    finished: a tick lasts a poll interval plus its work, so a window as short as the interval can hold none."""
    before = _tick_totals(metrics_url)
    time.sleep(idle_s)
    return _ticks_since(metrics_url, before, cap_s)


def _ticks_since(metrics_url: str, before: tuple[float, float], cap_s: float = 30.0) -> dict:
    """The tick's mean work time since `before`, waiting (up to `cap_s`) for the tick under way to finish if none
    has finished since."""
    deadline = time.monotonic() + cap_s
    after = _tick_totals(metrics_url)
    while after[1] == before[1] and time.monotonic() < deadline:
        time.sleep(0.2)
        after = _tick_totals(metrics_url)
    return _mean_tick_ms(before, after)


def _mean_tick_ms(before: tuple[float, float], after: tuple[float, float]) -> dict:
    ticks = after[1] - before[1]
    return {"ticks": int(ticks), "mean_ms": round(1000 * (after[0] - before[0]) / ticks, 2) if ticks else None}


def bench_api(
    *,
    duration_s: float = 60,
    clients: int = 50,
    submit_every_s: float = 2.0,
    poll_every_s: float = 1.0,
    idle_s: float = 10,
    log=print,
) -> dict:
    """The load test against a service of its own (RAY_ADDRESS, when set, is the cluster that service uses; else
    it starts its own), after training one tiny run to sample from."""
    _check_bounds(duration_s, clients, submit_every_s, poll_every_s)
    workdir = Path(tempfile.mkdtemp(prefix="dblocks-bench-api-"))
    port, metrics_port, token = _free_port(), _free_port(), secrets.token_hex(16)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DBLOCKS_KEY_PREFIX")},
        "DBLOCKS_STORAGE": str(workdir / "runs"),
        "DBLOCKS_API_TOKEN": token,
        "DBLOCKS_METRICS_PORT": str(metrics_port),
        "DBLOCKS_MAX_IN_FLIGHT": "1",
        "DBLOCKS_POLL_S": "0.5",
        "RAY_AUTH_MODE": "disabled",
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=open(workdir / "serve.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        _wait(lambda: _ok(f"{url}/readyz"), 180, "the service to become ready", service, workdir)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            run_id = http.post("/v1/runs", json=TINY_RUN).raise_for_status().json()["id"]
            log(f"training {run_id} for an assembled model to sample from")
            _wait(lambda: http.get(f"/v1/runs/{run_id}").json()["state"] == "SUCCEEDED", 600, "it", service, workdir)
        return load_test(
            url,
            token=token,
            run_id=run_id,
            metrics_url=metrics_url,
            duration_s=duration_s,
            clients=clients,
            submit_every_s=submit_every_s,
            poll_every_s=poll_every_s,
            idle_s=idle_s,
            log=log,
        )
    finally:
        os.killpg(service.pid, signal.SIGINT)
        try:
            service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def _check_bounds(duration_s: float, clients: int, submit_every_s: float, poll_every_s: float = 1.0) -> None:
    if not (
        1 <= duration_s <= 3600 and 1 <= clients <= 500 and 0.1 <= submit_every_s <= 600 and 0.01 <= poll_every_s <= 60
    ):
        raise ValueError(
            "duration_s in [1, 3600], clients in [1, 500], submit_every_s in [0.1, 600], poll_every_s in [0.01, 60]"
        )


def request_plan(
    recorder, run_id: str, *, clients: int, submit_every_s: float, config: dict, poll_every_s: float = 1.0
) -> list[tuple]:
    """(kind, pause between requests, request) per client thread: `clients` status pollers (each pausing
    `poll_every_s` between its requests), one submitter, three samplers of `run_id`'s assembled model, a liveness
    probe and a listing."""
    seeds = iter(range(10**9))

    def status(h):
        recorder.call("status", h, "GET", f"/v1/runs/{run_id}")

    def submit(h):
        recorder.call("submit", h, "POST", "/v1/runs", json=config)

    def sample(h):
        params = {"seed": next(seeds), "steps": 4, "num_per_class": 1}
        recorder.call("sample", h, "GET", f"/v1/runs/{run_id}/samples.png", params=params)

    def healthz(h):
        recorder.call("healthz", h, "GET", "/healthz")

    def listing(h):
        recorder.call("list", h, "GET", "/v1/runs")

    plan = [("status", poll_every_s, status)] * clients + [("submit", submit_every_s, submit)]
    return plan + [("sample", 0.2, sample)] * 3 + [("healthz", 1.0, healthz), ("list", 5.0, listing)]


def load_test(
    url: str,
    *,
    token: str | None,
    run_id: str,
    metrics_url: str | None = None,
    duration_s: float = 60,
    clients: int = 50,
    submit_every_s: float = 2.0,
    poll_every_s: float = 1.0,
    idle_s: float = 10,
    submit_config: dict | None = None,
    log=print,
) -> dict:
    """Drive the service at `url` (any running one): status pollers on `run_id`, submissions of `submit_config`
    (default: a tiny run), samplers of `run_id`'s assembled model, a liveness probe and a listing. With
    `metrics_url` (the service's /metrics), the tick's work time `idle_s` before and during the load."""
    _check_bounds(duration_s, clients, submit_every_s, poll_every_s)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    submit_config = submit_config or TINY_RUN
    idle = None
    if metrics_url:
        idle = _idle_ticks(metrics_url, idle_s)
    plan_text = f"{clients} status pollers (each every {poll_every_s:g} s), a submit every {submit_every_s:g} s"
    log(f"load: {plan_text}, 3 samplers, for {duration_s:g} s")
    recorder, stop = _Recorder(), threading.Event()
    load_before = _tick_totals(metrics_url) if metrics_url else None

    def loop(kind, pause_s, request):
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            rng = np.random.default_rng(abs(hash((kind, threading.get_ident()))) % 2**32)
            # spread the clients over the period, each starting within the first half of the load (a 5-second
            # listing period drawn past a 3-second load never ran: the suite's short load phase missed it 40 % of
            # the time)
            stop.wait(float(rng.uniform(0, min(pause_s, duration_s / 2))))
            while not stop.is_set():
                request(http)
                stop.wait(pause_s)

    plan = request_plan(
        recorder,
        run_id,
        clients=clients,
        submit_every_s=submit_every_s,
        config=submit_config,
        poll_every_s=poll_every_s,
    )
    workers = [threading.Thread(target=loop, args=args, daemon=True) for args in plan]
    started = time.monotonic()
    for w in workers:
        w.start()
    time.sleep(duration_s)
    stop.set()
    for w in workers:
        w.join(timeout=180)
    elapsed = time.monotonic() - started
    during = _ticks_since(metrics_url, load_before) if metrics_url else None
    routes = recorder.report()
    return {
        "benchmark": "api",
        "duration_s": round(elapsed, 1),
        "clients": clients,
        "submit_every_s": submit_every_s,
        "poll_every_s": poll_every_s,
        "requests": sum(r["requests"] for r in routes.values()),
        "requests_per_s": round(sum(r["requests"] for r in routes.values()) / elapsed, 1),
        "errors": recorder.errors(),
        "deliberate_429": sum(s.get("429", 0) for s in recorder.statuses.values()),
        "routes": routes,
        "tick_before_load": idle,
        "tick_during_load": during,
        "cpu_count": os.cpu_count(),
    }


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate, timeout_s: float, what: str, service: subprocess.Popen, workdir: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if service.poll() is not None or time.monotonic() > deadline:
            log_tail = (workdir / "serve.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"timed out waiting for {what}; service log:\n{log_tail}")
        time.sleep(0.5)
