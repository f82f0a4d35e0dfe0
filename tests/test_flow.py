"""The flow-matching axis (noise.axis: flow): x_t = (1 - t) y + t eps, velocity prediction, logit-normal t. Through
sigma = t / (1 - t) it is the sigma axis exactly: the equal-mass boundaries are the logit-normal's quantiles, the
overlap widens logit t, Euler in t is Euler in sigma on the rescaled state, and the loss is velocity MSE."""

import math
from statistics import NormalDist

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import load_config, parse_config
from shared.model import BlockNet
from shared.noise import ddpm_sigmas, ddpm_timestep
from shared.plan import block_specs, boundaries, net_spec, plan_json
from shared.precond import Denoiser, denoising_loss, scalings
from shared.sampling import euler_step
from shared.tasks import task_for
from tests.conftest import REPO

FLOW = REPO / "configs" / "flow.yaml"


def t_of(sigma):
    return sigma / (1 + sigma)


def logit(t: float) -> float:
    return math.log(t / (1 - t))


@given(st.integers(1, 8), st.floats(-2, 2), st.floats(0.3, 2.5), st.floats(0.25, 4))
@settings(max_examples=30, deadline=None)
def test_flow_boundaries_are_the_logit_normals_equal_mass_quantiles_in_t(num_blocks, mean, std, shift):
    config = parse_config(
        {
            "noise": {
                "axis": "flow",
                "p_mean": mean,
                "p_std": std,
                "shift": shift,
                "sigma_min": 1e-3,
                "sigma_max": 999,
            },
            "blocks": {"num_blocks": num_blocks},
            "model": {"num_layers": num_blocks},
        }
    )
    ts = [t_of(s) for s in boundaries(config)]
    # the shifted logit-normal: logit t ~ N(mean + ln shift, std), truncated to [t_min, t_max]
    law = NormalDist(mean + math.log(shift), std)
    q = [law.cdf(logit(t)) for t in ts]
    masses = [(b - a) / (q[-1] - q[0]) for a, b in zip(q, q[1:])]
    assert masses == pytest.approx([1 / num_blocks] * num_blocks, abs=1e-9)
    assert ts[0] == pytest.approx(1e-3 / 1.001) and ts[-1] == pytest.approx(0.999)


def test_flow_overlap_widens_each_interval_in_logit_t_and_the_plan_shows_t():
    config = load_config(FLOW, ["blocks.overlap_gamma=0.1"])
    plan = plan_json(config)
    assert plan["axis"] == "flow" and plan["precond"] == "flow"
    assert plan["t_boundaries"] == pytest.approx([t_of(s) for s in plan["boundaries"]])
    assert plan["t_boundaries"][1] == pytest.approx(1 / (1 + math.exp(-NormalDist().inv_cdf(1 / 3))), rel=1e-3)
    for spec in block_specs(config):
        lo, hi = logit(t_of(spec.sigma_lo)), logit(t_of(spec.sigma_hi))
        wide_lo, wide_hi = logit(t_of(spec.train_sigma_lo)), logit(t_of(spec.train_sigma_hi))
        if spec.sigma_lo > config.noise.sigma_min * 1.0001:  # an inner edge: widened by gamma x width
            assert lo - wide_lo == pytest.approx(0.1 * (hi - lo), rel=1e-9)
        if spec.sigma_hi < config.noise.sigma_max * 0.9999:
            assert wide_hi - hi == pytest.approx(0.1 * (hi - lo), rel=1e-9)


def test_an_euler_step_in_t_is_an_euler_step_in_sigma_on_the_rescaled_state():
    """x_t = z / (1 + sigma): Euler in t on x with v = (x - D) / t lands on the Euler step in sigma, rescaled."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    denoised = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    for sigma, sigma_next in ((999.0, 3.0), (1.5, 0.65), (0.2, 0.0)):
        t, t_next = t_of(sigma), t_of(sigma_next)
        x = z / (1 + sigma)
        x_next = x + (t_next - t) * (x - denoised) / t  # Euler in t; velocity = (x - D) / t
        z_next = euler_step(z, denoised, sigma, sigma_next)  # Euler in sigma
        assert torch.allclose(x_next, z_next / (1 + sigma_next), atol=1e-12)


def test_the_flow_denoiser_is_x_minus_t_v_and_its_loss_is_velocity_mse():
    config = load_config(FLOW)
    task = task_for(config)
    assert task.options == {"precond": "flow", "loss": "velocity"}
    torch.manual_seed(0)
    net = BlockNet(net_spec(config, 1))
    torch.nn.init.normal_(net.head.weight, std=0.1)  # not the zero head: F must matter
    denoiser = task.denoiser(net, config.noise.sigma_data)
    g = torch.Generator().manual_seed(1)
    y = torch.rand(3, 1, 28, 28, generator=g) * 2 - 1
    eps = torch.randn(3, 1, 28, 28, generator=g)
    labels = torch.tensor([1, 2, 3])
    t = torch.tensor([0.1, 0.5, 0.9])
    sigma = t / (1 - t)
    x_t = (1 - t).view(-1, 1, 1, 1) * y + t.view(-1, 1, 1, 1) * eps
    with torch.no_grad():
        v_hat = net(x_t, t, labels)  # the network sees x_t and t itself
        denoised = denoiser(y + sigma.view(-1, 1, 1, 1) * eps, sigma, labels)
    assert torch.allclose(denoised, x_t - t.view(-1, 1, 1, 1) * v_hat, atol=1e-5)
    with torch.no_grad():
        loss = denoising_loss(denoiser, y, sigma, eps, labels, config.noise.sigma_data, "velocity")
    velocity_mse = (v_hat - (eps - y)).pow(2).flatten(1).mean(1).mean()
    assert float(loss) == pytest.approx(float(velocity_mse), rel=1e-4)


def test_sit_velocity_is_flow_with_time_reversed_and_ddpm_eps_recovers_its_timesteps():
    sigma = torch.tensor([0.05, 1.0, 20.0])
    skip_f, out_f, in_f, noise_f = scalings("flow", sigma, 0.5)
    skip_s, out_s, in_s, noise_s = scalings("sit_velocity", sigma, 0.5)
    assert torch.equal(skip_f, skip_s) and torch.equal(in_f, in_s) and torch.allclose(out_s, -out_f)
    assert torch.allclose(noise_s * 1000, 1 - noise_f)
    table = ddpm_sigmas()
    steps = torch.tensor([0, 1, 250, 998, 999])
    assert torch.allclose(ddpm_timestep(table[steps]), steps.double(), atol=1e-9)
    mid = (table[10].log() + table[11].log()).div(2).exp()
    assert 10 < float(ddpm_timestep(mid)) < 11
    assert float(table[0]) == pytest.approx(0.01, rel=1e-3) and 150 < float(table[-1]) < 160
    _, out, c_in, _ = scalings("ddpm_eps", sigma, 0.5)
    assert torch.allclose(out, -sigma) and torch.allclose(c_in, (1 + sigma**2).rsqrt())


def test_flow_is_refused_where_a_task_has_no_flow_axis_and_edm_runs_keep_their_options():
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match="noise.axis flow: task classification trains on edm"):
        parse_config({"task": "classification", "noise": {"axis": "flow"}})
    with pytest.raises(ConfigError, match="flow_loss applies to axis flow"):
        parse_config({"noise": {"flow_loss": "edm"}})
    quick = load_config(REPO / "configs" / "quickstart.yaml")
    assert task_for(quick).options == {} and "axis" not in plan_json(quick)
    assert isinstance(task_for(quick).denoiser(BlockNet(net_spec(quick, 1)), 0.5), Denoiser)
