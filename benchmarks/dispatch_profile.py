"""Where a block job's start goes, piece by piece, on the cluster the service's dispatcher makes (issue 41):
`python -m benchmarks.dispatch_profile --json` (about a minute on 2 cores; prints JSON).

Each piece is timed alone, in the order a block meets them:
- `actor_s`: a zero-CPU actor (a plain class) from `.remote()` to its first answer: a Ray worker process up.
- `entry_actor_s`: the same for an actor whose module imports the block entry point (Ray Train, torch, the
  project), as the block job actor does.
- `fit_to_loop_s`: inside such an actor, `TorchTrainer.fit()` to the first line of the training function (Train's
  controller actor, its placement group, the worker group's actor and its setup), with the per-block worker runtime
  env the entry point used to set (`runtime_env`), without (`plain`), and without it with Train's controller polling
  every 0.25 s instead of 2 s (`poll`), each measured twice.
- `fit_total_s`: `fit()` to its return, for the same empty training function (the teardown included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import ray

VARIANTS = ("runtime_env", "plain", "poll")
POLL_S = 0.25


class Plain:
    def ping(self) -> float:
        return time.time()


class EntryHost:
    """Imports what the block job actor imports, then times empty Train runs on request."""

    def __init__(self):
        import workers.ray_entry  # noqa: F401

    def ping(self) -> float:
        return time.time()

    def fit(self, storage: str, name: str, variant: str) -> dict:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        stamp = os.path.join(storage, f"{name}.entered")

        def loop(config):
            with open(stamp, "w") as f:
                f.write(repr(time.time()))

        extra = {"worker_runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}} if variant == "runtime_env" else {}
        if variant == "poll":  # Train's controller polls its workers this often (Ray's default: 2 s)
            os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(POLL_S)
        else:
            os.environ.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
        trainer = TorchTrainer(
            loop,
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=name, storage_path=storage, **extra),
        )
        started = time.time()
        result = trainer.fit()
        ended = time.time()
        if result.error is not None:
            raise result.error
        with open(stamp) as f:
            entered = float(f.read())
        return {"fit_to_loop_s": entered - started, "fit_total_s": ended - started}


def timed_actor(cls) -> tuple[float, object]:
    started = time.time()
    actor = ray.remote(num_cpus=0)(cls).remote()
    ray.get(actor.ping.remote())
    return time.time() - started, actor


def profile() -> dict:
    storage = tempfile.mkdtemp(prefix="dblocks-dispatch-profile-")
    out = {"cpus": os.cpu_count()}
    out["actor_s"] = [round(timed_actor(Plain)[0], 2) for _ in range(2)]
    entry = []
    for _ in range(2):
        seconds, host = timed_actor(EntryHost)
        entry.append(round(seconds, 2))
    out["entry_actor_s"] = entry
    for variant in VARIANTS * 2:
        timing = ray.get(host.fit.remote(storage, f"p-{variant}-{time.time_ns()}", variant))
        for key, value in timing.items():
            out.setdefault(key, {}).setdefault(variant, []).append(round(value, 2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.parse_args(argv)
    from coordinator.dispatch import RayDispatcher

    # the cluster the service's dispatcher makes (RAY_ADDRESS's, or a local one with its State API on loopback)
    RayDispatcher(address=os.environ.get("RAY_ADDRESS")).connect()
    try:
        report = profile()
    finally:
        ray.shutdown()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
