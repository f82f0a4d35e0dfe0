import math

import pytest
import torch

from shared.noise import edm_scalings, lognormal_cdf, loss_weight, sample_sigmas


def test_c_skip_is_one_at_zero_noise_and_scalings_match_edm():
    c_skip, c_out, c_in, c_noise = edm_scalings(torch.tensor([0.0, 0.5, 80.0]), 0.5)
    assert c_skip[0] == 1.0 and c_out[0] == 0.0
    assert c_skip[1] == pytest.approx(0.5) and c_out[1] == pytest.approx(0.25 / math.sqrt(0.5))
    assert c_in[2] == pytest.approx(1 / math.sqrt(6400.25))
    assert c_noise[1] == pytest.approx(math.log(0.5) / 4)


def test_loss_weight_is_large_at_low_noise():
    w = loss_weight(torch.tensor([0.002, 0.5]), 0.5)
    assert w[0] == pytest.approx((0.002**2 + 0.25) / (0.002 * 0.5) ** 2)
    assert w[0] > 2e5 and w[1] == pytest.approx(8.0)


def test_truncated_sampling_stays_in_range_and_follows_the_lognormal():
    g = torch.Generator().manual_seed(0)
    lo, hi = 0.17963, 0.50504
    s = sample_sigmas(200_000, lo, hi, -1.2, 1.2, generator=g)
    assert s.min() >= lo and s.max() <= hi
    mid = 0.3
    expected = (lognormal_cdf(mid, -1.2, 1.2) - lognormal_cdf(lo, -1.2, 1.2)) / (
        lognormal_cdf(hi, -1.2, 1.2) - lognormal_cdf(lo, -1.2, 1.2)
    )
    assert (s < mid).double().mean().item() == pytest.approx(expected, abs=0.005)


def test_same_generator_seed_same_sigmas():
    a = sample_sigmas(8, 0.002, 80, -1.2, 1.2, generator=torch.Generator().manual_seed(3))
    b = sample_sigmas(8, 0.002, 80, -1.2, 1.2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
