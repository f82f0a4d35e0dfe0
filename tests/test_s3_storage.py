"""Checkpoints on S3-compatible storage: a real S3 server (moto's, from PyPI) on loopback, the same pyarrow
filesystem Ray Train writes through, and one real run whose blocks checkpoint, report progress and write
previews to the bucket while the run directory stays local."""

import io
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from coordinator.settings import Settings
from shared.checkpoint import load_manifest
from shared.data.builtin import load_builtin
from shared.storage import Storage, StorageError
from tests.conftest import BUCKET, REPO, TINY


def test_storage_round_trip_on_s3(s3_env, tmp_path):
    storage = Storage.from_uri(f"s3://{BUCKET}/unit")
    assert not storage.is_local and storage.root == f"{BUCKET}/unit"
    path = storage.path("run-block0", "progress.json")
    assert not storage.exists(path)
    storage.write_text(path, '{"step": 1}')
    storage.write_text(path, '{"step": 2}')  # replaced whole
    assert storage.read_text(path) == '{"step": 2}' and storage.exists(path)
    assert storage.list_names(storage.path("run-block0")) == ["progress.json"]
    assert storage.list_names(storage.path("nothing-here")) == []
    storage.download(path, tmp_path / "copy.json")
    assert (tmp_path / "copy.json").read_text() == '{"step": 2}'
    assert storage.ray_storage()["storage_path"] == f"{BUCKET}/unit"


@pytest.mark.parametrize(
    "uri, reason", [("gs://bucket/x", "unsupported storage scheme"), ("s3:///no-bucket", "needs a bucket")]
)
def test_unusable_storage_uris_are_refused_when_settings_are_read(uri, reason):
    with pytest.raises(StorageError, match=reason):
        Settings.from_env({"DBLOCKS_CHECKPOINT_URI": uri})


def test_storage_setting_that_is_a_uri_holds_the_checkpoints_and_runs_stay_local(tmp_path):
    settings = Settings.from_env({"DBLOCKS_STORAGE": f"s3://{BUCKET}/ckpt", "DBLOCKS_RUNS": str(tmp_path)})
    assert settings.checkpoint_uri == f"s3://{BUCKET}/ckpt" and settings.runs_dir == tmp_path


@pytest.mark.slow
def test_a_run_reads_parquet_from_s3_checkpoints_to_s3_and_assembles_locally(tmp_path, ray_env, s3_env):
    """The data is Parquet shards in the bucket, streamed; the checkpoints go to the bucket too."""
    data = Storage.from_uri(f"s3://{BUCKET}/mnist-parquet")
    images, labels = load_builtin("mnist", "train", num_test=1000, split_seed=0)
    pixels = ((images[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    for shard, lo in enumerate(range(0, len(labels), 2000)):
        encoded = []
        for p in pixels[lo : lo + 2000]:
            out = io.BytesIO()
            Image.fromarray(p).save(out, format="PNG")
            encoded.append(out.getvalue())
        table = pa.table({"image": encoded, "label": labels[lo : lo + 2000].numpy()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data.write_bytes(data.path(f"train-{shard:05d}.parquet"), sink.getvalue().to_pybytes())
    run_dir = tmp_path / "run"
    env = {**ray_env, **s3_env, "DBLOCKS_CHECKPOINT_URI": f"s3://{BUCKET}/ckpt"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "train",
            str(TINY),
            "--out",
            str(run_dir),
            "--set",
            "train.steps_per_block=20",
            "--set",
            "train.checkpoint_every_steps=10",
            "--set",
            "train.preview_every_steps=20",
            "--set",
            f"data.source=s3://{BUCKET}/mnist-parquet",
            "--set",
            "data.loader=stream",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]

    manifest = load_manifest(run_dir)  # the run directory is local; its weights were collected from the bucket
    assert [b["steps"] for b in manifest["blocks"]] == [20, 20]
    assert not (run_dir / "checkpoints").exists()
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    assert (resolved["format"], resolved["loader"], resolved["num_classes"], resolved["channels"]) == (
        "parquet",
        "stream",
        10,
        1,
    )
    assert sorted(p.name for p in (run_dir / "previews").iterdir()) == ["block_0_step_20.png", "block_1_step_20.png"]

    run_id = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("run "))
    bucket = Storage.from_uri(f"s3://{BUCKET}/ckpt/{run_id}")
    for index in (0, 1):
        block_dir = bucket.path(f"{run_id}-block{index}")
        assert "progress.json" in bucket.list_names(block_dir) and bucket.list_names(f"{block_dir}/history")
        selector = pafs.FileSelector(block_dir, recursive=True)
        checkpoints = {
            i.path.rsplit("/", 1)[0] for i in bucket.fs.get_file_info(selector) if i.path.endswith("block.safetensors")
        }
        assert len(checkpoints) >= 1, f"no Ray Train checkpoint of block {index} in the bucket"
    assert os.path.getsize(run_dir / manifest["blocks"][0]["file"]) > 0
