"""`dblocks report RUN_DIR`: one self-contained HTML page (images inlined) with the config, the plan, the
pictures and the metrics of a run — something to open or attach to a review."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from shared.config import Config
from shared.plan import plan_json

PICTURES = [
    ("samples.png", "Class-conditional samples (one row per class)"),
    ("trajectory.png", "Hand-over trajectory: start noise, the image each block hands over (block 0 first), final"),
    ("loss_curves.png", "Training loss per block (each on its own axis: block losses are not comparable)"),
    ("sigma_loss.png", "Held-out denoising loss vs sigma for the assembled model (dashed: block boundaries)"),
    ("bpc_curve.png", "Held-out bits per character against masking time t (its area is the BPC bound; dashed: blocks)"),
]


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>'
        f"{html.escape(alt)}</figcaption></figure>"
    )


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return "" if value is None else str(value)


def latest_previews(run_dir: Path) -> list[Path]:
    """The last preview each block wrote."""
    latest: dict[int, tuple[int, Path]] = {}
    for path in [
        *(run_dir / "previews").glob("block_*_step_*.png"),
        *(run_dir / "previews").glob("block_*_step_*.txt"),
    ]:
        _, index, _, step = path.stem.split("_")
        if int(step) >= latest.get(int(index), (-1, path))[0]:
            latest[int(index)] = (int(step), path)
    return [latest[i][1] for i in sorted(latest)]


def render_report(run_dir: Path, config: Config) -> str:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    plan = plan_json(config)
    evaluation = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else None
    parts = [
        f"<h1>dblocks run {html.escape(run_dir.name)}</h1>",
        f"<p>mode <b>{manifest['mode']}</b>, {len(manifest['blocks'])} blocks, dataset "
        f"{manifest['dataset']}, config hash <code>{manifest['config_hash'][:12]}</code></p>",
        "<h2>Plan</h2>",
        _table(
            plan["blocks"],
            ["index", "sigma_lo", "sigma_hi", "train_sigma_lo", "train_sigma_hi", "layers", "num_params"],
        ),
        "<h2>Blocks</h2>",
        _table(manifest["blocks"], ["index", "file", "sha256", "steps", "attempts"]),
    ]
    if evaluation:
        parts += ["<h2>Evaluation</h2>", _table([evaluation], [k for k in evaluation if k != "run_dir"])]
    if (run_dir / "samples.txt").is_file():  # text runs
        parts += ["<h2>Samples</h2>", f"<pre>{html.escape((run_dir / 'samples.txt').read_text())}</pre>"]
    parts.append("<h2>Pictures</h2>")
    parts += [_img(run_dir / name, caption) for name, caption in PICTURES if (run_dir / name).is_file()]
    previews = latest_previews(run_dir)
    texts = [p for p in previews if p.suffix == ".txt"]
    previews = [p for p in previews if p.suffix == ".png"]
    if texts:
        parts.append(
            "<h2>Per-block previews</h2><p>Validation text masked at the middle of each block's own slice "
            "of t, and what that block alone fills in.</p>"
        )
        parts += [
            f"<h3>block {p.stem.split('_')[1]} at step {p.stem.split('_')[3]}</h3>"
            f"<pre>{html.escape(p.read_text())}</pre>"
            for p in texts
        ]
    if previews:
        parts.append(
            "<h2>Per-block previews</h2><p>Rows: held-out images; then, at the low end, middle and high "
            "end of the block's own interval, the noisy input and what the block alone denoises.</p>"
        )
        parts += [_img(p, f"block {p.stem.split('_')[1]} at step {p.stem.split('_')[3]}") for p in previews]
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(config.to_yaml())}</pre>"]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{image-rendering:pixelated;"
        "max-width:100%}figure{display:inline-block;margin:8px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>dblocks {html.escape(run_dir.name)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
