"""`compress-search`: the smallest model whose accuracy stays within `delta` of the baseline.

Optuna's TPE sampler draws per-layer prune amounts and weight bits; each trial is one job
of the pipeline (a stack prune -> quantize_weights, run in-process) whose artifact bytes
are the objective and whose accuracy drop is a constraint (`Trial.set_constraint`), so
infeasible trials are known as such and the best trial is the smallest feasible one. The
study lives in an RDB store (SQLite by default): a search that was stopped resumes, the
trials it left RUNNING are marked failed, and only the missing trials run. The trials of
a study are MLflow child runs of one parent run. hydra-optuna-sweeper is not used: it
pins optuna < 3 and crashed with SQLite storage.

One process per study at a time: a second one would see the first one's trial as
abandoned.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from compress.cli.config_dir import CONFIG_DIR

if TYPE_CHECKING:
    import optuna

    from compress.search.space import SearchSettings, Space
    from compress.tracking.config import TrackingConfig

log = logging.getLogger(__name__)

#: Trial figures kept as user attributes (and columns of search.csv).
FIGURES = ("bytes", "acc", "baseline/acc", "ratio/size", "ratio/params")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="search")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]

    from compress.errors import CompressError

    try:
        search(plain, " ".join(HydraConfig.get().overrides.task)[:5000])
    except CompressError as error:
        print(f"compress-search: error: {error}", file=sys.stderr)
        sys.exit(1)


def search(cfg: dict[str, Any], overrides: str = "") -> optuna.Study:
    """Check the command, open or resume its study, run the missing trials, report."""
    import optuna
    from optuna.trial import TrialState

    from compress.config import from_mapping, require
    from compress.run.pipeline import Plan
    from compress.search.space import SearchSettings, Space, open_storage, resume
    from compress.tracking.config import TrackingConfig

    settings = SearchSettings.parse(cfg.get("search"))
    method = (cfg.get("method") or {}).get("name")
    require(
        method == "none",
        f"method={method} is not used: each trial is a stack prune -> quantize_weights "
        "set by search.prune and search.quantize_weights",
    )
    space = Space.for_config(settings, cfg)
    Plan.from_config({**cfg, "method": space.sample_method()})  # the other sections, checked
    tracking = from_mapping(TrackingConfig, cfg.get("tracking"), "tracking")
    setup = space.setup(cfg)

    optuna.logging.disable_default_handler()  # Hydra's handlers: the console and the log file
    optuna.logging.enable_propagation()
    storage = open_storage(settings.storage)
    held = resume(storage, settings, setup)
    study = optuna.create_study(
        storage=storage,
        study_name=settings.study,
        direction="minimize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(
            seed=settings.seed + held,  # a resumed study draws new points, not the first ones
            n_startup_trials=settings.startup_trials,
            multivariate=True,
        ),
    )
    if "setup" not in study.user_attrs:
        study.set_user_attr("setup", setup)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = max(0, settings.trials - done)
    log.info("study '%s': %d trials complete, %d to run", settings.study, done, remaining)

    run_dir = Path(cfg["paths"]["run_dir"])
    job = {k: v for k, v in cfg.items() if k != "search"}  # the search's own knobs stay out
    with _parent_run(tracking, study, settings, run_dir, overrides) as parent:
        for _ in range(remaining):
            _trial(study, space, job, run_dir, overrides)
        table = write_csv(study, space, run_dir / "search.csv")
        if parent is not None:
            _log_outcome(tracking, parent, study, table)
    print_report(study, space, remaining, table)
    return study


def _trial(
    study: optuna.Study, space: Space, job: dict[str, Any], run_dir: Path, overrides: str
) -> None:
    """One trial: a pipeline job with the drawn amounts and bits, told to the study."""
    from optuna.trial import TrialState

    from compress.errors import AlreadyFinished, CompressError
    from compress.run.pipeline import record_failure, run

    trial = study.ask()
    amounts, bits = space.suggest(trial)
    job = copy.deepcopy(job)
    job["method"] = space.method(amounts, bits)
    job["paths"]["run_dir"] = str(run_dir / f"trial_{trial.number}")
    tags = {"search.study": study.study_name, "search.trial": str(trial.number)}
    tags["overrides"] = overrides
    trial.set_user_attr("run_dir", job["paths"]["run_dir"])
    try:
        try:
            result = run(job, tags=tags)
            metrics, run_id = result.metrics, result.run_id or ""
        except AlreadyFinished as done:  # tracking.resume: an identical job already ran
            metrics, run_id = done.metrics, done.run_id
    except CompressError as error:
        record_failure(job, error, tags)  # a FAILED child run, unless the job's run holds it
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:2000])
        trial.set_user_attr("run_id", getattr(error, "tracked_run_id", None) or "")
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, error)
        return
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)  # interrupted: failed, not left RUNNING
        raise
    for name in FIGURES:
        trial.set_user_attr(name, float(metrics[name]))
    trial.set_user_attr("run_id", run_id)
    violation = space.settings.violation(metrics["acc"], metrics["baseline/acc"])
    trial.set_constraint("accuracy", violation)
    study.tell(trial, float(metrics["bytes"]))
    log.info(
        "trial %d: %s bytes, acc %.2f%% (baseline %.2f%%): %s",
        trial.number,
        f"{metrics['bytes']:,.0f}",
        100 * metrics["acc"],
        100 * metrics["baseline/acc"],
        "feasible" if violation <= 0 else f"infeasible, {violation:.2f} pt below the floor",
    )


@contextmanager
def _parent_run(
    tracking: TrackingConfig,
    study: optuna.Study,
    settings: SearchSettings,
    run_dir: Path,
    overrides: str,
) -> Iterator[str | None]:
    """The study's MLflow parent run, created with the study and taken up again when it
    resumes; the trials' runs become its children through the sweep variables."""
    if not tracking.enabled:
        yield None
        return
    from compress.tracking.run import Run, TrackingError, flatten, tag_run
    from compress.tracking.sweep import PARENT_ENV, SWEEP_ENV

    name = f"search {settings.study}"
    where = {"uri": tracking.uri, "experiment": tracking.experiment}
    known = study.user_attrs.get("mlflow.parent", {})
    tags = {"search.dir": str(run_dir), "overrides": overrides}
    run_id = known.get("run_id") if {k: known.get(k) for k in where} == where else None
    try:
        if run_id is not None:  # the run may have been deleted: a failed write says so
            tag_run(tracking, run_id, tags)
    except TrackingError:
        run_id = None
    if run_id is None:
        tags |= {"sweep": name, "search.study": settings.study, "search.storage": settings.storage}
        run = Run(dataclasses.replace(tracking, run_name=name), tags).__enter__()
        fields = dataclasses.asdict(settings)
        run.log_params(flatten({"search": {k: v for k, v in fields.items() if k != "trials"}}))
        run_id = str(run.run_id)
        study.set_user_attr("mlflow.parent", {**where, "run_id": run_id})
    log.info("mlflow: search parent run %s (%s)", run_id, name)
    before = {key: os.environ.get(key) for key in (PARENT_ENV, SWEEP_ENV)}
    os.environ[PARENT_ENV], os.environ[SWEEP_ENV] = run_id, name
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Run.attach(tracking, run_id).end(status)


def _log_outcome(tracking: TrackingConfig, run_id: str, study: optuna.Study, table: Path) -> None:
    """The study's counts and best trial on the parent run (step: trials held), and its CSV."""
    from compress.tracking.run import Run

    run = Run.attach(tracking, run_id)
    counts, best = outcome(study)
    metrics = {f"search/{k}": float(v) for k, v in counts.items()}
    if best is not None:
        metrics |= {f"search/best_{k}": float(best.user_attrs[k]) for k in FIGURES}
        best_tags = {"search.best_trial": best.number, "search.best_run": best.user_attrs["run_id"]}
        run.set_tags({k: str(v) for k, v in best_tags.items()})
    run.log_metrics(metrics, step=len(study.trials))
    run.log_artifact(table)


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


def write_csv(study: optuna.Study, space: Space, path: Path) -> Path:
    """Every trial of the study: outcome, figures, run, and per-layer amounts and bits."""
    params = [f"{kind}/{layer}" for layer in space.layers for kind in ("amount", "bits")]
    columns = ["trial", "state", "feasible", *FIGURES, "run_id", "error", *params]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for t in study.get_trials(deepcopy=False):
            feasible = all(v <= 0 for v in t.constraints.values()) if t.constraints else None
            writer.writerow(
                {
                    "trial": t.number,
                    "state": t.state.name,
                    "feasible": "" if feasible is None else str(feasible).lower(),
                    **{k: t.user_attrs.get(k, "") for k in (*FIGURES, "run_id", "error")},
                    **{k: round(v, 6) if isinstance(v, float) else v for k, v in t.params.items()},
                }
            )
    return path


def print_report(study: optuna.Study, space: Space, ran: int, table: Path) -> None:
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
        a = best.user_attrs
        drop = 100 * (a["baseline/acc"] - a["acc"])
        print(
            f"acc {a['acc']:.2%} (baseline {a['baseline/acc']:.2%}, drop {drop:+.2f} pt, "
            f"allowed {delta:g}); bytes {a['bytes']:,.0f}; ratio/size {a['ratio/size']:.2f}x; "
            f"run {a['run_id'] or '-'}"
        )
    print(f"all trials: {table}")
