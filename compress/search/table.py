"""What `compress-search` reports: its trials' figures, the table of all trials, the best one.

The Optuna storage is the source of truth for which trials ran, how they ended and which
are feasible; a trial's figures (bytes, accuracy, ratios) are those its MLflow run holds,
read through `compress.reporting` as every report reads runs. Untracked, or where the
store cannot be read, the figures the trial kept as user attributes stand in.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from compress.search.space import Space

log = logging.getLogger(__name__)

#: Trial figures kept as user attributes (and columns of search.csv).
FIGURES = ("bytes", "acc", "baseline/acc", "ratio/size", "ratio/params")


def trial_figures(
    study: optuna.Study, uri: str | None, parent_run_id: str | None
) -> dict[int, dict[str, float]]:
    """Each complete trial's figures by trial number: from its MLflow run (a child of the
    study's parent run, or the earlier run a resumed job was skipped to) where there is one."""
    from optuna.trial import TrialState

    runs: dict[str, Mapping[str, float]] = {}
    if uri is not None and parent_run_id is not None:
        from compress.reporting.report import ReportError, read_sweep

        try:
            jobs = read_sweep(uri, parent_run_id).jobs
        except ReportError as error:
            log.warning("trial figures from the study, not from MLflow: %s", error)
        else:
            runs = {j.run_id: j.metrics for j in jobs if j.status == "FINISHED"}
    figures = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        logged = runs.get(trial.user_attrs.get("run_id", ""), {})
        figures[trial.number] = {k: float(logged.get(k, trial.user_attrs[k])) for k in FIGURES}
    return figures


def outcome(study: optuna.Study) -> tuple[dict[str, int], optuna.trial.FrozenTrial | None]:
    """Trials counted by outcome (complete, feasible, infeasible, failed), and the best
    feasible trial (the smallest artifact), or None."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    feasible = [t for t in complete if all(v <= 0 for v in t.constraints.values())]
    counts = {
        "complete": len(complete),
        "feasible": len(feasible),
        "infeasible": len(complete) - len(feasible),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
    }
    return counts, min(feasible, key=lambda t: (t.value, t.number), default=None)


def write_csv(
    study: optuna.Study, space: Space, figures: Mapping[int, Mapping[str, float]], path: Path
) -> Path:
    """Every trial of the study: outcome, figures, run, and per-layer amounts and bits."""
    params = [f"{kind}/{layer}" for layer in space.layers for kind in ("amount", "bits")]
    columns = ["trial", "state", "feasible", *FIGURES, "run_id", "error", *params]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for t in study.get_trials(deepcopy=False):
            feasible = all(v <= 0 for v in t.constraints.values()) if t.constraints else None
            shown = figures.get(t.number, {})
            writer.writerow(
                {
                    "trial": t.number,
                    "state": t.state.name,
                    "feasible": "" if feasible is None else str(feasible).lower(),
                    **{k: shown.get(k, t.user_attrs.get(k, "")) for k in FIGURES},
                    **{k: t.user_attrs.get(k, "") for k in ("run_id", "error")},
                    **{k: round(v, 6) if isinstance(v, float) else v for k, v in t.params.items()},
                }
            )
    return path


def print_report(
    study: optuna.Study,
    space: Space,
    figures: Mapping[int, Mapping[str, float]],
    ran: int,
    table: Path,
) -> None:
    """The best feasible trial, layer by layer, and the study's counts."""
    from rich.console import Console
    from rich.table import Table

    counts, best = outcome(study)
    print(
        f"search '{study.study_name}': {counts['complete']} trials complete "
        f"({counts['feasible']} feasible, {counts['infeasible']} infeasible), "
        f"{counts['failed']} failed; {ran} run now"
    )
    delta = space.settings.delta
    if best is None:
        print(f"no feasible trial: none stayed within {delta:g} pt of the baseline")
    else:
        layers = Table(title=f"best feasible trial: {best.number}")
        for column in ("layer", "amount", "bits"):
            layers.add_column(column, justify="left" if column == "layer" else "right")
        for layer in space.layers:
            amount, bits = best.params[f"amount/{layer}"], best.params[f"bits/{layer}"]
            layers.add_row(layer, f"{amount:.2f}", str(bits))
        Console().print(layers)
        a = figures[best.number]
        drop = 100 * (a["baseline/acc"] - a["acc"])
        print(
            f"acc {a['acc']:.2%} (baseline {a['baseline/acc']:.2%}, drop {drop:+.2f} pt, "
            f"allowed {delta:g}); bytes {a['bytes']:,.0f}; ratio/size {a['ratio/size']:.2f}x; "
            f"run {best.user_attrs['run_id'] or '-'}"
        )
    print(f"all trials: {table}")
