"""Evaluation without internet (likelihood is not an ELBO here): continuations of held-out prompts scored by MAUVE
against their true continuations and by generative perplexity under a reference model, the paper's protocol scaled
down (its LM1B: 1,000 prompts of 50 tokens, 5 continuations of 50, MAUVE scaling 0.2, Llama-2 as the reference).

The reference is an ordinary next-token LM (the same network as the backprop baseline, larger by default) that the
project trains once on the run's training chunk, freezes and caches by (tokens, corpus, shape, seed), like the image
evaluation's classifier; its own held-out perplexity is reported as `reference_ppl`. MAUVE (the `mauve-text`
package) compares features the reference computes: its last layer's state at the last token of prompt +
continuation, as MAUVE's GPT-2 features are.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from shared.data.corpus import TokenBatches, sequences
from shared.model import NetSpec
from shared.tasks.autoregressive.net import NextTokenNet

REFERENCE_VERSION = 1
REFERENCE_BATCH = 32
REFERENCE_LR = 1e-3


def reference_spec(section, vocab_size: int) -> NetSpec:
    return NetSpec(
        num_classes=vocab_size,
        hidden_size=section.reference_width,
        num_heads=section.reference_width // 32,
        mlp_ratio=4.0,
        num_layers=section.reference_layers,
        seq_len=section.seq_len,
    )


def reference_key(section, train_ids: np.ndarray) -> str:
    shape = [section.reference_layers, section.reference_width, section.reference_steps, section.reference_seed]
    digest = hashlib.sha256(train_ids.astype(np.int32).tobytes() + json.dumps(shape).encode())
    return f"ar-reference-v{REFERENCE_VERSION}-{section.seq_len}-{digest.hexdigest()[:16]}"


def train_reference(spec: NetSpec, train_ids: np.ndarray, *, steps: int, seed: int) -> NextTokenNet:
    """An ordinary next-token LM on the training chunk: AdamW, cosine decay, windows at random offsets."""
    torch.manual_seed(seed)
    net = NextTokenNet(spec)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    batches = TokenBatches(train_ids, spec.seq_len)
    optimizer = torch.optim.AdamW(net.parameters(), lr=REFERENCE_LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    net.train()
    for _ in range(steps):
        tokens, _ = batches.next_batch(REFERENCE_BATCH, generator)
        logits = net.next_token_logits(tokens)
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return net.eval()


def cached_reference(section, vocab_size: int, train_ids: np.ndarray, cache_dir: Path) -> NextTokenNet:
    """The reference model: trained once per (training tokens, shape, seed), then loaded from `cache_dir`."""
    spec = reference_spec(section, vocab_size)
    path = Path(cache_dir) / f"{reference_key(section, train_ids)}.safetensors"
    if path.is_file():
        net = NextTokenNet(spec)
        net.load_state_dict(load_file(str(path)))
        return net.eval()
    net = train_reference(spec, train_ids, steps=section.reference_steps, seed=section.reference_seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return net


@torch.no_grad()
def token_nats(net: NextTokenNet, tokens: torch.Tensor, start: int, batch_size: int = 256) -> torch.Tensor:
    """(N, T - start) nats of each token at positions >= `start` (>= 1) given the tokens before it."""
    rows = []
    for i in range(0, len(tokens), batch_size):
        chunk = tokens[i : i + batch_size]
        logits = net.next_token_logits(chunk)[:, start - 1 : -1]
        rows.append(F.cross_entropy(logits.transpose(1, 2).float(), chunk[:, start:], reduction="none"))
    return torch.cat(rows)


@torch.no_grad()
def features(net: NextTokenNet, tokens: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """MAUVE's features: the last layer's (normalised) state at each sequence's last token, (N, D)."""
    out = []
    for i in range(0, len(tokens), batch_size):
        hidden = net.clean_hidden(tokens[i : i + batch_size])[:, -1]
        out.append(F.normalize(hidden.float(), dim=-1))
    return torch.cat(out).double().numpy()


def mauve_score(p: np.ndarray, q: np.ndarray, *, scaling: float, seed: int) -> float:
    import mauve

    buckets = max(2, min(len(p) // 10, 50))
    result = mauve.compute_mauve(
        p_features=p, q_features=q, mauve_scaling_factor=scaling, num_buckets=buckets, seed=seed + 1, verbose=False
    )
    return float(result.mauve)


def eval_windows(test_ids: np.ndarray, section) -> torch.Tensor:
    """Held-out (prompt + true continuation) windows: up to `eval_prompts` non-overlapping ones of the test chunk,
    evenly spread over it."""
    windows = sequences(test_ids, section.eval_prompt_tokens + section.eval_continuation_tokens)
    if len(windows) > section.eval_prompts:
        windows = windows[torch.linspace(0, len(windows) - 1, section.eval_prompts, device="cpu").long()]
    return windows


def perplexity(nats: torch.Tensor) -> float:
    return float(math.exp(nats.double().mean()))
