"""Recurrent depth: the same prelude / core / coda network trained as one denoiser (one core pass per training
example, no graph through iterations) or Huginn's way (r iterations, gradients through the last k only); K core
iterations per generated token at inference, through prefix caches that give what recomputing gives."""

from __future__ import annotations

import pytest
import torch

from shared.assembly import AssembledDenoiser
from shared.config import ConfigError, load_config
from shared.model import NetSpec
from shared.tasks import task_for
from shared.tasks.autoregressive.generate import generate_tokens, schedule
from shared.tasks.recurrent_depth.task import RecurrentDepth
from tests.conftest import REPO

RECURRENT = REPO / "configs" / "recurrent.yaml"
SPEC = NetSpec(num_classes=40, hidden_size=32, num_heads=4, mlp_ratio=2.0, num_layers=5, seq_len=8)  # 1 + 3 + 1


def recurrent(objective: str = "denoising", **recurrence) -> RecurrentDepth:
    options = {"prelude_layers": 1, "coda_layers": 1, "max_iterations": 6, "backprop_iterations": 2} | recurrence
    return RecurrentDepth(tokenizer="bytes", seq_len=8, objective=objective, **options)


def built(task: RecurrentDepth, seed: int = 0):
    """The task's denoiser around a network with every parameter random (a fresh one predicts the uniform)."""
    torch.manual_seed(seed)
    net = task.network(SPEC)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return task.denoiser(net, 0.5)


def count_calls(model) -> dict:
    """Forward calls of the prelude, each core layer and the coda, and how many of them built a graph."""
    calls = {"prelude": [], "core": [], "coda": []}
    net = model.net
    core = model.core_layers
    parts = [("prelude", layer) for layer in net.prelude]
    parts += [("core" if i < core else "coda", layer) for i, layer in enumerate(net.layers)]
    for part, layer in parts:
        layer.register_forward_hook(lambda m, args, out, part=part: calls[part].append(out.requires_grad))
    return calls


def test_the_denoising_recipe_runs_the_core_once_per_training_example():
    task = recurrent("denoising")
    model = built(task).train()
    calls = count_calls(model)
    tokens = torch.randint(0, 40, (4, 8), generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.01, 0.3, 2.0, 60.0])
    loss = task.loss(model, tokens, None, sigma, sigma_data=0.5, generator=torch.Generator(), label_dropout=0.0)
    loss.backward()
    # one pass: each core layer called once (3 core layers), the prelude and the coda once each
    assert calls == {"prelude": [True], "core": [True] * 3, "coda": [True]}
    assert all(p.grad is not None for p in model.net.layers.parameters())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_huginn_recipe_iterates_r_times_and_backpropagates_through_the_last_k_only(seed):
    task = recurrent("backprop", max_iterations=6, backprop_iterations=2)
    model = built(task).train()
    calls = count_calls(model)
    tokens = torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(1))
    drawn = int(torch.randint(1, 7, (1,), generator=torch.Generator().manual_seed(seed)))  # the r the loss draws
    loss = task.loss(model, tokens, None, torch.ones(3), sigma_data=0.5, generator=torch.Generator().manual_seed(seed),
                     label_dropout=0.0)  # fmt: skip
    loss.backward()
    graphs = [calls["core"][i::3] for i in range(3)]  # per core layer, its calls in order
    for layer_calls in graphs:
        assert len(layer_calls) == drawn  # r iterations
        assert layer_calls == [False] * max(0, drawn - 2) + [True] * min(2, drawn)  # a graph for the last k only
    assert calls["prelude"] == [True] and calls["coda"] == [True]


@pytest.mark.parametrize("objective", ["denoising", "backprop"])
def test_inference_runs_k_core_iterations_per_token_and_the_cache_gives_what_recomputing_gives(objective):
    task = recurrent(objective)
    assembled = AssembledDenoiser([built(task).eval()], [0.002, 80.0])
    config = load_config(RECURRENT, ["autoregressive.tokenizer=bytes"])
    for k in (1, 5):
        steps = []
        sigmas = schedule(config, k)
        prompt = torch.randint(0, 40, (2, 3), generator=torch.Generator().manual_seed(2))
        out = generate_tokens(assembled, prompt, 3, sigmas=sigmas, temperature=0, seed=0, on_step=steps.append)
        assert out.shape == (2, 3) and len(steps) == 3 * k  # K iterations for each of the 3 tokens
    if objective == "denoising":  # one step from a cached prefix equals the whole forward over prompt + token
        model = assembled.blocks[0]
        prompt = torch.randint(0, 40, (1, 4), generator=torch.Generator().manual_seed(3))
        z = torch.randn(1, 32, generator=torch.Generator().manual_seed(4))
        from shared.tasks.autoregressive.net import PrefixCache

        cache = PrefixCache(model.net, 1, 7)
        for column in prompt.T:
            cache.append(column)
        c_in, c_noise = model.scalings(torch.tensor([1.5]))
        cached = cache.denoise_logits(c_in * z, c_noise)
        zs = torch.zeros(1, 5, 32)
        zs[:, 4] = z
        full = model(zs, torch.tensor([1.5]), torch.cat([prompt, torch.zeros(1, 1, dtype=torch.long)], 1))[:, 4]
        assert torch.allclose(cached, full, atol=1e-5)


def test_the_example_config_and_bad_recurrences_are_refused_naming_the_field():
    config = load_config(RECURRENT, ["autoregressive.tokenizer=bytes"])
    task = task_for(config)
    assert task.options["prelude_layers"] == 2 and config.autoregressive.sample_steps == 32
    with pytest.raises(ConfigError, match="blocks.num_blocks 2: recurrent depth trains one block"):
        load_config(RECURRENT, ["blocks.num_blocks=2"])
    with pytest.raises(ConfigError, match="leave no core layer"):
        load_config(RECURRENT, ["model.num_layers=4"])
    with pytest.raises(ConfigError, match="backprop_iterations 9 is more than max_iterations 8"):
        load_config(RECURRENT, ["autoregressive.max_iterations=8", "autoregressive.backprop_iterations=9"])
    for bad in (0, 100_000):
        with pytest.raises(ConfigError, match="autoregressive.sample_steps"):
            load_config(RECURRENT, [f"autoregressive.sample_steps={bad}"])


def test_training_flops_are_counted_per_recipe_and_grow_with_huginns_iterations():
    from shared.tasks.recurrent_depth.flops import counted_step, training_flops

    spec = SPEC
    denoising = counted_step(recurrent("denoising"), spec)
    huginn = recurrent("backprop", max_iterations=6, backprop_iterations=2)
    one, four, six = (counted_step(huginn, spec, r) for r in (1, 4, 6))
    assert 0 < one < four < six  # every iteration costs: a forward, and within the last k a backward too
    assert (six - four) < (four - one) / 1.5  # past k, an extra iteration is forward only (about a third)
    assert denoising < four  # the denoiser's step is one core pass
    run = training_flops(huginn, spec, batch_size=8, steps=10)
    assert run["train_flops"] == pytest.approx(10 * run["flops_per_step"])
    mean = sum(counted_step(huginn, spec, r) for r in range(1, 7)) / 6
    assert run["flops_per_step"] == pytest.approx(8 * mean)


def test_a_step_keeps_activations_for_the_truncation_window_only():
    """What a step keeps for backward: Huginn's grows with r up to backprop_iterations, then stays (the earlier
    iterations keep nothing); the denoiser's one pass keeps less than Huginn's window."""
    from shared.tasks.recurrent_depth.flops import saved_bytes, step_memory

    huginn = recurrent("backprop", max_iterations=6, backprop_iterations=2)
    one, two, six = (saved_bytes(huginn, SPEC, 4, r) for r in (1, 2, 6))
    assert 0 < one < two == six
    denoiser = saved_bytes(recurrent("denoising"), SPEC, 4)
    assert denoiser < two
    assert step_memory(huginn, SPEC, batch_size=4)["saved_activation_bytes"] == two
    assert saved_bytes(huginn, SPEC, 8, 2) > 1.8 * two  # activations scale with the batch
