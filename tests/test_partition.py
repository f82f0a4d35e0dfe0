import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.noise import lognormal_cdf
from shared.partition import (
    block_for_sigma,
    equiprobable_boundaries,
    plan_blocks,
    split_layers,
    uniform_log_boundaries,
    widen,
)

DEFAULTS = dict(p_mean=-1.2, p_std=1.2, sigma_min=0.002, sigma_max=80.0)

# docs/method.md check values.
TABLE = {2: [0.002, 0.3012, 80], 3: [0.002, 0.17963, 0.50504, 80], 4: [0.002, 0.13408, 0.3012, 0.67665, 80]}


@pytest.mark.parametrize("num_blocks", [2, 3, 4])
def test_boundaries_match_method_table(num_blocks):
    got = equiprobable_boundaries(num_blocks, **DEFAULTS)
    assert got == pytest.approx(TABLE[num_blocks], rel=5e-5)


@given(st.integers(1, 12), st.floats(-3, 1), st.floats(0.3, 3))
def test_each_block_holds_one_over_b_of_the_mass(num_blocks, p_mean, p_std):
    b = equiprobable_boundaries(num_blocks, p_mean, p_std, 0.002, 80.0)
    q = [lognormal_cdf(s, p_mean, p_std) for s in b]
    masses = [(q[i + 1] - q[i]) / (q[-1] - q[0]) for i in range(num_blocks)]
    assert masses == pytest.approx([1 / num_blocks] * num_blocks, abs=1e-9)
    assert all(x < y for x, y in zip(b, b[1:]))


def test_uniform_log_is_equal_width_in_log_sigma():
    b = uniform_log_boundaries(4, 0.002, 80.0)
    widths = [math.log(y) - math.log(x) for x, y in zip(b, b[1:])]
    assert widths == pytest.approx([widths[0]] * 4)


def test_block_zero_owns_highest_noise_and_first_layers():
    specs = plan_blocks(TABLE[3], [2, 2, 2], gamma=0.0)
    assert specs[0].sigma_hi == 80 and specs[-1].sigma_lo == 0.002
    assert [s.layers for s in specs] == [[0, 1], [2, 3], [4, 5]]
    assert all(a.sigma_lo == b.sigma_hi for a, b in zip(specs, specs[1:]))  # contiguous, descending


def test_overlap_widens_in_log_space_and_clamps():
    lo, hi = widen(0.17963, 0.50504, 0.05, 0.002, 80.0)
    width = math.log(0.50504) - math.log(0.17963)
    assert math.log(0.17963) - math.log(lo) == pytest.approx(0.05 * width)
    assert math.log(hi) - math.log(0.50504) == pytest.approx(0.05 * width)
    assert widen(0.50504, 80.0, 0.05, 0.002, 80.0)[1] == 80.0
    assert widen(0.002, 0.17963, 0.05, 0.002, 80.0)[0] == 0.002
    assert widen(0.1, 0.2, 0.0, 0.002, 80.0) == pytest.approx((0.1, 0.2))


def test_tie_break_lower_noise_block_owns_its_upper_edge():
    b = TABLE[3]
    assert block_for_sigma(b, b[1]) == 2  # boundary between blocks 2 and 1 belongs to block 2
    assert block_for_sigma(b, b[2]) == 1
    assert block_for_sigma(b, b[2] * 1.0001) == 0
    assert block_for_sigma(b, 80.0) == 0 and block_for_sigma(b, 1e3) == 0
    assert block_for_sigma(b, 0.002) == 2 and block_for_sigma(b, 1e-5) == 2
    assert block_for_sigma([0.002, 80.0], 5.0) == 0


def test_layer_split_equal_or_explicit():
    assert split_layers(6, 3) == [2, 2, 2]
    assert split_layers(12, 3, [2, 4, 6]) == [2, 4, 6]
    with pytest.raises(ValueError):
        split_layers(6, 4)
    with pytest.raises(ValueError):
        split_layers(12, 3, [2, 4, 5])
