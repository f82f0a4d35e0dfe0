"""The text task (MD4 masked diffusion, block-wise): the t-partition and its overlap, the ELBO weight and the BPC
estimate, the routing of t to blocks, sampling that reveals every symbol, the text data layer, and bad inputs
(empty or binary text, a vocabulary mismatch at assembly) with clear errors and nothing started."""

import json
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from shared.assembly import AssembledDenoiser, check_block_matches, load_assembled
from shared.checkpoint import CheckpointError, save_block_weights
from shared.config import load_config
from shared.data import DataError
from shared.model import NetSpec
from shared.plan import block_specs, boundaries, plan_json
from shared.tasks import get_task, resolve_data, task_for
from shared.tasks.text.data import TEXT8, TokenBatches, decode, encode, load_corpus, normalize_text8, read_text_source
from shared.tasks.text.task import (
    T_MIN,
    MaskedDenoiser,
    MaskedTokenNet,
    bits_by_time,
    elbo_weight,
    estimate_bpc,
    mask_tokens,
    masked_mean_nats,
    masked_nats,
    mean_over_masked_sequences,
    sample_text,
    stratified_times,
    unigram_bpc,
)
from tests.conftest import REPO

TEXT = REPO / "configs" / "text.yaml"
SPEC = NetSpec(
    image_size=0,
    channels=0,
    num_classes=27,
    patch_size=1,
    hidden_size=32,
    num_heads=2,
    mlp_ratio=2.0,
    num_layers=1,
    seq_len=16,
)


def text_config(*overrides):
    return load_config(TEXT, list(overrides))


@pytest.mark.parametrize(
    "num_blocks, expected",
    [(2, [0.0, 0.5, 1.0]), (3, [0.0, 1 / 3, 2 / 3, 1.0]), (4, [0.0, 0.25, 0.5, 0.75, 1.0])],
)
def test_time_boundaries_are_equal_mass_for_the_linear_schedule(num_blocks, expected):
    config = text_config(f"blocks.num_blocks={num_blocks}", "model.num_layers=12")
    assert boundaries(config) == pytest.approx(expected)
    specs = block_specs(config)
    assert specs[0].sigma_hi == 1.0 and specs[-1].sigma_lo == 0.0  # block 0 owns the most-masked slice
    assert plan_json(config)["axis"] == "t"


def test_gamma_widens_linearly_in_t_and_clamps_to_0_and_1():
    specs = block_specs(text_config("blocks.num_blocks=3", "blocks.overlap_gamma=0.1"))
    width = 1 / 3
    assert (specs[0].train_sigma_lo, specs[0].train_sigma_hi) == pytest.approx((2 / 3 - 0.1 * width, 1.0))
    assert (specs[1].train_sigma_lo, specs[1].train_sigma_hi) == pytest.approx(
        (1 / 3 - 0.1 * width, 2 / 3 + 0.1 * width)
    )
    assert (specs[2].train_sigma_lo, specs[2].train_sigma_hi) == pytest.approx((0.0, 1 / 3 + 0.1 * width))
    end_to_end = block_specs(text_config("train.mode=end_to_end", "blocks.overlap_gamma=0.5"))
    assert (end_to_end[0].train_sigma_lo, end_to_end[0].train_sigma_hi) == (0.0, 1.0)


def test_training_times_stay_in_the_widened_slice_one_per_stratum():
    t = stratified_times(8, 0.25, 0.75, torch.Generator().manual_seed(0))
    assert ((t >= 0.25) & (t <= 0.75)).all()
    assert sorted(((t - 0.25) / 0.0625).floor().long().tolist()) == list(range(8))  # one per equal stratum
    assert stratified_times(64, 0.0, 0.01, torch.Generator().manual_seed(0)).min() >= T_MIN


def test_the_elbo_weight_is_one_over_t_and_a_uniform_model_scores_log2_v():
    t = torch.tensor([0.1, 0.5, 1.0])
    assert torch.allclose(elbo_weight(t), 1 / t)  # -alpha'(t) / (1 - alpha(t)) with alpha = 1 - t
    # Uniform predictions cost ln V per masked symbol; the 1/t weight undoes the masking rate, so the bound is ln V.
    tokens = torch.randint(0, 27, (4000, 16), generator=torch.Generator().manual_seed(0))
    times = torch.full((4000,), 0.3)
    z, masked = mask_tokens(tokens, times, 27, torch.Generator().manual_seed(1))
    assert ((z == 27) == masked).all() and abs(masked.double().mean().item() - 0.3) < 0.01
    nats = masked_nats(torch.zeros(4000, 16, 27), tokens, masked, times)
    assert nats.mean().item() == pytest.approx(math.log(27), rel=0.01)


def test_the_masked_mean_loss_estimates_the_same_integrand_with_far_less_variance_at_small_t():
    # A model that knows each position's symbol distribution exactly: the integrand at t is the mean entropy
    # per symbol whatever t is, and both training losses must estimate it; at small t on short sequences the 1/t
    # weight makes the ELBO's own estimate wild (one masked symbol carries weight 1/t), the masked mean not.
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(16, 27, generator=g) * 2, dim=-1)  # per position
    tokens = torch.multinomial(probs, 4000, replacement=True, generator=g).T  # (4000, 16)
    logits = probs.log().expand(4000, 16, 27)
    entropy = float(-(probs * probs.log()).sum(-1).mean())
    for t in (0.02, 0.5):
        times = torch.full((4000,), t)
        _, masked = mask_tokens(tokens, times, 27, torch.Generator().manual_seed(1))
        elbo, mean = masked_nats(logits, tokens, masked, times), masked_mean_nats(logits, tokens, masked)
        some = masked.any(dim=1)  # a sequence with nothing masked has no symbol to average over: it scores 0
        assert (mean[~some] == 0).all()
        assert elbo.mean().item() == pytest.approx(entropy, rel=0.1)
        assert mean[some].mean().item() == pytest.approx(entropy, rel=0.05)
        if t < 0.1:
            assert elbo.std().item() > 2 * mean[some].std().item()  # measured: 4.1 vs 1.3
        # the training loss: the mean over masked sequences only, so small t is not weighted down by 1-(1-t)^L
        loss = mean_over_masked_sequences(mean, masked).item()
        assert loss == pytest.approx(entropy, rel=0.05)
        if t < 0.1:
            assert mean.mean().item() < 0.5 * loss  # counting the empty sequences as zeros would halve it here
    task = task_for(load_config(TEXT, ["text.train_weighting=masked_mean"]))
    assert task.train_weighting == "masked_mean" and "train_weighting" not in task.options  # training only


def test_bpc_estimate_of_a_fresh_model_is_log2_v_within_its_standard_error():
    torch.manual_seed(0)
    blocks = [MaskedDenoiser(MaskedTokenNet(SPEC)) for _ in range(2)]  # zero heads: uniform over 27 symbols
    model = AssembledDenoiser(blocks, [0.0, 0.5, 1.0])
    tokens = torch.randint(0, 27, (64, 16), generator=torch.Generator().manual_seed(0))
    result = estimate_bpc(model, tokens, seed=0, target_stderr=0.05, min_samples=256, max_samples=20_000)
    assert result["bpc_stderr"] <= 0.05 and result["num_samples"] >= 256
    assert result["coverage"] == 1.0 and result["passes"] >= 1
    assert abs(result["bpc"] - math.log2(27)) < 3 * result["bpc_stderr"] + 1e-6
    assert unigram_bpc(torch.tensor([0, 1, 0, 1]), 27) == pytest.approx(1.0)


def test_bpc_reads_the_whole_test_text_before_it_may_stop_and_a_cut_pass_is_not_a_prefix(monkeypatch):
    import shared.tasks.text.task as text_task

    seen: list[int] = []

    class Reader(torch.nn.Module):
        mask_id = 27

        @property
        def blocks(self):
            return [self]

        def forward(self, z, t, labels=None):
            seen.extend((z[:, 0] * 27 + z[:, 1]).tolist())  # the row each sequence is (written in its symbols)
            return torch.zeros(*z.shape, 28)

    # nothing masked, so the reader sees which sequences it is given
    monkeypatch.setattr(text_task, "mask_tokens", lambda tokens, t, mask_id, g: (tokens, torch.zeros_like(tokens) > 0))
    rows = torch.arange(700)
    tokens = torch.stack([rows // 27, rows % 27, rows % 27], dim=1)
    whole = estimate_bpc(Reader(), tokens, seed=0, target_stderr=10.0, min_samples=10, max_samples=5000,
                         batch_size=128)  # fmt: skip
    assert whole["coverage"] == 1.0 and set(seen) == set(range(700))  # a loose target does not stop it early
    seen.clear()
    cut = estimate_bpc(Reader(), tokens, seed=1, target_stderr=10.0, min_samples=10, max_samples=200, batch_size=100)
    assert cut["coverage"] == pytest.approx(200 / 700) and len(set(seen)) == 200
    assert max(seen) > 400  # a random part of the test text, not its first 200 sequences
    seen.clear()
    before = estimate_bpc(Reader(), tokens, seed=0, target_stderr=10.0, min_samples=10, max_samples=5000,
                          batch_size=100, prefix=True)  # fmt: skip
    assert seen == list(range(100)) and before["coverage"] == pytest.approx(100 / 700)  # the old estimate: a prefix


class Recorder(torch.nn.Module):
    """A block that predicts its own index as the symbol everywhere and records the times it is called at."""

    def __init__(self, index, calls):
        super().__init__()
        self.index, self.calls, self.mask_id = index, calls, 27

    def forward(self, z, t, labels=None):
        self.calls.append((self.index, float(t[0])))
        logits = torch.full((*z.shape, 27), -1e4)
        logits[..., self.index] = 0.0
        return logits


def test_t_routes_to_the_owning_block_with_the_lower_noise_block_owning_its_upper_edge():
    model = AssembledDenoiser([Recorder(i, []) for i in range(3)], [0.0, 1 / 3, 2 / 3, 1.0])
    t = torch.tensor([1.0, 0.9, 2 / 3, 0.5, 1 / 3, 0.1, 0.0], dtype=torch.float64)
    assert model.route(t).tolist() == [0, 0, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_sampling_reveals_every_symbol_by_t_0_through_the_owning_blocks(steps):
    calls = []
    model = AssembledDenoiser([Recorder(i, calls) for i in range(3)], [0.0, 1 / 3, 2 / 3, 1.0])
    ids = sample_text(model, num=5, length=12, steps=steps, seed=0)
    assert ids.shape == (5, 12) and (ids != 27).all() and set(ids.unique().tolist()) <= {0, 1, 2}
    times = [t for _, t in calls]
    assert times[0] == 1.0 and len(calls) == steps
    assert [i for i, _ in calls] == model.route(torch.tensor(times)).tolist()  # as the sampler routes (float32)


def test_text8_normalisation_and_round_trip():
    assert normalize_text8("Hello,  World!\nÉté 2026") == "hello world ete"
    ids = encode("hello world", TEXT8)
    assert ids.dtype == np.uint8 and decode(ids, TEXT8) == "hello world"
    with pytest.raises(DataError, match="'!' at offset 5"):
        encode("hello!", TEXT8)


def test_corpus_splits_are_contiguous_and_batches_are_windows_of_train(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("abcdefghij " * 200)
    config = text_config(f"text.source={path}", "text.seq_len=16")
    corpus = load_corpus(config.text)
    parts = [corpus.split(s) for s in ("train", "validation", "test")]
    assert sum(map(len, parts)) == len(corpus.ids) and len(parts[2]) == int(len(corpus.ids) * 0.05)
    assert np.array_equal(np.concatenate(parts), corpus.ids)
    tokens, labels = TokenBatches(parts[0], 16).next_batch(32, torch.Generator().manual_seed(0))
    assert tokens.shape == (32, 16) and labels is None
    text = decode(tokens[0].tolist(), corpus.vocabulary)
    assert text in decode(parts[0], corpus.vocabulary)


def test_folders_parquet_and_the_chars_vocabulary(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "b.txt").write_text("Second.")
    (tmp_path / "books" / "a.txt").write_text("First!")
    assert read_text_source(str(tmp_path / "books"))[0] == "First!\nSecond."
    pq.write_table(pa.table({"text": ["One row.", "Two rows."], "n": [1, 2]}), tmp_path / "t.parquet")
    assert read_text_source(str(tmp_path / "t.parquet"))[0] == "One row.\nTwo rows."
    with pytest.raises(DataError, match="no column 'body'"):
        read_text_source(str(tmp_path / "t.parquet"), column="body")
    (tmp_path / "big.txt").write_text("Aa Bb, cc! " * 300)
    config = resolve_data(text_config(f"text.source={tmp_path / 'big.txt'}", "text.vocabulary=chars", "text.seq_len=8"))
    assert config.text.symbols == " !,ABabc" and task_for(config).options["vocabulary"] == " !,ABabc"


@pytest.mark.parametrize(
    "content, match, through_cli",
    [
        (b"", "no text left after normalisation", False),
        (b"!!! 123 ???", "no text left after normalisation", False),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data", True),
        (b"caf\xe9 latin-1", "not UTF-8 text", False),
        (b"just a few words", "fewer than one sequence", False),
    ],
)
def test_bad_text_is_refused_naming_the_file_and_nothing_starts(tmp_path, content, match, through_cli):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        resolve_data(text_config(f"text.source={path}"))
    if not through_cli:
        return
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "train",
            str(TEXT),
            "--set",
            f"text.source={path}",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2 and match.split()[0] in result.stderr and not out.exists()


def save_text_block(path, index, lo, hi, vocabulary, seq_len=16):
    task = get_task("text", {"vocabulary": vocabulary, "seq_len": seq_len})
    spec = NetSpec(**{**SPEC.to_dict(), "num_classes": len(vocabulary), "seq_len": seq_len})
    net = task.network(spec)
    block = {
        "index": index,
        "sigma_lo": lo,
        "sigma_hi": hi,
        "train_sigma_lo": lo,
        "train_sigma_hi": hi,
        "layer_start": index,
        "num_layers": 1,
    }
    meta = {
        "block": block,
        "net": spec.to_dict(),
        "task": "text",
        "task_options": task.options,
        "sigma_data": 0.5,
        "config_hash": "h",
    }
    ema = {k: v.clone() for k, v in net.state_dict().items()}
    save_block_weights(path, model=net.state_dict(), ema=ema, meta=meta)
    return meta


def test_a_vocabulary_mismatch_at_assembly_is_refused_naming_it(tmp_path):
    meta = save_text_block(tmp_path / "block_1.safetensors", 1, 0.0, 0.5, "ab ")
    entry = {"index": 1, "sigma_lo": 0.0, "sigma_hi": 0.5, "file": "block_1.safetensors"}
    check_block_matches(meta, entry, "h", {"vocabulary": "ab ", "seq_len": 16})  # matching: accepted
    with pytest.raises(CheckpointError, match="vocabulary differ"):
        check_block_matches(meta, entry, "h", {"vocabulary": TEXT8, "seq_len": 16})


def test_a_text_run_directory_loads_and_samples_through_its_manifest(tmp_path):
    from shared.checkpoint import sha256_file, write_manifest

    entries = []
    for index, (lo, hi) in enumerate([(0.5, 1.0), (0.0, 0.5)]):
        name = f"block_{index}.safetensors"
        save_text_block(tmp_path / name, index, lo, hi, TEXT8)
        entries.append(
            {"index": index, "sigma_lo": lo, "sigma_hi": hi, "file": name, "sha256": sha256_file(tmp_path / name)}
        )
    write_manifest(
        tmp_path,
        {
            "manifest_version": 1,
            "config_hash": "h",
            "task": "text",
            "task_options": {"vocabulary": TEXT8, "seq_len": 16},
            "boundaries": [0.0, 0.5, 1.0],
            "blocks": entries,
        },
    )
    model, manifest = load_assembled(tmp_path)
    ids = sample_text(model, num=2, length=16, steps=4, seed=0)
    assert ids.shape == (2, 16) and (ids < 27).all()
    assert json.loads((tmp_path / "manifest.json").read_text())["task_options"]["vocabulary"] == TEXT8


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_plans(path, tmp_path):
    """Every example config is a valid config with a plan; the paper configs with a stand-in for their corpus."""
    overrides = []
    if path.name == "text8_paper.yaml":
        corpus = tmp_path / "text8"
        corpus.write_text("the quick brown fox jumps over the lazy dog " * 2000)
        overrides = [f"text.source={corpus}"]
    if path.name == "lm1b_paper.yaml":  # LM1B is not shipped: a stand-in, and a BPE it can fill
        corpus = tmp_path / "lm1b.txt"
        corpus.write_text("".join(f"sentence {i} of a billion words, more or less.\n" for i in range(4000)))
        overrides = [f"autoregressive.source={corpus}", "autoregressive.vocab_size=400"]
    unmade = path.name in ("shapes.yaml", "shapes_latent.yaml")  # data the user makes first (tests/test_latent.py)
    config = resolve_data(load_config(path, overrides)) if not unmade else load_config(path, [])
    plan = plan_json(config) if not unmade else None
    assert plan is None or len(plan["blocks"]) == config.planned_blocks
    if path.name == "text8_paper.yaml":
        assert [b["layers"] for b in plan["blocks"]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
        assert plan["boundaries"] == pytest.approx([0, 1 / 3, 2 / 3, 1]) and config.model.hidden_size == 768
    if path.name == "lm1b_paper.yaml":
        assert [b["layers"] for b in plan["blocks"]] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
        assert config.blocks.overlap_gamma == 0.1 and config.autoregressive.seq_len == 256


def test_a_sample_longer_than_the_trained_sequence_is_refused(tmp_path):
    from shared.tasks.text.outputs import generate_texts

    with pytest.raises(ValueError, match=r"length 17: must be 1..16 \(the run's text.seq_len\)"):
        generate_texts(tmp_path, text_config("text.seq_len=16"), num=1, length=17)


def test_bits_by_time_of_a_uniform_denoiser_is_the_vocabulary_entropy_and_more_draws_tighten_it():
    vocabulary, mask_id = 27, 27
    tokens = torch.randint(0, vocabulary, (64, 32), generator=torch.Generator().manual_seed(0))

    def uniform(z, t):
        return torch.zeros(*z.shape, vocabulary)

    times = [0.1, 0.5, 0.9]
    one = bits_by_time(uniform, tokens, times, seed=0, mask_id=mask_id)
    many = bits_by_time(uniform, tokens, times, seed=0, mask_id=mask_id, draws=16)
    assert one == bits_by_time(uniform, tokens, times, seed=0, mask_id=mask_id)  # fixed seed, fixed curve
    entropy = math.log2(vocabulary)
    assert max(abs(b - entropy) for b in many) < 0.1
    assert max(abs(b - entropy) for b in many) < max(abs(b - entropy) for b in one)
