"""A hostile caller against a real `dblocks serve` (real redis-server, real local Ray), as it runs by default: no
token (bound to loopback), no DBLOCKS_DATA_ROOTS (so only ./data of its working directory). Every request below
names data it must not read, or data built to exhaust it; each is refused (422 naming the field, or 421), the
service's memory stays where it was, it stays ready, nothing is left behind, and a real run afterwards trains."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import zipfile
import zlib

import httpx
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tests.conftest import TINY, free_port, start_ray_head, stop_ray_head

pytestmark = pytest.mark.slow

MAX_RSS_GROWTH = 200 * 2**20
CHUNK = 1 << 24


def deflated(data: bytes) -> bytes:
    """Raw deflate of `data`, fully flushed: such pieces concatenate into one valid stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


class RepeatedZeros:
    """A compressor for zipfile that deflates each 16 MiB of zeros once and repeats it: 10 GiB in seconds."""

    zeros = bytes(CHUNK)
    piece = deflated(zeros)

    def compress(self, data: bytes) -> bytes:
        return self.piece if data == self.zeros else deflated(data)

    def flush(self) -> bytes:
        return zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def zip_bomb(path, inflated_bytes: int) -> None:
    """An .npz of ~10 MB whose one float32 array inflates to `inflated_bytes`."""
    count = inflated_bytes // (28 * 28 * 4)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (count, 1, 28, 28)})
    original, zipfile._get_compressor = zipfile._get_compressor, lambda *a, **k: RepeatedZeros()
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open("images.npy", "w", force_zip64=True) as member:
                member.write(header.getvalue())
                left = count * 28 * 28 * 4
                while left > 0:
                    member.write(RepeatedZeros.zeros if left >= CHUNK else bytes(left))
                    left -= CHUNK
    finally:
        zipfile._get_compressor = original


def billion_row_parquet(path) -> None:
    """A few MB of Parquet whose footer counts 10^9 rows (null images and labels, 100 row groups)."""
    table = pa.table({"image": pa.nulls(10_000_000, pa.binary()), "label": pa.nulls(10_000_000, pa.int64())})
    with pq.ParquetWriter(path, table.schema) as writer:
        for _ in range(100):
            writer.write_table(table, row_group_size=10_000_000)


@pytest.fixture(scope="module")
def service(tmp_path_factory, redis_url):
    workdir = tmp_path_factory.mktemp("hostile")
    head, address = start_ray_head()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBLOCKS_")}
    env |= {
        "REDIS_URL": redis_url,
        "RAY_ADDRESS": address,
        "RAY_AUTH_MODE": "disabled",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        "DBLOCKS_STORAGE": str(workdir / "runs"),
        "DBLOCKS_KEY_PREFIX": "t-hostile",
        "DBLOCKS_METRICS_PORT": "0",
        "DBLOCKS_POLL_S": "0.3",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=open(workdir / "serve.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (workdir / "serve.log").read_text()[-3000:]
        time.sleep(0.5)
    try:
        yield client, proc, workdir
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop_ray_head(head)


def hostile_requests(data, outside) -> list[tuple[str, dict, str]]:
    """(what, config, what the refusal must say: at least the field) for each attack."""
    text = {"task": "text", "blocks": {"num_blocks": 1}}
    unmeasured_bomb = {"source": f"{data}/bomb.npz", "memory_limit_mb": 200_000}  # passes the measure: the limit
    return [
        ("/etc/passwd as a corpus", {**text, "text": {"source": "/etc/passwd", "seq_len": 16}}, "text.source"),
        ("file: scheme", {**text, "text": {"source": "file:/etc/passwd", "seq_len": 16}}, "text.source"),
        ("file:// under a root", {"data": {"source": f"file://{data}/../../etc"}}, "data.source"),
        (".. out of the root", {"data": {"source": f"{data}/../../../etc/passwd"}}, "data.source"),
        ("relative path", {"data": {"source": "etc/passwd"}}, "data.source"),
        ("NUL byte", {"data": {"source": f"{data}/x\x00.npz"}}, "data.source"),
        ("s3 with ..", {"data": {"source": "s3://bucket/data/../x"}}, "data.source"),
        ("symlink to a file outside", {**text, "text": {"source": f"{data}/passwd.txt", "seq_len": 16}}, "text.source"),
        ("symlink inside a folder", {"data": {"source": f"{data}/images"}}, "data.source"),
        ("a sibling folder", {"data": {"source": f"{outside}/x.npz"}}, "data.source"),
        ("10 GiB inside 10 MB", {"data": {"source": f"{data}/bomb.npz"}}, "data.source: "),
        ("... refused by its header", {"data": {"source": f"{data}/bomb.npz"}}, "inflates to 10,737,"),
        ("the bomb past its measure", {"data": unmeasured_bomb}, "data.source: reading the source needs more than"),
        ("10^9 rows in the footer", {"data": {"source": f"{data}/rows.parquet"}}, "data.source: "),
        ("... refused by the footer", {"data": {"source": f"{data}/rows.parquet"}}, "1,000,000,000 rows; one source"),
        ("100,000 classes", {"data": {"num_classes": 100_000}}, "num_classes"),
        ("text evaluation too large", {**text, "text": {"eval_max_samples": 10_000_000, "seq_len": 8192}}, "text"),
    ]  # fmt: skip


def test_hostile_data_is_refused_and_the_service_is_unharmed(service):
    client, proc, workdir = service
    data, outside = workdir / "data", workdir / "outside"
    assert data.is_dir(), "the service creates its default data root"
    outside.mkdir()
    np.savez(outside / "x.npz", images=np.zeros((8, 1, 8, 8), np.float32))
    (data / "passwd.txt").symlink_to("/etc/passwd")
    (data / "images").mkdir()
    Image.new("L", (28, 28)).save(data / "images" / "a.png")
    (data / "images" / "b.png").symlink_to("/etc/passwd")
    zip_bomb(data / "bomb.npz", 10 * 2**30)
    assert (data / "bomb.npz").stat().st_size < 12 * 2**20
    billion_row_parquet(data / "rows.parquet")

    server = psutil.Process(proc.pid)
    assert client.get("/v1/runs").json() == []
    baseline, peak, done = server.memory_info().rss, [0], threading.Event()

    def watch_memory():
        while not done.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    try:
        for index, (what, config, expected) in enumerate(hostile_requests(data, outside)):
            response = client.post("/v1/runs", json=config, headers={"Idempotency-Key": f"hostile-{index}"})
            assert response.status_code == 422, (what, response.text)
            message = " ".join(str(item["loc"]) + item["msg"] for item in response.json()["detail"])
            assert expected in message, (what, message)
            assert "root:" not in message, (what, "the file's content came back")
            assert client.get("/readyz").status_code == 200, what
        foreign = client.get("/v1/runs", headers={"Host": "evil.example:8000"})
        assert foreign.status_code == 421, foreign.text
    finally:
        done.set()
        watcher.join()
    growth = max(peak[0], server.memory_info().rss) - baseline
    assert growth < MAX_RSS_GROWTH, f"the coordinator's RSS grew {growth / 2**20:.0f} MiB over the batch"
    assert client.get("/v1/runs").json() == [], "a refused request left a run record"
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir()), "a refused request left files"

    # A real run afterwards, on data inside the root: confined, resolved, trained on Ray, assembled.
    rng = np.random.default_rng(0)
    np.savez(
        data / "latents.npz", images=rng.normal(0, 1, (40, 1, 16, 16)).astype(np.float32), labels=np.arange(40) % 2
    )
    config = yaml.safe_load(TINY.read_text())
    config["model"]["patch_size"] = 8
    config["train"]["steps_per_block"] = 20
    config["data"] = {"source": str(data / "latents.npz"), "test_fraction": 0.1}
    response = client.post("/v1/runs", json=config)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    deadline = time.monotonic() + 300
    while (state := client.get(f"/v1/runs/{run_id}").json()["state"]) not in ("SUCCEEDED", "FAILED", "CANCELLED"):
        assert time.monotonic() < deadline, (workdir / "serve.log").read_text()[-3000:]
        time.sleep(1)
    assert state == "SUCCEEDED", (workdir / "serve.log").read_text()[-3000:]
