"""Run the studies of experiments/ and rewrite their rows of the table in experiments/README.md.

    uv run python experiments/reproduce.py                        # every study of the table
    uv run python experiments/reproduce.py han2015_lenet300 fitnets
    uv run python experiments/reproduce.py --smoke                # every recipe, tiny, no table
    uv run python experiments/reproduce.py --collect              # tabulate the latest runs
    uv run python experiments/reproduce.py fitnets -- dataset.root=DIR runtime.threads=1

Each study is one `compress -m +experiment=<study>` process (a sweep, or a sweep of one
job), writing under `<outputs>/experiments/<study>/<timestamp>/` and logging to MLflow
(the store under `<outputs>`, or the `tracking.uri` given after `--`); its jobs are read
back from the sweep's parent run (recorded in the folder's reproduce.json), aggregated
(mean ± std over seeds, as `compress-report` does) and the study's row is rewritten with
today's date; rows of studies not run are kept. `--smoke` runs each recipe on tiny data for 1-2
epochs (the overrides below plus the study's own `smoke` list) and only prints its row.
Jobs whose exact config already finished still run again (`tracking.resume=false`);
trained baselines are reused from the cache under `<outputs>/cache` (they are
deterministic on the CPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results import (
    HERE,
    Study,
    StudyError,
    collect,
    find_parent,
    make_row,
    study_names,
    table_order,
    update_table,
)

from compress.reporting.records import Job

REPO = HERE.parent
README = HERE / "README.md"
COMPRESS = str(Path(sys.executable).with_name("compress"))
#: Every run: a fresh result even where an identical config finished before.
ALWAYS = ["runtime.progress=false", "++tracking.resume=false"]
#: The tiny version: embedded digits, 1-2 epochs, quick measurements (MLflow kept: it
#: refuses some params, e.g. names with *).
SMOKE = [
    "dataset=digits",
    "schedule.train.epochs=1",
    "schedule.finetune.epochs=2",
    "measure.repeats=3",
    "measure.warmup=1",
    "measure.max_seconds=0.2",
    "measure.probes=[]",
    "runtime.threads=1",  # tiny models on a shared machine: one thread is fastest
]


def tracking_uri(outputs: Path, extra: list[str]) -> str:
    """Where the jobs log: the last `tracking.uri=` given after `--`, else conf/tracking/
    mlflow.yaml's store under `outputs`."""
    given = [o.split("=", 1)[1] for o in extra if override_key(o) == "tracking.uri"]
    return given[-1] if given else f"sqlite:///{outputs / 'mlflow.db'}"


def override_key(override: str) -> str:
    """What an override sets: `dataset` for `dataset=fake`, `a.b` for `++a.b=1`."""
    return override.split("=", 1)[0].lstrip("+~")


def merged(*lists: list[str]) -> list[str]:
    """Overrides in order, a later one replacing an earlier one for the same key."""
    by_key: dict[str, str] = {}
    for overrides in lists:
        for override in overrides:
            by_key.pop(override_key(override), None)
            by_key[override_key(override)] = override
    return list(by_key.values())


def command(
    study: Study, sweep_dir: Path, outputs: Path, smoke: bool, extra: list[str]
) -> list[str]:
    overrides = merged(
        ALWAYS,
        SMOKE if smoke else [],
        list(study.smoke) if smoke else [],
        [f"paths.outputs={outputs}", f"hydra.sweep.dir={sweep_dir}"],
        extra,
    )
    return [COMPRESS, "-m", f"+experiment={study.name}", *overrides]


def run_study(
    study: Study, outputs: Path, smoke: bool, extra: list[str], uri: str
) -> tuple[Path, list[Job]]:
    """Run one study as a subprocess; its sweep folder and finished jobs (read back from
    MLflow). Raises StudyError unless every job finished."""
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    sweep_dir = outputs / "experiments" / study.name / (f"smoke-{stamp}" if smoke else stamp)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    cmd = command(study, sweep_dir, outputs, smoke, extra)
    log_path = sweep_dir / "reproduce.log"
    print(f"{study.name}: running ({log_path})", flush=True)
    start = time.perf_counter()
    with log_path.open("w") as log_file:
        log_file.write(" ".join(cmd) + "\n")
        log_file.flush()
        done = subprocess.run(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    parent, finished, why = None, [], ""
    try:
        parent = find_parent(sweep_dir, uri)
        finished = collect(uri, parent)
    except StudyError as error:
        why = f"; {error}"
    record = {"command": cmd, "seconds": seconds, "returncode": done.returncode}
    record |= {"tracking_uri": uri, "parent_run_id": parent}
    (sweep_dir / "reproduce.json").write_text(json.dumps(record))
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    if done.returncode != 0 or not finished or len(finished) < len(jobs):
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        raise StudyError(
            f"{study.name}: exit code {done.returncode}, {len(finished)} of {len(jobs)} jobs "
            f"finished (log: {log_path}){why}\n{tail}"
        )
    print(f"{study.name}: {len(finished)} jobs in {seconds / 60:.1f} min", flush=True)
    return sweep_dir, finished


def _record(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / "reproduce.json"
    return json.loads(path.read_text()) if path.exists() else {}


def latest_run(study: Study, outputs: Path, uri: str) -> tuple[Path, list[Job]]:
    """The newest full (not smoke) run folder of `study` whose sweep has finished jobs in
    MLflow, and those jobs; a folder's own record names its parent run and store."""
    folders = [
        p
        for p in (outputs / "experiments" / study.name).glob("*")
        if p.is_dir() and not p.name.startswith("smoke-")
    ]
    for sweep_dir in sorted(folders, key=lambda p: p.name, reverse=True):
        record = _record(sweep_dir)
        where = record.get("tracking_uri") or uri
        try:
            jobs = collect(where, record.get("parent_run_id") or find_parent(sweep_dir, where))
        except StudyError:
            continue
        if jobs:
            return sweep_dir, jobs
    raise StudyError(f"{study.name}: no finished run under {outputs / 'experiments'} in {uri}")


def wall_seconds(sweep_dir: Path) -> float | None:
    return _record(sweep_dir).get("seconds")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", help="studies to run (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs; no table written")
    parser.add_argument("--collect", action="store_true", help="tabulate the latest runs only")
    parser.add_argument("--outputs", type=Path, default=REPO / "outputs", help="paths.outputs")
    parser.add_argument("--readme", type=Path, default=README, help="the file holding the table")
    return parser.parse_args(argv), extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    outputs = args.outputs.resolve()
    uri = tracking_uri(outputs, extra)
    try:
        studies = [Study.load(n) for n in args.studies or study_names()]
        order = table_order()  # once: recipes edited during a long run cannot break the writing
    except StudyError as error:
        print(f"reproduce: error: {error}", file=sys.stderr)
        return 1
    if not args.studies and not args.smoke:
        studies = [s for s in studies if s.in_table]
    today = dt.date.today().isoformat()
    rows, failed = {}, []
    start = time.perf_counter()
    for study in studies:
        try:
            if args.collect:
                sweep_dir, jobs = latest_run(study, outputs, uri)
            else:
                sweep_dir, jobs = run_study(study, outputs, args.smoke, extra, uri)
            row = make_row(study, jobs, today, wall_seconds(sweep_dir))
            if not args.smoke:  # row by row: a long regeneration keeps what it has measured
                readme = args.readme.resolve()
                written = update_table(readme.read_text(), {**rows, study.name: row}, order)
                readme.write_text(written)
        except StudyError as error:
            print(f"reproduce: error: {error}", file=sys.stderr)
            failed.append(study.name)
            continue
        rows[study.name] = row
        print(row, flush=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"{len(rows)} of {len(studies)} studies in {minutes:.1f} min", flush=True)
    if rows and not args.smoke:
        print(f"table rows rewritten in {args.readme}: {', '.join(rows)}")
    if failed:
        print(f"reproduce: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
