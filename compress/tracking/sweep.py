"""What a sweep's parent run says of its jobs once they have all returned: summary metrics,
a description (MLflow's `mlflow.note.content`, shown on the run's page), and the failures.

Jobs are read from the store (a launcher's workers leave nothing else behind): any object
with `status`, `metrics` and `tags` will do (`compress.reporting.records.Job`). A job that
did not end FINISHED (FAILED, KILLED, or still RUNNING after its launcher returned) failed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

#: MLflow's tag for a run's description.
NOTE_TAG = "mlflow.note.content"
#: The largest accuracy drop (a fraction: 1 point) at which a job still counts as "within
#: 1 pt of the baseline" for `sweep/best_ratio_size_1pt`.
WITHIN = 0.01
#: Failed jobs named on the one line a failing sweep prints.
NAMED = 5


class JobLike(Protocol):
    status: str
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A sweep's jobs, summed up."""

    total: int
    failed: list[tuple[str, str]]  # (name, error) of each job that did not finish
    best_acc: tuple[float, str] | None  # (accuracy, name) of the most accurate job
    best_ratio: tuple[float, str] | None  # (ratio/size, name): the smallest within 1 pt

    def metrics(self) -> dict[str, float]:
        found = {"sweep/jobs_total": float(self.total), "sweep/jobs_failed": len(self.failed)}
        if self.best_acc is not None:
            found["sweep/best_acc"] = self.best_acc[0]
        if self.best_ratio is not None:
            found["sweep/best_ratio_size_1pt"] = self.best_ratio[0]
        return {k: float(v) for k, v in found.items()}

    def failure_line(self) -> str | None:
        """`1 of 3 jobs failed: prune amount=1.5`, or None when every job finished."""
        if not self.failed:
            return None
        names = [name for name, _ in self.failed[:NAMED]]
        more = len(self.failed) - len(names)
        listed = "; ".join(names) + (f"; and {more} more" if more else "")
        return f"{len(self.failed)} of {self.total} jobs failed: {listed}"


def _name(job: JobLike) -> str:
    return job.tags.get("mlflow.runName") or job.tags.get("overrides") or "?"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def outcome(jobs: Sequence[JobLike]) -> Outcome:
    done = [j for j in jobs if j.status == "FINISHED"]
    failed = [
        (_name(j), j.tags.get("error", f"ended {j.status}")) for j in jobs if j.status != "FINISHED"
    ]
    accurate = [(j.metrics["acc"], _name(j)) for j in done if _finite(j.metrics.get("acc"))]
    close = [
        (j.metrics["ratio/size"], _name(j))
        for j in done
        if _finite(j.metrics.get("ratio/size")) and j.metrics.get("acc_drop", math.inf) <= WITHIN
    ]
    best_acc = max(accurate, key=lambda p: p[0], default=None)
    best_ratio = max(close, key=lambda p: p[0], default=None)
    return Outcome(len(jobs), failed, best_acc, best_ratio)


def note(found: Outcome, swept: str, command: str, table: str) -> str:
    """The parent run's description (Markdown): what was swept, how it went, the report."""
    finished = found.total - len(found.failed)
    lines = [
        f"**Sweep** of `{swept or 'nothing'}`: {found.total} jobs, {finished} finished, "
        f"{len(found.failed)} failed.",
        "",
    ]
    if found.best_acc is not None:
        acc, name = found.best_acc
        lines.append(f"- Best accuracy: {100 * acc:.2f}% (`{name}`)")
    if found.best_ratio is not None:
        ratio, name = found.best_ratio
        lines.append(f"- Smallest within 1 pt of the baseline: ratio/size {ratio:.2f}x (`{name}`)")
    elif found.best_acc is not None:
        lines.append("- No job stayed within 1 pt of the baseline's accuracy.")
    for name, error in found.failed:
        lines.append(f"- Failed: `{name}`: {' '.join(error.split())[:300]}")
    if table:
        lines += ["", table.strip()]
    lines += ["", "The report (CSV, Markdown, plot) is under the artifacts' `report/`."]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"
