"""The autoregressive task: the causal-consistency mask, the loss on noisy positions, generation routed by sigma
through per-block prefix caches (the same tokens as recomputing the prefix), prompts, BPE tokens, a run directory
sampled from the CLI and the API."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from coordinator.cli import app as cli_app
from shared.assembly import AssembledDenoiser
from shared.config import ConfigError, load_config
from shared.model import NetSpec
from shared.noise import loss_weight
from shared.plan import block_specs, boundaries
from shared.tasks import resolve_data, task_for
from shared.tasks.autoregressive.generate import generate_tokens, schedule
from shared.tasks.autoregressive.net import NextTokenNet, two_stream_mask
from shared.tasks.autoregressive.task import NextTokenDenoiser, escape, noisy_targets
from shared.tasks.autoregressive.tokens import Tokens, split_text, train_bpe
from tests.conftest import REPO

AR = REPO / "configs" / "autoregressive.yaml"
SPEC = NetSpec(num_classes=40, hidden_size=32, num_heads=4, mlp_ratio=2.0, num_layers=2, seq_len=8)


def trained_like(spec: NetSpec = SPEC, seed: int = 0) -> NextTokenNet:
    """A block with every parameter random (a fresh one is zero-initialised and predicts the uniform)."""
    torch.manual_seed(seed)
    net = NextTokenNet(spec)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def ar_config(*overrides):
    return load_config(AR, ["autoregressive.tokenizer=bytes", *overrides])


def test_noisy_token_i_sees_clean_tokens_before_i_and_itself_only():
    mask = two_stream_mask(5)
    clean, noisy = slice(0, 5), slice(5, 10)
    assert torch.equal(mask[clean, clean], torch.ones(5, 5).tril().bool())  # causal among the clean
    assert torch.equal(mask[noisy, clean], torch.ones(5, 5).tril(-1).bool())  # clean j < i only: never j >= i
    assert torch.equal(mask[noisy, noisy], torch.eye(5, dtype=torch.bool))  # itself, no other noisy token
    assert not mask[clean, noisy].any()  # no clean token sees a noisy one


def test_no_noisy_position_can_read_its_own_or_a_later_clean_token():
    """Behavioural: changing the clean tokens at positions >= i leaves noisy position i's logits unchanged, and
    changing one before i changes them (a leaking mask fails the first half)."""
    net = trained_like()
    tokens = torch.randint(0, 40, (1, 8), generator=torch.Generator().manual_seed(1))
    z, c_noise = torch.randn(1, 8, 32), torch.tensor([0.1])
    base = net(tokens, z, c_noise)
    for i in range(8):
        later = tokens.clone()
        later[0, i:] = (later[0, i:] + 7) % 40
        assert torch.allclose(net(later, z, c_noise)[0, i], base[0, i], atol=1e-5), i
        if i > 0:
            earlier = tokens.clone()
            earlier[0, i - 1] = (earlier[0, i - 1] + 7) % 40
            assert not torch.allclose(net(earlier, z, c_noise)[0, i], base[0, i], atol=1e-5), i


def test_the_loss_is_the_weighted_cross_entropy_of_the_noisy_positions():
    config = ar_config()
    task = task_for(resolve_data(config))
    model = NextTokenDenoiser(trained_like(), 0.5)
    tokens = torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.05, 0.5, 5.0])
    loss = task.loss(
        model, tokens, None, sigma, sigma_data=0.5, generator=torch.Generator().manual_seed(3), label_dropout=0
    )
    z = noisy_targets(model, tokens, sigma, torch.Generator().manual_seed(3))
    logits = model(z, sigma, tokens)
    assert logits.shape == (3, 8, 40)  # one row per noisy position, none for the clean stream
    by_hand = loss_weight(sigma, 0.5)[:, None] * torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), tokens, reduction="none"
    )
    assert float(loss.detach()) == pytest.approx(float(by_hand.mean().detach()), rel=1e-5)
    # z carries token i's own embedding: at small sigma the targets alone name the token
    assert float((z[0] @ model.net.targets.T).argmax(dim=-1).eq(tokens[0]).float().mean()) > 0.9


def assembled_of(num_blocks: int = 3) -> tuple[AssembledDenoiser, list[float]]:
    config = ar_config(f"blocks.num_blocks={num_blocks}", "model.num_layers=12")
    bounds = boundaries(config)
    blocks = [NextTokenDenoiser(trained_like(seed=b), 0.5) for b in range(num_blocks)]
    return AssembledDenoiser(blocks, bounds), bounds


def test_generation_routes_every_step_to_the_block_that_owns_its_sigma():
    assembled, bounds = assembled_of(3)
    sigmas = schedule(ar_config("blocks.num_blocks=3", "model.num_layers=12"), 12)
    called = []
    generate_tokens(
        assembled, torch.zeros(2, 0, dtype=torch.long), 2, sigmas=sigmas, temperature=0, seed=0, on_step=called.append
    )
    expected = [next(b for b in range(3) if bounds[2 - b] <= s) for s in sigmas[:-1]]  # block 0: the highest sigma
    assert called == expected * 2 and set(called) == {0, 1, 2}
    assert called[: len(expected)] == sorted(called[: len(expected)])  # block 0 first, as a forward pass


def recomputed(assembled, prompt: torch.Tensor, length: int, sigmas: list[float]) -> torch.Tensor:
    """Greedy generation that recomputes every block's whole two-stream forward at every step (no caches)."""
    tokens = prompt.clone()
    window = assembled.blocks[0].net.spec.seq_len - 1
    generator = torch.Generator().manual_seed(0)
    for _ in range(length):
        context = tokens[:, -window:]
        n, p = context.shape
        z = sigmas[0] * torch.randn(n, 32, generator=generator)
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            block = assembled.blocks[int(assembled.route(torch.tensor([sigma], dtype=torch.float64))[0])]
            padded = torch.cat([context, torch.zeros(n, 1, dtype=torch.long)], dim=1)  # position p: not seen
            zs = torch.zeros(n, p + 1, 32)
            zs[:, p] = z
            logits = block(zs, torch.full((n,), sigma), padded)[:, p]
            z = z + (sigma_next - sigma) * (z - block.denoise(logits)) / sigma
        tokens = torch.cat([tokens, logits.argmax(dim=-1)[:, None]], dim=1)
    return tokens[:, prompt.shape[1] :]


def test_the_prefix_cache_gives_the_tokens_that_recomputing_the_prefix_gives():
    assembled, _ = assembled_of(3)
    sigmas = schedule(ar_config("blocks.num_blocks=3", "model.num_layers=12"), 6)
    prompt = torch.randint(0, 40, (2, 3), generator=torch.Generator().manual_seed(4))
    cached = generate_tokens(assembled, prompt, 12, sigmas=sigmas, temperature=0, seed=0)  # slides past 7 tokens
    assert torch.equal(cached, recomputed(assembled, prompt, 12, sigmas))


def test_prompts_longer_than_the_context_keep_their_last_tokens_and_empty_prompts_work():
    assembled, _ = assembled_of(2)
    sigmas = schedule(ar_config("blocks.num_blocks=2"), 4)
    long = torch.randint(0, 40, (1, 30), generator=torch.Generator().manual_seed(5))
    tail = long[:, -7:]  # seq_len - 1: the most context a training position saw
    kwargs = {"sigmas": sigmas, "temperature": 0, "seed": 0}
    assert torch.equal(generate_tokens(assembled, long, 5, **kwargs), generate_tokens(assembled, tail, 5, **kwargs))
    assert generate_tokens(assembled, torch.zeros(1, 0, dtype=torch.long), 5, **kwargs).shape == (1, 5)
    backprop = AssembledDenoiser([NextTokenDenoiser(trained_like(), 0.5, noise_free=True)], [0.002, 80.0])
    with pytest.raises(ValueError, match="needs a prompt of at least one token"):
        generate_tokens(backprop, torch.zeros(1, 0, dtype=torch.long), 5, **kwargs)
    assert generate_tokens(backprop, long, 5, **kwargs).shape == (1, 5)


def test_the_bpe_trains_on_the_training_chunk_only_and_round_trips():
    text = "the cat sat on the mat. " * 200 + "zyzzyva quixotic " * 50
    chunks = split_text(text, 0.1, 0.1)
    assert chunks["train"] + chunks["validation"] + chunks["test"] == text
    tokens = Tokens("bpe", train_bpe(chunks["train"], 262))
    assert tokens.vocab_size == 262 and train_bpe(chunks["train"], 262) == train_bpe(chunks["train"], 262)
    assert len(tokens.encode("the cat sat on the mat. ")) < 24 - 6  # merged: fewer tokens than characters
    for sample in ("the cat", "zyzzyva\nquixotic ünïcode", ""):
        assert tokens.decode(tokens.encode(sample)) == sample
    assert Tokens("bytes").decode(Tokens("bytes").encode("ünï\n")) == "ünï\n"
    config = resolve_data(load_config(AR, ["autoregressive.vocab_size=300"]))  # trained when the run is resolved
    assert Tokens("bpe", config.autoregressive.tokenizer_json).vocab_size == 300
    assert task_for(config).net_spec(config, 2).num_classes == 300


def test_the_example_plans_four_blocks_at_gamma_0_1_and_backprop_needs_end_to_end():
    config = load_config(AR)
    specs = block_specs(config)
    assert len(specs) == 4 and config.blocks.overlap_gamma == 0.1
    assert boundaries(config) == pytest.approx([0.002, 0.13408, 0.3012, 0.67665, 80], rel=1e-4)
    with pytest.raises(ConfigError, match="objective backprop trains one ordinary next-token LM end to end"):
        load_config(AR, ["autoregressive.objective=backprop"])
    with pytest.raises(ConfigError, match="must fit autoregressive.seq_len"):
        load_config(AR, ["autoregressive.eval_prompt_tokens=60"])


def test_escaping_keeps_one_sample_on_one_line():
    assert escape("a\nb\\n\rc") == "a\\nb\\\\n\\rc"
    assert "\n" not in escape("x\n\n")


def test_a_run_directory_samples_with_a_prompt_from_the_cli(tmp_path):
    """Trained for a few steps in this process (no Ray), assembled as the service does, sampled by the CLI."""
    from benchmarks.local_run import main as local_run

    out = tmp_path / "run"
    code = local_run(
        [
            str(AR),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--num-samples",
            "0",
            "--set",
            "autoregressive.tokenizer=bytes",
            "--set",
            "train.steps_per_block=3",
            "--set",
            "train.batch_size=4",
            "--set",
            "model.num_layers=4",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "autoregressive" and len(manifest["blocks"]) == 4
    result = CliRunner().invoke(
        cli_app,
        [
            "sample",
            str(out),
            "--prompt",
            "def f(x):\n",
            "--num",
            "3",
            "--length",
            "5",
            "--out",
            str(tmp_path / "s.txt"),
            "--temperature",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "s.txt").read_text().split("\n")[:-1]
    assert len(lines) == 3 and all(line.startswith("def f(x):\\n") for line in lines)
    assert len(set(lines)) == 1  # temperature 0: every sample the same
    bad = CliRunner().invoke(cli_app, ["sample", str(out), "--length", "0", "--out", str(tmp_path / "b.txt")])
    assert bad.exit_code == 2 and "length 0" in bad.output
