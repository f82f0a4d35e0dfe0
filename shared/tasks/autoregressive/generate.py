"""Generation: token after token, each denoised from noise through the blocks (or, for the backprop baseline, read
from the ordinary LM's logits), every block with its own cache of the clean prefix's keys and values.

Per new token: z = sigma_max * randn; Euler steps down the run's sigma schedule, each step routed by sigma to the
block that owns it (`AssembledDenoiser.route`), that block attending to its cached prefix and to z; the last step's
logits give the token (argmax at temperature 0, else sampled); the token is then appended to every block's prefix.
A step runs one block (L/B layers); appending runs every block once (L layers in all), so a token costs
L + steps * L / B layer evaluations against L + steps * L for an end-to-end denoiser.

The context slides: a prefix keeps its last `seq_len - 1` tokens (the most a training position saw), so prompts and
continuations may be longer than the training context; ALiBi positions are relative, so cached keys stay valid.
"""

from __future__ import annotations

import torch

from shared.generate import step_sigmas
from shared.sampling import euler_step
from shared.tasks.autoregressive.net import PrefixCache


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of (N, V) logits: the most likely at temperature 0, else drawn from softmax(logits / T)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = (logits.float() / temperature).softmax(dim=-1).cpu()
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)


def schedule(config, steps: int | None = None) -> list[float]:
    """The per-token sigma schedule, sigma_max ... sigma_min, 0 (the run's `sample` section; `steps` overrides
    `autoregressive.sample_steps`)."""
    noise, sample = config.noise, config.sample
    sigmas = step_sigmas(
        schedule=sample.schedule,
        num_steps=steps or config.autoregressive.sample_steps,
        sigma_min=noise.sigma_min,
        sigma_max=noise.sigma_max,
        rho=sample.rho,
        p_mean=noise.log_mean,
        p_std=noise.p_std,
    )
    return sigmas.tolist()


@torch.no_grad()
def generate_tokens(
    assembled,
    prompt: torch.Tensor,
    length: int,
    *,
    sigmas: list[float],
    temperature: float,
    seed: int,
    on_step=None,
) -> torch.Tensor:
    """(N, length) tokens continuing each row of `prompt` (N, P) (P may be 0 for a denoising model).
    `on_step(block_index)`, if given, is called at every denoising step (tests and cost accounting)."""
    blocks = list(assembled.blocks)
    mode = blocks[0].mode
    n, device = prompt.shape[0], prompt.device
    window = blocks[0].net.spec.seq_len - 1
    if mode == "lm" and prompt.shape[1] == 0:
        raise ValueError("an ordinary next-token LM (objective backprop) needs a prompt of at least one token")
    caches = [PrefixCache(block.net, n, window) for block in (blocks[:1] if mode == "lm" else blocks)]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    hidden = None
    for column in prompt[:, -window:].T if prompt.shape[1] else []:
        hidden = [cache.append(column) for cache in caches][0]
    width = blocks[0].net.spec.hidden_size
    out = []
    for _ in range(length):
        if mode == "lm":
            logits = caches[0].next_token_logits(hidden)
        elif mode == "iterate":  # a recurrent-depth core iterated K = len(sigmas) - 1 times (the steps it is given)
            logits = blocks[0].iterate_logits(caches[0], n, len(sigmas) - 1, generator, on_step)
        else:
            logits = denoise_next(assembled, caches, n, width, sigmas, generator, device, on_step)
        token = pick(logits, temperature, generator)
        out.append(token)
        hidden = [cache.append(token) for cache in caches][0]
    return torch.stack(out, dim=1) if out else torch.zeros(n, 0, dtype=torch.long, device=device)


def denoise_next(assembled, caches, n: int, width: int, sigmas: list[float], generator, device, on_step):
    """The next token's logits (N, V): its embedding denoised from sigma_max * randn by Euler steps, each through
    the block that owns the step's sigma."""
    z = (sigmas[0] * torch.randn(n, width, generator=generator, device="cpu")).to(device)
    logits = None
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        index = int(assembled.route(torch.tensor([sigma], dtype=torch.float64, device="cpu"))[0])
        block = assembled.blocks[index]
        c_in, c_noise = block.scalings(torch.full((n,), sigma, device=device))
        logits = caches[index].denoise_logits(c_in * z, c_noise)
        z = euler_step(z, block.denoise(logits), sigma, sigma_next)
        if on_step is not None:
            on_step(index)
    return logits
