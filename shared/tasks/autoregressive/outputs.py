"""The artefacts and evaluation of an autoregressive run: continuations of held-out prompts (samples.txt), the
per-block training loss, `dblocks eval`'s MAUVE and generative perplexity, and prompted samples for the CLI and
the API. No Redis, no Ray."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from shared.assembly import load_assembled
from shared.config import MAX_SAMPLE_STEPS, Config
from shared.data.corpus import sequences
from shared.pictures import write_loss_curves
from shared.tasks.autoregressive.bench import QUALITY
from shared.tasks.autoregressive.evaluate import (
    cached_reference,
    eval_windows,
    features,
    mauve_score,
    perplexity,
    token_nats,
)
from shared.tasks.autoregressive.generate import generate_tokens, schedule
from shared.tasks.autoregressive.task import escape
from shared.tasks.autoregressive.tokens import Tokens, load_token_corpus
from shared.tasks.base import EvalOptions

MAX_SAMPLES = 256  # texts per sampling call (CLI and API)
MAX_LENGTH = 2048  # tokens per text
MAX_TOKENS = 32_768  # num x length per call: a request never stalls the service for long
DEFAULT_CACHE = Path.home() / ".cache" / "dblocks"


def run_tokens(run_dir: Path) -> Tokens:
    """The tokenizer the blocks were trained with (the manifest's task options: decoding needs no corpus)."""
    options = json.loads((Path(run_dir) / "manifest.json").read_text())["task_options"]
    return Tokens(options["tokenizer"], options.get("tokenizer_json"))


def sample_texts(
    run_dir: Path,
    config: Config,
    *,
    num: int = 8,
    length: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    weights: str = "ema",
    prompt: str | None = None,
    temperature: float | None = None,
    model=None,
) -> list[str]:
    """`num` lines, each the prompt followed by its continuation of `length` tokens (default: the run's
    `eval_continuation_tokens`), newlines and backslashes escaped so one sample stays one line."""
    section = config.autoregressive
    length = section.eval_continuation_tokens if length is None else length
    if not 1 <= num <= MAX_SAMPLES:
        raise ValueError(f"num {num}: must be 1..{MAX_SAMPLES}")
    if not 1 <= length <= MAX_LENGTH or num * length > MAX_TOKENS:
        raise ValueError(f"length {length}: must be 1..{MAX_LENGTH} tokens, and num x length at most {MAX_TOKENS:,}")
    if steps is not None and not 1 <= steps <= MAX_SAMPLE_STEPS:
        raise ValueError(f"steps {steps}: must be 1..{MAX_SAMPLE_STEPS} (recurrent depth: core iterations per token)")
    model = model if model is not None else load_assembled(run_dir, weights)[0]
    tokens = run_tokens(run_dir)
    prompt_ids = torch.as_tensor(tokens.encode(prompt or ""), dtype=torch.long).repeat(num, 1)
    out = generate_tokens(
        model,
        prompt_ids,
        length,
        sigmas=schedule(config, steps),
        temperature=section.temperature if temperature is None else temperature,
        seed=seed,
    )
    return [escape((prompt or "") + tokens.decode(row)) for row in out.tolist()]


def evaluate_lm(run_dir: Path, config: Config, options: EvalOptions, model=None) -> dict:
    """`{"task": "autoregressive", "mauve", "gen_ppl", "reference_ppl", ...}`: continuations of held-out prompts."""
    section = config.autoregressive
    model = model if model is not None else load_assembled(run_dir, options.weights)[0]
    corpus = load_token_corpus(section)
    vocab = corpus.tokens.vocab_size
    reference = cached_reference(section, vocab, corpus.split("train"), options.cache_dir or DEFAULT_CACHE)
    windows = eval_windows(corpus.split("test"), section)
    prompts, truth = windows[:, : section.eval_prompt_tokens], windows
    started = time.perf_counter()
    continued = generate_tokens(
        model,
        prompts,
        section.eval_continuation_tokens,
        sigmas=schedule(config, options.num_steps),
        temperature=section.temperature,
        seed=options.seed,
    )
    seconds = time.perf_counter() - started
    generated = torch.cat([prompts, continued], dim=1)
    start = section.eval_prompt_tokens
    test = sequences(corpus.split("test"), section.seq_len)
    result = {
        "task": config.task,
        "mauve": mauve_score(
            features(reference, truth), features(reference, generated), scaling=section.mauve_scaling, seed=options.seed
        ),
        "gen_ppl": perplexity(token_nats(reference, generated, start)),
        "reference_ppl": perplexity(token_nats(reference, test, 1)),
        "true_continuation_ppl": perplexity(token_nats(reference, truth, start)),
        "num_prompts": len(prompts),
        "prompt_tokens": section.eval_prompt_tokens,
        "continuation_tokens": section.eval_continuation_tokens,
        "tokens_per_s": round(continued.numel() / seconds, 1),
        "vocabulary_size": vocab,
        "weights": options.weights,
        "seed": options.seed,
        "run_dir": str(run_dir),
    }
    if model.blocks[0].noise_free:  # an ordinary LM has an exact likelihood
        result["ppl"] = perplexity(token_nats(model.blocks[0].net, test, 1))
    return result


class AutoregressiveOutputs:
    name = "autoregressive"
    quality = QUALITY

    def write_artefacts(self, run_dir: Path, config: Config, manifest, storage, run_id, blocks, model) -> str:
        section = config.autoregressive
        corpus = load_token_corpus(section)
        prompt = corpus.tokens.decode(eval_windows(corpus.split("test"), section)[0, : section.eval_prompt_tokens])
        texts = sample_texts(run_dir, config, num=8, seed=config.sample.seed, prompt=prompt, model=model)
        (run_dir / "samples.txt").write_text("".join(t + "\n" for t in texts))
        write_loss_curves(run_dir, config, storage, run_id, blocks, ylabel="training loss")
        return f"samples.txt (8 continuations of a held-out prompt); `dblocks eval {run_dir}` for MAUVE"

    def sample_texts(self, run_dir: Path, config: Config, **params) -> list[str]:
        return sample_texts(run_dir, config, **params)

    def evaluate(self, run_dir: Path, config: Config, options: EvalOptions) -> dict:
        return evaluate_lm(run_dir, config, options)

    def summary(self, result: dict, options: EvalOptions) -> str:
        exact = f", perplexity {result['ppl']:.2f}" if "ppl" in result else ""
        return (
            f"MAUVE {result['mauve']:.3f}, generative perplexity {result['gen_ppl']:.2f} (true continuations "
            f"{result['true_continuation_ppl']:.2f}; reference model's held-out perplexity "
            f"{result['reference_ppl']:.2f}){exact}; {result['num_prompts']} prompts, {options.weights} weights"
        )
