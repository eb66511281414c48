"""Sweep targets, measured: what a sweep costs, and a parallel sweep on one SQLite store.

    uv run python benchmarks/sweeps.py --repeats 2         # both (~18 min on 2 busy cores)
    uv run python benchmarks/sweeps.py --only cost --repeats 1 --data digits

1. cost: an N-point sweep (N >= 6; `method.amount=0.5,...,0.95`, LeNet-300-100 on
   MNIST-10k, 5 training epochs, 3 fine-tune epochs) as one `compress -m` process on
   fresh outputs, against the same N points run "alone" as a user would, one process
   each on fresh outputs: the first trains the baseline, the other N-1 reuse it.
   Target: sweep <= 1.15x alone, i.e. the sweep trains its baseline once (also counted:
   runs tagged `baseline.cached=false`, and files in the baseline cache: exactly 1).
   Without the cache every point would train its own baseline: N cold runs, estimated
   as N x the median cold run (or measured, `--cold`). Most of what the sweep saves is
   N-1 process start-ups, not training: the row "had each job retrained" estimates the
   ratio a sweep that retrained would reach, i.e. how much the wall-time target can
   tell; the baseline counts tell it exactly. Arms alternate order each repeat;
   medians are compared. Default MLflow tracking (SQLite under the outputs), so the cost
   includes what users pay; ONNX export and timing are off (`--onnx` puts them back),
   as the same fixed work in every job only dilutes the ratio.
2. parallel: 12 jobs (6 amounts x 2 seeds, digits, small epochs) with the joblib
   launcher, 4 at a time, on one SQLite store, counted back with `MlflowClient`: one
   parent run, exactly 12 children, all FINISHED, 12 distinct `config.hash` tags, the
   12 (amount, seed) points each once, no run outside the sweep, and each seed's
   baseline trained once. Target: PASS on every repeat (fresh outputs each time).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from run import COMPRESS, MNIST10K, timed

AMOUNTS = ["0.5", "0.6", "0.7", "0.8", "0.9", "0.95"]
COST = [
    "model=lenet300",
    "schedule.train.epochs=5",
    "schedule.finetune.epochs=3",
    "runtime.progress=false",
]
PARALLEL = [
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=4",
    f"method.amount={','.join(AMOUNTS)}",
    "seed=0,1",
    "schedule.train.epochs=2",
    "schedule.finetune.epochs=1",
    "runtime.progress=false",
    "measure.probes=[compiled]",
]


@dataclass
class Store:
    """Every run of one outputs folder's SQLite store, read back with MlflowClient."""

    runs: list  # mlflow.entities.Run

    @classmethod
    def read(cls, outputs: Path) -> Store:
        from mlflow import MlflowClient
        from mlflow.entities import ViewType

        client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        runs, token = [], None
        while True:
            page = client.search_runs(ids, run_view_type=ViewType.ALL, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return cls(runs)

    def parents(self) -> list:
        return [r for r in self.runs if "mlflow.parentRunId" not in r.data.tags]

    def children(self, parent_id: str) -> list:
        return [r for r in self.runs if r.data.tags.get("mlflow.parentRunId") == parent_id]

    def trained(self) -> int:
        """Runs that trained their baseline rather than loading it from the cache."""
        return sum(r.data.tags.get("baseline.cached") == "false" for r in self.runs)


def cpu_timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds of `command` and the CPU seconds (user + sys) of the processes it waited
    for, as context only: on a loaded machine torch's idle threads spin, so CPU time moves
    with the load too. The detached MLflow worker is not waited for: left out on both arms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = timed(command)[0]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def cached_baselines(outputs: Path) -> int:
    return len(list((outputs / "cache" / "baselines").glob("*.pt")))


def trained_count(outputs: Path) -> str:
    """'runs / files': runs that trained a baseline, and baselines in the cache."""
    return f"{Store.read(outputs).trained()} / {cached_baselines(outputs)}"


def sweep_seconds(outputs: Path, common: list[str], amounts: list[str]) -> tuple[float, float]:
    """One `compress -m` over `amounts` (wall, CPU); refuses a sweep that lost a job."""
    points = f"method.amount={','.join(amounts)}"
    seconds = cpu_timed([COMPRESS, "-m", f"paths.outputs={outputs}", *common, points])
    store = Store.read(outputs)
    finished = [r for r in store.runs if r.info.status == "FINISHED"]
    if len(store.parents()) != 1 or len(finished) != 1 + len(amounts):
        raise SystemExit(f"the sweep in {outputs} did not finish its {len(amounts)} jobs")
    return seconds


def one_by_one(outputs: Path, common: list[str], amounts: list[str]) -> list[tuple[float, float]]:
    """Each point as its own `compress` process, as a user runs them, on one outputs folder."""
    return [
        cpu_timed([COMPRESS, f"paths.outputs={outputs}", *common, f"method.amount={a}"])
        for a in amounts
    ]


def cost(args: argparse.Namespace, work: Path, data: list[str]) -> list[tuple[str, str, str]]:
    probes = "[compiled,onnx]" if args.onnx else "[compiled]"
    common = [*COST, *data, f"measure.probes={probes}"]
    n = len(args.amounts)
    wall: dict[str, list[float]] = {k: [] for k in ("sweep", "alone", "cold", "cached", "no_cache")}
    cpu: dict[str, list[float]] = {"sweep": [], "alone": []}
    trained: dict[str, list[str]] = {"sweep": [], "alone": []}
    for i in range(args.repeats):
        for arm in ("sweep", "alone") if i % 2 == 0 else ("alone", "sweep"):
            outputs = work / f"{arm}{i}"
            if arm == "sweep":
                runs = [sweep_seconds(outputs, common, args.amounts)]
            else:
                runs = one_by_one(outputs, common, args.amounts)
                wall["cold"].append(runs[0][0])
                wall["cached"] += [w for w, _ in runs[1:]]
            wall[arm].append(sum(w for w, _ in runs))
            cpu[arm].append(sum(c for _, c in runs))
            trained[arm].append(trained_count(outputs))
            print(f"  cost repeat {i}: {arm} done", file=sys.stderr, flush=True)
        if args.cold:  # every point on its own fresh outputs: N baselines trained
            runs = [one_by_one(work / f"cold{i}-{a}", common, [a])[0] for a in args.amounts]
            wall["no_cache"].append(sum(w for w, _ in runs))
    sweep, alone = wall["sweep"], wall["alone"]
    if wall["no_cache"]:
        estimate = statistics.median(wall["no_cache"])
        label, value = f"without the cache: {n} cold runs, measured (s)", _pair(wall["no_cache"])
    else:
        estimate = n * statistics.median(wall["cold"])
        label, value = f"without the cache: {n} x cold run, ESTIMATE (s)", f"{estimate:.1f}"
    # What the ratio would read had every job of the sweep trained its own baseline:
    # how much the wall-time target alone can tell (the counts above tell it exactly).
    training = statistics.median(wall["cold"]) - statistics.median(wall["cached"])
    retrained = statistics.median(sweep) + (n - 1) * training
    return [
        (f"{n}-point sweep, one process, median / best (s)", _pair(sweep), ""),
        (f"alone: 1 cold + {n - 1} cached runs, median / best (s)", _pair(alone), ""),
        ("  of which the cold run (trains the baseline) (s)", _pair(wall["cold"]), ""),
        ("  a cached run (reuses it) (s)", _pair(wall["cached"]), ""),
        ("sweep / alone, medians", f"{_ratio(sweep, alone):.2f}", "<= 1.15"),
        ("sweep / alone, best runs", f"{min(sweep) / min(alone):.2f}", "<= 1.15"),
        ("CPU s sweep / alone, medians", _cpu(cpu["sweep"], cpu["alone"]), "(context)"),
        ("baselines trained, sweep (runs / cache files)", ", ".join(trained["sweep"]), "1 / 1"),
        ("baselines trained, alone (runs / cache files)", ", ".join(trained["alone"]), "1 / 1"),
        (label, value, ""),
        ("sweep / no-cache counterfactual", f"{statistics.median(sweep) / estimate:.2f}", ""),
        (
            "sweep / alone had each job retrained, ESTIMATE",
            f"{retrained / statistics.median(alone):.2f}",
            "",
        ),
    ]


def parallel(args: argparse.Namespace, work: Path) -> list[tuple[str, str, str]]:
    rows, verdicts = [], []
    for i in range(args.repeats):
        outputs = work / f"parallel{i}"
        seconds = timed([COMPRESS, "-m", f"paths.outputs={outputs}", *PARALLEL])[0]
        checks = _count_sweep(Store.read(outputs), cached_baselines(outputs))
        ok = all(passed for _, _, passed in checks)
        verdicts.append(ok)
        rows.append((f"parallel repeat {i}: 12 jobs, 4 at a time, wall (s)", f"{seconds:.1f}", ""))
        rows += [
            (f"  {name}", value, "PASS" if passed else "FAIL") for name, value, passed in checks
        ]
        print(f"  parallel repeat {i}: {'PASS' if ok else 'FAIL'}", file=sys.stderr, flush=True)
    rows.append(("parallel sweep, repeats passing", f"{sum(verdicts)} of {len(verdicts)}", "all"))
    return rows


def _count_sweep(store: Store, cache_files: int) -> list[tuple[str, str, bool]]:
    """(what, counted, as required) for the 12-job sweep of `PARALLEL` in `store`."""
    parents = store.parents()
    sweeps = [r for r in parents if "sweep.dir" in r.data.tags]  # what the callback opened
    children = store.children(sweeps[0].info.run_id) if sweeps else []
    hashes = {r.data.tags.get("config.hash") for r in children} - {None}
    points = Counter(
        (r.data.params.get("method.amount"), r.data.params.get("seed")) for r in children
    )
    wanted = {(a, s) for a in AMOUNTS for s in ("0", "1")}
    statuses = Counter(r.info.status for r in children)
    parent_status = ", ".join(r.info.status for r in parents)
    return [
        (
            "parent runs (status)",
            f"{len(parents)} ({parent_status})",
            len(parents) == len(sweeps) == 1,
        ),
        ("child runs", str(len(children)), len(children) == 12),
        ("children FINISHED", str(statuses["FINISHED"]), statuses["FINISHED"] == 12),
        ("distinct config.hash", str(len(hashes)), len(hashes) == 12),
        (
            "(amount, seed) points, each once",
            str(len(points)),
            set(points) == wanted and set(points.values()) == {1},
        ),
        (
            "runs outside the sweep",
            str(len(store.runs) - 1 - len(children)),
            len(store.runs) == 1 + len(children) and len(sweeps) == 1,
        ),
        (
            "baselines trained (runs / cache files)",
            f"{store.trained()} / {cache_files}",
            store.trained() == 2 and cache_files == 2,
        ),
    ]


def _pair(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):.1f} / {min(seconds):.1f}"


def _cpu(ours: list[float], theirs: list[float]) -> str:
    medians = f"{statistics.median(ours):.0f} / {statistics.median(theirs):.0f}"
    return f"{medians} = {_ratio(ours, theirs):.2f}"


def _ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(ours) / statistics.median(theirs)


def dataset(choice: str) -> list[str]:
    """Overrides for `--data`: MNIST-10k from a folder, or the embedded digits."""
    if choice != "digits":
        root = Path(choice).resolve()
        if (root / "MNIST" / "raw").is_dir():
            return ["dataset=mnist", f"dataset.root={root}"]
        print(f"MNIST files not found under {root}/MNIST/raw: using digits", file=sys.stderr)
    return ["dataset=digits"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("cost", "parallel"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(MNIST10K), help="folder holding MNIST/raw, or digits")
    parser.add_argument("--amounts", nargs="+", default=AMOUNTS, help="the cost sweep's points")
    parser.add_argument("--cold", action="store_true", help="measure N cold runs, not estimate")
    parser.add_argument("--onnx", action="store_true", help="cost: keep the ONNX export on")
    args = parser.parse_args()
    if len(args.amounts) < 2 or args.repeats < 1:
        parser.error("the cost sweep needs at least 2 amounts, and repeats at least 1")
    data = dataset(args.data)
    rows = []
    with tempfile.TemporaryDirectory(prefix="compress-sweeps-") as tmp:
        if args.only in (None, "cost"):
            rows += cost(args, Path(tmp), data)
        if args.only in (None, "parallel"):
            rows += parallel(args, Path(tmp))
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'measured':>24}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>24}  {target}")
    print(f"(cost: {data[0]}, {' '.join(COST[1:3])}, onnx {args.onnx}; medians of {args.repeats})")


if __name__ == "__main__":
    main()
