"""`compress-rerun RUN_ID`: run a logged experiment again from what MLflow holds of it.

The run's resolved config (its `config.yaml` artifact) is fetched and run through the
same pipeline into a new run folder, tagged `rerun_of`. On the CPU everything but the
timings comes out identical (training is seeded; a cached baseline is reused); the
figures of both runs are printed side by side.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from compress.cli.exits import ArgumentParser
from compress.errors import ConfigError

#: Figures that depend on the machine's load, not on the experiment.
TIMINGS = ("latency", "speedup/latency", "speedup/onnx", "speedup/latency_vs_compiled")


def open_store(tracking_uri: str) -> Any:
    """The client of an existing store: a SQLite file that is not there is refused rather
    than created empty, and a URI MLflow cannot open is one line."""
    from mlflow.exceptions import MlflowException

    from compress.tracking.store import open_client

    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
        if path.name and not path.is_file():
            raise ConfigError(f"no MLflow store at {path} (nothing logged there yet?)")
    try:
        return open_client(tracking_uri)
    except Exception as error:  # an unknown scheme, a file that is no database, ...
        message = error.message if isinstance(error, MlflowException) else str(error)
        first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
        raise ConfigError(f"cannot open the MLflow store {tracking_uri}: {first}") from None


def fetch_config(run_id: str, tracking_uri: str) -> dict[str, Any]:
    """The resolved config logged with run `run_id`; a ConfigError if there is none."""
    from mlflow.exceptions import MlflowException

    client = open_store(tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"no run '{run_id}' in {tracking_uri}") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError):
            raise ConfigError(f"run '{run_id}' has no config.yaml artifact") from None
        return yaml.safe_load(Path(path).read_text())


def is_timing(metric: str) -> bool:
    return any(part in metric for part in TIMINGS)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="compress-rerun", description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument(
        "--tracking-uri",
        default=f"sqlite:///{Path('outputs').resolve() / 'mlflow.db'}",
        help="where the run is logged (default: this folder's outputs/mlflow.db)",
    )
    args = parser.parse_args(argv)

    from compress.cli.exits import FAILED, OK, fail
    from compress.distributed import launched
    from compress.errors import CompressError
    from compress.run.pipeline import run

    try:
        if launched().parallel:
            raise ConfigError("compress-rerun runs on one process; start it without torchrun")
        cfg = fetch_config(args.run_id, args.tracking_uri)
    except CompressError as error:
        fail("compress-rerun", error)

    outputs = Path(cfg["paths"]["outputs"])
    stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    cfg["paths"]["run_dir"] = str(outputs / "reruns" / args.run_id / stamp)
    try:
        result = run(cfg, tags={"rerun_of": args.run_id})
    except CompressError as error:
        fail("compress-rerun", error)
    assert result is not None  # one process: rank 0
    before = open_store(args.tracking_uri).get_run(args.run_id).data.metrics
    same = [k for k, v in result.metrics.items() if not is_timing(k) and before.get(k) == v]
    differ = [k for k, v in result.metrics.items() if not is_timing(k) and before.get(k) != v]
    print(
        f"rerun of {args.run_id}: {len(same)} figures identical, {len(differ)} differ "
        f"(timings left out); run folder {result.run_dir}"
    )
    for key in differ:
        print(f"  {key}: {before.get(key)} -> {result.metrics[key]}")
    sys.exit(FAILED if differ else OK)
