"""Every Prometheus metric the coordinator exports, declared once on a private registry.

Names: prefix `dblocks_`, base units, counters end in `_total`, bounded labels only (state, block index,
route, method, status) — never a run id, a step or a path. docs/metrics.md lists them all.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from coordinator.records import State

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.runs = Gauge("dblocks_runs", "Runs in the store by state.", ["state"], registry=r)
        self.blocks = Gauge("dblocks_block_jobs", "Block jobs of active runs by state.", ["state"], registry=r)
        self.in_flight = Gauge("dblocks_block_jobs_in_flight", "Block jobs dispatched to Ray now.", registry=r)
        self.cluster_cpus = Gauge("dblocks_cluster_cpus", "CPUs in the Ray cluster.", registry=r)
        self.cluster_gpus = Gauge("dblocks_cluster_gpus", "GPUs in the Ray cluster.", registry=r)
        self.cluster_memory = Gauge(
            "dblocks_cluster_memory_bytes", "Ray's schedulable memory in the cluster.", registry=r
        )
        self.job_duration = Histogram(
            "dblocks_block_job_duration_seconds",
            "Launch to finish of a block job attempt.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "dblocks_block_queue_wait_seconds",
            "Run creation (or retrain) to a block's launch.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.launches = Counter("dblocks_block_launches_total", "Block job launches.", registry=r)
        self.retries = Counter("dblocks_block_retries_total", "Failed attempts sent back to PENDING.", registry=r)
        self.failures = Counter("dblocks_block_failures_total", "Failed block job attempts.", registry=r)
        self.run_failures = Counter(
            "dblocks_run_internal_failures_total",
            "Runs failed by an internal error in their own reconcile step (the loop went on with the others).",
            registry=r,
        )
        self.assembly = Histogram(
            "dblocks_assembly_duration_seconds",
            "Assembly + sampling of a finished run.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.block_step = Gauge("dblocks_block_step", "Latest training step of a running block.", ["block"], registry=r)
        self.block_loss = Gauge("dblocks_block_loss", "Latest training loss of a running block.", ["block"], registry=r)
        self.block_accuracy = Gauge(
            "dblocks_block_accuracy",
            "Classification: latest training accuracy of a running block at its own noise levels.",
            ["block"],
            registry=r,
        )
        self.api_requests = Counter(
            "dblocks_api_requests_total", "HTTP API requests.", ["method", "route", "status"], registry=r
        )
        self.api_latency = Histogram(
            "dblocks_api_request_duration_seconds", "HTTP API latency.", ["method", "route"], registry=r
        )
        self.tick = Histogram(
            "dblocks_reconcile_tick_seconds",
            "Work of one reconcile tick (reading state, admitting, collecting, polling), without its wait for jobs.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.leader = Gauge("dblocks_coordinator_is_leader", "1 while this coordinator holds the lease.", registry=r)
        for state in State:
            self.runs.labels(str(state))
            self.blocks.labels(str(state))

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Start the /metrics HTTP server; returns (server, thread) so callers can stop it."""
        return start_http_server(port, addr=addr, registry=self.registry)
