"""What a finished recurrent-depth run leaves and answers: the autoregressive task's (continuations of held-out
prompts, MAUVE and generative perplexity under the same reference model, prompted samples), with the K core
iterations per token as its sampler steps (`dblocks sample --iterations K`, `dblocks eval --num-steps K`)."""

from __future__ import annotations

from pathlib import Path

from shared.config import Config
from shared.plan import block_specs, net_spec
from shared.tasks import task_for
from shared.tasks.autoregressive.outputs import AutoregressiveOutputs, evaluate_lm
from shared.tasks.base import EvalOptions
from shared.tasks.recurrent_depth.bench import QUALITY
from shared.tasks.recurrent_depth.flops import training_flops


class RecurrentDepthOutputs(AutoregressiveOutputs):
    name = "recurrent_depth"
    quality = QUALITY

    def evaluate(self, run_dir: Path, config: Config, options: EvalOptions) -> dict:
        section = config.autoregressive
        result = evaluate_lm(run_dir, config, options)
        iterations = options.num_steps or section.sample_steps
        (spec,) = block_specs(config)
        compute = training_flops(task_for(config), net_spec(config, spec.num_layers),
                                 batch_size=config.train.batch_size, steps=config.train.steps_for(0))  # fmt: skip
        return {**result, "recipe": section.objective, "iterations": iterations, **compute}

    def summary(self, result: dict, options: EvalOptions) -> str:
        return (
            f"{super().summary(result, options)}; {result['recipe']}, {result['iterations']} core iterations, "
            f"{result['train_flops']:.3g} training FLOPs"
        )
