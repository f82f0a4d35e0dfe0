"""Write a randomly initialised network of a config's shape in the original DiT/SiT `.pt` layout (x_embedder,
t_embedder, y_embedder, blocks.N.attn.qkv, final_layer, and DiT's fixed `pos_embed`), to stand in for a user's
pretrained DiT where no weights can be downloaded: what the memory probe of an imported model loads.

    python -m benchmarks.experiments.random_dit configs/memory.yaml /tmp/dit-b2.pt --set model.patch_size=2
    dblocks bench memory configs/memory.yaml --set model.patch_size=2 --set init.checkpoint=/tmp/dit-b2.pt \
        --set name=dit-b2-import --json            # -> benchmarks/results/memory-dit-b2-import-cpu.json

The names come from the import's own mapping (`shared.pretrained.mapping`), read backwards; that the import
computes what the original computed is tested against diffusers' DiT (tests/test_pretrained.py), not here.
"""

from __future__ import annotations

import argparse

import torch

from shared.config import load_config
from shared.model import sincos_2d
from shared.plan import net_spec
from shared.pretrained.mapping import block_takes
from shared.tasks import task_for


def random_dit_state(config, seed: int = 0) -> dict[str, torch.Tensor]:
    spec = net_spec(config, config.model.num_layers)
    torch.manual_seed(seed)
    net = task_for(config).network(spec)
    state = {}
    for take in block_takes("dit", list(net.state_dict()), 0):
        value = torch.randn_like(net.state_dict()[take.target]) * 0.02
        if len(take.sources) == 1:
            state[take.sources[0]] = value
    state["pos_embed"] = sincos_2d(spec.image_size // spec.patch_size, spec.hidden_size, "xy").unsqueeze(0)
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.random_dit", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    state = random_dit_state(config)
    torch.save(state, args.out)
    print(f"wrote {args.out}: {sum(v.numel() for v in state.values()):,} values in {len(state)} tensors")


if __name__ == "__main__":
    main()
