"""What `compress-report` writes: report.csv, report.md (table + failures), report.png.

Drawn from the data types of `aggregate` and `records`, which never import this module.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from compress.reporting.aggregate import Configuration
from compress.reporting.pareto import group_by
from compress.reporting.records import Job

CSV_COLUMNS = (
    "method",
    "label",
    "n_seeds",
    "acc_mean",
    "acc_std",
    "axis",
    "axis_mean",
    "axis_std",
    "pareto",
    "run_ids",
)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _percent(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def write_csv(configs: list[Configuration], axis: str, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for c in configs:
            acc = [f"{v:.8g}" for v in (c.acc_mean, c.acc_std)]
            ratio = [f"{v:.8g}" for v in (c.axis_mean, c.axis_std)]
            pareto, ids = str(c.pareto).lower(), " ".join(c.run_ids)
            writer.writerow([c.method, c.label, c.n_seeds, *acc, axis, *ratio, pareto, ids])
    return path


def markdown(
    title: str, axis: str, configs: list[Configuration], failures: list[Job], notes: list[str]
) -> str:
    runs = sum(c.n_seeds for c in configs)
    lines = [
        f"# Report: {_cell(title)}",
        "",
        f"Test accuracy against `{axis}` (larger is better on both), mean ± std over seeds: "
        f"{len(configs)} configurations from {runs} finished runs. **front**: on the Pareto "
        "front (no other configuration is at least as good on both and better on one).",
        "",
        f"| method | configuration | seeds | accuracy % | {axis} | front | runs |",
        "|---|---|--:|--:|--:|:-:|---|",
    ]
    for c in configs:
        label = f"`{_cell(c.label)}`" if c.label else "-"
        ratio = f"{c.axis_mean:.2f}x ± {c.axis_std:.2f}"
        ids = ", ".join(i[:8] for i in c.run_ids)
        front = "**front**" if c.pareto else ""
        lines.append(
            f"| {c.method} | {label} | {c.n_seeds} | {_percent(c.acc_mean, c.acc_std)} "
            f"| {ratio} | {front} | {ids} |"
        )
    lines += ["", "## Failures", ""]
    for job in failures:
        error = job.tags.get("error", f"no error recorded (the run was {job.status})")
        overrides = " ".join(
            t for t in job.tags.get("overrides", "").split() if not t.startswith("paths.")
        )
        where = f" (overrides: `{_cell(overrides)}`)" if overrides else ""
        lines.append(f"- `{job.run_id}` {job.status}: {_cell(error)}{where}")
    if not failures:
        lines.append("None: every run finished.")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def plot(title: str, axis: str, configs: list[Configuration], path: Path) -> Path:
    """One series per method with std error bars; the front as a step line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    known = [c for c in configs if not (math.isnan(c.axis_mean) or math.isnan(c.acc_mean))]
    for method, series in group_by(known, lambda c: c.method).items():
        series.sort(key=lambda c: c.axis_mean)
        ax.errorbar(
            [c.axis_mean for c in series],
            [c.acc_mean for c in series],
            xerr=[c.axis_std for c in series],
            yerr=[c.acc_std for c in series],
            marker="o",
            capsize=3,
            linewidth=1,
            label=method,
        )
        if len(known) <= 12:
            for c in series:
                ax.annotate(c.label, (c.axis_mean, c.acc_mean), fontsize=6, alpha=0.7)
    front = sorted((c for c in known if c.pareto), key=lambda c: c.axis_mean)
    xs, ys = [c.axis_mean for c in front], [c.acc_mean for c in front]
    ax.step(xs, ys, where="pre", color="black", linestyle="--", linewidth=1, label="Pareto front")
    ax.scatter(xs, ys, s=110, facecolors="none", edgecolors="black", zorder=3)
    ax.set_xlabel(axis)
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title, fontsize="small")
    fig.savefig(path)
    return path
