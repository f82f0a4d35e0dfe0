"""Offline evaluation of a run directory: FD and class accuracy against the held-out test split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from shared.config import Config
from shared.data import data_shape, load_split
from shared.evaluation import (
    MAX_EVAL_EXAMPLES,
    cached_classifier,
    evaluate_samples,
    frechet_distance,
    predict,
    rotation_views,
)
from shared.fid_inception import FIDInception, inception_features, load_fid_inception
from shared.latent import decode_images
from shared.tasks.image_generation.samples import sample_run


def reference_stats(config: Config, cache_dir: Path) -> dict:
    """The classifier (trained on the train split only), the test images, and the scale-setting numbers."""
    d = config.data
    num_classes = data_shape(config).num_classes
    train_x, train_y = load_split(d, "train", limit=MAX_EVAL_EXAMPLES)
    test_x, test_y = load_split(d, "test", limit=MAX_EVAL_EXAMPLES)
    # a latent run is judged on images: its references are the cache's latents decoded by the same VAE
    train_x, test_x = decode_images(config, train_x), decode_images(config, test_x)
    if num_classes == 0:  # no classes: the features of a rotation predictor trained on the train split
        train_x, train_y = rotation_views(train_x[: MAX_EVAL_EXAMPLES // 4])
        test_views, test_y = rotation_views(test_x)
        classifier = cached_classifier(train_x, train_y, num_classes=4, cache_dir=cache_dir)
        test_feats, test_pred = predict(classifier, test_views)
        train_feats, _ = predict(classifier, train_x[: len(train_x) // 4])
        return {
            "classifier": classifier,
            "test_images": test_x,
            "classifier_test_accuracy": float((test_pred == test_y).double().mean()),
            "fd_floor": frechet_distance(train_feats, predict(classifier, test_x)[0]),
            "features": "rotation",
        }
    classifier = cached_classifier(train_x, train_y, num_classes=num_classes, cache_dir=cache_dir)
    test_feats, test_pred = predict(classifier, test_x)
    train_feats, _ = predict(classifier, train_x)
    return {
        "classifier": classifier,
        "test_images": test_x,
        "classifier_test_accuracy": float((test_pred == test_y).double().mean()),
        "fd_floor": frechet_distance(train_feats, test_feats),
        "features": "class",
    }


def evaluate_run(
    run_dir: Path,
    config: Config,
    *,
    num_samples: int,
    seed: int,
    cache_dir: Path,
    weights: str = "ema",
    num_steps: int | None = None,
    cfg_scale: float | None = None,
    inception: Path | None = None,
) -> dict:
    """FD in the dataset's own classifier features and class accuracy; with `inception` (a local FID Inception
    weights file) also standard FID against the held-out split."""
    fid_net = load_fid_inception(inception) if inception else None  # a wrong file fails before any sampling
    ref = reference_stats(config, cache_dir)
    num_classes = data_shape(config).num_classes
    per_class = num_samples if num_classes == 0 else max(1, num_samples // num_classes)  # unconditional: one "class"
    samples, labels = sample_run(
        run_dir, config, num_per_class=per_class, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed, weights=weights
    )
    result = evaluate_samples(ref["classifier"], samples, labels, ref["test_images"])
    if num_classes == 0:
        result["class_accuracy"] = None  # no classes to be right about
    if fid_net is not None:
        result.update(standard_fid(fid_net, Path(inception), samples, ref["test_images"], cache_dir))
    return {
        **result,
        "fd_floor": ref["fd_floor"],
        "classifier_test_accuracy": ref["classifier_test_accuracy"],
        "features": ref["features"],
        "weights": weights,
        "seed": seed,
        "num_steps": num_steps or config.sample.num_steps,
        "cfg_scale": config.sample.cfg_scale if cfg_scale is None else cfg_scale,
        "run_dir": str(run_dir),
    }


def standard_fid(
    net: FIDInception, weights: Path, samples: torch.Tensor, reference: torch.Tensor, cache_dir: Path
) -> dict:
    """FID of `samples` against `reference` in the Inception pool features; the reference's features are cached
    per (weights file, reference images)."""
    weights_sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    images_sha = hashlib.sha256(reference.numpy().tobytes()).hexdigest()
    path = Path(cache_dir) / f"fid-reference-{weights_sha[:16]}-{images_sha[:16]}.pt"
    if path.is_file():
        ref_feats = torch.load(path, weights_only=True)
    else:
        ref_feats = inception_features(net, reference)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ref_feats, path.with_name(f".{path.name}.tmp"))
        path.with_name(f".{path.name}.tmp").replace(path)
    return {
        "fid": frechet_distance(inception_features(net, samples), ref_feats),
        "fid_reference_images": len(reference),
        "inception_weights_sha256": weights_sha,
    }
