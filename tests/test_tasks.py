"""The task interface (every registered task trains, round-trips through a block file, and is routed like any
denoiser) and the classification math: normalised targets, the softmax-expected estimate, one call per block."""

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from shared.assembly import AssembledDenoiser, load_block_denoiser
from shared.checkpoint import save_block_weights
from shared.config import ConfigError, load_config
from shared.images import load_images
from shared.model import AdaLNTrunk, NetSpec
from shared.partition import equiprobable_boundaries, uniform_log_boundaries
from shared.plan import boundaries as plan_boundaries
from shared.tasks import TASKS, get_task, task_for
from shared.tasks.classification.task import (
    LabelDenoiser,
    LabelDenoiserNet,
    boundary_sigmas,
    classify,
    expected_calibration_error,
    expected_embedding,
    initial_class_embedding,
    label_readability,
)

REPO = Path(__file__).resolve().parents[1]
CLASSIFY = REPO / "configs" / "classify.yaml"

SPEC = NetSpec(
    image_size=28, channels=1, num_classes=10, patch_size=7, hidden_size=32, num_heads=2, mlp_ratio=2.0, num_layers=1
)


TEXT_SPEC = NetSpec(**{**SPEC.to_dict(), "num_classes": 27, "seq_len": 12})
# Per task: its options, block shape, one clean batch (and labels) and noise levels on its own axis. A new task must
# add its row here (the next test checks), so the interface test covers it.
EXAMPLES = {
    "image_generation": ({}, SPEC, torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), [0.01, 0.1, 1.0, 10.0]),
    "classification": ({}, SPEC, torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), [0.01, 0.1, 1.0, 10.0]),
    "text": (
        {"vocabulary": " abcdefghijklmnopqrstuvwxyz", "seq_len": 12},
        TEXT_SPEC,
        torch.randint(0, 27, (4, 12)),
        None,
        [0.05, 0.3, 0.7, 1.0],
    ),
    "autoregressive": (
        {"tokenizer": "bytes", "seq_len": 12},
        NetSpec(num_classes=256, hidden_size=32, num_heads=2, mlp_ratio=2.0, num_layers=1, seq_len=12),
        torch.randint(0, 256, (4, 12)),
        None,
        [0.01, 0.1, 1.0, 10.0],
    ),
    "recurrent_depth": (
        {"tokenizer": "bytes", "seq_len": 12, "prelude_layers": 1, "coda_layers": 1},
        NetSpec(num_classes=256, hidden_size=32, num_heads=2, mlp_ratio=2.0, num_layers=3, seq_len=12),
        torch.randint(0, 256, (4, 12)),
        None,
        [0.01, 0.1, 1.0, 10.0],
    ),
}


def test_every_registered_task_has_an_example():
    assert set(EXAMPLES) == set(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_trains_saves_and_loads(name, tmp_path):
    options, spec, images, labels, noise = EXAMPLES[name]
    task = get_task(name, options)
    assert task.options == {**task.options, **options} and task.axis in ("sigma", "t")
    torch.manual_seed(0)
    net = task.network(spec)
    model = task.denoiser(net, 0.5)
    sigma = torch.tensor(noise)
    loss = task.loss(
        model, images, labels, sigma, sigma_data=0.5, generator=torch.Generator().manual_seed(0), label_dropout=0.1
    )
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    path = tmp_path / "block.safetensors"
    save_block_weights(
        path,
        model=net.state_dict(),
        ema={k: v.clone() for k, v in net.state_dict().items()},
        meta={"block": {}, "net": spec.to_dict(), "task": name, "task_options": task.options, "sigma_data": 0.5},
    )
    loaded, meta = load_block_denoiser(path)
    assert meta["task"] == name and type(loaded) is type(model)
    preview = task.preview(loaded, images, labels, 0.1, 1.0, torch.Generator().manual_seed(0))
    assert preview is None or isinstance(preview, str) or preview.shape[1:] == images.shape[1:]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_network_shares_the_trunk_and_recomputes_layers_exactly(name):
    """Every task's block network is the shared adaLN trunk: zero-initialised output (a fresh block adds nothing),
    and activation checkpointing (memory for compute) changes neither the loss nor any gradient."""
    options, spec, images, labels, noise = EXAMPLES[name]
    task = get_task(name, options)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        net = task.network(spec, activation_checkpointing=checkpointing)
        assert isinstance(net, AdaLNTrunk)
        assert not net.head.weight.any() and not net.ada_out.weight.any()
        for p in net.parameters():  # away from the zero init, so every layer carries gradient
            p.data.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        loss = task.loss(
            task.denoiser(net, 0.5), images, labels, torch.tensor(noise), sigma_data=0.5,
            generator=torch.Generator().manual_seed(0), label_dropout=0.0,
        )  # fmt: skip
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = grads
    torch.testing.assert_close(loss_ckpt, loss_plain)
    assert len(grads_ckpt) == len(grads_plain) > 0
    for g_ckpt, g_plain in zip(grads_ckpt, grads_plain):
        torch.testing.assert_close(g_ckpt, g_plain)


def test_unknown_task_is_refused_naming_it():
    with pytest.raises(ValueError, match="task 'poetry'"):
        get_task("poetry")


def test_class_targets_are_unit_norm_and_start_equal_in_every_block():
    a, b = LabelDenoiserNet(SPEC), LabelDenoiserNet(SPEC)
    assert torch.allclose(a.targets().norm(dim=1), torch.ones(10))
    assert torch.equal(a.class_embed, b.class_embed)  # one embedding space to start with, no communication


def test_expected_embedding_is_the_softmax_weighted_mean_of_targets():
    targets = torch.nn.functional.normalize(torch.randn(3, 5), dim=1)
    confident = torch.tensor([[50.0, 0.0, 0.0]])
    assert torch.allclose(expected_embedding(confident, targets), targets[:1], atol=1e-6)
    uniform = torch.zeros(1, 3)
    assert torch.allclose(expected_embedding(uniform, targets), targets.mean(0, keepdim=True), atol=1e-6)


class CountingBlock(torch.nn.Module):
    def __init__(self, index, calls):
        super().__init__()
        self.index, self.calls = index, calls
        self.net = LabelDenoiserNet(SPEC)

    def forward(self, z, sigma, images):
        self.calls[self.index] += 1
        return torch.zeros(len(z), SPEC.num_classes)


@pytest.mark.parametrize("num_blocks", [1, 2, 3, 4])
@pytest.mark.parametrize("partition", ["equiprobable", "uniform_log"])
def test_default_schedule_calls_each_block_once_in_order(num_blocks, partition):
    if partition == "equiprobable":
        boundaries = equiprobable_boundaries(num_blocks, -1.2, 1.2, 0.002, 80.0)
    else:
        boundaries = uniform_log_boundaries(num_blocks, 0.002, 80.0)
    calls = Counter()
    assembled = AssembledDenoiser([CountingBlock(i, calls) for i in range(num_blocks)], boundaries)
    sigmas = boundary_sigmas(boundaries)
    assert len(sigmas) == num_blocks + 1 and sigmas[-1] == 0
    logits, steps = classify(assembled, torch.zeros(3, 1, 28, 28), sigmas, seed=0)
    assert [calls[i] for i in range(num_blocks)] == [1] * num_blocks and len(steps) == num_blocks
    assert logits.shape == (3, SPEC.num_classes)


def test_a_fresh_classifier_predicts_uniform_probabilities():
    model = LabelDenoiser(LabelDenoiserNet(SPEC), 0.5)
    logits = model(torch.randn(2, 32), torch.tensor([1.0, 0.1]), torch.randn(2, 1, 28, 28))
    assert torch.allclose(logits.softmax(1), torch.full((2, 10), 0.1))


def test_expected_calibration_error_known_values():
    labels = torch.tensor([0, 0, 1, 1])
    perfect = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, labels, 10) == pytest.approx(0.0)
    overconfident = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])  # 90 % sure, 50 % right
    assert expected_calibration_error(overconfident, labels, 10) == pytest.approx(0.4)


def test_images_to_label_load_from_npz_png_and_folders_with_clear_errors(tmp_path):
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[5:10, 5:10] = 255
    for i in range(3):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    folder = load_images(tmp_path, channels=1, size=28)
    assert folder.shape == (3, 1, 28, 28) and folder.min() == -1 and folder.max() == 1
    assert torch.equal(load_images(tmp_path / "0.png", channels=1, size=28), folder[:1])
    np.savez(tmp_path / "x.npz", images=folder.numpy())
    assert torch.equal(load_images(tmp_path / "x.npz", channels=1, size=28), folder)
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="big.png: 32x32 pixels, the model takes 28x28"):
        load_images(tmp_path / "big.png", channels=1, size=28)
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 3, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="bad.npz: images of shape"):
        load_images(tmp_path / "bad.npz", channels=1, size=28)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        load_images(tmp_path / "broken.png", channels=1, size=28)


def test_the_backprop_baseline_is_the_same_network_blind_to_noise_and_plain_cross_entropy():
    task = get_task("classification", {"objective": "backprop"})
    torch.manual_seed(0)
    net = task.network(SPEC)
    torch.nn.init.normal_(net.head.weight)  # a non-trivial head so the logits depend on the input
    model = task.denoiser(net, 0.5)
    images, labels = torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2])
    a = model(torch.randn(3, 32), torch.tensor([0.01, 1.0, 50.0]), images)
    b = model(torch.randn(3, 32), torch.tensor([5.0, 0.2, 0.003]), images)
    assert torch.equal(a, b)  # neither z nor sigma reaches it: an ordinary classifier
    loss = task.loss(model, images, labels, torch.ones(3), sigma_data=0.5, generator=torch.Generator(), label_dropout=0)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(a, labels))
    rebuilt = get_task("classification", task.options)
    assert type(rebuilt) is type(task) and rebuilt.options == {
        "objective": "backprop",
        "augment_shift": 0,
        "output": "features",
    }


def test_backprop_needs_end_to_end_and_a_bad_objective_is_named():
    from shared.config import ConfigError
    from tests.conftest import TINY

    with pytest.raises(ConfigError, match="classification.objective backprop .* train.mode end_to_end"):
        load_config(TINY, ["task=classification", "classification.objective=backprop"])
    config = load_config(TINY, ["task=classification", "classification.objective=backprop", "train.mode=end_to_end"])
    assert config.planned_blocks == 1
    with pytest.raises(ValueError, match="objective must be one of"):
        get_task("classification", {"objective": "guessing"})


def test_a_run_sets_only_its_own_tasks_section_and_names_only_registered_tasks():
    from shared.config import ConfigError, parse_config
    from shared.tasks import TASKS
    from tests.conftest import TINY

    for overrides, words in (
        (["classification.objective=backprop", "train.mode=end_to_end"], "classification: the section of another"),
        (["task=classification", "text.seq_len=64"], "text: the section of another task; this run's task is class"),
        (["task=painting"], f"task 'painting' does not exist; available: {sorted(TASKS)}"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            load_config(TINY, overrides)
    assert load_config(TINY, ["task=text", "text.seq_len=64"]).text.seq_len == 64
    text = load_config(TINY, ["task=text"])
    assert "classification" not in text.model_dump() and "text" not in load_config(TINY).model_dump()
    # a run stored before each task had its own run config spelled out every section at its defaults: it still reads
    legacy = {**text.model_dump(), "classification": TASKS["classification"].section_model().model_dump()}
    assert parse_config(legacy, stored=True) == text
    with pytest.raises(ConfigError, match="classification: the section of another task"):
        parse_config(legacy)  # from a caller, another task's section is refused even at its defaults
    legacy["classification"]["augment_shift"] = 5
    with pytest.raises(ConfigError, match="classification: the section of another task"):
        parse_config(legacy, stored=True)
    assert {name: cls.name for name, cls in TASKS.items()} == {name: name for name in TASKS}


def test_random_shift_translates_each_image_by_at_most_the_shift():
    from shared.tasks.classification.task import random_shift

    images = -torch.ones(64, 1, 9, 9)
    images[:, :, 4, 4] = 1.0  # one bright pixel in the middle of a background of -1
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and ((shifted == 1.0).sum(dim=(1, 2, 3)) == 1).all()
    rows, cols = (shifted[:, 0] == 1.0).nonzero()[:, 1:].T
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # each image drew its own offset
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


class RecordingBlock(CountingBlock):
    """Records the z it is called with; predicts class 0 with certainty."""

    def forward(self, z, sigma, images):
        self.calls.setdefault("z", []).append(z.clone())
        return torch.nn.functional.one_hot(torch.zeros(len(z), dtype=torch.long), SPEC.num_classes) * 50.0


def test_the_noise_start_draws_z_at_sigma_max_and_the_zero_start_is_one_seed_free_path():
    boundaries = equiprobable_boundaries(2, -1.2, 1.2, 0.002, 80.0)
    sigmas = boundary_sigmas(boundaries)
    seen = {}
    for start in ("noise", "zero"):
        for seed in (0, 1):
            calls = {}
            assembled = AssembledDenoiser([RecordingBlock(i, calls) for i in range(2)], boundaries)
            logits, _ = classify(assembled, torch.zeros(256, 1, 28, 28), sigmas, seed=seed, start=start)
            assert (logits.argmax(1) == 0).all()
            seen[start, seed] = calls["z"]
    first = seen["noise", 0][0]
    assert abs(float(first.std()) - float(sigmas[0])) < 0.05 * float(sigmas[0])  # randn scaled to sigma_max
    assert not torch.equal(first, seen["noise", 1][0])  # the seed picks the noise
    assert torch.equal(seen["zero", 0][0], torch.zeros_like(first))
    assert all(torch.equal(a, b) for a, b in zip(seen["zero", 0], seen["zero", 1]))  # no seed enters the path
    # the zero start's second block sees the first block's estimate exactly (class 0's normalised embedding)
    target = assembled.blocks[0].net.targets()[0]
    shrink = 1 - float(sigmas[1] / sigmas[0])
    assert torch.allclose(seen["zero", 0][1], (shrink * target).expand(256, -1), atol=1e-5)
    with pytest.raises(ValueError, match="start must be one of"):
        classify(assembled, torch.zeros(1, 1, 28, 28), sigmas, seed=0, start="mean")


def test_the_noisy_label_gives_itself_away_at_low_noise_and_not_at_high():
    targets = F.normalize(initial_class_embedding(10, 64), dim=1)
    generator = torch.Generator().manual_seed(0)
    curve = [label_readability(s, targets, samples=4000, generator=generator) for s in (0.05, 0.3, 1.0, 3.0, 30.0)]
    assert curve[0] == 1.0 and curve[-1] < 0.15  # 10 classes: chance is 0.1
    assert all(a > b for a, b in zip(curve, curve[1:]))


def test_the_classification_example_splits_its_blocks_where_the_image_decides():
    """configs/classify.yaml trains its noise where the label is still open: every hand-over between blocks lies
    where z alone names the label less than half the time (at EDM's p_mean -1.2: 0.999 and 0.66)."""
    config = load_config(REPO / "configs" / "classify.yaml")
    targets = F.normalize(initial_class_embedding(10, config.model.hidden_size), dim=1)
    inner = get_task("classification").boundaries(config)[1:-1]
    generator = torch.Generator().manual_seed(0)
    assert len(inner) == config.blocks.num_blocks - 1
    assert all(label_readability(s, targets, samples=4000, generator=generator) < 0.5 for s in inner)


def test_the_official_output_form_reads_the_noisy_label_through_a_skip_path():
    """`classification.output: skip`: logits = head(adaLN(c_out * F + c_skip * z)). With the label's input path cut,
    the skip form still reads z (most at low noise, where c_skip is near 1), the features form does not."""
    torch.manual_seed(0)
    net = LabelDenoiserNet(SPEC)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    torch.nn.init.zeros_(net.label_in.weight)  # z reaches the label token's input no more
    images = torch.randn(2, 1, 28, 28)
    z, other = torch.randn(2, 32), torch.randn(2, 32)
    low = torch.tensor([0.01, 0.01])
    plain, skip = LabelDenoiser(net, 0.5), LabelDenoiser(net, 0.5, skip=True)
    assert torch.allclose(plain(z, low, images), plain(other, low, images))
    assert not torch.allclose(skip(z, low, images), skip(other, low, images), atol=1e-3)
    assert LabelDenoiser(net, 0.5, noise_free=True, skip=True).skip is False  # the backprop baseline has no z
    task = task_for(load_config(CLASSIFY, ["classification.output=skip"]))
    assert task.options["output"] == "skip" and task.denoiser(task.network(SPEC), 0.5).skip
    with pytest.raises(ConfigError, match="classification.output"):
        load_config(CLASSIFY, ["classification.output=residual"])


@pytest.mark.parametrize("num_blocks", [2, 3, 4])
def test_the_official_grid_is_b_points_of_the_equal_probability_grid_each_block_called_once(num_blocks):
    from shared.tasks.classification.outputs import inference_sigmas

    config = load_config(CLASSIFY, [f"blocks.num_blocks={num_blocks}", "model.num_layers=12", "noise.p_mean=-1.2"])
    sigmas = inference_sigmas(config)
    assert config.classification.grid == "official" and len(sigmas) == num_blocks + 1
    assert sigmas[0] == 80.0 and sigmas[-2] == pytest.approx(0.002) and sigmas[-1] == 0
    if num_blocks == 3:  # the official code's default for B = 3: 80, 0.3012, 0.002
        assert sigmas[1].item() == pytest.approx(0.3012, abs=1e-4)
    boundaries = plan_boundaries(config)
    calls = Counter()
    assembled = AssembledDenoiser([CountingBlock(i, calls) for i in range(num_blocks)], boundaries)
    classify(assembled, torch.zeros(3, 1, 28, 28), sigmas, seed=0)
    assert [calls[i] for i in range(num_blocks)] == [1] * num_blocks
    assert torch.equal(inference_sigmas(config, "boundaries"), boundary_sigmas(boundaries))
