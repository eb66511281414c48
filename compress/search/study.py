"""`compress-search`'s search: the smallest model whose accuracy stays within `delta`.

Optuna's TPE sampler draws per-layer prune amounts and weight bits; each trial is one job
of the pipeline (a stack prune -> quantize_weights, run in-process) whose artifact bytes
are the objective and whose accuracy drop is a constraint (`Trial.set_constraint`), so
infeasible trials are known as such and the best trial is the smallest feasible one. The
study lives in an RDB store (SQLite by default): a search that was stopped resumes, the
trials it left RUNNING are marked failed, and only the missing trials run. The trials of
a study are MLflow child runs of one parent run. hydra-optuna-sweeper is not used: it
pins optuna < 3 and crashed with SQLite storage.

One process per study at a time: a second one would see the first one's trial as
abandoned. The command line is `compress.cli.search`; this package knows nothing of it.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.search.parent import log_outcome, parent_run
from compress.search.table import FIGURES, print_report, trial_figures, write_csv

if TYPE_CHECKING:
    import optuna

    from compress.search.space import Space

log = logging.getLogger(__name__)


def search(cfg: dict[str, Any], overrides: str = "") -> optuna.Study:
    """Check the command, open or resume its study, run the missing trials, report."""
    import optuna
    from optuna.trial import TrialState

    from compress.config import from_mapping, require
    from compress.run.plan import Plan, check_config
    from compress.search.space import SearchSettings, Space, open_storage, resume
    from compress.tracking.config import TrackingConfig

    check_config(cfg, also=("search",))  # before the data is loaded for the space
    settings = SearchSettings.parse(cfg.get("search"))
    method = (cfg.get("method") or {}).get("name")
    require(
        method == "none",
        f"method={method} is not used: each trial is a stack prune -> quantize_weights "
        "set by search.prune and search.quantize_weights",
    )
    space = Space.for_config(settings, cfg)
    Plan.from_config({**cfg, "method": space.sample_method()}, also=("search",))  # the rest
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
    with parent_run(tracking, study, settings, run_dir, overrides) as parent:
        for _ in range(remaining):
            _trial(study, space, job, run_dir, overrides)
        figures = trial_figures(study, tracking.uri if parent else None, parent)
        table = write_csv(study, space, figures, run_dir / "search.csv")
        if parent is not None:
            log_outcome(tracking, parent, study, figures, table)
    print_report(study, space, figures, remaining, table)
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
            assert result is not None  # one process: compress-search refuses several
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
