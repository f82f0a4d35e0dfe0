"""Training compute of each recipe, counted by the code: torch's FlopCounterMode runs one real training step (the
task's own loss, forward and backward) on one sequence and counts every matmul and attention; a run's training
FLOPs are that times its batch size and steps. Huginn's step depends on the iteration count r it draws (uniform in
1..max_iterations), so its count is the mean over every r of the counted step."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from shared.model import NetSpec


def counted_step(task, spec: NetSpec, iterations: int | None = None) -> int:
    """FLOPs of one training step on one sequence of `spec.seq_len` tokens (`iterations`: Huginn's r)."""
    torch.manual_seed(0)
    model = task.denoiser(task.network(spec), 0.5).train()
    tokens = torch.zeros((1, spec.seq_len), dtype=torch.long, device="cpu")
    generator = torch.Generator(device="cpu").manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        if iterations is None:
            loss = task.loss(
                model, tokens, None, torch.ones(1, device="cpu"), sigma_data=0.5, generator=generator, label_dropout=0
            )
        else:
            logits = model.iterate(tokens, iterations, task.backprop_iterations, generator)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens)
        loss.backward()
    return counter.get_total_flops()


def training_flops(task, spec: NetSpec, *, batch_size: int, steps: int) -> dict:
    """{"flops_per_step", "train_flops"} of a run of `task` (the recipe its options name)."""
    if task.objective == "backprop":
        counts = [counted_step(task, spec, r) for r in range(1, task.max_iterations + 1)]
        per_sequence = sum(counts) / len(counts)
    else:
        per_sequence = counted_step(task, spec)
    return {"flops_per_step": per_sequence * batch_size, "train_flops": per_sequence * batch_size * steps}
