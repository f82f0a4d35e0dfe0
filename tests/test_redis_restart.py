"""Redis restarts with the compose stack's own flags (AOF on, fsync always): no run, block or event is lost."""

import os
import signal
import subprocess
import time

import psutil
import redis
import yaml

from coordinator.records import BlockRecord, RunRecord, State
from coordinator.store import Store
from tests.conftest import REPO, free_port, redis_server_binary


def start_redis(port, workdir):
    """The compose service's own command (`sh -c` with the password as configuration on stdin), on a free port."""
    shell, flag, script = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    assert (shell, flag) == ("sh", "-c") and "redis-server - " in script
    script = script.replace("$$", "$").replace(
        "redis-server - ", f"{redis_server_binary()} - --port {port} --bind 127.0.0.1 --dir {workdir} "
    )
    proc = subprocess.Popen(
        [shell, flag, script],
        env={"REDIS_PASSWORD": "pw", "PATH": os.environ["PATH"]},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(f"redis://:pw@127.0.0.1:{port}/0")
    for _ in range(200):
        try:
            client.ping()
            assert "pw" not in " ".join(psutil.Process(proc.pid).cmdline())  # not on any command line
            return proc, client
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis did not start")


def snapshot(store, run_id):
    return store.get_run(run_id), store.get_blocks(run_id), store.events(run_id)


def test_killed_redis_comes_back_with_every_record(tmp_path):
    port = free_port()
    proc, client = start_redis(port, tmp_path)
    store = Store(client, prefix="t-aof")
    store.create_run(
        RunRecord(id="r", config_yaml="x: 1\n", run_dir="/d"), [BlockRecord(index=i, total_steps=10) for i in range(3)]
    )
    store.transition_block("r", 0, State.RUNNING, attempt=1)
    store.transition_block("r", 0, State.SUCCEEDED, sha256="abc", step=10)
    store.transition_block("r", 1, State.RUNNING, attempt=1)
    store.update_progress("r", 1, step=5, loss=0.25)
    before = snapshot(store, "r")
    proc.send_signal(signal.SIGKILL)  # no shutdown save: only the append-only file survives
    proc.wait()
    proc, client = start_redis(port, tmp_path)
    try:
        after = snapshot(Store(client, prefix="t-aof"), "r")
        assert after == before
        assert after[1][0].state == State.SUCCEEDED and after[1][1].step == 5
    finally:
        proc.terminate()
        proc.wait()
