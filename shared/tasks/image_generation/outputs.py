"""What a finished image-generation run leaves (samples.png, the pictures) and how it is evaluated (Frechet
distance and class accuracy of its samples against the held-out split; standard FID with a local Inception file)."""

from __future__ import annotations

from pathlib import Path

from shared.config import Config
from shared.pictures import write_pictures
from shared.pretrained import describe
from shared.tasks.base import EvalOptions
from shared.tasks.image_generation.bench import QUALITY
from shared.tasks.image_generation.evaluation import evaluate_run
from shared.tasks.image_generation.samples import sample_run, write_samples_png
from shared.tasks.image_generation.task import precond_of


class ImageGenerationOutputs:
    name = "image_generation"
    quality = QUALITY

    def write_artefacts(self, run_dir: Path, config: Config, manifest, storage, run_id, blocks, model) -> str:
        png = write_samples_png(run_dir, config, model=model)
        write_pictures(run_dir, config, manifest, storage, run_id, blocks, denoiser=model)
        return f"samples in {png}"

    def evaluate(self, run_dir: Path, config: Config, options: EvalOptions) -> dict:
        if options.num_samples < 10:
            raise ValueError(f"--num-samples {options.num_samples}: need at least one sample per class")
        result = evaluate_run(
            run_dir,
            config,
            inception=options.inception,
            num_samples=options.num_samples,
            seed=options.seed,
            weights=options.weights,
            num_steps=options.num_steps,
            cache_dir=options.cache_dir,
        )
        # which noise axis the blocks denoise on, and which network they started from (None: random)
        return {**result, "axis": config.noise.axis, "precond": precond_of(config), "init": describe(config)}

    def sample_images(self, run_dir: Path, config: Config, **params):
        return sample_run(run_dir, config, **params)

    def summary(self, result: dict, options: EvalOptions) -> str:
        accuracy = "n/a" if result["class_accuracy"] is None else format(result["class_accuracy"], ".3f")
        fid = f"  FID {result['fid']:.2f} (Inception)" if "fid" in result else ""
        return (
            f"FD {result['fd']:.2f} (floor {result['fd_floor']:.2f}, {result['features']} features)  class accuracy "
            f"{accuracy}  ({result['num_samples']} samples, feature network test accuracy "
            f"{result['classifier_test_accuracy']:.3f})" + fid + started_from(result)
        )


def started_from(result: dict) -> str:
    """The axis and the starting network, as `dblocks eval` prints them (results from before the keys: none)."""
    if "axis" not in result:
        return ""
    init = result["init"]
    source = f", started from {init['checkpoint']} ({init['format']})" if init else ""
    return f"  [{result['axis']} axis, {result['precond']} preconditioning{source}]"
