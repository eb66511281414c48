"""The one groupby of every report: jobs into configurations, mean ± std over seeds, Pareto.

A configuration is the jobs whose params agree but for the seeds and where things were
written (`paths`, `tracking`, `hydra`, the progress bar). One seed run twice counts once
(its newest run). `compress-report` groups by configuration; a study of `experiments/`
groups the same jobs by its own keys (arm and setting) through `grouped`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

from compress.reporting.pareto import group_by, mean_std, pareto_front
from compress.reporting.records import Job

K = TypeVar("K", bound=Hashable)

#: Config keys that differ between runs of one configuration, not between configurations.
IGNORED_ROOTS = ("paths", "tracking", "hydra")
IGNORED_KEYS = ("runtime.progress",)


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One point of a report: a configuration's figures over its seeds."""

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


# -- which params make a configuration


def is_seed(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


def ignored(key: str) -> bool:
    """Seeds and where a run wrote things: what differs between runs of one configuration."""
    return is_seed(key) or key.split(".", 1)[0] in IGNORED_ROOTS or key in IGNORED_KEYS


def method_of(job: Job) -> str:
    return job.tags.get("method") or job.params.get("method.name") or "?"


def configuration_key(job: Job) -> tuple[str, tuple[tuple[str, str], ...]]:
    settings = tuple(sorted((k, v) for k, v in job.params.items() if not ignored(k)))
    return method_of(job), settings


def seeds_of(job: Job) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in job.params.items() if is_seed(k)))


_OVERRIDE = re.compile(r"^(~|\+\+?)?[A-Za-z_][\w.@/\-\[\]]*(=|$)")


def split_overrides(text: str) -> list[str]:
    """Hydra overrides from a run's `overrides` tag (space-joined), every one of them.

    A piece that does not start an override (a value with spaces in it) joins the previous one.
    """
    tokens: list[str] = []
    for piece in text.split():
        if tokens and not _OVERRIDE.match(piece):
            tokens[-1] += f" {piece}"
        else:
            tokens.append(piece)
    return tokens


def override_key(override: str) -> str:
    """What an override sets: `dataset` for `dataset=fake`, `a.b` for `++a.b=1`."""
    return override.split("=", 1)[0].lstrip("~+")


def override_tokens(text: str) -> list[str]:
    """The overrides of a run's `overrides` tag that tell configurations apart: seeds and
    paths left out."""
    return [t for t in split_overrides(text) if not ignored(override_key(t))]


def labels(groups: list[list[Job]]) -> list[str]:
    """What tells each configuration apart: the overrides not shared by all of them, or,
    where those do not (no `overrides` tag, or two alike), the params that differ."""
    if not groups:
        return []
    tokens = [override_tokens(g[0].tags["overrides"]) for g in groups if "overrides" in g[0].tags]
    if len(tokens) == len(groups):
        common = set.intersection(*map(set, tokens))
        found = [" ".join(t for t in ts if t not in common) for ts in tokens]
        keyed = {(method_of(g[0]), label) for g, label in zip(groups, found, strict=True)}
        if len(keyed) == len(groups):
            return found
    params = [{k: v for k, v in g[0].params.items() if not ignored(k)} for g in groups]
    keys = sorted({k for p in params for k in p})
    varying = [k for k in keys if len({p.get(k) for p in params}) > 1]
    return [" ".join(f"{k}={p[k]}" for k in varying if k in p) for p in params]


# -- the groupby


def latest(jobs: Iterable[Job]) -> list[Job]:
    """The FINISHED jobs, one per configuration and seed (the newest), in the order given."""
    finished = [j for j in jobs if j.status == "FINISHED"]
    newest: dict[Hashable, Job] = {}
    for job in finished:
        key = (configuration_key(job), seeds_of(job))
        if key not in newest or job.start_time > newest[key].start_time:
            newest[key] = job
    kept = {id(job) for job in newest.values()}
    return [job for job in finished if id(job) in kept]


def grouped(jobs: Iterable[Job], key: Callable[[Job], K]) -> dict[K, list[Job]]:
    """The `latest` jobs grouped by `key`, groups and members in the order given."""
    return group_by(latest(jobs), key)


def configurations(jobs: list[Job], axis: str) -> list[Configuration]:
    """FINISHED jobs grouped by configuration, with the Pareto front over their means.

    n_seeds counts seeds; run ids newest first. Sorted by the axis, unknown (NaN) last.
    """
    newest_first = sorted(jobs, key=lambda j: j.start_time, reverse=True)
    groups = list(grouped(newest_first, configuration_key).values())
    found = []
    for members, label in zip(groups, labels(groups), strict=True):
        acc = mean_std([m.metrics.get("acc", math.nan) for m in members])
        ratio = mean_std([m.metrics.get(axis, math.nan) for m in members])
        ids = [m.run_id for m in members]
        found.append(Configuration(method_of(members[0]), label, ids, *acc, *ratio))
    front = pareto_front([(c.axis_mean, c.acc_mean) for c in found])
    marked = [dataclasses.replace(c, pareto=p) for c, p in zip(found, front, strict=True)]
    return sorted(marked, key=lambda c: (math.isnan(c.axis_mean), c.axis_mean, c.acc_mean))
