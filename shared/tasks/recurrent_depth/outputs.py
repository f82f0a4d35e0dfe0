"""What a finished recurrent-depth run leaves and answers: the autoregressive task's (continuations of held-out
prompts, MAUVE and generative perplexity under the same reference model, prompted samples), with the K core
iterations per token as its sampler steps (`dblocks sample --iterations K`, `dblocks eval --num-steps K`)."""

from __future__ import annotations

from pathlib import Path

from shared.config import Config
from shared.tasks.autoregressive.outputs import AutoregressiveOutputs, evaluate_lm
from shared.tasks.base import EvalOptions
from shared.tasks.recurrent_depth.bench import QUALITY


class RecurrentDepthOutputs(AutoregressiveOutputs):
    name = "recurrent_depth"
    quality = QUALITY

    def evaluate(self, run_dir: Path, config: Config, options: EvalOptions) -> dict:
        section = config.autoregressive
        result = evaluate_lm(run_dir, config, options)
        iterations = options.num_steps or section.sample_steps
        return {**result, "recipe": section.objective, "iterations": iterations}

    def summary(self, result: dict, options: EvalOptions) -> str:
        return f"{super().summary(result, options)}; {result['recipe']}, {result['iterations']} core iterations"
