"""The assembled model: B trained blocks chained by noise level, behind the ordinary denoiser signature.

Samplers call `assembled(z, sigma, labels)` and never learn that blocks exist; each example is routed to the
block whose interval owns its sigma (`shared.partition.block_for_sigma`, lower-noise block owns its upper edge).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shared.checkpoint import CheckpointError, load_block_weights, load_manifest
from shared.model import NetSpec
from shared.tasks import LEGACY_TASK, get_task


class AssembledDenoiser(nn.Module):
    def __init__(self, denoisers: list[nn.Module], boundaries: list[float]):
        super().__init__()
        assert len(denoisers) == len(boundaries) - 1
        self.blocks = nn.ModuleList(denoisers)
        self.boundaries = list(boundaries)

    def route(self, sigma: torch.Tensor) -> torch.Tensor:
        """Block index per example, (N,), on sigma's device.

        The inner boundaries are rounded to sigma's own dtype, so a schedule point that lies on a boundary (see
        `shared.sampling.equiprobable_sigmas`) rounds to it exactly and the tie-break of `block_for_sigma` holds:
        `bucketize(right=False)` puts sigma == boundary into the interval below, the lower-noise block.
        """
        inner = torch.tensor(self.boundaries[1:-1], dtype=sigma.dtype, device=sigma.device)
        return len(self.blocks) - 1 - torch.bucketize(sigma, inner, right=False)

    def forward(self, z: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        owners = self.route(sigma)
        first = int(owners[0])
        if bool((owners == first).all()):  # the sampling case: one sigma for the whole batch
            return self.blocks[first](z, sigma, labels)
        parts = []
        for index in owners.unique().tolist():
            mask = owners == index
            parts.append((mask, self.blocks[index](z[mask], sigma[mask], None if labels is None else labels[mask])))
        out = parts[0][1].new_empty((len(z), *parts[0][1].shape[1:]))  # a task's output need not be z's shape
        for mask, part in parts:
            out[mask] = part
        return out


def load_block_denoiser(path: str | Path, which: str = "ema") -> tuple[nn.Module, dict]:
    """Build one block from its self-describing weights file and load it (strict: every tensor must match).
    The block's task (metadata `task`; files written before tasks existed are image generation) builds it."""
    state, meta = load_block_weights(path, which)
    try:
        task = get_task(meta.get("task", LEGACY_TASK), meta.get("task_options"))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    net = task.network(NetSpec(**meta["net"]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match their NetSpec: {err}") from None
    return task.denoiser(net, float(meta["sigma_data"])).eval(), meta


def check_block_matches(meta: dict, entry: dict, config_hash: str, task_options: dict | None = None) -> None:
    """A block file must be the block the manifest says: same index, sigma range, task options (a text run's
    vocabulary) and config."""
    got = meta["block"]
    if (got["index"], got["sigma_lo"], got["sigma_hi"]) != (entry["index"], entry["sigma_lo"], entry["sigma_hi"]):
        raise CheckpointError(
            f"{entry['file']}: holds block {got['index']} [{got['sigma_lo']}, {got['sigma_hi']}], "
            f"the manifest expects block {entry['index']} [{entry['sigma_lo']}, {entry['sigma_hi']}]"
        )
    if task_options is not None:
        differ = sorted(
            k
            for k in {*task_options, *meta.get("task_options", {})}
            if task_options.get(k) != meta.get("task_options", {}).get(k)
        )
        if differ:
            raise CheckpointError(
                f"{entry['file']}: its task's {', '.join(differ)} differ from the manifest's (block "
                f"{meta.get('task_options', {}).get(differ[0])!r}, manifest {task_options.get(differ[0])!r}): blocks "
                "of one model must share them"
            )
    if meta.get("config_hash") != config_hash:
        raise CheckpointError(
            f"{entry['file']}: trained under config {str(meta.get('config_hash'))[:12]}, "
            f"the manifest's is {config_hash[:12]}"
        )


def load_assembled(run_dir: str | Path, which: str = "ema") -> tuple[AssembledDenoiser, dict]:
    """(assembled denoiser, manifest) of a finished run directory, after verifying the manifest."""
    manifest = load_manifest(run_dir)
    denoisers = []
    for block in manifest["blocks"]:
        denoiser, meta = load_block_denoiser(Path(run_dir) / block["file"], which)
        check_block_matches(meta, block, manifest["config_hash"], manifest.get("task_options"))
        denoisers.append(denoiser)
    return AssembledDenoiser(denoisers, manifest["boundaries"]), manifest
