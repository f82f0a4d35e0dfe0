"""Training compute and memory of each recipe, counted by the code.

FLOPs: torch's FlopCounterMode runs one real training step (the task's own loss, forward and backward) on one
sequence and counts every matmul and attention; a run's training FLOPs are that times its batch size and steps.
Huginn's step depends on the iteration count r it draws (uniform in 1..max_iterations), so its count is the mean over
every r of the counted step.

Memory: what one training step keeps for its backward pass (every tensor autograd saves, by storage, through
`saved_tensors_hooks`), beside the state every step holds whatever the recipe (weights, gradients, AdamW's two
moments, the EMA copy). The saved tensors are what grows with Huginn's unroll: its peak over r is reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode

from shared.model import NetSpec

STATE_COPIES = 5  # weights, gradients, AdamW's two moments, the EMA copy
FLOAT_BYTES = 4


def _step_loss(task, spec: NetSpec, batch: int, iterations: int | None) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = task.denoiser(task.network(spec), 0.5).train()
    tokens = torch.zeros((batch, spec.seq_len), dtype=torch.long, device="cpu")
    generator = torch.Generator(device="cpu").manual_seed(0)
    if iterations is None:
        loss = task.loss(
            model, tokens, None, torch.ones(batch, device="cpu"), sigma_data=0.5, generator=generator, label_dropout=0
        )
    else:
        logits = model.iterate(tokens, iterations, task.backprop_iterations, generator)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens)
    return model, loss


def counted_step(task, spec: NetSpec, iterations: int | None = None) -> int:
    """FLOPs of one training step on one sequence of `spec.seq_len` tokens (`iterations`: Huginn's r)."""
    with FlopCounterMode(display=False) as counter:
        _, loss = _step_loss(task, spec, 1, iterations)
        loss.backward()
    return counter.get_total_flops()


@contextmanager
def _saved_storages() -> Iterator[dict[int, int]]:
    """{storage address: bytes} of every tensor autograd saves for backward while the context is open."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point() or tensor.device.type == "meta":
            return tensor
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield storages


def saved_bytes(task, spec: NetSpec, batch: int, iterations: int | None = None) -> int:
    """Bytes one training step of `batch` sequences keeps for its backward pass, parameters left out (they are
    the state): the activations a recipe's graph holds at its peak, just before backward."""
    with _saved_storages() as storages:
        model, loss = _step_loss(task, spec, batch, iterations)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(nbytes for address, nbytes in storages.items() if address not in params)


def iteration_counts(task) -> list[int | None]:
    """The r a recipe's training step may draw (None: the denoiser's one pass)."""
    return list(range(1, task.max_iterations + 1)) if task.objective == "backprop" else [None]


_COUNTED: dict[tuple, float] = {}  # (task options, net) -> mean FLOPs per sequence: Huginn's takes seconds to count


def per_sequence_flops(task, spec: NetSpec) -> float:
    """Mean FLOPs of one training step on one sequence, over the r the recipe may draw."""
    key = (tuple(sorted(task.options.items())), spec)
    if key not in _COUNTED:
        counts = [counted_step(task, spec, r) for r in iteration_counts(task)]
        _COUNTED[key] = sum(counts) / len(counts)
    return _COUNTED[key]


def training_flops(task, spec: NetSpec, *, batch_size: int, steps: int) -> dict:
    """{"flops_per_step", "train_flops"} of a run of `task` (the recipe its options name)."""
    per_sequence = per_sequence_flops(task, spec)
    return {"flops_per_step": per_sequence * batch_size, "train_flops": per_sequence * batch_size * steps}


def step_memory(task, spec: NetSpec, *, batch_size: int) -> dict:
    """{"state_bytes", "saved_activation_bytes"}: the per-step training state, and the activations one step keeps
    for backward at its largest r (Huginn's peak is any r >= backprop_iterations; the denoiser has one pass)."""
    counts = iteration_counts(task)
    peak_r = None if counts == [None] else min(task.max_iterations, task.backprop_iterations)
    params = sum(p.numel() for p in task.network(spec).parameters())
    return {
        "state_bytes": STATE_COPIES * FLOAT_BYTES * params,
        "saved_activation_bytes": saved_bytes(task, spec, batch_size, peak_r),
    }


def equal_flops_steps(task, reference, spec: NetSpec, steps: int) -> int:
    """Steps of `task` that cost what `steps` steps of `reference` cost (at least 1)."""
    return max(1, round(steps * per_sequence_flops(reference, spec) / per_sequence_flops(task, spec)))
