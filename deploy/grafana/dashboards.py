"""Writes the Grafana dashboards (overview.json, training.json) from one panel list:
`python deploy/grafana/dashboards.py`.

Every query names metrics that the coordinator or the workers export (tests/test_observability.py checks it).
"""

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "dblocks-prometheus"}

OVERVIEW = [
    ("Runs by state", "timeseries", ["sum by (state) (dblocks_runs)"]),
    ("Block jobs by state", "timeseries", ["sum by (state) (dblocks_block_jobs)"]),
    (
        "Block jobs in flight / cluster CPUs",
        "timeseries",
        ["dblocks_block_jobs_in_flight", "dblocks_cluster_cpus", "dblocks_cluster_gpus"],
    ),
    (
        "Queue wait p50 / p95 (s)",
        "timeseries",
        [
            "histogram_quantile(0.5, sum by (le) (rate(dblocks_block_queue_wait_seconds_bucket[15m])))",
            "histogram_quantile(0.95, sum by (le) (rate(dblocks_block_queue_wait_seconds_bucket[15m])))",
        ],
    ),
    (
        "Launches, retries, failures (per hour)",
        "timeseries",
        [
            "increase(dblocks_block_launches_total[1h])",
            "increase(dblocks_block_retries_total[1h])",
            "increase(dblocks_block_failures_total[1h])",
        ],
    ),
    (
        "Block job duration p95 (s)",
        "timeseries",
        ["histogram_quantile(0.95, sum by (le, outcome) (rate(dblocks_block_job_duration_seconds_bucket[1h])))"],
    ),
    (
        "Assembly duration p95 (s)",
        "timeseries",
        ["histogram_quantile(0.95, sum by (le) (rate(dblocks_assembly_duration_seconds_bucket[1h])))"],
    ),
    ("API requests by status", "timeseries", ["sum by (status) (rate(dblocks_api_requests_total[5m]))"]),
    (
        "API latency p95 (s)",
        "timeseries",
        ["histogram_quantile(0.95, sum by (le, route) (rate(dblocks_api_request_duration_seconds_bucket[5m])))"],
    ),
    ("Coordinator is leader", "stat", ["max(dblocks_coordinator_is_leader)"]),
]

TRAINING = [
    ("Loss by block (each block on its own scale)", "timeseries", ["ray_dblocks_worker_loss"]),
    (
        "Training accuracy by block (classification runs)",
        "timeseries",
        ["dblocks_block_accuracy"],  # the coordinator declares it; workers export it only in classification runs
    ),
    ("Step by block", "timeseries", ["ray_dblocks_worker_step", "dblocks_block_step"]),
    ("Steps/s by block", "timeseries", ["rate(ray_dblocks_worker_step[2m])"]),
    ("Samples/s by block", "timeseries", ["ray_dblocks_worker_samples_per_second"]),
    ("Peak memory by block (bytes)", "timeseries", ["ray_dblocks_worker_peak_memory_bytes"]),
    ("Checkpoint time by block (s)", "timeseries", ["ray_dblocks_worker_checkpoint_seconds"]),
]


def dashboard(uid: str, title: str, panels: list) -> dict:
    out = []
    for i, (panel_title, kind, exprs) in enumerate(panels):
        out.append(
            {
                "id": i + 1,
                "type": kind,
                "title": panel_title,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "targets": [{"refId": chr(65 + j), "expr": e, "datasource": DATASOURCE} for j, e in enumerate(exprs)],
            }
        )
    return {
        "uid": uid,
        "title": title,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-6h", "to": "now"},
        "tags": ["dblocks"],
        "panels": out,
    }


if __name__ == "__main__":
    here = Path(__file__).parent / "dashboards"
    here.mkdir(exist_ok=True)
    (here / "overview.json").write_text(
        json.dumps(dashboard("dblocks-overview", "dblocks — overview", OVERVIEW), indent=2) + "\n"
    )
    (here / "training.json").write_text(
        json.dumps(dashboard("dblocks-training", "dblocks — block training", TRAINING), indent=2) + "\n"
    )
