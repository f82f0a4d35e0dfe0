"""The coordinator service survives real failures: real processes killed by PID, real Redis, a real Ray cluster
(`ray start --head` on loopback, as a separate process tree from the coordinator)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.conftest import REPO, SERVICE_TOKEN, TINY, free_port, start_ray_head, stop_ray_head

pytestmark = pytest.mark.slow

# Long enough to kill something mid-block (past step 200, after two checkpoints) and, in one test, something
# else later (past step 350); checkpoints every 100 steps bound the redone work.
# A tiny block trains ~440 steps/s on one core of this machine: 4000 steps leave the test seconds after KILL_PAST to
# find and pause or kill the blocks' processes while they still train (the coordinator polls progress every second)
STEPS = 4000
KILL_PAST = 400
CONFIG_OVERRIDES = {
    "train": {"steps_per_block": STEPS, "checkpoint_every_steps": 100, "log_every_steps": 20, "max_failures": 2}
}


HEADS: list[int] = []  # this module's Ray heads: only their block workers are ours to count and kill
# The process that trains a block: a single-worker block's job actor, or a Train worker of a data-parallel block.
BLOCK_WORKER_TITLES = ("ray::BlockActor", "ray::RayTrainWorker")


@pytest.fixture(scope="module")
def ray_cluster():
    head, address = start_ray_head()
    HEADS.append(head.pid)
    yield address
    stop_ray_head(head)


class Service:
    def __init__(self, env, port):
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli", "serve", "--port", str(port)],
            cwd=REPO,
            env={**env, "DBLOCKS_METRICS_PORT": str(self.metrics_port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10)
        wait_for(lambda: self._ready(), 90, "service ready")

    def _ready(self):
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def run(self, run_id):
        return self.client.get(f"/v1/runs/{run_id}").json()

    def is_leader(self) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return next(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith("dblocks_coordinator_is_leader ")
        )

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def report_cost(failure: str, step_seen: int, resumed_from: int) -> None:
    """Steps redone = last step the coordinator saw before the failure - the step training resumed from.
    Printed for docs/failures.md (`pytest tests/test_service_failures.py -s`)."""
    print(
        f"FAILURE-COST {failure}: last step seen {step_seen}, resumed from {resumed_from}, "
        f"redone <= {max(0, step_seen - resumed_from)} steps (+ steps run after the last progress report)"
    )


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.fixture
def service_env(redis_url, tmp_path, ray_cluster, request):
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "RAY_ADDRESS": ray_cluster,
        "RAY_AUTH_MODE": "disabled",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        "DBLOCKS_STORAGE": str(tmp_path / "storage"),
        "DBLOCKS_KEY_PREFIX": f"t-svc-{request.node.name[-12:]}",
        "DBLOCKS_API_TOKEN": SERVICE_TOKEN,
        "DBLOCKS_LEASE_TTL_S": "3",
        "DBLOCKS_POLL_S": "0.3",
        "PYTHONUNBUFFERED": "1",
    }


def submit(service):
    config = yaml.safe_load(TINY.read_text())
    config["train"].update(CONFIG_OVERRIDES["train"])
    response = service.client.post("/v1/runs", json=config)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def block_worker_pids():
    """The processes training blocks in this module's Ray clusters (not those of anything else on the machine)."""
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"]
        and p.info["cmdline"][0].startswith(BLOCK_WORKER_TITLES)
        and any(parent.pid in HEADS for parent in p.parents())
    ]


def test_training_outlives_its_coordinators_and_a_paused_leader_is_fenced_out(service_env):
    """One run, four failures in turn (one run instead of four keeps the suite's Ray time down):
    1. the process training a block (its job actor) is SIGKILLed: Ray restarts it, and it resumes from the block's
       last checkpoint (<= one interval redone), the other block untouched, no attempt of ours charged;
    2. the leader is paused (SIGSTOP) past its lease TTL: a second coordinator takes the lease and attaches to both
       block jobs, which never stopped; the first, resumed (SIGCONT), finds its lease gone and steps down;
    3. the second is SIGKILLed mid-run: the first, a follower now, takes the lease and attaches again;
    4. the leader is SIGKILLed while it assembles the run: a third assembles it from the start.
    Each block is launched once and trains from step 0 to the end in one job (0 steps redone at any
    coordinator change); the run assembles to SUCCEEDED."""
    first = Service(service_env, free_port())
    run_id = submit(first)
    second = third = None
    try:
        second = Service(service_env, free_port())  # a follower, ready to take over
        assert first.is_leader() == 1 and second.is_leader() == 0
        wait_for(lambda: all(b["step"] >= KILL_PAST for b in first.run(run_id)["blocks"]), 240, "blocks mid-way")
        # one block worker per block, both running (a process list read while a worker is being re-spawned or named
        # may briefly miss it: wait for both, rather than read once)
        wait_for(lambda: len(block_worker_pids()) == 2, 60, "both blocks' workers")
        steps_at_kill = {b["index"]: b["step"] for b in first.run(run_id)["blocks"]}
        pids = block_worker_pids()
        assert len(pids) == 2
        victim, *others = pids
        # The other block is held where it is while the killed one restarts: on a loaded machine a restart takes long
        # enough for tiny blocks to finish, and then no block would be left running for the coordinator changes.
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: any(b["resumed_from_step"] > 0 for b in first.run(run_id)["blocks"]), 240, "a resume")
        resumed = [b for b in first.run(run_id)["blocks"] if b["resumed_from_step"] > 0]
        assert len(resumed) == 1  # the killed block, and only it
        (block,) = resumed
        report_cost("worker killed", steps_at_kill[block["index"]], block["resumed_from_step"])
        # At most one checkpoint interval (100 steps) plus the progress lag is redone.
        assert block["resumed_from_step"] >= steps_at_kill[block["index"]] - 100 - 40
        assert block["attempt"] == 1  # Ray's restart of the job in place, not a new attempt of ours
        restarted = {block["index"]: block["resumed_from_step"]}

        # The blocks' workers are paused through the coordinator changes (tiny blocks would otherwise finish first);
        # nothing health-checks a job actor's process, so the pause alone restarts nothing. First every
        # running block's worker must be up: the restarted one may still be starting on a loaded machine.
        def workers_up() -> bool:
            running = [b for b in first.run(run_id)["blocks"] if b["state"] == "RUNNING"]
            return bool(running) and len(block_worker_pids()) == len(running)

        wait_for(workers_up, 120, "every running block's worker")
        workers = block_worker_pids()
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        first.proc.send_signal(signal.SIGSTOP)  # 2. the leader hangs past its lease
        running = {b["index"] for b in second.run(run_id)["blocks"] if b["state"] == "RUNNING"}
        assert running and len(workers) == len(running), (running, workers)
        wait_for(lambda: attached(second, run_id) >= len(running), 60, "the second coordinator to attach")
        first.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: first.is_leader() == 0 and second.is_leader() == 1, 30, "the first to step down")

        at_kill = second.run(run_id)["blocks"]  # 3. the new leader dies mid-run
        running = {b["index"] for b in at_kill if b["state"] == "RUNNING"}
        assert running, "the run ended before the second coordinator could be killed mid-run"
        second.kill()
        before = attached(first, run_id)
        wait_for(lambda: attached(first, run_id) >= before + len(running), 60, "the first to lead and attach again")
        for pid in workers:
            os.kill(pid, signal.SIGCONT)

        # 4. the leader dies in the middle of assembling the run: the third assembles it again
        wait_for(lambda: assembly_starts(first, run_id) == 1, 300, "the assembly to start")
        first.kill()
        third = Service(service_env, free_port())
        wait_for(lambda: third.run(run_id)["state"] in ("SUCCEEDED", "FAILED"), 300, "run to finish")
        run = third.run(run_id)
        assert run["state"] == "SUCCEEDED", run
        assert assembly_starts(third, run_id) == 2 and (Path(run["run_dir"]) / "manifest.json").is_file()
        # each leadership assembled the run at most once: the second start is the next leader's, after the kill
        events = third.client.get(f"/v1/runs/{run_id}/events").json()
        leases = [e["lease"] for e in events if e["kind"] == "assembly_started"]
        assert len(set(leases)) == 2 and all(leases), leases
        for block in run["blocks"]:
            assert block["step"] == STEPS and block["attempt"] == 1, block  # a coordinator change is no failure
            # one job from start to end: no resume but the worker kill's, 0 steps redone
            assert block["resumed_from_step"] == restarted.get(block["index"], 0), block
        print("FAILURE-COST leader paused, then killed twice: 0 steps redone, no block launched again")
        launches = {
            i: sum(e["kind"] == "block_state" and e["state"] == "RUNNING" and e["block"] == str(i) for e in events)
            for i in (0, 1)
        }
        assert launches == {0: 1, 1: 1}  # every block launched once over three coordinators
    finally:
        for pid in block_worker_pids():  # never leave a paused worker behind
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for service in (first, second, third):
            if service is not None:
                if service.proc.poll() is None:
                    service.proc.send_signal(signal.SIGCONT)
                service.stop()
    log = first.proc.stdout.read().decode(errors="replace")
    assert "stepped down" in log  # the paused leader's lease was gone when it resumed


def attached(service, run_id) -> int:
    return sum(e["kind"] == "block_attached" for e in service.client.get(f"/v1/runs/{run_id}/events").json())


def assembly_starts(service, run_id) -> int:
    return sum(e["kind"] == "assembly_started" for e in service.client.get(f"/v1/runs/{run_id}/events").json())


@pytest.fixture
def multinode_cluster():
    """A head with no CPUs and three 1-CPU worker nodes, each its own `ray start --block` process group."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        # notice a dead node within seconds, not the default half minute
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_failure_threshold": "4",
    }
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = [
        subprocess.Popen(
            [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false", "--block"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    wait_for(
        lambda: (
            subprocess.run([ray_bin, "status", f"--address={address}"], env=env, capture_output=True).returncode == 0
        ),
        60,
        "ray head",
    )
    for n in range(1, 4):  # one at a time: nodes started together on one host race for ports
        nodes.append(
            subprocess.Popen(
                [ray_bin, "start", f"--address={address}", "--num-cpus=1", "--block"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        wait_for(
            lambda: (
                f"/{n}.0 CPU".encode()
                in subprocess.run([ray_bin, "status", f"--address={address}"], env=env, capture_output=True).stdout
            ),
            60,
            f"{n} worker nodes",
        )
    HEADS.extend(node.pid for node in nodes)
    yield address, nodes
    for node in reversed(nodes):  # SIGKILL, as kill_node: a graceful stop of each node took ~20 s
        try:
            kill_node(node)
            node.wait(timeout=30)
        except (psutil.NoSuchProcess, subprocess.TimeoutExpired):
            pass


def ray_node_named(node_name: str, nodes):
    """The `ray start` process whose raylet has the Ray node id a block reports (`host/<first 8 hex of the id>`)."""
    prefix = "--node_id=" + node_name.rsplit("/", 1)[-1]
    for node in nodes:
        for proc in psutil.Process(node.pid).children(recursive=True):
            try:
                if any(arg.startswith(prefix) for arg in proc.cmdline()):
                    return node
            except psutil.NoSuchProcess:
                continue
    return None


def kill_node(node) -> None:
    """Everything the node runs dies at once: `ray start`, raylet, agents and its workers."""
    procs = [psutil.Process(node.pid), *psutil.Process(node.pid).children(recursive=True)]
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def test_lost_node_moves_its_block_to_another_node(service_env, multinode_cluster):
    address, nodes = multinode_cluster
    service = Service({**service_env, "RAY_ADDRESS": address, "DBLOCKS_KEY_PREFIX": "t-svc-nodeloss"}, free_port())
    try:
        run_id = submit(service)
        wait_for(lambda: all(b["step"] >= KILL_PAST for b in service.run(run_id)["blocks"]), 240, "blocks mid-way")
        before = {b["index"]: (b["node"], b["step"]) for b in service.run(run_id)["blocks"]}
        # the victim is the node of the block furthest from done: the other may already have finished (blocks start
        # at different times on a loaded machine), and losing a finished block's node proves nothing about moving
        node_name, _ = min(before.values(), key=lambda node_step: node_step[1])
        victim = ray_node_named(node_name, nodes[1:])
        assert victim is not None, (node_name, before)
        kill_node(victim)
        wait_for(lambda: service.run(run_id)["state"] in ("SUCCEEDED", "FAILED"), 300, "run to finish")
        run = service.run(run_id)
        assert run["state"] == "SUCCEEDED", run
        moved = [b for b in run["blocks"] if b["resumed_from_step"] > 0]
        training = [b for b in moved if before[b["index"]][1] < STEPS]
        assert training, (moved, before)  # the block training on the lost node moved
        for block in training:
            old_node, old_step = before[block["index"]]
            report_cost("node lost", old_step, block["resumed_from_step"])
            assert block["node"] != old_node  # it finished on another node
            assert block["resumed_from_step"] >= old_step - 100 - 40 and block["step"] == STEPS
        for block in moved:  # a block that had finished but whose job went down with the node resumes at its end
            assert block in training or block["resumed_from_step"] == STEPS, (block, before)
    finally:
        service.stop()
