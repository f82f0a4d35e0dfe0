"""Step schedules meet the plan's boundaries exactly, and routing uses the plan's tie-break (lower-noise block
owns its upper edge); every random draw and tensor factory in the core follows the device it is given."""

import ast
from collections import Counter

import pytest
import torch

from shared.assembly import AssembledDenoiser
from shared.partition import block_for_sigma, equiprobable_boundaries
from shared.sampling import equiprobable_sigmas, karras_sigmas, sample_euler
from tests.conftest import REPO

P_MEAN, P_STD, SIGMA_MIN, SIGMA_MAX = -1.2, 1.2, 0.002, 80.0


class Recorder(torch.nn.Module):
    """A block that counts its calls and returns its input (a valid denoiser for counting purposes)."""

    def __init__(self, index: int, calls: Counter):
        super().__init__()
        self.index, self.calls = index, calls

    def forward(self, z, sigma, labels):
        self.calls[self.index] += 1
        return z


def calls_per_block(num_blocks: int, num_steps: int) -> list[int]:
    boundaries = equiprobable_boundaries(num_blocks, P_MEAN, P_STD, SIGMA_MIN, SIGMA_MAX)
    calls = Counter()
    assembled = AssembledDenoiser([Recorder(i, calls) for i in range(num_blocks)], boundaries)
    sigmas = equiprobable_sigmas(num_steps, SIGMA_MIN, SIGMA_MAX, P_MEAN, P_STD)
    sample_euler(assembled, torch.ones(2, 1, 2, 2), sigmas, labels=torch.zeros(2, dtype=torch.long))
    return [calls[i] for i in range(num_blocks)]


def test_b3_four_steps_calls_every_block():
    # Grid points at 2/3 and 1/3 of the mass lie on the inner boundaries: each goes to the lower-noise block.
    assert calls_per_block(3, 4) == [1, 1, 2]


@pytest.mark.parametrize("num_blocks,num_steps", [(3, 40), (2, 41), (4, 41), (3, 31), (5, 51)])
def test_grid_on_boundaries_splits_steps_evenly(num_blocks, num_steps):
    per_block = (num_steps - 1) // num_blocks
    # the last block also takes the final step at sigma_min (to sigma = 0)
    assert calls_per_block(num_blocks, num_steps) == [per_block] * (num_blocks - 1) + [per_block + 1]


def test_equiprobable_grid_points_are_bit_identical_to_boundaries():
    boundaries = equiprobable_boundaries(3, P_MEAN, P_STD, SIGMA_MIN, SIGMA_MAX)
    sigmas = equiprobable_sigmas(7, SIGMA_MIN, SIGMA_MAX, P_MEAN, P_STD)
    assert sigmas.dtype == torch.float64
    assert sigmas[2].item() == boundaries[2] and sigmas[4].item() == boundaries[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_routing_at_exact_boundaries_follows_the_plan_tie_break(dtype):
    boundaries = equiprobable_boundaries(4, P_MEAN, P_STD, SIGMA_MIN, SIGMA_MAX)
    assembled = AssembledDenoiser([torch.nn.Identity()] * 4, boundaries)
    sigma = torch.tensor(boundaries, dtype=torch.float64).to(dtype)
    routed = assembled.route(sigma).tolist()
    # sigma_min and the lowest inner boundary -> block 3; each inner boundary -> the block below it in noise
    assert routed == [3, 3, 2, 1, 0]
    assert routed[1:-1] == [block_for_sigma(boundaries, b) for b in boundaries[1:-1]]


def test_karras_schedule_is_float64_and_ends_at_zero():
    sigmas = karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    assert sigmas.dtype == torch.float64
    assert sigmas[0].item() == pytest.approx(SIGMA_MAX) and sigmas[-2].item() == pytest.approx(SIGMA_MIN)
    assert sigmas[-1].item() == 0.0


FACTORIES = {
    "rand",
    "randn",
    "randint",
    "randperm",
    "normal",
    "full",
    "zeros",
    "ones",
    "empty",
    "arange",
    "tensor",
    "linspace",
    "logspace",
    "Generator",
}


def test_every_tensor_factory_in_the_core_and_workers_names_its_device():
    """A factory without `device=` lands on the CPU; beside a CUDA generator or CUDA inputs it raises or silently
    copies. The core and the worker name the device every time (`device="cpu"` where host data is meant)."""
    missing = []
    for root in ("shared", "workers"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in FACTORIES
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                    and not any(k.arg == "device" for k in node.keywords)
                ):
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno} torch.{node.func.attr}")
    assert not missing, missing


def test_sample_sigmas_draws_on_the_generator_device():
    from shared.noise import sample_sigmas

    generator = torch.Generator(device="cpu").manual_seed(0)
    sigma = sample_sigmas(16, 0.1, 1.0, P_MEAN, P_STD, generator=generator)
    assert sigma.device == generator.device and sigma.dtype == torch.float32
    assert ((sigma >= 0.1) & (sigma <= 1.0)).all()
