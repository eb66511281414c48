"""report.png: accuracy against the axis, one panel per baseline.

Each panel holds one baseline (a star at 1x and a dotted line at its accuracy), a series
per method over the configurations compressing it, and their Pareto front (open circles
joined by a dashed staircase, so the legend's sample matches one point or many). Lines never
join points of different baselines. Point labels are wrapped and each put on a side of its
point where it stays inside the panel and clear of the others where it can, so none reaches
past the figure's edge; error bars only where there are two seeds or more.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from compress.reporting.aggregate import BaselinePoint, Configuration
from compress.reporting.pareto import group_by
from compress.reporting.render import sections

#: Past this many points a panel is left unlabelled (the table names them).
MAX_LABELS = 12
LABEL_WIDTH = 28


def _known(point: BaselinePoint | Configuration) -> bool:
    return not (math.isnan(point.axis_mean) or math.isnan(point.acc_mean))


def _errors(points: list[Configuration], which: str) -> list[float] | None:
    """Stds where there are two seeds or more (NaN draws no bar), None when nowhere."""
    bars = [getattr(c, which) if c.n_seeds >= 2 else math.nan for c in points]
    return None if all(math.isnan(b) for b in bars) else bars


def _text(point: Configuration, shared: set[str]) -> str:
    """Its label without the `method=` choice its series' colour already says, nor the words
    every label of the panel shares (its baseline's `model=...`, in the panel's title)."""
    said = {f"method={point.method}", *shared}
    words = [w for w in point.label.split(" ") if w not in said]
    return textwrap.fill(" ".join(words) or point.method, LABEL_WIDTH)


#: Where a label may sit around its point: (right of it, above it); tried in this order
#: after the side facing the panel's middle.
_SIDES = ((True, True), (True, False), (False, True), (False, False))


def _place(label: Any, side: tuple[bool, bool]) -> None:
    right, above = side
    label.xyann = (7 if right else -7, 6 if above else -6)  # clear of the front's circle
    label.set_horizontalalignment("left" if right else "right")
    label.set_verticalalignment("bottom" if above else "top")


def _spread_labels(fig: Any, labels: list[tuple[Any, Any, tuple[bool, bool]]]) -> None:
    """Each label on the first side (its preferred one first) where it stays inside its
    panel and clear of the labels placed before it; the preferred side when none is."""
    fig.canvas.draw()  # lays the panels out: the boxes below are where they will be drawn
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    for label, ax, preferred in labels:
        inside = ax.get_window_extent(renderer)
        for side in (preferred, *(s for s in _SIDES if s != preferred)):
            _place(label, side)
            box = label.get_window_extent(renderer)
            fits = inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)
            if fits and not any(box.overlaps(other) for other in placed):
                break
        else:
            _place(label, preferred)
        placed.append(label.get_window_extent(renderer))


def _panel(
    ax: Any, axis: str, base: BaselinePoint, configs: list[Configuration]
) -> list[tuple[Any, Any, tuple[bool, bool]]]:
    """Draws the panel; its point labels, each with the side of its point it prefers."""
    known = [c for c in configs if _known(c)]
    if _known(base):
        ax.axhline(base.acc_mean, color="grey", linestyle=":", linewidth=1)
        ax.errorbar(
            [base.axis_mean],
            [base.acc_mean],
            yerr=[base.acc_std] if base.n_seeds >= 2 else None,
            marker="*",
            markersize=12,
            color="grey",
            linestyle="none",
            capsize=3,
            label=f"baseline ({base.n_seeds} seed{'s' * (base.n_seeds != 1)})",
        )
    for method, series in group_by(known, lambda c: c.method).items():
        series.sort(key=lambda c: c.axis_mean)
        ax.errorbar(
            [c.axis_mean for c in series],
            [c.acc_mean for c in series],
            xerr=_errors(series, "axis_std"),
            yerr=_errors(series, "acc_std"),
            marker="o",
            capsize=3,
            linewidth=1,
            label=method,
        )
    front = sorted((c for c in known if c.pareto), key=lambda c: c.axis_mean)
    ax.plot(
        [c.axis_mean for c in front],
        [c.acc_mean for c in front],
        drawstyle="steps-pre",
        color="black",
        linestyle="--",
        linewidth=1,
        marker="o",
        markersize=11,
        markerfacecolor="none",
        zorder=3,
        label="Pareto front",
    )
    ax.margins(0.12)
    labels = []
    if len(known) <= MAX_LABELS:
        xs = [c.axis_mean for c in known] + ([base.axis_mean] if _known(base) else [])
        ys = [c.acc_mean for c in known] + ([base.acc_mean] if _known(base) else [])
        middle = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2)
        words = [set(c.label.split(" ")) for c in known]
        shared = set.intersection(*words) if len(known) > 1 else set()
        for c in known:
            label = ax.annotate(
                _text(c, shared),
                (c.axis_mean, c.acc_mean),
                xytext=(0, 0),
                textcoords="offset points",
                fontsize=6,
                alpha=0.8,
            )
            labels.append((label, ax, (c.axis_mean <= middle[0], c.acc_mean <= middle[1])))
    ax.set_xlabel(axis)
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    if base.label:
        ax.set_title(textwrap.fill(f"baseline: {base.label}", 70), fontsize="small")
    return labels


def draw(
    title: str, axis: str, configs: list[Configuration], baselines: list[BaselinePoint]
) -> Any:
    """The figure (matplotlib's object-oriented API: no global state, any thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.6 + 4 * len(baselines)), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(baselines), 1, squeeze=False)[:, 0]
    labels = []
    for ax, (base, members) in zip(axes, sections(configs, baselines), strict=True):
        labels += _panel(ax, axis, base, members)
    fig.suptitle(textwrap.fill(title, 80), fontsize="small")
    _spread_labels(fig, labels)
    return fig


def plot(
    title: str,
    axis: str,
    configs: list[Configuration],
    baselines: list[BaselinePoint],
    path: Path,
) -> Path:
    draw(title, axis, configs, baselines).savefig(path)
    return path
