"""Offline evaluation: the FD math, the classifier's held-out accuracy, and that eval orders real above noise."""

import pytest
import torch

from shared.data.builtin import load_builtin
from shared.evaluation import cached_classifier, evaluate_samples, frechet_distance, predict, train_classifier


def test_frechet_distance_of_known_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50_000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    assert frechet_distance(a, shifted) == pytest.approx(5.0, abs=1e-6)
    # N(0, I) vs N(0, 4I) in 3-D: tr(I + 4I - 2*2I) = 3.
    assert frechet_distance(a, 2 * torch.randn(50_000, 3, generator=g, dtype=torch.float64)) == pytest.approx(
        3.0, rel=0.03
    )


# The evaluation trains its classifier for 12 epochs (~2 minutes on 2 cores): 0.986-0.988 held-out accuracy, reported
# as `classifier_test_accuracy` by every `dblocks eval` (benchmarks/results/eval-quickstart-cpu.json). The suite trains
# the same recipe for 3 epochs: enough to show it learns, and the ordering below, in a quarter of the time.
SUITE_EPOCHS = 3


@pytest.fixture(scope="module")
def classifier_and_data(tmp_path_factory):
    train = load_builtin("mnist", "train", num_test=1000, split_seed=0)
    test = load_builtin("mnist", "test", num_test=1000, split_seed=0)
    model = train_classifier(*train, num_classes=10, epochs=SUITE_EPOCHS)
    return model, train, test


def test_the_classifier_is_cached_by_its_training_data(tmp_path, monkeypatch):
    """Trained once per (images, labels, seed), then loaded: a second call trains nothing."""
    import shared.evaluation as evaluation

    images, labels = torch.rand(64, 1, 28, 28) * 2 - 1, torch.arange(64) % 10
    calls = []
    real = evaluation.train_classifier
    monkeypatch.setattr(evaluation, "train_classifier", lambda *a, **k: calls.append(1) or real(*a, **k, epochs=1))
    first = cached_classifier(images, labels, num_classes=10, cache_dir=tmp_path)
    second = cached_classifier(images, labels, num_classes=10, cache_dir=tmp_path)
    assert len(calls) == 1 and len(list(tmp_path.iterdir())) == 1
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    cached_classifier(images, labels.roll(1), num_classes=10, cache_dir=tmp_path)  # other labels: trained anew
    assert len(calls) == 2


def test_train_and_test_splits_are_disjoint():
    (tr, _), (te, _) = (load_builtin("mnist", s, num_test=1000, split_seed=0) for s in ("train", "test"))
    assert len(tr) == 4000 and len(te) == 1000
    train_rows = {bytes(x.numpy().tobytes()) for x in tr}
    assert sum(bytes(x.numpy().tobytes()) in train_rows for x in te) < 5  # (MNIST has a few exact duplicates)


def test_classifier_learns_held_out_digits(classifier_and_data):
    model, _, (test_x, test_y) = classifier_and_data
    _, pred = predict(model, test_x)
    assert (pred == test_y).double().mean() >= 0.95  # after 3 of the evaluation's 12 epochs


def test_eval_orders_real_above_shuffled_and_noise(classifier_and_data):
    model, (train_x, train_y), (test_x, _) = classifier_and_data
    real = evaluate_samples(model, train_x[:1000], train_y[:1000], test_x)
    g = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(784, generator=g) for _ in range(1000)])
    shuffled = torch.gather(train_x[:1000].flatten(1), 1, perm).view(-1, 1, 28, 28)
    shuffled_eval = evaluate_samples(model, shuffled, train_y[:1000], test_x)
    noise_eval = evaluate_samples(model, torch.randn(1000, 1, 28, 28, generator=g), train_y[:1000], test_x)
    assert real["fd"] < shuffled_eval["fd"] and real["fd"] < noise_eval["fd"]
    assert real["class_accuracy"] > 0.95 > 0.3 > shuffled_eval["class_accuracy"]
