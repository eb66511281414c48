"""Reports of MLflow runs: open the store, read a target's jobs, aggregate, write, log.

`build_report` is what `compress-report TARGET` does (`compress.cli.report`), and
`report_for_parent` (or `sweep_report`, then `table_text` for the terminal) what a sweep
does when it ends (`compress.cli.sweep_callback`): FINISHED runs are grouped into
configurations (`compress.reporting.aggregate`), each giving mean ± std of accuracy and of
the axis over its seeds, beside the baseline they compress, the Pareto front among those of
one baseline marked; failed and killed runs are listed with their errors. Writes report.csv,
report.md (`compress.reporting.render`) and report.png (`compress.reporting.figure`) and
logs them to a sweep's parent under `report/`.
`read_sweep` and `find_sweep` hand the same records to `compress-search` and the studies of
`experiments/`, which aggregate them with the same groupby.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compress.reporting import render
from compress.reporting.aggregate import BaselinePoint, Configuration, baselines, configurations
from compress.reporting.figure import plot
from compress.reporting.records import (
    Job,
    ReportError,
    Target,
    collect,
    get_run,
    parent_target,
    sweep_parent,
)
from compress.reporting.render import markdown, write_csv

__all__ = [
    "AXES",
    "DEFAULT_AXIS",
    "Report",
    "ReportError",
    "build_report",
    "default_uri",
    "find_sweep",
    "read_sweep",
    "report_for_parent",
    "sweep_report",
    "table_text",
]

log = logging.getLogger(__name__)

AXES = ("ratio/params", "ratio/size", "ratio/macs", "speedup/latency")
DEFAULT_AXIS = "ratio/size"
FAILED = ("FAILED", "KILLED")


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
    baselines: list[BaselinePoint] = dataclasses.field(default_factory=list)


# -- the store


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


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ReportError(f"axis '{axis}' unknown; choose one of: {', '.join(AXES)}")


# -- reading


def _sweep(client: Any, uri: str, parent_run_id: str) -> Target:
    run = get_run(client, parent_run_id)
    if run is None:
        raise ReportError(f"no run '{parent_run_id}' in {uri}")
    return parent_target(client, run, _reports_dir(uri))


def read_sweep(uri: str, parent_run_id: str) -> Target:
    """The jobs of the sweep (or search) whose parent run is `parent_run_id`."""
    with _reading(uri):
        return _sweep(_client(uri), uri, parent_run_id)


def find_sweep(uri: str, sweep_dir: Path) -> str | None:
    """The parent run id of the sweep that wrote into `sweep_dir` (its `sweep.dir` tag)."""
    with _reading(uri):
        run = sweep_parent(_client(uri), sweep_dir)
    return None if run is None else run.info.run_id


# -- writing


def write_report(target: Target, axis: str, out_dir: Path | None, client: Any) -> Report:
    """Checks come first: on any error nothing is written."""
    configs = configurations(target.jobs, axis)
    bases = list(baselines(sorted(target.jobs, key=lambda j: j.start_time, reverse=True)).values())
    failures = [j for j in target.jobs if j.status in FAILED]
    if not configs:
        raise ReportError(f"no FINISHED runs in {target.title} ({len(failures)} failed)")
    running = sum(j.status not in ("FINISHED", *FAILED) for j in target.jobs)
    out = (out_dir or target.default_out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    notes = [f"Resumed run `{i}` is no longer in the store." for i in target.missing]
    if running:
        notes.append(f"{running} run(s) not ended yet (RUNNING or SCHEDULED) are left out.")
    text = markdown(target.title, axis, configs, bases, failures, notes)
    (out / "report.md").write_text(text)
    paths = [
        write_csv(configs, bases, axis, out / "report.csv"),
        out / "report.md",
        plot(target.title, axis, configs, bases, out / "report.png"),
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
        target.title,
        axis,
        configs,
        failures,
        running,
        target.missing,
        paths,
        target.parent_run_id,
        bases,
    )


def build_report(uri: str, target: str, axis: str, out_dir: Path | None = None) -> Report:
    """The report of a parent run id or an experiment name; out_dir None: the default
    (a sweep's folder, else outputs/reports/<parent id or experiment>)."""
    _check_axis(axis)
    with _reading(uri):
        client = _client(uri)
        found = collect(client, target, _reports_dir(uri), uri)
    return write_report(found, axis, out_dir, client)


def sweep_report(uri: str, parent_run_id: str, axis: str, out_dir: Path | None) -> Report:
    """For the sweep callback: the sweep's report, written and logged to its parent.

    Raises ReportError when there is nothing to report (every job failed).
    """
    _check_axis(axis)
    with _reading(uri):
        client = _client(uri)
        found = _sweep(client, uri, parent_run_id)
    return write_report(found, axis, out_dir, client)


def report_for_parent(uri: str, parent_run_id: str, axis: str, out_dir: Path | None) -> Path:
    """`sweep_report`'s Markdown path."""
    return sweep_report(uri, parent_run_id, axis, out_dir).paths[1]


def table_text(report: Report, width: int = 120) -> str:
    """The report's table as terminal text: each baseline, then its configurations (mean
    ± std over seeds where there are two or more, the front marked); no colour codes."""
    return render.table_text(
        report.title, report.axis, report.configurations, report.baselines, width
    )
