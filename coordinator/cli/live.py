"""Live progress: one row per block (state, node, step/total, smoothed loss, steps/s, ETA, attempt) and a run
progress bar, with rich on a terminal; quiet line-based output otherwise. Rendered from plain run/block dicts,
so `dblocks train` (records from Redis) and `dblocks status --watch` (JSON from the API) share it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

STATE_STYLE = {"PENDING": "dim", "RUNNING": "cyan", "SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow"}


@dataclass
class Rates:
    """Smoothed loss, steps/s and ETA per block from successive observations (EMA, half-weight per update)."""

    smoothing: float = 0.5
    last: dict[int, tuple[int, float]] = field(default_factory=dict)
    rate: dict[int, float] = field(default_factory=dict)
    loss: dict[int, float] = field(default_factory=dict)

    def update(self, index: int, step: int, loss: float | None, now: float) -> None:
        if loss is not None:
            prev = self.loss.get(index)
            self.loss[index] = loss if prev is None else self.smoothing * prev + (1 - self.smoothing) * loss
        if index in self.last:
            last_step, last_time = self.last[index]
            if step > last_step and now > last_time:
                r = (step - last_step) / (now - last_time)
                prev = self.rate.get(index)
                self.rate[index] = r if prev is None else self.smoothing * prev + (1 - self.smoothing) * r
        if index not in self.last or step != self.last[index][0]:
            self.last[index] = (step, now)

    def eta_s(self, index: int, step: int, total: int) -> float | None:
        r = self.rate.get(index)
        return (total - step) / r if r else None


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def observe(rates: Rates, run: dict) -> None:
    now = time.monotonic()
    for b in run["blocks"]:
        if b["state"] == "RUNNING":
            rates.update(b["index"], b["step"], b["loss"], now)


def render(run: dict, rates: Rates) -> Group:
    """One row per block. A task with a training accuracy (classification) shows it beside the loss."""
    table = Table(title=f"run {run['id']} — {run['state']}", expand=False)
    accuracy = any(b.get("accuracy") is not None for b in run["blocks"])
    columns = ["block", "state", "node", "step / total", "loss", *(["accuracy"] if accuracy else [])]
    for column in (*columns, "steps/s", "ETA", "attempt"):
        table.add_column(column, justify="right" if column not in ("state", "node") else "left")
    done = total = 0
    for b in run["blocks"]:
        i, steps = b["index"], b["total_steps"] or 1
        done, total = done + min(b["step"], steps), total + steps
        loss = rates.loss.get(i, b["loss"])
        rate = rates.rate.get(i) if b["state"] == "RUNNING" else None
        eta = rates.eta_s(i, b["step"], steps) if b["state"] == "RUNNING" else None
        table.add_row(
            str(i),
            Text(b["state"], style=STATE_STYLE.get(b["state"], "")),
            b["node"] or "-",
            f"{b['step']}/{steps}",
            f"{loss:.4f}" if loss is not None else "-",
            *([f"{b['accuracy']:.3f}" if b.get("accuracy") is not None else "-"] if accuracy else []),
            f"{rate:.1f}" if rate else "-",
            _eta(eta),
            str(b["attempt"]),
        )
    bar = ProgressBar(total=max(total, 1), completed=done, width=60)
    return Group(table, Text(f"{done}/{total} block steps ({100 * done / max(total, 1):.0f}%)"), bar)


def line(run: dict) -> str:
    parts = [
        f"[{b['index']}] {b['state']} {b['step']}/{b['total_steps']}"
        + (f" loss {b['loss']:.3f}" if b["loss"] is not None else "")
        + (f" acc {b['accuracy']:.3f}" if b.get("accuracy") is not None else "")
        for b in run["blocks"]
    ]
    return "  ".join(parts)
