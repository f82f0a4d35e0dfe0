"""Standard FID from a local Inception weights file: the network's shape, loading and refusing files, the cached
reference, and `dblocks eval --inception` end to end on a tiny run trained without Ray.

The real FID weights are not on this machine (nothing is downloaded); a file of this network's own randomly
initialised tensors stands in: everything but the numbers' meaning is the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from shared.fid_inception import FEATURES, FIDInception, WeightsError, inception_features, load_fid_inception
from shared.tasks.image_generation.evaluation import standard_fid
from tests.conftest import REPO, TINY


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Random tensors, with batch-norm statistics measured on random images (else features vanish with depth)."""
    torch.manual_seed(0)
    model = FIDInception()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running statistics = this batch's
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 299, 299) * 2 - 1)
    path = tmp_path_factory.mktemp("fid") / "pt_inception-test.pth"
    torch.save(model.state_dict(), path)
    return path


def test_the_network_has_the_fid_inception_shape():
    """torchvision's Inception-v3 without its auxiliary head has 23,834,568 parameters with 1,000 logits; the FID
    graph has 1,008 (8 x 2,049 more). Its tensors carry the names the published weights use."""
    model = FIDInception()
    assert sum(p.numel() for p in model.parameters()) == 23_834_568 + 8 * 2_049
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1) and shapes["fc.weight"] == (1008, 2048)


def test_features_of_grey_and_rgb_images_of_any_size(weights_file):
    model = load_fid_inception(weights_file)
    grey = torch.rand(3, 1, 28, 28) * 2 - 1
    feats = inception_features(model, grey)
    assert feats.shape == (3, FEATURES) and feats.dtype == torch.float64 and torch.isfinite(feats).all()
    same = inception_features(model, grey.expand(-1, 3, -1, -1).contiguous())  # grey is repeated to RGB
    assert torch.allclose(feats, same)
    assert inception_features(model, torch.rand(2, 3, 64, 64) * 2 - 1).shape == (2, FEATURES)


def test_files_that_are_not_the_weights_are_refused_by_name(tmp_path, weights_file):
    with pytest.raises(WeightsError, match="no such weights file"):
        load_fid_inception(tmp_path / "absent.pth")
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(WeightsError, match="text.pth: not a torch state dict"):
        load_fid_inception(tmp_path / "text.pth")
    state = torch.load(weights_file, weights_only=True)
    del state["Mixed_5b.branch1x1.conv.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"1 tensors missing, e.g. \['Mixed_5b.branch1x1.conv.weight'\]"):
        load_fid_inception(tmp_path / "missing.pth")
    state = torch.load(weights_file, weights_only=True)
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head: not the FID graph
    torch.save(state, tmp_path / "imagenet.pth")
    with pytest.raises(WeightsError, match=r"fc.weight has shape \(1000, 2048\), expected \(1008, 2048\)"):
        load_fid_inception(tmp_path / "imagenet.pth")


def test_fid_is_zero_for_the_reference_itself_and_its_features_are_cached(weights_file, tmp_path):
    model = load_fid_inception(weights_file)
    reference = torch.rand(6, 1, 28, 28) * 2 - 1
    same = standard_fid(model, weights_file, reference, reference, tmp_path)
    cached = list(tmp_path.glob("fid-reference-*.pt"))
    assert len(cached) == 1 and same["fid_reference_images"] == 6
    other = standard_fid(model, weights_file, -reference, reference, tmp_path)
    assert list(tmp_path.glob("fid-reference-*.pt")) == cached
    # zero up to the square root's rounding in 2,048 dimensions from 6 images
    assert other["fid"] > 0 and abs(same["fid"]) < 1e-3 * other["fid"], (same, other)


def test_dblocks_eval_reports_fid_with_a_weights_file_and_refuses_a_bad_one(weights_file, tmp_path):
    """A tiny unlabelled run (40 RGB arrays, a quarter held out) trained without Ray; eval with and without weights."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", images=rng.uniform(-1, 1, (40, 3, 8, 8)).astype(np.float32))
    run_dir = tmp_path / "run"
    overrides = [f"data.source={tmp_path / 'tiny.npz'}", "data.test_fraction=0.25", "model.patch_size=4",
                 "train.steps_per_block=2", "train.log_every_steps=1", "train.preview_every_steps=0"]  # fmt: skip
    env = {"DBLOCKS_CACHE": str(tmp_path / "cache")}
    trained = subprocess.run(
        [sys.executable, "benchmarks/local_run.py", str(TINY), "--out", str(run_dir), "--device", "cpu",
         "--num-samples", "0", *(a for o in overrides for a in ("--set", o))],
        capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, **env},
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]

    def evaluate(*extra):
        return subprocess.run(
            [sys.executable, "-m", "coordinator.cli", "eval", str(run_dir), "--num-samples", "10", "--steps", "2",
             "--json", *extra],
            capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, **env},
        )  # fmt: skip

    refused = evaluate("--inception", str(tmp_path / "tiny.npz"))
    assert refused.returncode == 2 and "--inception:" in refused.stderr and "not a torch state dict" in refused.stderr
    assert not (run_dir / "eval.json").exists()
    done = evaluate("--inception", str(weights_file))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["fid"] >= 0 and 0 < result["fid_reference_images"] < 40 and result["num_samples"] == 10
    assert json.loads((run_dir / "eval.json").read_text())["fid"] == result["fid"]
