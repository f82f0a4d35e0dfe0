"""Your own data: image folders, Parquet shards and NumPy arrays, local and on a real S3 server, read the way
training reads them. Fixtures are written here: MNIST (the built-in digits) as PNG folders and as Parquet shards,
and a small synthetic 32x32 RGB dataset with labels."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from coordinator.api import create_app
from coordinator.cli import app as cli_app
from coordinator.resolver import Resolver
from coordinator.store import Store
from shared.config import load_config, parse_config
from shared.data import DataError, StreamBatches, data_shape, load_split, open_split, train_batches
from shared.data.builtin import load_builtin
from shared.data.stream import shuffled
from shared.job import BlockJob
from shared.plan import block_specs
from shared.tasks import resolve_data
from tests.conftest import BUCKET, REPO, TINY, start_moto
from workers.reporting import ListReporter
from workers.train_block import train_block


def png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) -> PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def mnist_uint8(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_builtin("mnist", split, num_test=1000, split_seed=0)
    return ((images[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy(), labels.numpy()


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    """The built-in split as: a flat PNG folder with metadata.csv (same order), class sub-folders, Parquet shards."""
    root = tmp_path_factory.mktemp("mnist")
    for split in ("train", "test"):
        pixels, labels = mnist_uint8(split)
        flat, classes = root / f"flat-{split}", root / f"classes-{split}"
        flat.mkdir()
        rows = ["file_name,label"]
        for i, (p, y) in enumerate(zip(pixels, labels)):
            data = png(p)
            (flat / f"{i:05d}.png").write_bytes(data)
            rows.append(f"{i:05d}.png,{y}")
            (classes / f"digit{y}").mkdir(parents=True, exist_ok=True)
            (classes / f"digit{y}" / f"{i:05d}.png").write_bytes(data)
        (flat / "metadata.csv").write_text("\n".join(rows) + "\n")
        shards = root / f"parquet-{split}"
        shards.mkdir()
        encoded = [{"bytes": png(p), "path": f"{i}.png"} for i, p in enumerate(pixels)]
        for s, lo in enumerate(range(0, len(labels), 1500)):
            table = pa.table({"image": encoded[lo : lo + 1500], "label": labels[lo : lo + 1500]})
            pq.write_table(table, shards / f"train-{s:05d}.parquet")
    return root


@pytest.fixture(scope="module")
def rgb_files(tmp_path_factory):
    """A synthetic 32x32 RGB dataset with 3 classes (colour = class), as Parquet, .npz and a class folder."""
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    pixels = rng.integers(0, 60, (300, 32, 32, 3)).astype(np.uint8)
    for i, y in enumerate(labels):
        pixels[i, :, :, y] += 150
    pq.write_table(pa.table({"img": [png(p) for p in pixels], "label": labels}), root / "rgb.parquet")
    np.savez(root / "rgb.npz", images=pixels.transpose(0, 3, 1, 2).astype(np.float32) / 64.0, labels=labels)
    for i, (p, y) in enumerate(zip(pixels, labels)):
        (root / "folder" / f"c{y}").mkdir(parents=True, exist_ok=True)
        (root / "folder" / f"c{y}" / f"{i}.png").write_bytes(png(p))
    return root


def config_for(**data) -> object:
    return parse_config({"data": data, "model": {"patch_size": 4}})


# --- reading the same pixels as the built-in source -------------------------------------------------------------


def test_png_folder_reads_the_builtin_pixels_exactly(mnist_files):
    config = resolve_data(
        config_for(source=str(mnist_files / "flat-train"), test_source=str(mnist_files / "flat-test"))
    )
    assert (config.data.channels, config.data.image_size, config.data.num_classes) == (1, 28, 10)
    assert config.data.format == "folder" and config.data.loader == "memory"
    for split in ("train", "test"):
        images, labels = load_split(config.data, split)
        builtin = load_builtin("mnist", split, num_test=1000, split_seed=0)
        assert torch.equal(images, builtin[0]) and torch.equal(labels, builtin[1])


def test_training_from_the_png_folder_equals_training_on_the_builtin(mnist_files, tmp_path):
    """Same pixels, same order, same seed: the same weights, so the same evaluation."""
    overrides = ["train.steps_per_block=6", "train.log_every_steps=3", "train.checkpoint_every_steps=6"]
    builtin = load_config(TINY, overrides)
    folder = resolve_data(
        builtin.with_overrides(
            [f"data.source={mnist_files / 'flat-train'}", f"data.test_source={mnist_files / 'flat-test'}"]
        )
    )
    weights = []
    for config in (builtin, folder):
        spec = block_specs(config)[1]
        job = BlockJob(run_id="eq", config=config, block=spec)
        reporter = ListReporter(tmp_path / config.hash()[:8])
        train_block(job, data=train_batches(config.data, seed=job.seed), reporter=reporter)
        weights.append((reporter.latest_checkpoint / "block.safetensors").read_bytes())
    from safetensors.torch import load

    a, b = (load(w) for w in weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_class_subfolders_label_by_sorted_folder_name(mnist_files):
    config = resolve_data(config_for(source=str(mnist_files / "classes-train"), test_fraction=0.1))
    reader = open_split(config.data, "train")
    assert reader.source.class_names == tuple(f"digit{i}" for i in range(10))
    images, labels = load_split(config.data, "train", limit=50)
    # every image sits under the folder of its label: check one pixel-exact against the built-in
    builtin_images, builtin_labels = load_builtin("mnist", "train", num_test=1000, split_seed=0)
    index = {bytes(img.numpy().tobytes()): int(y) for img, y in zip(builtin_images, builtin_labels)}
    assert all(index[bytes(img.numpy().tobytes())] == int(y) for img, y in zip(images, labels))


def test_fraction_split_is_deterministic_disjoint_and_complete(mnist_files):
    config = resolve_data(config_for(source=str(mnist_files / "parquet-train"), test_fraction=0.2))
    train, test = open_split(config.data, "train"), open_split(config.data, "test")
    assert train.num_examples + test.num_examples == 4000 and 600 < test.num_examples < 1000
    assert not (train.keep & test.keep).any()
    again = open_split(config.data, "test")
    assert (again.keep == test.keep).all()


# --- Parquet, NumPy, RGB, unconditional --------------------------------------------------------------------------


def test_parquet_shards_with_the_hugging_face_image_struct(mnist_files):
    config = resolve_data(
        config_for(source=str(mnist_files / "parquet-train"), test_source=str(mnist_files / "parquet-test"))
    )
    assert config.data.format == "parquet" and config.data.num_classes == 10
    reader = open_split(config.data, "train")
    assert len(reader.shards) == 3 and reader.num_examples == 4000
    images, labels = load_split(config.data, "train")
    builtin = load_builtin("mnist", "train", num_test=1000, split_seed=0)
    assert torch.equal(images, builtin[0]) and torch.equal(labels, builtin[1])


def test_rgb_sources_build_an_rgb_model_and_agree(rgb_files):
    loaded = {}
    for name, extra in (("rgb.parquet", {}), ("folder", {}), ("rgb.npz", {})):
        config = resolve_data(config_for(source=str(rgb_files / name), test_fraction=0.1, **extra))
        assert data_shape(config) == data_shape(config).__class__(3, 32, 3)
        loaded[name] = load_split(config.data, "train")
    parquet, npz = loaded["rgb.parquet"], loaded["rgb.npz"]
    assert torch.equal(parquet[1], npz[1])  # same records, same split
    # PNG pixels p map to p / 127.5 - 1; the arrays are used as stored (p / 64), no rescaling
    assert torch.allclose((parquet[0] + 1) * 127.5 / 64.0, npz[0], atol=1e-4)


def test_numpy_sigma_data_comes_from_the_data_unless_set(rgb_files):
    config = resolve_data(config_for(source=str(rgb_files / "rgb.npz")))
    images, _ = load_split(config.data, "train")
    assert config.noise.sigma_data == pytest.approx(float(images.std()), rel=0.05)
    fixed = resolve_data(parse_config({"data": {"source": str(rgb_files / "rgb.npz")}, "noise": {"sigma_data": 0.7}}))
    assert fixed.noise.sigma_data == 0.7


def test_grayscale_to_rgb_and_resize_options(mnist_files):
    config = resolve_data(
        config_for(
            source=str(mnist_files / "parquet-train"),
            channels=3,
            image_size=16,
            resize="center_crop",
            test_fraction=0.1,
        )
    )
    images, _ = load_split(config.data, "train", limit=4)
    assert images.shape == (4, 3, 16, 16) and torch.equal(images[:, 0], images[:, 1])


def test_unlabelled_folder_is_an_unconditional_model(tmp_path):
    for i in range(40):
        (tmp_path / f"{i}.png").write_bytes(png(np.full((8, 8), i * 5, dtype=np.uint8)))
    config = resolve_data(
        parse_config({"data": {"source": str(tmp_path), "test_fraction": 0.25}}, ["model.patch_size=4"])
    )
    assert data_shape(config).num_classes == 0
    _, labels = load_split(config.data, "train")
    assert (labels == 0).all()  # the null class of a model with no classes


# --- streaming ------------------------------------------------------------------------------------------------


def test_stream_is_deterministic_bounded_and_resumes_exactly(mnist_files):
    config = resolve_data(
        config_for(source=str(mnist_files / "parquet-train"), test_fraction=0.1, loader="stream", shuffle_buffer=64)
    )
    reader = open_split(config.data, "train")
    epoch = [r[2] for r in shuffled(reader, seed=3, epoch=0, buffer_size=64)]
    assert sorted(epoch) == sorted(r[2] for r in reader.records())  # each record exactly once per epoch
    assert epoch == [r[2] for r in shuffled(reader, seed=3, epoch=0, buffer_size=64)]
    assert epoch != [r[2] for r in shuffled(reader, seed=3, epoch=1, buffer_size=64)]

    first = train_batches(config.data, seed=3)
    assert isinstance(first, StreamBatches)
    for _ in range(5):
        first.next_batch(50)
    state = json.loads(json.dumps(first.state_dict()))  # it travels in state.json
    expected = [first.next_batch(50) for _ in range(80)]  # crosses into the next epoch
    resumed = train_batches(config.data, seed=3)
    resumed.load_state_dict(state)
    for (x, y), (rx, ry) in zip(expected, (resumed.next_batch(50) for _ in range(80))):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert resumed.epoch == 1


def test_data_parallel_ranks_read_disjoint_records(mnist_files):
    config = resolve_data(config_for(source=str(mnist_files / "parquet-train"), test_fraction=0.1, loader="stream"))
    seen = []
    for rank in (0, 1):
        batches = train_batches(config.data, seed=0, rank=rank, world_size=2)
        seen.append({bytes(x.numpy().tobytes()) for x in batches.next_batch(100)[0]})
    assert not seen[0] & seen[1]


def test_a_corrupt_record_met_mid_training_fails_naming_it_or_is_skipped(tmp_path):
    good = [png(np.full((8, 8), v, dtype=np.uint8)) for v in range(0, 250, 5)]
    payloads = good[:45] + [b"\x89PNG\r\n\x1a\n broken"] + good[45:]  # past the 32 records validation decodes
    pq.write_table(
        pa.table({"image": payloads, "label": [i % 2 for i in range(len(payloads))]}), tmp_path / "d.parquet"
    )
    pq.write_table(pa.table({"image": good[:4], "label": [0, 1, 0, 1]}), tmp_path / "test.parquet")
    raw = {"source": str(tmp_path / "d.parquet"), "test_source": str(tmp_path / "test.parquet"), "loader": "stream"}
    config = resolve_data(parse_config({"data": {**raw, "shuffle_buffer": 4}}, ["model.patch_size=4"]))
    with pytest.raises(DataError, match=r"d\.parquet#45: corrupt or truncated image"):
        batches = train_batches(config.data, seed=0)
        for _ in range(20):
            batches.next_batch(8)
    skipped = []
    config = config.with_overrides(["data.skip_corrupt=true"])
    batches = train_batches(config.data, seed=0, on_skip=skipped.append)
    for _ in range(20):
        assert batches.next_batch(8)[0].shape == (8, 1, 8, 8)
    assert batches.skipped >= 1 and skipped[0].endswith("#45")


# --- bad data: a clear error before anything starts, nothing written --------------------------------------------


def write_bad(kind: str, root):
    """A source that must be refused, and the words its error must contain."""
    d = root / kind
    d.mkdir()
    if kind == "empty-folder":
        return d, "no PNG or JPEG images"
    if kind == "truncated-image":
        (d / "a.png").write_bytes(png(np.zeros((8, 8), dtype=np.uint8))[:40])
        (d / "b.png").write_bytes(png(np.zeros((8, 8), dtype=np.uint8)))
        return d, "a.png: corrupt or truncated image"
    if kind == "mixed-sizes":
        (d / "a.png").write_bytes(png(np.zeros((8, 8), dtype=np.uint8)))
        (d / "b.png").write_bytes(png(np.zeros((12, 12), dtype=np.uint8)))
        return d, "like the others; images of mixed sizes need data.resize"
    if kind == "label-out-of-range":
        pq.write_table(
            pa.table({"image": [png(np.zeros((8, 8), np.uint8))] * 4, "label": [0, 1, 7, -1]}), d / "x.parquet"
        )
        return d, "label -1 is out of range 0..7"
    if kind == "missing-column":
        pq.write_table(pa.table({"pixels": [png(np.zeros((8, 8), np.uint8))]}), d / "x.parquet")
        return d, "no image column"
    if kind == "non-numeric-array":
        np.savez(d / "x.npz", images=np.array([["a"]]))
        return d / "x.npz", "images must be N x C x H x W"
    if kind == "float-labels":
        pq.write_table(pa.table({"image": [png(np.zeros((8, 8), np.uint8))], "label": [0.5]}), d / "x.parquet")
        return d, "label column 'label' is double; expected integers"
    raise AssertionError(kind)


BAD = ["empty-folder", "truncated-image", "mixed-sizes", "label-out-of-range", "missing-column", "non-numeric-array",
       "float-labels"]  # fmt: skip


@pytest.mark.parametrize("kind", BAD)
def test_bad_data_is_refused_by_train_and_by_the_api_with_nothing_written(kind, tmp_path, redis_client):
    source, words = write_bad(kind, tmp_path)
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "train", str(TINY), "--out", str(out), "--set",
         f"data.source={source}", "--set", "model.patch_size=4"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert not out.exists()

    store = Store(redis_client, prefix=f"t-bad-{kind}")
    resolver = Resolver(roots=(str(tmp_path),))
    client = TestClient(
        create_app(store=store, runs_dir=tmp_path / "runs", api_token="t", ready=lambda: {}, resolver=resolver)
    )
    body = {"data": {"source": str(source)}, "model": {"patch_size": 4}}
    response = client.post("/v1/runs", json=body, headers={"Authorization": "Bearer t"})
    assert response.status_code == 422 and words in response.text, response.text
    assert not redis_client.keys(f"t-bad-{kind}*") and not (tmp_path / "runs").exists()


def test_unreachable_and_denied_s3_sources_are_named(s3_env, monkeypatch):
    with pytest.raises(DataError, match=r"s3://no-such-bucket/x: (does not exist|cannot be)"):
        resolve_data(config_for(source="s3://no-such-bucket/x"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    with pytest.raises(DataError, match=r"s3://bucket/data: cannot be read"):
        resolve_data(config_for(source="s3://bucket/data"))


def test_denied_s3_credentials_are_named_before_anything_is_written(s3_env, monkeypatch, tmp_path):
    """An S3 server that enforces authentication (moto's IAM check from the first request) and keys it does not know:
    resolution says "access denied" and names the source; `dblocks data inspect` and `train` exit 2, nothing written."""
    server, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        with pytest.raises(DataError, match=r"s3://bucket/mnist: access denied \(check AWS_ACCESS_KEY_ID"):
            resolve_data(config_for(source="s3://bucket/mnist"))
        env = {**s3_env, "AWS_ENDPOINT_URL": endpoint, "DBLOCKS_STORAGE": str(tmp_path / "ckpt")}
        for argv in (
            ["data", "inspect", "s3://bucket/mnist"],
            ["train", str(TINY), "--set", "data.source=s3://bucket/mnist", "--out", str(tmp_path / "run")],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "coordinator.cli", *argv],
                capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO, timeout=120,
            )  # fmt: skip
            assert done.returncode == 2 and "s3://bucket/mnist: access denied" in done.stderr, done.stderr
        assert not (tmp_path / "run").exists() and not (tmp_path / "ckpt").exists()
    finally:
        server.kill()
        server.wait()


def test_parquet_shards_on_s3_and_inspect(s3_env, mnist_files, tmp_path):
    import pyarrow.fs as pafs

    from shared.storage import Storage

    storage = Storage.from_uri(f"s3://{BUCKET}/mnist")
    for path in sorted((mnist_files / "parquet-train").iterdir()):
        storage.write_bytes(storage.path(path.name), path.read_bytes())
    assert isinstance(storage.fs, pafs.S3FileSystem)
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "data", "inspect", f"s3://{BUCKET}/mnist", "--set",
         "data.test_fraction=0.1", "--grid", str(tmp_path / "grid.png"), "--sample", "64", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {k: report[k] for k in ("num_examples", "channels", "height", "width", "num_classes")} == {
        "num_examples": 4000, "channels": 1, "height": 28, "width": 28, "num_classes": 10,
    }  # fmt: skip
    assert report["format"] == "parquet" and report["shards"] == 3 and sum(report["class_counts"].values()) > 3000
    assert -1.0 <= report["min"] < report["max"] <= 1.0 and report["read_images_per_s"] > 0
    assert Image.open(tmp_path / "grid.png").size[0] > 0


# --- through Ray: the same path as any run -----------------------------------------------------------------------


def train_and_sample(run_dir, overrides: list[str], num_per_class: int, env: dict) -> dict:
    """`dblocks train` the tiny config with `overrides` through Ray, then `dblocks sample` an .npz; its arrays."""
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "train", str(TINY), "--out", str(run_dir),
         *(a for o in overrides for a in ("--set", o))],
        capture_output=True, text=True, cwd=REPO, timeout=400, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    npz = run_dir.parent / "samples.npz"
    sampled = CliRunner().invoke(  # reads the run directory only: in this process, no CLI start-up
        cli_app, ["sample", str(run_dir), "--num-per-class", str(num_per_class), "--steps", "4", "--out", str(npz)]
    )
    assert sampled.exit_code == 0, sampled.output[-2000:]
    with np.load(npz) as saved:
        return {k: saved[k] for k in saved.files}


@pytest.mark.slow
def test_an_unlabelled_rgb_folder_trains_through_ray_into_an_unconditional_model(ray_env, rgb_files, tmp_path):
    """Parquet on S3 through Ray: tests/test_s3_storage.py; an .npz through Ray: tests/test_ray_integration.py (the
    end-to-end baseline's data). Here: a flat folder of RGB images, no labels."""
    flat = tmp_path / "rgb-flat"
    flat.mkdir()
    for path in (rgb_files / "folder").rglob("*.png"):
        (flat / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    run_dir = tmp_path / "run"
    overrides = ["train.steps_per_block=20", "train.log_every_steps=10", "train.preview_every_steps=10",
                 f"data.source={flat}", "data.test_fraction=0.1", "model.patch_size=8"]  # fmt: skip
    saved = train_and_sample(run_dir, overrides, 3, ray_env)
    config = load_config(run_dir / "config.yaml")
    assert (config.data.num_classes, config.data.channels, config.data.image_size) == (0, 3, 32)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [b["steps"] for b in manifest["blocks"]] == [20, 20]
    samples = Image.open(run_dir / "samples.png")
    assert samples.mode == "RGB"
    assert saved["samples"].shape == (3, 3, 32, 32) and saved["samples"].dtype == np.float32
    assert (saved["labels"] == 0).all()


def test_a_relative_source_is_stored_absolute_for_workers_elsewhere(rgb_files, monkeypatch):
    monkeypatch.chdir(rgb_files)
    config = resolve_data(config_for(source="folder", test_source="folder"))
    assert config.data.source == str(rgb_files / "folder") == config.data.test_source


def test_unlabelled_data_is_evaluated_in_rotation_features(tmp_path):
    """No classes: FD in the features of a network trained to tell the train split's images from their turns."""
    from shared.evaluation import frechet_distance, predict
    from shared.tasks.image_generation.evaluation import reference_stats

    rng = np.random.default_rng(0)
    for i in range(400):  # an asymmetric mark (a corner bar) at random brightness: its turn is learnable
        pixels = np.zeros((12, 12), dtype=np.uint8)
        pixels[1:4, 1:8] = rng.integers(120, 255)
        (tmp_path / f"{i}.png").write_bytes(png(pixels))
    config = resolve_data(
        parse_config({"data": {"source": str(tmp_path), "test_fraction": 0.25}}, ["model.patch_size=4"])
    )
    ref = reference_stats(config, tmp_path / "cache")
    assert ref["features"] == "rotation" and ref["classifier_test_accuracy"] > 0.9
    real = predict(ref["classifier"], ref["test_images"])[0]
    noise = predict(ref["classifier"], torch.rand_like(ref["test_images"]) * 2 - 1)[0]
    assert ref["fd_floor"] < frechet_distance(noise, real)


def test_the_api_reads_data_only_under_its_data_roots(rgb_files, tmp_path, redis_client):
    store = Store(redis_client, prefix="t-roots")
    resolver = Resolver(roots=(str(rgb_files),))
    app = create_app(store=store, runs_dir=tmp_path / "runs", api_token=None, ready=lambda: {}, resolver=resolver)
    client = TestClient(app, base_url="http://localhost")
    for source in ("/etc", f"{rgb_files}/../../etc", "s3://other/x", "file:/etc", "etc", "/etc\x00"):
        response = client.post("/v1/runs", json={"data": {"source": source}})
        assert response.status_code == 422 and "data.source: " in response.text, response.text
        assert "/etc" not in response.json()["detail"][0]["msg"], "a refusal never names what lies at the path"
    # A text corpus can be learnt and sampled back: its source is confined by the same roots.
    response = client.post("/v1/runs", json={"task": "text", "text": {"source": "/etc/passwd"}})
    assert response.status_code == 422 and "text.source: outside the data roots" in response.text
    # So is the checkpoint a run starts from (docs/pretrained.md): a file the service would open and read.
    response = client.post("/v1/runs", json={"init": {"checkpoint": "/etc/passwd"}})
    assert response.status_code == 422 and "init.checkpoint: outside the data roots" in response.text
    assert not redis_client.keys("t-roots*") and not (tmp_path / "runs").exists()
    inside = {"data": {"source": str(rgb_files / "folder"), "test_fraction": 0.1}, "model": {"patch_size": 4}}
    assert client.post("/v1/runs", json=inside).status_code == 201


def test_a_source_path_with_yaml_characters_resolves_as_given(rgb_files, tmp_path):
    odd = tmp_path / "my data #1: rgb"
    odd.mkdir()
    (odd / "x.parquet").write_bytes((rgb_files / "rgb.parquet").read_bytes())
    config = resolve_data(config_for(source=str(odd), test_fraction=0.1))
    assert config.data.source == str(odd) and config.data.num_classes == 3
