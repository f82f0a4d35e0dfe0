"""Pictures and pages a person looks at: real PNGs with the expected layout, the HTML report, the live table."""

import base64
import json

import torch
from PIL import Image
from rich.console import Console

from coordinator.artefacts.report import render_report
from coordinator.cli import live
from shared.config import load_config
from shared.images import save_grid
from shared.model import BlockNet, NetSpec
from shared.precond import Denoiser
from shared.sampling import karras_sigmas
from shared.visualize import block_preview, handover_trajectory, plot_loss_curves, plot_sigma_loss, sigma_loss_curve
from tests.conftest import TINY
from tests.test_checkpoint import BOUNDS, write_run

SPEC = NetSpec(
    image_size=28, channels=1, num_classes=10, patch_size=7, hidden_size=16, num_heads=2, mlp_ratio=2.0, num_layers=1
)


def test_block_preview_rows_and_zero_block_behaviour():
    images = torch.rand(4, 1, 28, 28) * 2 - 1
    grid = block_preview(
        Denoiser(BlockNet(SPEC), 0.5), images, torch.arange(4), 0.1, 0.5, torch.Generator().manual_seed(0)
    )
    assert grid.shape == (7 * 4, 1, 28, 28)
    assert torch.equal(grid[:4], images)


def test_handover_trajectory_has_one_column_per_block_plus_noise_and_final():
    from shared.assembly import AssembledDenoiser

    blocks = [Denoiser(BlockNet(SPEC), 0.5) for _ in range(2)]
    assembled = AssembledDenoiser(blocks, BOUNDS)
    z = 80 * torch.randn(3, 1, 28, 28)
    columns = handover_trajectory(assembled, z, karras_sigmas(10, 0.002, 80.0), torch.arange(3), BOUNDS, 2.0, 10)
    assert len(columns) == 2 + 2 and all(c.shape == z.shape for c in columns)


def test_sigma_loss_of_the_zero_block_matches_its_closed_form():
    # D = c_skip * z: error = (c_skip - 1) y + c_skip sigma eps; weighted loss at sigma = sigma_data is ~1.
    images = torch.rand(2000, 1, 4, 4) * 0 + 0.0  # y = 0 -> error = c_skip sigma eps
    loss = sigma_loss_curve(
        lambda z, s, y: (0.25 / (s.view(-1, 1, 1, 1) ** 2 + 0.25)) * z,
        images,
        torch.zeros(2000, dtype=torch.long),
        [0.5],
        0.5,
        torch.Generator().manual_seed(0),
    )
    # w(0.5) = 8, c_skip = 0.5, error variance = (0.5*0.5)^2 = 1/16 -> 0.5
    assert abs(loss[0] - 0.5) < 0.02


def test_plots_are_real_pngs(tmp_path):
    plot_loss_curves([[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]] * 3, tmp_path / "l.png")
    plot_sigma_loss([0.01, 1.0, 10.0], {"run": [1.0, 0.5, 0.2]}, [0.002, 0.3, 80.0], tmp_path / "s.png")
    for name in ("l.png", "s.png"):
        image = Image.open(tmp_path / name)
        assert image.format == "PNG" and image.width > 300


def test_report_inlines_every_picture(tmp_path):
    write_run(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest |= {"mode": "blockwise", "dataset": "mnist", "config_hash": "ab" * 32}
    for b in manifest["blocks"]:
        b |= {"steps": 40, "attempts": 1}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for name in ("samples.png", "trajectory.png"):
        save_grid(torch.zeros(4, 1, 28, 28), 2, tmp_path / name)
    (tmp_path / "previews").mkdir()
    for step in (20, 40):
        save_grid(torch.zeros(2, 1, 28, 28), 2, tmp_path / "previews" / f"block_1_step_{step}.png")
    page = render_report(tmp_path, load_config(TINY))
    assert page.count("data:image/png;base64,") == 3  # samples, trajectory, latest preview of block 1
    assert "block 1 at step 40" in page and "block 1 at step 20" not in page
    first = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"


def test_live_rates_and_table():
    rates = live.Rates(smoothing=0.0)
    rates.update(0, 100, 1.0, now=10.0)
    rates.update(0, 150, 0.5, now=20.0)
    assert rates.rate[0] == 5.0 and rates.loss[0] == 0.5 and rates.eta_s(0, 150, 200) == 10.0
    run = {
        "id": "r",
        "state": "RUNNING",
        "blocks": [
            {"index": 0, "state": "RUNNING", "node": "n", "step": 150, "total_steps": 200, "loss": 0.5, "attempt": 1},
            {"index": 1, "state": "SUCCEEDED", "node": "n", "step": 200, "total_steps": 200, "loss": 0.1, "attempt": 2},
        ],
    }
    console = Console(width=120, record=True, force_terminal=False)
    console.print(live.render(run, rates))
    text = console.export_text()
    assert "150/200" in text and "5.0" in text and "0:10" in text and "350/400 block steps" in text
    assert live.line(run).startswith("[0] RUNNING 150/200 loss 0.500")
    assert "accuracy" not in text  # image runs: no accuracy column
    for b, accuracy in zip(run["blocks"], (0.5, 0.97)):
        b["accuracy"] = accuracy  # a classification run's blocks report their training accuracy
    console = Console(width=120, record=True, force_terminal=False)
    console.print(live.render(run, rates))
    text = console.export_text()
    assert "accuracy" in text and "0.970" in text and live.line(run).endswith("loss 0.100 acc 0.970")
