"""`compress-report TARGET`: accuracy against a compression axis, over a sweep or an experiment.

TARGET is a sweep's parent run id (its child runs, plus the earlier runs a resumed sweep
skipped to: the parent's `resumed.<config.hash>` tags) or an experiment name (every job
run in it; sweeps' parent runs are containers, not jobs). FINISHED runs are grouped into
configurations (same params but the seeds and where things were written), each giving
mean ± std of accuracy and of the axis over its seeds; the Pareto front over those means
is marked. Failed and killed runs are listed with their errors. Writes report.csv,
report.md and report.png (`compress.reporting.render`), and logs them to a parent run under
`report/`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from compress.errors import CompressError
from compress.reporting.pareto import group_by, mean_std, pareto_front
from compress.reporting.render import markdown, plot, write_csv

log = logging.getLogger(__name__)

AXES = ("ratio/params", "ratio/size", "ratio/macs", "speedup/latency")
DEFAULT_AXIS = "ratio/size"
FAILED = ("FAILED", "KILLED")
#: Config keys that differ between runs of one configuration, not between configurations.
IGNORED_ROOTS = ("paths", "tracking", "hydra")
IGNORED_KEYS = ("runtime.progress",)


class ReportError(CompressError):
    """Nothing to report on: unknown store, run or experiment, bad axis, no finished run."""


@dataclasses.dataclass(frozen=True)
class Job:
    """What the report needs of one MLflow run."""

    run_id: str
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Target:
    title: str
    jobs: list[Job]
    default_out: Path
    parent_run_id: str | None = None
    missing: list[str] = dataclasses.field(default_factory=list)  # resumed run ids the store lacks


@dataclasses.dataclass(frozen=True)
class Configuration:
    method: str
    label: str
    run_ids: list[str]
    acc_mean: float
    acc_std: float
    axis_mean: float
    axis_std: float
    pareto: bool = False

    @property
    def n_seeds(self) -> int:
        return len(self.run_ids)


@dataclasses.dataclass(frozen=True)
class Report:
    title: str
    axis: str
    configurations: list[Configuration]
    failures: list[Job]
    running: int
    missing: list[str]
    paths: list[Path]
    parent_run_id: str | None


# -- which params make a configuration


def is_seed(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


def ignored(key: str) -> bool:
    """Seeds and where a run wrote things: what differs between runs of one configuration."""
    return is_seed(key) or key.split(".", 1)[0] in IGNORED_ROOTS or key in IGNORED_KEYS


def configuration_key(job: Job) -> tuple[str, tuple[tuple[str, str], ...]]:
    settings = tuple(sorted((k, v) for k, v in job.params.items() if not ignored(k)))
    return _method(job), settings


def _seeds(job: Job) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in job.params.items() if is_seed(k)))


def _method(job: Job) -> str:
    return job.tags.get("method") or job.params.get("method.name") or "?"


_OVERRIDE = re.compile(r"^(~|\+\+?)?[A-Za-z_][\w.@/\-\[\]]*(=|$)")


def override_tokens(text: str) -> list[str]:
    """Hydra overrides from a run's `overrides` tag (space-joined), seeds and paths left out.

    A piece that does not start an override (a value with spaces in it) joins the previous one.
    """
    tokens: list[str] = []
    for piece in text.split():
        if tokens and not _OVERRIDE.match(piece):
            tokens[-1] += f" {piece}"
        else:
            tokens.append(piece)
    return [t for t in tokens if not ignored(t.lstrip("~+").split("=", 1)[0])]


def labels(groups: list[list[Job]]) -> list[str]:
    """What tells each configuration apart: the overrides not shared by all of them, or,
    where those do not (no `overrides` tag, or two alike), the params that differ."""
    if not groups:
        return []
    tokens = [override_tokens(g[0].tags["overrides"]) for g in groups if "overrides" in g[0].tags]
    if len(tokens) == len(groups):
        common = set.intersection(*map(set, tokens))
        found = [" ".join(t for t in ts if t not in common) for ts in tokens]
        keyed = {(_method(g[0]), label) for g, label in zip(groups, found, strict=True)}
        if len(keyed) == len(groups):
            return found
    params = [{k: v for k, v in g[0].params.items() if not ignored(k)} for g in groups]
    keys = sorted({k for p in params for k in p})
    varying = [k for k in keys if len({p.get(k) for p in params}) > 1]
    return [" ".join(f"{k}={p[k]}" for k in varying if k in p) for p in params]


def configurations(jobs: list[Job], axis: str) -> list[Configuration]:
    """FINISHED jobs grouped by configuration, with the Pareto front over their means.

    One seed run twice counts once (its newest run), so n_seeds counts seeds. Sorted by
    the axis, unknown (NaN) last.
    """
    finished = sorted(
        (j for j in jobs if j.status == "FINISHED"), key=lambda j: j.start_time, reverse=True
    )
    groups = []
    for members in group_by(finished, configuration_key).values():
        by_seed = group_by(members, _seeds)
        groups.append([newest for newest, *_ in by_seed.values()])
    found = []
    for members, label in zip(groups, labels(groups), strict=True):
        acc = mean_std([m.metrics.get("acc", math.nan) for m in members])
        ratio = mean_std([m.metrics.get(axis, math.nan) for m in members])
        ids = [m.run_id for m in members]
        found.append(Configuration(_method(members[0]), label, ids, *acc, *ratio))
    front = pareto_front([(c.axis_mean, c.acc_mean) for c in found])
    marked = [dataclasses.replace(c, pareto=p) for c, p in zip(found, front, strict=True)]
    return sorted(marked, key=lambda c: (math.isnan(c.axis_mean), c.axis_mean, c.acc_mean))


# -- what MLflow holds


def default_uri() -> str:
    return f"sqlite:///{Path.cwd() / 'outputs' / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _reports_dir(uri: str) -> Path:
    """outputs/reports beside the SQLite store (or under the current folder for a server)."""
    db = _sqlite_path(uri)
    return (db.resolve().parent if db else Path.cwd() / "outputs") / "reports"


def _is_mlflow_db(path: Path) -> bool:
    """Opened read-only: MLflow would otherwise create its tables in any file it is given."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'experiments'").fetchone()
    except sqlite3.DatabaseError:
        return False
    return found is not None


def _client(uri: str) -> Any:
    db = _sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ReportError(f"no MLflow store at {db} (nothing logged there yet?)")
    if db is not None and not _is_mlflow_db(db):
        raise ReportError(f"{db} is not an MLflow tracking database")
    from compress.tracking.store import open_client

    return open_client(uri)


@contextlib.contextmanager
def _reading(uri: str) -> Iterator[None]:
    """A store MLflow cannot read (not a tracking database, an unknown scheme) is one line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        raise ReportError(f"cannot read the MLflow store {uri}: {error.message}") from error


def _job(run: Any) -> Job:
    return Job(
        run.info.run_id,
        run.info.status,
        run.info.start_time or 0,
        dict(run.data.params),
        dict(run.data.metrics),
        dict(run.data.tags),
    )


def _search(client: Any, experiment_id: str, filter_string: str = "") -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _get_run(client: Any, run_id: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return run if run.info.lifecycle_stage == "active" else None


def parent_target(client: Any, uri: str, run: Any) -> Target:
    """A sweep: the parent's children and the runs its resumed jobs were skipped to."""
    parent_id, tags = run.info.run_id, run.data.tags
    children = _search(client, run.info.experiment_id, f"tags.mlflow.parentRunId = '{parent_id}'")
    resumed = [v for k, v in sorted(tags.items()) if k.startswith("resumed.")]
    if not children and not resumed and "sweep.dir" not in tags:
        above = tags.get("mlflow.parentRunId")
        hint = f"; its sweep's parent run is {above}" if above else ""
        raise ReportError(f"run '{parent_id}' is not the parent run of a sweep{hint}")
    jobs = {r.info.run_id: _job(r) for r in children}
    missing = []
    for run_id in resumed:
        if run_id not in jobs:
            found = _get_run(client, run_id)
            if found is None:
                missing.append(run_id)
            else:
                jobs[run_id] = _job(found)
    sweep_dir = Path(tags["sweep.dir"]) if tags.get("sweep.dir") else None
    out = sweep_dir if sweep_dir and sweep_dir.is_dir() else _reports_dir(uri) / parent_id
    title = f"{tags.get('sweep') or run.info.run_name or 'sweep'} (parent run {parent_id})"
    return Target(title, list(jobs.values()), out, parent_id, missing)


def experiment_target(client: Any, uri: str, experiment: Any) -> Target:
    """Every job run of an experiment; a sweep's parent is a container, not a job."""
    runs = _search(client, experiment.experiment_id)
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    parents |= {r.info.run_id for r in runs if "sweep.dir" in r.data.tags}
    jobs = [_job(r) for r in runs if r.info.run_id not in parents]
    name = experiment.name
    out = _reports_dir(uri) / re.sub(r"[^\w.-]+", "_", name)
    return Target(f"experiment '{name}'", jobs, out)


def collect(client: Any, uri: str, target: str) -> Target:
    """TARGET as a run id first, then as an experiment name."""
    run = _get_run(client, target)
    if run is not None:
        return parent_target(client, uri, run)
    experiment = client.get_experiment_by_name(target)
    if experiment is None or experiment.lifecycle_stage != "active":
        raise ReportError(f"no run or experiment named '{target}' in {uri}")
    return experiment_target(client, uri, experiment)


def write_report(target: Target, axis: str, out_dir: Path | None, client: Any) -> Report:
    """Checks come first: on any error nothing is written."""
    configs = configurations(target.jobs, axis)
    failures = [j for j in target.jobs if j.status in FAILED]
    if not configs:
        raise ReportError(f"no FINISHED runs in {target.title} ({len(failures)} failed)")
    running = sum(j.status not in ("FINISHED", *FAILED) for j in target.jobs)
    out = (out_dir or target.default_out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    notes = [f"Resumed run `{i}` is no longer in the store." for i in target.missing]
    if running:
        notes.append(f"{running} run(s) not ended yet (RUNNING or SCHEDULED) are left out.")
    text = markdown(target.title, axis, configs, failures, notes)
    (out / "report.md").write_text(text)
    paths = [
        write_csv(configs, axis, out / "report.csv"),
        out / "report.md",
        plot(target.title, axis, configs, out / "report.png"),
    ]
    if target.parent_run_id is not None:
        from mlflow.exceptions import MlflowException

        try:
            for path in paths:
                client.log_artifact(target.parent_run_id, str(path), "report")
        except MlflowException as error:
            raise ReportError(
                f"report written to {out} but not logged to run {target.parent_run_id}: "
                f"{error.message}"
            ) from error
    log.info("report of %s written to %s", target.title, out)
    return Report(
        target.title, axis, configs, failures, running, target.missing, paths, target.parent_run_id
    )


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ReportError(f"axis '{axis}' unknown; choose one of: {', '.join(AXES)}")


def build_report(uri: str, target: str, axis: str, out_dir: Path | None = None) -> Report:
    """The report of a parent run id or an experiment name; out_dir None: the default
    (a sweep's folder, else outputs/reports/<parent id or experiment>)."""
    _check_axis(axis)
    with _reading(uri):
        client = _client(uri)
        found = collect(client, uri, target)
    return write_report(found, axis, out_dir, client)


def report_for_parent(uri: str, parent_run_id: str, axis: str, out_dir: Path | None) -> Path:
    """For the sweep callback: the sweep's report, logged to its parent; the Markdown path.

    Raises ReportError when there is nothing to report (every job failed).
    """
    _check_axis(axis)
    with _reading(uri):
        client = _client(uri)
        run = _get_run(client, parent_run_id)
        if run is None:
            raise ReportError(f"no run '{parent_run_id}' in {uri}")
        found = parent_target(client, uri, run)
    report = write_report(found, axis, out_dir, client)
    return report.paths[1]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, like every error of ours (argparse adds its usage otherwise)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="compress-report", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a sweep's parent run id, or an experiment name")
    parser.add_argument(
        "--axis",
        default=DEFAULT_AXIS,
        help=f"compression axis: {', '.join(AXES)} (default %(default)s)",
    )
    parser.add_argument("--uri", default=None, help="tracking URI (default: ./outputs/mlflow.db)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.uri or default_uri(), args.target, args.axis, args.out)
    except CompressError as error:
        print(f"compress-report: error: {error}", file=sys.stderr)
        return 2
    print(report.paths[1].read_text())
    for path in report.paths:
        print(f"wrote {path}")
    if report.parent_run_id:
        print(f"logged to run {report.parent_run_id} under report/")
    return 0
