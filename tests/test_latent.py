"""Latent space (docs/latent.md): a VAE the user holds encodes an image source once into a cache, training reads the
cache as a source, and whatever a person looks at is decoded by that VAE. A tiny real `AutoencoderKL` (diffusers),
made here, stands in for SD's: the same class, the same config keys, a few thousand weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import AutoencoderKL
from PIL import Image
from typer.testing import CliRunner

import shared.latent.encode as encode_module
from coordinator.cli import app as cli_app
from shared.config import ConfigError, load_config, parse_config
from shared.data import DataError, load_split
from shared.data.decode import Transform
from shared.latent import decode_images, viewable
from shared.latent.encode import EncodeJob, encode_source
from shared.latent.vae import LatentScale, Vae, cached_vae
from shared.tasks import resolve_data

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "tiny.yaml"


def make_vae(folder: Path, *, seed: int = 0, scaling: float = 0.7, shift: float | None = 0.1) -> Path:
    torch.manual_seed(seed)
    model = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=scaling,
        shift_factor=shift,
        mid_block_add_attention=False,
    )
    model.save_pretrained(folder)
    return folder


def make_photos(folder: Path, count: int = 24, size: int = 20) -> Path:
    """RGB photos of two classes in class sub-folders, not square (the encode crops them)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        cls = f"class{i % 2}"
        (folder / cls).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
        pixels[..., i % 2] = 255  # the class shows in one channel
        Image.fromarray(pixels).save(folder / cls / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    return make_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos") / "photos")


def test_the_scale_round_trips_and_matches_the_vaes_own_convention(vae_dir):
    vae = Vae.load(vae_dir)
    assert (vae.scale.scaling, vae.scale.shift, vae.channels, vae.downsample) == (0.7, (0.1,), 4, 2)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    latents = vae.encode(x)
    mean = vae.model.encode(x).latent_dist.mean
    torch.testing.assert_close(latents, (mean - 0.1) * 0.7)  # SD3 / Flux: (z - shift) * scaling
    torch.testing.assert_close(vae.decode(latents), vae.model.decode(mean).sample.clamp(-1, 1))
    per_channel = LatentScale.from_config({"scaling_factor": 0.5, "latents_mean": [1, 2, 3, 4], "latents_std": [2] * 4})
    z = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(per_channel.from_latent(per_channel.to_latent(z)), z)
    torch.testing.assert_close(per_channel.to_latent(z)[:, 1], (z[:, 1] - 2) * 0.5 / 2)


def test_encode_then_the_cache_is_a_source_with_its_vae(vae_dir, photos, tmp_path):
    out = tmp_path / "latents"
    manifest = encode_source(EncodeJob(source=str(photos), image_size=16, flip=True, batch_size=5), Vae.load(vae_dir),
                             out)  # fmt: skip
    assert manifest["num_records"] == 48 and manifest["shape"] == [4, 8, 8] and manifest["group"] == 2
    assert manifest["class_names"] == ["class0", "class1"] and manifest["vae"]["sha256"] == Vae.load(vae_dir).sha256
    config = resolve_data(parse_config({"data": {"source": str(out), "test_fraction": 0.25}}))
    d = config.data
    assert (d.format, d.channels, d.image_size, d.num_classes) == ("latents", 4, 8, 2)
    assert d.vae == str(vae_dir) and d.vae_sha256 == manifest["vae"]["sha256"]  # from the manifest (a local run)
    train, _ = load_split(d, "train")
    test, _ = load_split(d, "test")
    assert len(train) + len(test) == 48 and len(test) % 2 == 0  # an image and its mirror stay in one split
    part = np.load(out / manifest["parts"][0]["file"])
    first = torch.from_numpy(part["images"][:2])
    # a record and its mirror: the mirrored image's latent, not a mirrored latent (the VAE is not equivariant)
    first_file = sorted((photos / "class0").iterdir())[0]
    crop = torch.from_numpy(Transform(3, 16, "center_crop")(first_file.read_bytes(), "first"))[None]
    torch.testing.assert_close(first[:1], Vae.load(vae_dir).encode(crop), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(first[1:2], Vae.load(vae_dir).encode(crop.flip(-1)), atol=1e-5, rtol=1e-4)


def test_a_killed_encode_resumes_and_keeps_the_parts_it_wrote(vae_dir, photos, tmp_path, monkeypatch):
    monkeypatch.setattr(encode_module, "PART_RECORDS", 4)
    job = EncodeJob(source=str(photos), image_size=16, batch_size=4)
    whole = tmp_path / "whole"
    encode_source(job, Vae.load(vae_dir), whole)

    class Killed(Exception):
        pass

    def kill_after(done, total):
        if done >= 10:
            raise Killed

    cut = tmp_path / "cut"
    with pytest.raises(Killed):
        encode_source(job, Vae.load(vae_dir), cut, progress=kill_after)
    assert not (cut / "latents.json").exists()  # not a source until every part is written
    kept = {p.name: p.stat().st_mtime_ns for p in cut.glob("part-*.npz")}
    assert len(kept) == 2
    manifest = encode_source(job, Vae.load(vae_dir), cut)
    assert {p: (cut / p).stat().st_mtime_ns for p in kept} == kept  # not encoded again
    assert manifest["parts"] == json.loads((whole / "latents.json").read_text())["parts"]
    for part in manifest["parts"]:
        a, b = np.load(cut / part["file"]), np.load(whole / part["file"])
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    other = make_vae(tmp_path / "other-vae", seed=1)
    with pytest.raises(DataError, match="holds an encode with another vae; use a new --out folder"):
        encode_source(job, Vae.load(other), cut)


@pytest.fixture(scope="module")
def cache(vae_dir, photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "latents"
    encode_source(EncodeJob(source=str(photos), image_size=16), Vae.load(vae_dir), out)
    return out


def test_a_vae_that_does_not_fit_is_refused_before_training(vae_dir, cache, photos, tmp_path):
    other = make_vae(tmp_path / "other-vae", seed=1)
    with pytest.raises(DataError, match=r"data.vae .*other-vae: its sha256 is .* the latents were encoded by"):
        resolve_data(parse_config({"data": {"source": str(cache), "vae": str(other)}}))
    with pytest.raises(DataError, match="4 channels, data.channels is 3"):
        resolve_data(parse_config({"data": {"source": str(cache), "channels": 3}}))
    with pytest.raises(ConfigError, match="model.patch_size 7 does not divide the image size 8"):
        resolve_data(load_config(TINY, [f"data.source={cache}"]))  # 8x8 latents, 7x7 patches
    with pytest.raises(DataError, match="data.image_size: with data.vae and a source of images, the side in pixels"):
        resolve_data(parse_config({"data": {"source": str(photos), "vae": str(vae_dir)}}))
    with pytest.raises(DataError, match="the VAE downsamples by 2; use a multiple of it"):
        encode_source(EncodeJob(source=str(cache), image_size=15), Vae.load(vae_dir), tmp_path / "x")


def test_a_latent_run_trains_and_shows_decoded_images_and_needs_its_vae(vae_dir, cache, tmp_path):
    """Trained for a few steps in this process (no Ray), assembled as the service does: samples, the trajectory and
    the CLI's samples are images of the VAE's shape, not latents; without the VAE, sampling says what is missing."""
    from benchmarks.local_run import main as local_run
    from shared.pictures import write_trajectory
    from shared.tasks.image_generation.samples import write_samples_png
    from shared.tasks.outputs import outputs_for

    vae_copy = tmp_path / "vae"
    shutil.copytree(vae_dir, vae_copy)
    run = tmp_path / "run"
    sets = [f"data.source={cache}", f"data.vae={vae_copy}", "model.patch_size=2", "train.steps_per_block=3"]
    code = local_run([str(TINY), "--out", str(run), "--device", "cpu", "--num-samples", "0",
                      *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert code == 0
    config = load_config(run / "config.yaml")
    assert config.data.vae == str(vae_copy) and config.data.channels == 4
    samples, labels = outputs_for(config).sample_images(run, config, num_per_class=2)
    assert samples.shape == (4, 3, 16, 16) and samples.abs().max() <= 1  # decoded: RGB at the images' size
    manifest = json.loads((run / "manifest.json").read_text())
    for picture in (write_samples_png(run, config), write_trajectory(run, config, manifest)):  # as at assembly
        assert Image.open(picture).mode == "RGB"
    result = CliRunner().invoke(cli_app, ["sample", str(run), "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert viewable(config, torch.zeros(2, 4, 8, 8)).shape == (2, 3, 16, 16)  # a worker's preview, decoded
    shutil.rmtree(vae_copy)
    cached_vae.cache_clear()
    with pytest.raises(DataError, match=r"no such folder .* its samples need it to be decoded"):
        decode_images(config, torch.zeros(1, 4, 8, 8))
    result = CliRunner().invoke(cli_app, ["sample", str(run), "--out", str(tmp_path / "t.png")])
    assert result.exit_code == 2 and "its samples need it to be decoded" in result.output
    assert viewable(config, torch.zeros(2, 4, 8, 8)).shape == (2, 3, 8, 8)  # a preview never fails the block


def test_the_encode_command_reports_the_cache(vae_dir, photos, tmp_path):
    out = tmp_path / "cli-latents"
    args = ["data", "encode", str(photos), "--vae", str(vae_dir), "--out", str(out), "--size", "16", "--json"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["num_records"] == 24 and report["shape"] == [4, 8, 8] and report["cache_bytes"] > 24 * 4 * 64 * 4
    result = CliRunner().invoke(cli_app, [*args[:4], str(tmp_path / "nowhere"), *args[5:]])
    assert result.exit_code == 2 and "--vae" in result.output and "no such folder" in result.output


def test_the_shipped_latent_config_plans_on_an_encoded_cache(cache):
    from shared.plan import plan_json

    config = resolve_data(load_config(ROOT / "configs" / "shapes_latent.yaml", [f"data.source={cache}"]))
    assert (config.data.channels, config.data.image_size, config.model.patch_size) == (4, 8, 2)
    assert len(plan_json(config)["blocks"]) == 3 and config.data.vae_sha256 is not None


def test_the_benchmark_vae_trains_and_loads_with_its_measured_scale(tmp_path, capsys):
    """benchmarks/train_vae.py (a few steps here): a diffusers folder the encoder reads, whose scaling factor gives
    its training latents unit std."""
    from benchmarks.make_shapes import draw_shape
    from benchmarks.train_vae import main as train_vae

    rng = np.random.default_rng(0)
    for i in range(12):
        (tmp_path / "shapes" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        draw_shape(("circle", "cross")[i % 2], rng, 16).save(tmp_path / "shapes" / f"c{i % 2}" / f"{i}.png")
    assert train_vae([str(tmp_path / "shapes"), "--out", str(tmp_path / "vae"), "--size", "16", "--steps", "2",
                      "--batch-size", "4", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["latent_shape"] == [4, 4, 4] and report["test_reconstruction"]["mse"] > 0
    vae = Vae.load(tmp_path / "vae")
    assert vae.downsample == 4 and vae.scale.scaling == pytest.approx(report["scaling_factor"])


def test_a_service_caller_names_a_vae_under_the_data_roots(vae_dir, cache, photos, tmp_path, redis_client,
                                                           monkeypatch):  # fmt: skip
    """Over the API the VAE is a path like any other: confined to the roots, never taken from a manifest (which a
    caller may have written), and bounded in size; the run records the VAE's sha256."""
    from fastapi.testclient import TestClient

    import shared.latent.vae as vae_module
    from coordinator.api import create_app
    from coordinator.resolver import Resolver
    from coordinator.store import Store

    root = tmp_path / "data"
    shutil.copytree(cache, root / "latents")
    shutil.copytree(vae_dir, root / "vae")
    shutil.copytree(photos, root / "photos")
    store = Store(redis_client, prefix="t-latent")
    app = create_app(store=store, runs_dir=tmp_path / "runs", api_token=None, ready=lambda: {},
                     resolver=Resolver(roots=(str(root),), latent_cache=str(tmp_path / "svc-cache")))  # fmt: skip
    client = TestClient(app, base_url="http://localhost")
    data = {"source": str(root / "latents"), "test_fraction": 0.25}
    model = {"patch_size": 2, "num_layers": 3, "hidden_size": 32, "num_heads": 2}
    refused = {
        str(vae_dir): "data.vae: outside the data roots",  # where the manifest says it is: outside
        None: "name that VAE's folder (under the data roots) in data.vae",
    }
    for vae, message in refused.items():
        response = client.post("/v1/runs", json={"data": {**data, "vae": vae}, "model": model})
        assert response.status_code == 422 and message in response.text, response.text
    assert not redis_client.keys("t-latent*")
    response = client.post("/v1/runs", json={"data": {**data, "vae": str(root / "vae")}, "model": model})
    assert response.status_code == 201, response.text
    stored = parse_config(yaml.safe_load(store.get_run(response.json()["id"]).config_yaml))
    assert stored.data.vae == str(root / "vae") and stored.data.vae_sha256 == Vae.load(root / "vae").sha256
    # photos and a VAE: the service encodes them, into a cache in its own folder (not one the caller names)
    photos_run = {"source": str(root / "photos"), "vae": str(root / "vae"), "image_size": 16, "resize": "center_crop",
                  "test_fraction": 0.25}  # fmt: skip
    response = client.post("/v1/runs", json={"data": photos_run, "model": model})
    assert response.status_code == 201, response.text
    stored = parse_config(yaml.safe_load(store.get_run(response.json()["id"]).config_yaml)).data
    assert Path(stored.source).parent == tmp_path / "svc-cache" and stored.encoded_from == str(root / "photos")
    response = client.post("/v1/runs", json={"data": {**photos_run, "encoded_from": "/etc", "encoded_size": 16},
                                             "model": model})  # fmt: skip
    assert response.status_code == 422 and "data.encoded_from: outside the data roots" in response.text
    monkeypatch.setattr(vae_module, "MAX_VAE_BYTES", 1000)
    with pytest.raises(DataError, match="bytes of config and weights, more than a VAE's 1,000"):
        Vae.load(vae_dir)


def test_the_pixel_vs_latent_benchmark_runs_end_to_end(tmp_path):
    """`python -m benchmarks.latent --quick`: every stage (shapes, VAE, encode, both trainings, one judge) on a
    few images and steps; both models see 64 tokens, both are judged on 64 px RGB images."""
    from benchmarks.latent import main as latent_bench

    out = tmp_path / "latent.json"
    assert latent_bench(["--quick", "--work", str(tmp_path / "work"), "--per-class", "8", "--vae-steps", "2",
                         "--num-samples", "8", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["encode"]["images"] == 32 and report["encode"]["bytes_per_image"] > 4 * 16 * 16 * 4
    assert {r["tokens"] for r in report["runs"].values()} == {64}
    assert all(r["eval"]["num_samples"] == 8 and r["eval"]["fd"] > 0 for r in report["runs"].values())
    assert report["vae_floor"]["num_samples"] == 6 and report["vae_floor"]["mse"] > 0
    from benchmarks.latent import dit_xl2_memory

    cases = {(c["case"], c["batch"]): c for c in dit_xl2_memory()["cases"]}
    assert cases["end_to_end", 32]["params"] == pytest.approx(675e6, rel=0.005)  # DiT-XL/2 as the paper counts it
    assert 3.5 < cases["end_to_end", 32]["total_bytes"] / cases["block", 32]["total_bytes"] < 4.1


def test_a_cache_that_lies_is_refused_naming_the_file(vae_dir, cache, tmp_path):
    """A latents.json or a part that does not hold what it says fails with the file named, before or while
    training (never a pickle loaded, never a path outside the folder read)."""

    def broken(edit) -> Path:
        folder = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        shutil.copytree(cache, folder)
        edit(folder, json.loads((folder / "latents.json").read_text()))
        return folder

    def write(folder: Path, manifest: dict) -> None:
        (folder / "latents.json").write_text(json.dumps(manifest))

    lying = {
        "records that add up to another count": lambda f, m: write(f, {**m, "num_records": 99}),
        "a part outside the folder": lambda f, m: write(f, {**m, "parts": [{"file": "../x.npz", "records": 1}]}),
        "another format": lambda f, m: write(f, {**m, "format": "other"}),
        "not JSON": lambda f, m: (f / "latents.json").write_text("{"),
    }
    messages = ["24 records in its parts, num_records says 99", "'parts' must list", "not a latent cache of format",
                "latents.json: not JSON"]  # fmt: skip
    for (what, edit), message in zip(lying.items(), messages):
        with pytest.raises(DataError, match=message):
            resolve_data(parse_config({"data": {"source": str(broken(edit)), "vae": str(vae_dir)}}))

    def pickled(folder: Path, manifest: dict) -> None:
        part = folder / manifest["parts"][0]["file"]
        objects = np.empty(manifest["parts"][0]["records"], dtype=object)
        np.savez(part, images=objects, labels=np.zeros(len(objects), dtype=np.int64))

    with pytest.raises(DataError, match=r"part-00000-0000.npz: not a readable latent part .*pickle"):
        resolve_data(parse_config({"data": {"source": str(broken(pickled)), "vae": str(vae_dir)}}))


def test_a_run_on_images_and_a_vae_is_encoded_once_by_its_first_job(vae_dir, photos, tmp_path, monkeypatch):
    """Images and data.vae: the run's data is a cache named by what it depends on, in the service's folder, built by
    the first job that reads it while the others wait (one encode for two blocks started together), shared by
    every run on the same images and VAE."""
    import threading

    import shared.latent.cache as cache_module

    monkeypatch.setattr(cache_module, "_ROOT", [tmp_path / "cache"])
    encodes = []
    real = cache_module.encode_source
    monkeypatch.setattr(cache_module, "encode_source", lambda *a, **k: encodes.append(1) or real(*a, **k))
    data = {"source": str(photos), "vae": str(vae_dir), "image_size": 16, "resize": "center_crop", "flip": True,
            "test_fraction": 0.25}  # fmt: skip
    config = resolve_data(parse_config({"data": data, "model": {"patch_size": 2}}))
    d = config.data
    assert (d.format, d.channels, d.image_size, d.num_classes, d.encoded_size) == ("latents", 4, 8, 2, 16)
    assert Path(d.source).parent == tmp_path / "cache" and d.encoded_from == str(photos)
    assert config.noise.sigma_data == 1.0 and not Path(d.source).exists()  # nothing encoded at submit
    assert resolve_data(config).model_dump() == config.model_dump()  # a resolved config resolves to itself
    splits = []
    readers = [threading.Thread(target=lambda: splits.append(load_split(d, "train"))) for _ in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert len(encodes) == 1 and len(splits) == 2 and torch.equal(splits[0][0], splits[1][0])
    assert len(splits[0][0]) + len(load_split(d, "test")[0]) == 48  # 24 images and their mirrors
    other = resolve_data(parse_config({"data": data, "model": {"patch_size": 2, "num_layers": 6}}))
    assert other.data.source == d.source  # another run on the same images and VAE: the same cache
    unflipped = resolve_data(parse_config({"data": {**data, "flip": False}, "model": {"patch_size": 2}}))
    assert unflipped.data.source != d.source


@pytest.mark.slow
def test_dblocks_train_on_a_photo_folder_and_a_vae_encodes_on_a_worker_and_samples_images(
    vae_dir, photos, tmp_path, ray_env
):
    """Through Ray as a user runs it: `dblocks train` on photos with data.vae; a block job builds the cache (the
    other waits for it), both train on the latents, and the run's samples are decoded RGB images."""
    import subprocess
    import sys

    cache_root = tmp_path / "latent-cache"
    run_dir = tmp_path / "run"
    sets = [f"data.source={photos}", f"data.vae={vae_dir}", "data.image_size=16", "data.resize=center_crop",
            "data.test_fraction=0.25", "model.patch_size=2", "train.steps_per_block=3"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "train", str(TINY), "--out", str(run_dir),
         *(a for s in sets for a in ("--set", s))],
        capture_output=True, text=True, cwd=ROOT, timeout=400,
        env={**ray_env, "DBLOCKS_LATENT_CACHE": str(cache_root)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = load_config(run_dir / "config.yaml")
    (cache,) = [p for p in cache_root.iterdir() if p.is_dir()]
    assert config.data.source == str(cache) and config.data.encoded_from == str(photos)
    assert json.loads((cache / "latents.json").read_text())["num_records"] == 24
    with Image.open(run_dir / "samples.png") as samples:
        assert samples.mode == "RGB"
    assert np.load(cache / "part-00000-0000.npz")["images"].shape[1:] == (4, 8, 8)
