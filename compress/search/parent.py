"""A study's MLflow parent run: created with the study, taken up again when it resumes.

The trials' runs become its children through the sweep variables (`PARENT_ENV`,
`SWEEP_ENV`), as the jobs of a Hydra sweep do; when the search ends, the parent holds the
study's counts, its best trial and the table of all trials.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from compress.search.table import outcome

if TYPE_CHECKING:
    import optuna

    from compress.search.space import SearchSettings
    from compress.tracking.config import TrackingConfig

log = logging.getLogger(__name__)


@contextmanager
def parent_run(
    tracking: TrackingConfig,
    study: optuna.Study,
    settings: SearchSettings,
    run_dir: Path,
    overrides: str,
) -> Iterator[str | None]:
    """The parent run's id while the trials run (None without tracking); closed FINISHED,
    KILLED on an interrupt, FAILED on any other error."""
    if not tracking.enabled:
        yield None
        return
    from compress.tracking.run import PARENT_ENV, SWEEP_ENV, Run, TrackingError, flatten, tag_run

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
        fields = dataclasses.asdict(settings)  # storage is where, not what: a tag (above)
        knobs = {k: v for k, v in fields.items() if k not in ("trials", "storage")}
        run.log_params(flatten({"search": knobs}))
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


def log_outcome(
    tracking: TrackingConfig,
    run_id: str,
    study: optuna.Study,
    figures: Mapping[int, Mapping[str, float]],
    table: Path,
) -> None:
    """The study's counts and best trial on the parent run (step: trials held), a
    description saying the same (`mlflow.note.content`), and its CSV."""
    from compress.tracking.run import Run
    from compress.tracking.sweep import NOTE_TAG

    run = Run.attach(tracking, run_id)
    counts, best = outcome(study)
    metrics = {f"search/{k}": float(v) for k, v in counts.items()}
    note = f"**Search** `{study.study_name}`: " + ", ".join(f"{v} {k}" for k, v in counts.items())
    if best is not None:
        found = figures[best.number]
        metrics |= {f"search/best_{k}": float(v) for k, v in found.items()}
        best_tags = {"search.best_trial": best.number, "search.best_run": best.user_attrs["run_id"]}
        run.set_tags({k: str(v) for k, v in best_tags.items()})
        note += (
            f".\n\nBest feasible: trial {best.number}, ratio/size "
            f"{found.get('ratio/size', float('nan')):.2f}x at {100 * found.get('acc', 0):.2f}% "
            f"(baseline {100 * found.get('baseline/acc', 0):.2f}%), "
            f"run `{best_tags['search.best_run']}`"
        )
    run.log_metrics(metrics, step=len(study.trials))
    run.set_tags({NOTE_TAG: f"{note}.\n\nAll trials: `{table.name}` in the artifacts.\n"})
    run.log_artifact(table)
