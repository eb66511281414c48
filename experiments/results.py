"""The results table of experiments/README.md: each study's claim beside its runs, aggregated.

Every `experiments/<study>.yaml` carries a `study:` block that the pipeline never reads (it
only logs it with the run's params): the paper, its claim and number, how our setting
differs, a `report` template, `targets`, and optionally `arms` and `points`, sweep keys
that split the jobs into compared arms (one-shot vs AGP) and settings (sparsities). Jobs
of one (point, arm) are averaged: mean ± std over whatever else varies (the seeds).

A study's jobs are read back from MLflow (the sweep's parent run, found by its folder's
`sweep.dir` tag) through `compress.reporting`, and grouped with its groupby: the same
records and the same statistics as `compress-report`. A template names metrics in braces
with a format spec, `{ratio/params:.2f}`; with arms, `{agp.acc:.2%}`. Per job, `delta_pt`
(accuracy change in points), `error`, `baseline/error` and `kept` (nonzero share of the
parameters) are derived from the run's metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compress.reporting.aggregate import grouped, override_key, split_overrides
from compress.reporting.pareto import mean_std
from compress.reporting.records import Job
from compress.reporting.report import ReportError, find_sweep, read_sweep

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
COLUMNS = (
    "Study",
    "Paper",
    "Claim",
    "Our setting (how it differs)",
    "Paper's number",
    "Our number",
    "Reproduced (our target)",
    "Data",
    "Command",
    "Date (wall time)",
)
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
#: Comparisons between arms, on the means: name: [op, a, b].
DERIVE: dict[str, Callable[[float, float], float]] = {
    "reduction": lambda a, b: 1 - b / a,  # b's share fewer than a (errors)
    "change": lambda a, b: b / a - 1,  # b against a, relative: -0.2 is 20% fewer
    "diff_pt": lambda a, b: 100 * (a - b),  # accuracy a minus b, in points
    "ratio": lambda a, b: a / b,
}
PLACEHOLDER = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")


class StudyError(ValueError):
    """A study block or a sweep that cannot be tabulated; the message says which."""


@dataclass(frozen=True)
class Split:
    """Sweep keys whose values split the jobs; `labels` names each joined value."""

    keys: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, section: Mapping[str, Any] | None) -> Split | None:
        if not section:
            return None
        keys = section["by"]
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        labels = {str(k): str(v) for k, v in (section.get("labels") or {}).items()}
        return cls(keys, labels)

    def label(self, settings: Mapping[str, str]) -> str:
        missing = [k for k in self.keys if k not in settings]
        if missing:
            raise StudyError(f"job has no override or param for {', '.join(missing)}")
        value = " ".join(settings[k] for k in self.keys)
        # Hydra writes swept booleans as False / True: labels match regardless of case.
        return self.labels.get(value, self.labels.get(value.lower(), value))


@dataclass(frozen=True)
class Study:
    """One recipe's `study:` block, checked."""

    name: str
    paper: str
    year: int
    claim: str
    paper_number: str
    setting: str
    differs: str
    report: str
    targets: tuple[tuple[Any, str, Any], ...] = ()
    arms: Split | None = None
    points: Split | None = None
    derived: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    smoke: tuple[str, ...] = ()
    in_table: bool = True
    sweep: bool = False

    @classmethod
    def load(cls, name: str, folder: Path = HERE) -> Study:
        path = folder / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(study_names(folder))
            raise StudyError(f"no study '{name}' in {folder} (studies: {known})")
        recipe = yaml.safe_load(path.read_text()) or {}
        block = recipe.get("study")
        if not isinstance(block, dict):
            raise StudyError(f"{path.name}: no 'study:' block")
        params = ((recipe.get("hydra") or {}).get("sweeper") or {}).get("params")
        try:
            study = cls(
                name=name,
                paper=str(block["paper"]),
                year=int(block["year"]),
                claim=str(block["claim"]),
                paper_number=str(block["paper_number"]),
                setting=str(block["setting"]),
                differs=str(block.get("differs", "")),
                report=str(block["report"]),
                targets=tuple(tuple(t) for t in block.get("targets") or ()),
                arms=Split.parse(block.get("arms")),
                points=Split.parse(block.get("points")),
                derived={k: tuple(v) for k, v in (block.get("derived") or {}).items()},
                smoke=tuple(str(s) for s in block.get("smoke") or ()),
                in_table=bool(block.get("in_table", True)),
                sweep=bool(params),
            )
        except KeyError as missing:
            raise StudyError(f"{path.name}: study block lacks {missing}") from None
        for _, op, _ in study.targets:
            if op not in OPS:
                raise StudyError(f"{path.name}: target operator '{op}' is not one of {list(OPS)}")
        for name_, (op, *_) in study.derived.items():
            if op not in DERIVE:
                raise StudyError(f"{path.name}: derived '{name_}' uses unknown '{op}'")
        return study

    @property
    def command(self) -> str:
        return f"uv run compress {'-m ' if self.sweep else ''}+experiment={self.name}"


def study_names(folder: Path = HERE) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def table_order(folder: Path = HERE) -> list[str]:
    """Studies in the order of the table: by the paper's year, then name."""
    studies = [Study.load(n, folder) for n in study_names(folder)]
    return [s.name for s in sorted(studies, key=lambda s: (s.year, s.name))]


def settings(job: Job) -> dict[str, str]:
    """What a job was set to: its params (the resolved config, flat) and, over them, the
    overrides it was launched with, as Hydra wrote them (`False` for a swept boolean)."""
    pairs = {}
    for token in split_overrides(job.tags.get("overrides", "")):
        key, sep, value = token.partition("=")
        if sep:
            pairs[override_key(key)] = value
    return {**job.params, **pairs}


def find_parent(sweep_dir: Path, uri: str) -> str:
    """The parent run of the sweep that wrote into `sweep_dir`."""
    try:
        found = find_sweep(uri, sweep_dir)
    except ReportError as error:
        raise StudyError(f"{sweep_dir}: {error}") from None
    if found is None:
        raise StudyError(f"{sweep_dir}: no sweep run in {uri} (was tracking off?)")
    return found


def collect(uri: str, parent_run_id: str) -> list[Job]:
    """The sweep's FINISHED jobs, with the derived figures, in job order."""
    try:
        jobs = read_sweep(uri, parent_run_id).jobs
    except ReportError as error:
        raise StudyError(str(error)) from None
    finished = [j for j in jobs if j.status == "FINISHED"]
    derived = [dataclasses.replace(j, metrics=with_derived(j.metrics)) for j in finished]
    return sorted(derived, key=_job_number)


def _job_number(job: Job) -> tuple[int, int]:
    """A sweep's job number is its folder's name (`hydra.sweep.subdir`); else start time."""
    # A tag since paths became internals (runs logged before: a param).
    name = Path(job.tags.get("paths.run_dir") or job.params.get("paths.run_dir", "")).name
    return (int(name), job.start_time) if name.isdigit() else (1 << 30, job.start_time)


def with_derived(metrics: Mapping[str, float]) -> dict[str, float]:
    """The run's metrics plus the per-job figures the templates use."""
    m = dict(metrics)
    if "acc" in m:
        m["error"] = 1 - m["acc"]
        if "baseline/acc" in m:
            m["delta_pt"] = 100 * (m["acc"] - m["baseline/acc"])
    for prefix in ("baseline", "teacher"):
        if f"{prefix}/acc" in m:
            m[f"{prefix}/error"] = 1 - m[f"{prefix}/acc"]
    if m.get("ratio/params"):
        m["kept"] = 1 / m["ratio/params"]
    return m


@dataclass(frozen=True)
class Stat:
    """A mean over jobs, printed with its standard deviation when the jobs differ."""

    mean: float
    std: float | None = None

    def __format__(self, spec: str) -> str:
        text = format(self.mean, spec)
        if not self.std:  # one job, or all alike (a ratio fixed by the recipe)
            return text
        return f"{text} ± {format(self.std, spec.replace('+', ''))}"


def _stat(values: list[float]) -> Stat:
    return Stat(*mean_std(values))


@dataclass(frozen=True)
class Point:
    """One setting of a study (the whole study when it has no points): its figures."""

    label: str
    values: dict[str, Any]
    failures: list[str]


def aggregate(study: Study, jobs: list[Job]) -> list[Point]:
    """Group jobs by point and arm, average the rest, derive comparisons, check targets."""
    if not jobs:
        raise StudyError(f"{study.name}: no finished jobs to tabulate")

    def where(job: Job) -> tuple[str, str]:
        setting = settings(job)
        point = study.points.label(setting) if study.points else ""
        return point, study.arms.label(setting) if study.arms else ""

    points: dict[str, dict[str, Any]] = {}
    for (label, arm), members in grouped(jobs, where).items():
        values = points.setdefault(label, {"point": label})
        prefix = f"{arm}." if arm else ""
        shared = set.intersection(*(set(j.metrics) for j in members))
        for metric in shared:
            numbers = [float(j.metrics[metric]) for j in members]
            if all(math.isfinite(v) for v in numbers):
                values[prefix + metric] = _stat(numbers)
        values[f"{prefix}n"] = len(members)
    for values in points.values():
        for name, (op, a, b) in study.derived.items():
            if a in values and b in values:
                values[name] = Stat(DERIVE[op](_mean(values[a]), _mean(values[b])))
    return [Point(label, values, _failures(study, values)) for label, values in points.items()]


def _mean(value: Any) -> float:
    return value.mean if isinstance(value, Stat) else float(value)


def _operand(value: Any, values: Mapping[str, Any]) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    found = values.get(str(value))
    return None if found is None else _mean(found)


def _failures(study: Study, values: Mapping[str, Any]) -> list[str]:
    """The targets this point misses, each as 'left op right (measured)'."""
    missed = []
    for left, op, right in study.targets:
        a, b = _operand(left, values), _operand(right, values)
        if a is None or b is None:
            missed.append(f"{left} {op} {right} (not measured)")
        elif not OPS[op](a, b):
            shown = f"{a:.4g}" if isinstance(right, int | float) else f"{a:.4g} vs {b:.4g}"
            missed.append(f"{left} {op} {right} ({shown})")
    return missed


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill `{name:spec}` placeholders; a name that was not measured shows as 'n/a'."""

    def fill(match: re.Match[str]) -> str:
        name, spec = match.group(1).strip(), match.group(2) or ""
        if name not in values:
            return "n/a"
        return format(values[name], spec)

    return PLACEHOLDER.sub(fill, template)


def verdict(study: Study, points: list[Point]) -> str:
    """'yes' / 'no' / 'partly', then the targets (and what missed them)."""
    targets = ", ".join(f"{a} {op} {b}" for a, op, b in study.targets) or "none"
    if not study.targets:
        return "figures only"
    missed = [p for p in points if p.failures]
    if not missed:
        word = "yes"
    elif len(missed) == len(points):
        word = "no"
    else:
        word = f"partly ({len(points) - len(missed)} of {len(points)} settings)"
    details = "; ".join(
        f"{p.label + ': ' if p.label else ''}missed {', '.join(p.failures)}" for p in missed
    )
    return f"**{word}** ({targets})" + (f"; {details}" if details else "")


def data_split(params: Mapping[str, str]) -> str:
    """How the table names a run's data: MNIST-10k (8k/2k), digits, or the dataset's name."""
    name = params.get("dataset.name", "?")
    root = params.get("dataset.root", "")
    if name == "mnist" and Path(root).name == "mnist10k":
        return "MNIST-10k (8k/2k)"
    return {"digits": "digits", "fake": "fake (generated)"}.get(name, name)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def make_row(study: Study, jobs: list[Job], date: str, seconds: float | None) -> str:
    """The study's Markdown table row from its finished jobs."""
    points = aggregate(study, jobs)
    ours = "; ".join(render(study.report, p.values) for p in points)
    splits = sorted({data_split(j.params) for j in jobs})
    when = date if seconds is None else f"{date} ({seconds / 60:.0f} min)"
    setting = study.setting + (f" (differs: {study.differs})" if study.differs else "")
    cells = [
        f"`{study.name}`",
        study.paper,
        study.claim,
        setting,
        study.paper_number,
        ours,
        verdict(study, points),
        ", ".join(splits),
        f"`{study.command}`",
        when,
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


ROW_NAME = re.compile(r"^\| `([^`]+)` \|")


def update_table(text: str, rows: Mapping[str, str], order: list[str]) -> str:
    """`text` (the README) with the rows of `rows` replaced or added between the markers;
    rows of other studies are kept. Rows follow `order`, unknown ones last."""
    if BEGIN not in text or END not in text:
        raise StudyError(f"README has no table markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    existing = {}
    for line in body.splitlines():
        if match := ROW_NAME.match(line):
            existing[match.group(1)] = line
    merged = {**existing, **rows}
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(merged, key=lambda n: (rank.get(n, len(rank)), n))
    table = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *(merged[n] for n in names),
    ]
    return head + BEGIN + "\n" + "\n".join(table) + "\n" + END + tail
