"""What a report reads of MLflow: one `Job` per run, and the runs a target stands for.

A target is a sweep's parent run (its child runs, plus the earlier runs a resumed sweep
skipped to: the parent's `resumed.<config.hash>` tags) or an experiment (every job run in
it; sweeps' parent runs are containers, not jobs). A sweep is also found by its folder,
the `sweep.dir` tag its parent carries. Every function takes an open `MlflowClient`:
opening the store is `compress.reporting.report`'s job, in one place.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from compress.errors import CompressError

SWEEP_DIR_TAG = "sweep.dir"


class ReportError(CompressError):
    """Nothing to report on: unknown store, run or experiment, bad axis, no finished run."""


@dataclasses.dataclass(frozen=True)
class Job:
    """What a report needs of one MLflow run."""

    run_id: str
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Target:
    """The jobs of a sweep or an experiment, and where their report goes by default."""

    title: str
    jobs: list[Job]
    default_out: Path
    parent_run_id: str | None = None
    missing: list[str] = dataclasses.field(default_factory=list)  # resumed run ids the store lacks


def job_of(run: Any) -> Job:
    return Job(
        run.info.run_id,
        run.info.status,
        run.info.start_time or 0,
        dict(run.data.params),
        dict(run.data.metrics),
        dict(run.data.tags),
    )


def search_runs(client: Any, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
    """Every matching run, page after page."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def get_run(client: Any, run_id: str) -> Any | None:
    """The active run of that id, or None (unknown, or deleted)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return run if run.info.lifecycle_stage == "active" else None


def parent_target(client: Any, run: Any, reports_dir: Path) -> Target:
    """A sweep: the parent's children and the runs its resumed jobs were skipped to."""
    parent_id, tags = run.info.run_id, run.data.tags
    children = search_runs(
        client, [run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    resumed = [v for k, v in sorted(tags.items()) if k.startswith("resumed.")]
    if not children and not resumed and SWEEP_DIR_TAG not in tags:
        above = tags.get("mlflow.parentRunId")
        hint = f"; its sweep's parent run is {above}" if above else ""
        raise ReportError(f"run '{parent_id}' is not the parent run of a sweep{hint}")
    jobs = {r.info.run_id: job_of(r) for r in children}
    missing = []
    for run_id in resumed:
        if run_id not in jobs:
            found = get_run(client, run_id)
            if found is None:
                missing.append(run_id)
            else:
                jobs[run_id] = job_of(found)
    sweep_dir = Path(tags[SWEEP_DIR_TAG]) if tags.get(SWEEP_DIR_TAG) else None
    out = sweep_dir if sweep_dir and sweep_dir.is_dir() else reports_dir / parent_id
    title = f"{tags.get('sweep') or run.info.run_name or 'sweep'} (parent run {parent_id})"
    return Target(title, list(jobs.values()), out, parent_id, missing)


def experiment_target(client: Any, experiment: Any, reports_dir: Path) -> Target:
    """Every job run of an experiment; a sweep's parent is a container, not a job."""
    runs = search_runs(client, [experiment.experiment_id])
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    parents |= {r.info.run_id for r in runs if SWEEP_DIR_TAG in r.data.tags}
    jobs = [job_of(r) for r in runs if r.info.run_id not in parents]
    name = experiment.name
    out = reports_dir / re.sub(r"[^\w.-]+", "_", name)
    return Target(f"experiment '{name}'", jobs, out)


def collect(client: Any, target: str, reports_dir: Path, where: str) -> Target:
    """TARGET as a run id first, then as an experiment name (`where`: the store, for errors)."""
    run = get_run(client, target)
    if run is not None:
        return parent_target(client, run, reports_dir)
    experiment = client.get_experiment_by_name(target)
    if experiment is None or experiment.lifecycle_stage != "active":
        raise ReportError(f"no run or experiment named '{target}' in {where}")
    return experiment_target(client, experiment, reports_dir)


def sweep_parent(client: Any, sweep_dir: Path) -> Any | None:
    """The newest active parent run whose `sweep.dir` is that folder, in any experiment.

    Compared as resolved paths in Python: a folder name may hold what a filter string
    cannot quote.
    """
    wanted = sweep_dir.resolve()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    parents = search_runs(client, experiments, f"tags.`{SWEEP_DIR_TAG}` != ''")
    found = [r for r in parents if Path(r.data.tags[SWEEP_DIR_TAG]).resolve() == wanted]
    return max(found, key=lambda r: r.info.start_time or 0, default=None)
