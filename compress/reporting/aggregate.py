"""The one groupby of every report: jobs into configurations, mean ± std over seeds, Pareto.

A configuration is the jobs whose params agree but for the seeds and where things were
written (`paths`, `tracking`, `hydra`, the progress bar). One seed run twice counts once
(its newest run). Configurations compressing the same baseline (model, data, training
recipe: `baseline_of`) are compared with each other and with that baseline, never with
those of another one: each baseline has its own Pareto front. `compress-report` groups by
configuration; a study of `experiments/` groups the same jobs by its own keys (arm and
setting) through `grouped`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

from compress.reporting.pareto import group_by, mean_std, pareto_front
from compress.reporting.records import Job
from compress.tracking.names import split_overrides

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
    baseline: str = ""  # the label of the baseline it compresses ("" when there is one)

    @property
    def n_seeds(self) -> int:
        return len(self.run_ids)


@dataclasses.dataclass(frozen=True)
class BaselinePoint:
    """The uncompressed model the configurations of one baseline group start from: its
    test accuracy over the distinct baselines trained (one per seed), at 1x on every axis."""

    label: str  # what sets it apart from the report's other baselines ("" when alone)
    run_ids: list[str]  # per distinct baseline, the newest job that used it
    acc_mean: float
    acc_std: float
    axis_mean: float = 1.0
    axis_std: float = 0.0

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


#: The params a baseline's weights depend on (with its data's fingerprint), seeds aside.
BASELINE_ROOTS = ("model.", "dataset.", "augment.", "schedule.train.")
#: How data is read or where it lives: the same data either way (the fingerprint says).
READING = ("dataset.root", "dataset.download", "dataset.in_memory", "dataset.workers")
READING_PREFIXES = ("dataset.memory_limit",)


def baseline_of(job: Job) -> tuple[tuple[str, str], ...]:
    """What sets a job's baseline apart from another's: its model, data and training recipe
    (the `baseline.key` tag also holds the seed, so every seed would be a baseline apart)."""
    own = [
        (k, v)
        for k, v in job.params.items()
        if k.startswith(BASELINE_ROOTS)
        and not ignored(k)
        and k not in READING
        and not k.startswith(READING_PREFIXES)
    ]
    fingerprint = job.tags.get("data.fingerprint")
    return tuple(sorted(own + ([("data", fingerprint)] if fingerprint else [])))


def seeds_of(job: Job) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in job.params.items() if is_seed(k)))


def override_key(override: str) -> str:
    """What an override sets: `dataset` for `dataset=fake`, `a.b` for `++a.b=1`."""
    return override.split("=", 1)[0].lstrip("~+")


def override_tokens(text: str) -> list[str]:
    """The overrides of a run's `overrides` tag that tell configurations apart: seeds and
    paths left out."""
    return [t for t in split_overrides(text) if not ignored(override_key(t))]


def varying(settings: list[dict[str, str]]) -> list[str]:
    """`key=value` of the keys whose values are not the same in all of `settings`."""
    keys = sorted({k for p in settings for k in p})
    differ = [k for k in keys if len({p.get(k) for p in settings}) > 1]
    return [" ".join(f"{k}={p[k]}" for k in differ if k in p) for p in settings]


def labels(groups: list[list[Job]]) -> list[str]:
    """What tells each configuration apart: the overrides not shared by all of them, or,
    where those do not (no `overrides` tag, or two alike), the params that differ. A lone
    configuration keeps all its overrides.

    A configuration whose overrides say nothing the others' do not (a plain `compress` run
    that a sweep's job resumed to: no overrides at all) is labelled by its params instead.
    """
    if not groups:
        return []
    params = varying([{k: v for k, v in g[0].params.items() if not ignored(k)} for g in groups])
    tokens = [override_tokens(g[0].tags["overrides"]) for g in groups if "overrides" in g[0].tags]
    if len(tokens) != len(groups):
        return params
    common = set.intersection(*map(set, tokens)) if len(groups) > 1 else set()
    own = [" ".join(t for t in ts if t not in common) for ts in tokens]
    found = [mine or p for mine, p in zip(own, params, strict=True)]
    keyed = {(method_of(g[0]), label) for g, label in zip(groups, found, strict=True)}
    return found if len(keyed) == len(groups) else params


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


def baselines(jobs: Iterable[Job]) -> dict[tuple[tuple[str, str], ...], BaselinePoint]:
    """One point per baseline group of the FINISHED jobs (`baseline_of`), in the order first
    seen: the mean and std of `baseline/acc` over the distinct baselines trained (by their
    `baseline.key` tag, else one per seed)."""
    groups = grouped(jobs, baseline_of)
    names = varying([dict(key) for key in groups]) if len(groups) > 1 else [""] * len(groups)
    found = {}
    for (key, members), name in zip(groups.items(), names, strict=True):
        distinct: dict[Hashable, Job] = {}
        for job in members:
            distinct.setdefault(job.tags.get("baseline.key") or seeds_of(job), job)
        accs = [j.metrics.get("baseline/acc", math.nan) for j in distinct.values()]
        ids = [j.run_id for j in distinct.values()]
        found[key] = BaselinePoint(name, ids, *mean_std(accs))
    return found


def configurations(jobs: list[Job], axis: str) -> list[Configuration]:
    """FINISHED jobs grouped by configuration, with the Pareto front over their means among
    the configurations of the same baseline.

    n_seeds counts seeds; run ids newest first. In the order of their baselines (newest
    first), then by the axis, unknown (NaN) last.
    """
    newest_first = sorted(jobs, key=lambda j: j.start_time, reverse=True)
    groups = list(grouped(newest_first, configuration_key).values())
    names = {key: point.label for key, point in baselines(newest_first).items()}
    found = []
    for members, label in zip(groups, labels(groups), strict=True):
        acc = mean_std([m.metrics.get("acc", math.nan) for m in members])
        ratio = mean_std([m.metrics.get(axis, math.nan) for m in members])
        ids = [m.run_id for m in members]
        base = names[baseline_of(members[0])]
        found.append(Configuration(method_of(members[0]), label, ids, *acc, *ratio, False, base))
    marked = []
    for same in group_by(found, lambda c: c.baseline).values():
        front = pareto_front([(c.axis_mean, c.acc_mean) for c in same])
        marked += [dataclasses.replace(c, pareto=p) for c, p in zip(same, front, strict=True)]
    rank = {label: i for i, label in enumerate(names.values())}
    return sorted(
        marked,
        key=lambda c: (rank[c.baseline], math.isnan(c.axis_mean), c.axis_mean, c.acc_mean),
    )
