"""Starting blocks from a trained network (`init.checkpoint`): an end-to-end run of this service sliced into
blocks, and DiT-family imports (a diffusers DiTTransformer2DModel folder, an original DiT/SiT .pt) whose
function is preserved: with B = 1 and no training, the imported denoiser equals the original's on random inputs.
The originals are diffusers' own DiT class (no weights download: small random models, saved in each format)."""

import json

import pytest
import torch
from diffusers import DiTTransformer2DModel
from diffusers.models.embeddings import get_2d_sincos_pos_embed

from shared.assembly import AssembledDenoiser
from shared.checkpoint import save_block_weights, sha256_file, write_manifest
from shared.config import ConfigError, parse_config
from shared.data import DataError
from shared.job import BlockJob
from shared.model import BlockNet
from shared.noise import ddpm_sigmas
from shared.plan import block_specs, boundaries, net_spec, plan_json
from shared.tasks import resolve_data, task_for
from workers.train_block import build_block

SMALL = {"model": {"num_layers": 6, "hidden_size": 32, "num_heads": 2, "patch_size": 4}, "blocks": {"num_blocks": 3}}


def end_to_end_run(tmp_path, raw: dict) -> tuple:
    """A finished end-to-end run directory written with the project's own formats: random (non-zero) weights."""
    config = parse_config({**raw, "train": {"mode": "end_to_end"}})
    torch.manual_seed(0)
    net = task_for(config).network(net_spec(config, config.model.num_layers))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    (spec,) = block_specs(config)
    run_dir = tmp_path / "e2e"
    run_dir.mkdir()
    meta = {"block": spec.to_dict(), "net": net.spec.to_dict(), "task": config.task, "sigma_data": 0.5}
    meta |= {"task_options": task_for(config).options, "run_id": "e2e", "config_hash": config.hash()}
    ema = {k: v + 1 for k, v in net.state_dict().items()}  # EMA differs from raw: which one a block takes shows
    save_block_weights(run_dir / "block_0.safetensors", model=net.state_dict(), ema=ema, meta=meta)
    entry = {"index": 0, "sigma_lo": spec.sigma_lo, "sigma_hi": spec.sigma_hi, "file": "block_0.safetensors"}
    entry["sha256"] = sha256_file(run_dir / "block_0.safetensors")
    manifest = {"manifest_version": 1, "config_hash": config.hash(), "mode": "end_to_end", "task": config.task}
    write_manifest(run_dir, manifest | {"boundaries": boundaries(config), "blocks": [entry]})
    return run_dir, ema


def blockwise(raw: dict, checkpoint, **init):
    return resolve_data(parse_config({**raw, "init": {"checkpoint": str(checkpoint), **init}}))


def test_each_block_starts_from_its_own_slice_of_an_end_to_end_run(tmp_path):
    run_dir, ema = end_to_end_run(tmp_path, SMALL)
    config = blockwise(SMALL, run_dir)
    assert config.init.format == "run" and config.init.sha256 == sha256_file(run_dir / "block_0.safetensors")
    plan = plan_json(config)
    assert plan["init"]["checkpoint"] == str(run_dir.absolute())
    for spec in block_specs(config):
        net = build_block(BlockJob(run_id="r", config=config, block=spec))
        start = 2 * spec.index  # 6 layers, B = 3: block b takes layers [2b, 2b + 2)
        assert plan["blocks"][spec.index]["init"]["layers"] == [f"layers.{start}", f"layers.{start + 1}"]
        for name, value in net.state_dict().items():
            parts = name.split(".")
            source = ".".join(["layers", str(start + int(parts[1])), *parts[2:]]) if parts[0] == "layers" else name
            assert torch.equal(value, ema[source]), name  # EMA weights, this block's layers, its own copies
    raw = blockwise(SMALL, run_dir, weights="raw")
    net = build_block(BlockJob(run_id="r", config=raw, block=block_specs(raw)[1]))
    assert not torch.equal(net.state_dict()["head.weight"], ema["head.weight"])


def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_tensor_and_nothing_starts(tmp_path):
    run_dir, _ = end_to_end_run(tmp_path, SMALL)
    wider = {**SMALL, "model": {**SMALL["model"], "hidden_size": 48}}
    with pytest.raises(
        DataError, match=r"init.checkpoint: block 0's patch_embed.weight takes patch_embed.weight: shape"
    ):
        blockwise(wider, run_dir)
    deeper = {**SMALL, "model": {**SMALL["model"], "num_layers": 9}}
    with pytest.raises(DataError, match="model.num_layers 9: the checkpoint has 6 layers"):
        blockwise(deeper, run_dir)
    with pytest.raises(DataError, match="noise.axis"):
        blockwise({**SMALL, "noise": {"axis": "flow", "p_mean": 0.0, "p_std": 1.0}}, run_dir)
    with pytest.raises(DataError, match="block-wise run"):
        manifest = json.loads((run_dir / "manifest.json").read_text())
        (run_dir / "manifest.json").write_text(json.dumps({**manifest, "mode": "blockwise"}))
        blockwise(SMALL, run_dir)
    with pytest.raises(DataError, match="does not exist"):
        blockwise(SMALL, tmp_path / "nowhere")


def test_a_worker_refuses_a_checkpoint_that_changed_since_the_run_was_submitted(tmp_path):
    run_dir, _ = end_to_end_run(tmp_path, SMALL)
    config = blockwise(SMALL, run_dir)
    data = (run_dir / "block_0.safetensors").read_bytes()
    (run_dir / "block_0.safetensors").write_bytes(data[:-4] + b"\0\0\0\0")
    with pytest.raises(DataError, match="changed since the run was submitted"):
        build_block(BlockJob(run_id="r", config=config, block=block_specs(config)[0]))


# --- DiT-family imports -------------------------------------------------------------------------------------------

DIT = {"in_channels": 1, "out_channels": 2, "num_layers": 4, "sample_size": 28, "patch_size": 2}
DIT |= {"num_attention_heads": 2, "attention_head_dim": 8, "num_embeds_ada_norm": 10}
DIT_RUN = {
    "data": {"dataset": "mnist"},
    "model": {"num_layers": 4, "hidden_size": 16, "num_heads": 2, "patch_size": 2},
    "blocks": {"num_blocks": 1},
}


def random_dit(**overrides) -> DiTTransformer2DModel:
    """A small DiT with random weights everywhere (adaLN-Zero's zeros too), one conditioning embedder shared by
    every layer, as the published DiT weights have it."""
    torch.manual_seed(0)
    model = DiTTransformer2DModel(**(DIT | overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
        shared = model.transformer_blocks[0].norm1.emb.state_dict()
        for block in model.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(shared)
    return model


def imported_denoiser(config):
    """The assembled B = 1 model a run built from `config` starts as (no training)."""
    (spec,) = block_specs(config)
    net = build_block(BlockJob(run_id="r", config=config, block=spec))
    return AssembledDenoiser([task_for(config).denoiser(net, config.noise.sigma_data).eval()], boundaries(config))


def test_a_diffusers_dit_imports_as_an_edm_denoiser_that_computes_what_it_computed(tmp_path):
    model = random_dit()
    model.save_pretrained(tmp_path / "dit")
    config = blockwise(DIT_RUN, tmp_path / "dit")
    assert (config.init.format, config.init.prediction, config.init.freq_shift) == ("diffusers", "eps", 1)
    assert task_for(config).options["precond"] == "ddpm_eps"
    denoiser = imported_denoiser(config)
    steps = torch.tensor([3, 100, 500, 999])
    sigma = ddpm_sigmas()[steps].float()  # DDPM's sigma at integer timesteps: the original sees those exactly
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 1, 28, 28, generator=g) * (1 + sigma**2).sqrt().view(-1, 1, 1, 1)
    labels = torch.tensor([0, 3, 9, 10])  # 10: the null class (classifier-free guidance)
    with torch.no_grad():
        x = z / (1 + sigma**2).sqrt().view(-1, 1, 1, 1)
        eps = model(x, steps, labels).sample[:, :1]  # learned-variance channels dropped
        got = denoiser(z, sigma, labels)
    # D = z - sigma * eps: compared as the prediction itself (at sigma 157, float32 cancellation in D is ~1e-3)
    got_eps = (z - got) / sigma.view(-1, 1, 1, 1)
    assert torch.allclose(got_eps, eps, atol=1e-4), (got_eps - eps).abs().max()


def dit_state_dict(model: DiTTransformer2DModel) -> dict:
    """The same network in the original DiT's layout (x_embedder, t_embedder, y_embedder, blocks.N.attn.qkv, ...),
    with DiT's fixed position table as its `pos_embed` parameter."""
    sd, out = model.state_dict(), {}
    emb = "transformer_blocks.0.norm1.emb."
    out["x_embedder.proj.weight"], out["x_embedder.proj.bias"] = sd["pos_embed.proj.weight"], sd["pos_embed.proj.bias"]
    for i, j in ((0, 1), (2, 2)):
        for leaf in ("weight", "bias"):
            out[f"t_embedder.mlp.{i}.{leaf}"] = sd[f"{emb}timestep_embedder.linear_{j}.{leaf}"]
    out["y_embedder.embedding_table.weight"] = sd[f"{emb}class_embedder.embedding_table.weight"]
    for n in range(DIT["num_layers"]):
        b = f"transformer_blocks.{n}."
        for leaf in ("weight", "bias"):
            out[f"blocks.{n}.attn.qkv.{leaf}"] = torch.cat([sd[f"{b}attn1.to_{x}.{leaf}"] for x in "qkv"])
            out[f"blocks.{n}.attn.proj.{leaf}"] = sd[f"{b}attn1.to_out.0.{leaf}"]
            out[f"blocks.{n}.mlp.fc1.{leaf}"] = sd[f"{b}ff.net.0.proj.{leaf}"]
            out[f"blocks.{n}.mlp.fc2.{leaf}"] = sd[f"{b}ff.net.2.{leaf}"]
            out[f"blocks.{n}.adaLN_modulation.1.{leaf}"] = sd[f"{b}norm1.linear.{leaf}"]
    for leaf in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{leaf}"] = sd[f"proj_out_1.{leaf}"]
        out[f"final_layer.linear.{leaf}"] = sd[f"proj_out_2.{leaf}"]
    side = DIT["sample_size"] // DIT["patch_size"]
    table = get_2d_sincos_pos_embed(16, side, base_size=side, output_type="pt")  # positions 0..side-1, as DiT's
    out["pos_embed"] = table.float().unsqueeze(0)
    return out


def original_dit(**overrides) -> DiTTransformer2DModel:
    """diffusers' DiT set to the original DiT's numerics (timestep frequencies over half, LayerNorm eps 1e-6)."""
    model = random_dit(norm_eps=1e-6, **overrides)
    for block in model.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return model


@pytest.mark.parametrize("prediction", ["eps", "velocity"])
def test_an_original_dit_or_sit_pt_imports_and_computes_what_it_computed(tmp_path, prediction):
    model = original_dit()
    torch.save({"model": dit_state_dict(model), "ema": dit_state_dict(model), "opt": {}}, tmp_path / "dit.pt")
    raw = DIT_RUN if prediction == "eps" else {**DIT_RUN, "noise": {"axis": "flow", "p_mean": 0.0, "p_std": 1.0}}
    config = blockwise(raw, tmp_path / "dit.pt", prediction=prediction)
    assert (config.init.format, config.init.pos_axes, config.init.freq_shift) == ("dit", "xy", 0)
    denoiser = imported_denoiser(config)
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([1, 2, 10])
    if prediction == "eps":  # DDPM: x = y + sigma eps scaled by 1 / sqrt(1 + sigma^2), at integer timesteps
        steps = torch.tensor([10, 400, 990])
        sigma = ddpm_sigmas()[steps].float()
        z = torch.randn(3, 1, 28, 28, generator=g) * (1 + sigma**2).sqrt().view(-1, 1, 1, 1)
        with torch.no_grad():
            original = model(z / (1 + sigma**2).sqrt().view(-1, 1, 1, 1), steps, labels).sample[:, :1]
            got = (z - denoiser(z, sigma, labels)) / sigma.view(-1, 1, 1, 1)  # D = z - sigma eps
    else:  # SiT: x = t' y + (1 - t') eps with t' = 1 - t, its time t' fed unscaled, its velocity y - eps
        t = torch.tensor([0.1, 0.5, 0.95])
        sigma = t / (1 - t)
        x = torch.randn(3, 1, 28, 28, generator=g)
        with torch.no_grad():
            original = model(x, 1 - t, labels).sample[:, :1]
            denoised = denoiser(x * (1 + sigma).view(-1, 1, 1, 1), sigma, labels)  # z = x / (1 - t)
            got = (denoised - x) / t.view(-1, 1, 1, 1)  # D = x - t v, v = eps - y = -(SiT's velocity)
    assert torch.allclose(got, original, atol=1e-4), (got - original).abs().max()


def test_imports_that_do_not_fit_are_refused_before_anything_starts(tmp_path):
    model = random_dit()
    model.save_pretrained(tmp_path / "dit")
    with pytest.raises(DataError, match="model.num_heads 4: the checkpoint's config.json says 2"):
        blockwise({**DIT_RUN, "model": {**DIT_RUN["model"], "num_heads": 4}}, tmp_path / "dit")
    with pytest.raises(
        DataError,
        match=r"patch_embed.weight takes pos_embed.proj.weight: shape \[16, 1, 2, 2\] in the checkpoint, \[16, 1, 4, 4",
    ):
        blockwise({**DIT_RUN, "model": {**DIT_RUN["model"], "patch_size": 4}}, tmp_path / "dit")
    with pytest.raises(DataError, match="no tensor for output_conv"):
        blockwise({**DIT_RUN, "model": {**DIT_RUN["model"], "output_conv": True}}, tmp_path / "dit")
    with pytest.raises(ConfigError, match="init.prediction: an imported velocity model trains on noise.axis flow"):
        blockwise(DIT_RUN, tmp_path / "dit", prediction="velocity")
    with torch.no_grad():  # a folder whose layers have conditioning embedders of their own
        model.transformer_blocks[2].norm1.emb.timestep_embedder.linear_1.bias.add_(1)
    model.save_pretrained(tmp_path / "unshared")
    with pytest.raises(DataError, match="transformer_blocks.2.norm1.emb.timestep_embedder.linear_1.bias differs"):
        blockwise(DIT_RUN, tmp_path / "unshared")
    with pytest.raises(DataError, match="cannot start a classification run"):
        blockwise({**DIT_RUN, "task": "classification"}, tmp_path / "dit")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a readable torch state dict"):
        blockwise(DIT_RUN, tmp_path / "junk.pt")


def test_a_block_network_keeps_the_projects_own_numerics_by_default():
    spec = net_spec(parse_config(SMALL), 2)
    assert (spec.pos_axes, spec.freq_shift, spec.norm_eps) == ("yx", 0, 1e-6)
    assert BlockNet(spec).layers[0].norm1.eps == 1e-6


def test_a_service_callers_checkpoint_is_confined_to_the_data_roots_like_its_data(tmp_path):
    """What a caller names as `init.checkpoint` is a path the service opens: confined like a data source
    (docs/security.md): outside the roots it is refused naming the field only; inside, it is read."""
    run_dir, _ = end_to_end_run(tmp_path, SMALL)
    raw = {**SMALL, "init": {"checkpoint": str(run_dir)}}
    roots = (str(tmp_path / "elsewhere"),)
    with pytest.raises(DataError, match=r"^init.checkpoint: outside the data roots"):
        resolve_data(parse_config(raw), roots=roots)
    with pytest.raises(DataError, match=r"^init.checkpoint: '.' and '..' segments"):
        resolve_data(parse_config({**SMALL, "init": {"checkpoint": f"{tmp_path}/elsewhere/../e2e"}}), roots=roots)
    assert resolve_data(parse_config(raw), roots=(str(tmp_path),)).init.format == "run"
    # a run folder under the roots whose manifest names a block file outside them is refused the same way
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "e2e").mkdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["blocks"][0]["file"] = "../../e2e/block_0.safetensors"
    (tmp_path / "root" / "e2e" / "manifest.json").write_text(json.dumps(manifest))
    escaping = {**SMALL, "init": {"checkpoint": str(tmp_path / "root" / "e2e")}}
    with pytest.raises(DataError, match=r"^init.checkpoint: outside the data roots"):
        resolve_data(parse_config(escaping), roots=(str(tmp_path / "root"),))


def test_dblocks_plan_shows_where_each_block_starts(tmp_path):
    from typer.testing import CliRunner

    from coordinator.cli import app

    run_dir, _ = end_to_end_run(tmp_path, SMALL)
    config_file = tmp_path / "small.yaml"
    config_file.write_text(json.dumps(SMALL))  # JSON is YAML
    result = CliRunner().invoke(app, ["plan", str(config_file), "--set", f"init.checkpoint={run_dir}"])
    assert result.exit_code == 0, result.output
    assert f"starts from {run_dir} (run, sha256 {sha256_file(run_dir / 'block_0.safetensors')[:12]})" in result.output
    assert "starts from layers.4, layers.5 and its own copies of" in result.output  # block 2 of 3, 6 layers
    refused = CliRunner().invoke(app, ["plan", str(config_file), "--set", f"init.checkpoint={tmp_path / 'none'}"])
    assert refused.exit_code != 0 and "init.checkpoint:" in refused.output
