import pytest
import torch

from shared.assembly import AssembledDenoiser
from shared.model import BlockNet, NetSpec, count_params
from shared.noise import edm_scalings
from shared.precond import Denoiser
from shared.sampling import equiprobable_sigmas, guided, karras_sigmas, sample_euler, sample_heun

SPEC = NetSpec(
    image_size=28, channels=1, num_classes=10, patch_size=4, hidden_size=32, num_heads=2, mlp_ratio=4.0, num_layers=2
)


def test_zero_initialised_block_is_c_skip_times_input():
    torch.manual_seed(0)
    denoiser = Denoiser(BlockNet(SPEC), sigma_data=0.5)
    z = torch.randn(4, 1, 28, 28)
    sigma = torch.tensor([0.01, 0.3, 2.0, 80.0])
    c_skip = edm_scalings(sigma, 0.5)[0].view(-1, 1, 1, 1)
    assert torch.allclose(denoiser(z, sigma, torch.tensor([0, 1, 2, 10])), c_skip * z)


def test_block_shapes_and_param_count():
    net = BlockNet(SPEC)
    out = net(torch.randn(3, 1, 28, 28), torch.zeros(3), torch.tensor([1, 2, 10]))
    assert out.shape == (3, 1, 28, 28)
    assert count_params(SPEC) == sum(p.numel() for p in net.parameters())


def test_output_convolution_starts_as_the_identity_and_mixes_neighbouring_patches():
    """model.output_conv: a 3x3 convolution after un-patchifying; at init the block is still D = c_skip * z (so a
    fresh block is unchanged), and once trained a pixel's output depends on the patch next to it."""
    from dataclasses import replace

    spec = replace(SPEC, output_conv=True)
    torch.manual_seed(0)
    denoiser = Denoiser(BlockNet(spec), sigma_data=0.5)
    z, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.3, 2.0])
    c_skip = edm_scalings(sigma, 0.5)[0].view(-1, 1, 1, 1)
    assert torch.allclose(denoiser(z, sigma, torch.tensor([0, 10])), c_skip * z)
    assert count_params(spec) == count_params(SPEC) + 9 + 1
    # At init the layers are identities (adaLN-Zero), so a pixel's output depends on its own patch only; once the
    # convolution has learnt (here: a 3x3 box) the corner pixel of patch (0, 0) sees the patch to its right.
    x = torch.randn(1, 1, 28, 28)
    moved = x.clone()
    moved[..., 0:4, 4:8] += 1.0

    def corner(net):
        torch.nn.init.normal_(net.head.weight)
        return [net(v, torch.zeros(1), torch.tensor([1]))[0, 0, 3, 3].item() for v in (x, moved)]

    plain = corner(BlockNet(SPEC))
    convolved = BlockNet(spec)
    torch.nn.init.constant_(convolved.output_conv.weight, 1 / 9)
    mixed = corner(convolved)
    assert plain[0] == pytest.approx(plain[1]) and mixed[0] != pytest.approx(mixed[1])
    assert "output_conv" not in dict(BlockNet(SPEC).named_parameters()) and NetSpec(**SPEC.to_dict()) == SPEC


def test_class_embedding_is_unit_scale():
    # docs/method.md ("What a block is"): a 0.02-std class embedding made the model ignore the class.
    assert BlockNet(SPEC).class_embed.weight.std() > 0.5


class GaussianDenoiser(torch.nn.Module):
    """The exact denoiser of data ~ N(0, var): D(z, sigma) = z * var / (var + sigma^2)."""

    def __init__(self, var):
        super().__init__()
        self.var = var

    def forward(self, z, sigma, labels):
        return z * self.var / (self.var + sigma.view(-1, 1, 1, 1) ** 2)


@pytest.mark.parametrize("sampler", [sample_euler, sample_heun])
def test_analytic_gaussian_through_the_sampler_recovers_data_variance(sampler):
    var = 0.25
    g = torch.Generator().manual_seed(0)
    z = 80.0 * torch.randn(20000, 1, 2, 2, generator=g)
    out = sampler(GaussianDenoiser(var), z, karras_sigmas(200, 0.002, 80.0), labels=torch.zeros(20000))
    assert out.var().item() == pytest.approx(var, rel=0.03)


def test_assembled_denoiser_routes_each_sigma_to_its_block():
    boundaries = [0.002, 0.3, 80.0]

    class Const(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, z, sigma, labels):
            return torch.full_like(z, self.value)

    assembled = AssembledDenoiser([Const(0.0), Const(1.0)], boundaries)  # block 0 = high noise
    z = torch.zeros(4, 1, 2, 2)
    out = assembled(z, torch.tensor([5.0, 0.3, 0.01, 0.31], dtype=torch.float64), torch.zeros(4))
    assert out[:, 0, 0, 0].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_schedules_descend_and_end_at_zero():
    for sigmas in (karras_sigmas(50, 0.002, 80.0), equiprobable_sigmas(50, 0.002, 80.0, -1.2, 1.2)):
        assert len(sigmas) == 51 and sigmas[-1] == 0
        assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.002)
        assert bool((sigmas[:-1] > sigmas[1:]).all())


def test_equiprobable_schedule_gives_even_steps_per_block():
    # The paper (docs/method.md, "Sampling"): 50 steps, B=3 -> Karras 33/4/13, equi-probability about 17/16/17.
    bounds = [0.002, 0.17963, 0.50504, 80.0]

    def per_block(sigmas):
        from shared.partition import block_for_sigma

        counts = [0, 0, 0]
        for s in sigmas[:-1].tolist():
            counts[block_for_sigma(bounds, s)] += 1
        return counts

    assert per_block(karras_sigmas(50, 0.002, 80.0)) == [33, 4, 13]
    assert max(per_block(equiprobable_sigmas(50, 0.002, 80.0, -1.2, 1.2))) <= 18


def test_guidance_scale_one_is_the_conditional_denoiser_and_two_extrapolates():
    def d(z, s, y):  # cond -> 1, null -> 0
        return z * 0 + (y != 10).float().view(-1, 1, 1, 1)

    z, s, y = torch.zeros(2, 1, 1, 1), torch.ones(2), torch.tensor([3, 4])
    assert guided(d, 1.0, 10)(z, s, y).flatten().tolist() == [1.0, 1.0]
    assert guided(d, 2.0, 10)(z, s, y).flatten().tolist() == [2.0, 2.0]
