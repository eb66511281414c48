"""What `compress-report` writes: report.csv and report.md (tables + failures), and the same
table as terminal text (`table_text`); report.png is `compress.reporting.figure`.

Drawn from the data types of `aggregate` and `records`, which never import this module.
Each baseline comes first in its own rows, at 1x on every axis; ± appears only where there
are two seeds or more to spread over (one run has no spread to show).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from compress.reporting.aggregate import BaselinePoint, Configuration
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
    "baseline",
)
BASELINE = "baseline"

Point = BaselinePoint | Configuration


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def spread(mean: float, std: float, n: int, scale: float = 1.0, unit: str = "") -> str:
    """`97.00 ± 1.41`, or `97.00` for a single seed; `n/a` for a figure never logged."""
    if math.isnan(mean):
        return "n/a"
    text = f"{scale * mean:.2f}{unit}"
    return text if n < 2 or math.isnan(std) else f"{text} ± {scale * std:.2f}"


def sections(
    configs: list[Configuration], baselines: list[BaselinePoint]
) -> Iterator[tuple[BaselinePoint, list[Configuration]]]:
    """Each baseline with the configurations compressing it, in the report's order."""
    for base in baselines:
        yield base, [c for c in configs if c.baseline == base.label]


def _row(point: Point) -> tuple[str, str, int, str, str, bool, list[str]]:
    """method, label, seeds, accuracy %, axis, front, run ids: one line of every table."""
    if isinstance(point, BaselinePoint):
        method, label, front = BASELINE, point.label, False
    else:
        method, label, front = point.method, point.label or point.method, point.pareto
    acc = spread(point.acc_mean, point.acc_std, point.n_seeds, 100)
    n_axis = 1 if isinstance(point, BaselinePoint) else point.n_seeds  # 1x by definition
    axis = spread(point.axis_mean, point.axis_std, n_axis, unit="x")
    return method, label, point.n_seeds, acc, axis, front, point.run_ids


def write_csv(
    configs: list[Configuration], baselines: list[BaselinePoint], axis: str, path: Path
) -> Path:
    """Every figure unrounded; a baseline's row has method `baseline`, a configuration's
    `baseline` column names the baseline it compresses."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for base, members in sections(configs, baselines):
            for point in [base, *members]:
                own = isinstance(point, Configuration)
                method = point.method if own else BASELINE
                pareto = str(own and point.pareto).lower()
                acc = [f"{v:.8g}" for v in (point.acc_mean, point.acc_std)]
                ratio = [f"{v:.8g}" for v in (point.axis_mean, point.axis_std)]
                first = [method, point.label, point.n_seeds, *acc, axis, *ratio, pareto]
                writer.writerow([*first, " ".join(point.run_ids), base.label])
    return path


def _markdown_table(axis: str, points: list[Point]) -> list[str]:
    lines = [
        f"| method | configuration | seeds | accuracy % | {axis} | front | runs |",
        "|---|---|--:|--:|--:|:-:|---|",
    ]
    for point in points:
        method, label, n, acc, ratio, front, ids = _row(point)
        shown = f"`{_cell(label)}`" if label else "-"
        mark = "**front**" if front else ""
        short = ", ".join(i[:8] for i in ids)
        lines.append(f"| {method} | {shown} | {n} | {acc} | {ratio} | {mark} | {short} |")
    return lines


def markdown(
    title: str,
    axis: str,
    configs: list[Configuration],
    baselines: list[BaselinePoint],
    failures: list[Job],
    notes: list[str],
) -> str:
    runs = sum(c.n_seeds for c in configs)
    apart = f" {len(baselines)} baselines, each with its own front." if len(baselines) > 1 else ""
    lines = [
        f"# Report: {_cell(title)}",
        "",
        f"Test accuracy against `{axis}` (larger is better on both), mean ± std over seeds "
        f"(± only where there are two or more): {len(configs)} configurations from {runs} "
        "finished runs, beside the uncompressed baseline they start from (1x on every axis). "
        "**front**: on the Pareto front (no other configuration of the same baseline is at "
        f"least as good on both and better on one).{apart}",
        "",
    ]
    for base, members in sections(configs, baselines):
        if len(baselines) > 1:
            lines += [f"## Baseline `{_cell(base.label)}`", ""]
        lines += [*_markdown_table(axis, [base, *members]), ""]
    lines += ["## Failures", ""]
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


def table_text(
    title: str,
    axis: str,
    configs: list[Configuration],
    baselines: list[BaselinePoint],
    width: int = 120,
) -> str:
    """The report's table as a terminal shows it (box drawing, no colour codes)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in ("method", "configuration", "seeds", "accuracy %", axis, "front"):
        right = name in ("seeds", "accuracy %", axis)
        table.add_column(name, justify="right" if right else "left", overflow="fold")
    for index, (base, members) in enumerate(sections(configs, baselines)):
        if index:
            table.add_section()
        for point in [base, *members]:
            method, label, n, acc, ratio, front, _ = _row(point)
            table.add_row(method, label or "-", str(n), acc, ratio, "front" if front else "")
    console = Console(width=width, color_system=None, force_terminal=False)
    with console.capture() as captured:
        console.print(table)
    return captured.get()
