"""Block files and manifests: round trip, and refusal of anything altered, foreign or incomplete."""

import json

import pytest
import torch
from safetensors.torch import save_file

from shared.assembly import load_assembled, load_block_denoiser
from shared.checkpoint import (
    MANIFEST_VERSION,
    CheckpointError,
    load_manifest,
    read_block_meta,
    save_block_weights,
    sha256_file,
    write_manifest,
)
from shared.model import BlockNet, NetSpec

SPEC = NetSpec(
    image_size=28, channels=1, num_classes=10, patch_size=7, hidden_size=16, num_heads=2, mlp_ratio=2.0, num_layers=1
)
BOUNDS = [0.002, 0.3, 80.0]


def write_run(tmp_path):
    blocks = []
    for index in range(2):
        net = BlockNet(SPEC)
        lo, hi = BOUNDS[1 - index], BOUNDS[2 - index]
        block = {"index": index, "sigma_lo": lo, "sigma_hi": hi}
        ema = {k: v.clone() for k, v in net.state_dict().items()}
        save_block_weights(
            tmp_path / f"block_{index}.safetensors",
            model=net.state_dict(),
            ema=ema,
            meta={"block": block, "net": SPEC.to_dict(), "sigma_data": 0.5, "config_hash": "h1"},
        )
        blocks.append(
            {
                **block,
                "file": f"block_{index}.safetensors",
                "sha256": sha256_file(tmp_path / f"block_{index}.safetensors"),
            }
        )
    write_manifest(
        tmp_path, {"manifest_version": MANIFEST_VERSION, "boundaries": BOUNDS, "blocks": blocks, "config_hash": "h1"}
    )


def test_round_trip_and_assembly(tmp_path):
    write_run(tmp_path)
    denoiser, manifest = load_assembled(tmp_path)
    assert len(denoiser.blocks) == 2 and manifest["boundaries"] == BOUNDS
    meta = read_block_meta(tmp_path / "block_0.safetensors")
    assert meta["net"] == SPEC.to_dict() and meta["block"]["index"] == 0


def test_altered_block_file_is_refused(tmp_path):
    write_run(tmp_path)
    with open(tmp_path / "block_1.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(CheckpointError, match="sha256"):
        load_manifest(tmp_path)


def test_missing_file_and_gap_in_ranges_are_refused(tmp_path):
    write_run(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["blocks"][0]["sigma_lo"] = 0.31
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="range"):
        load_manifest(tmp_path)
    write_run(tmp_path)
    (tmp_path / "block_0.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_manifest(tmp_path)


def test_foreign_or_garbage_files_are_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"), metadata={"format": "other"})
    with pytest.raises(CheckpointError, match="format"):
        read_block_meta(tmp_path / "foreign.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_block_meta(tmp_path / "garbage.safetensors")


def test_weights_that_do_not_match_their_spec_are_refused(tmp_path):
    net = BlockNet(SPEC)
    state = net.state_dict()
    state.pop("head.bias")
    save_block_weights(
        tmp_path / "b.safetensors",
        model=state,
        ema={k: v.clone() for k, v in state.items()},
        meta={"block": {"index": 0}, "net": SPEC.to_dict(), "sigma_data": 0.5},
    )
    with pytest.raises(CheckpointError, match="do not match"):
        load_block_denoiser(tmp_path / "b.safetensors")


def test_block_from_another_config_or_range_is_refused(tmp_path):
    write_run(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["config_hash"] = "other"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="trained under config"):
        load_assembled(tmp_path)
    # Swap the two block files (and their digests): ranges no longer match what the manifest expects.
    write_run(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    a, b = manifest["blocks"]
    a["file"], b["file"], a["sha256"], b["sha256"] = b["file"], a["file"], b["sha256"], a["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="the manifest expects block 0"):
        load_assembled(tmp_path)


def test_raw_and_ema_weights_load_by_their_user_facing_names(tmp_path):
    net = BlockNet(SPEC)
    raw = net.state_dict()
    ema = {k: v + 1.0 for k, v in raw.items()}  # distinguishable
    path = tmp_path / "block.safetensors"
    save_block_weights(path, model=raw, ema=ema, meta={"block": {}, "net": SPEC.to_dict(), "sigma_data": 0.5})
    from shared.checkpoint import load_block_weights

    got_raw, _ = load_block_weights(path, "raw")
    got_ema, _ = load_block_weights(path, "ema")
    name = next(iter(raw))
    assert torch.equal(got_raw[name], raw[name]) and torch.equal(got_ema[name], ema[name])
    with pytest.raises(ValueError, match="weights 'best'"):
        load_block_weights(path, "best")
