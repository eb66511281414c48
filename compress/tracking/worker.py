"""The MLflow client in a process of its own, driven by JSON lines over stdin/stdout.

Importing mlflow and opening its store takes ~5 s; started before the job imports
torch, the worker does that on another core while the job loads data and trains.
If the job ends without closing a run it opened (it crashed or was killed), the
worker sees stdin close and marks that run KILLED instead of leaving it RUNNING.

    python -m compress.tracking.worker <tracking uri>
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _experiment(client: Any, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created meanwhile by a concurrent job
        return client.get_experiment_by_name(name).experiment_id


def _log_batch(
    client: Any,
    run_id: str,
    metrics: list[list[Any]] = (),  # type: ignore[assignment]
    params: list[list[str]] = (),  # type: ignore[assignment]
    tags: list[list[str]] = (),  # type: ignore[assignment]
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in metrics],
        params=[Param(k, v) for k, v in params],
        tags=[RunTag(k, v) for k, v in tags],
    )


#: Waits before retrying a write that SQLite refused because another job held the lock.
RETRY_SECONDS = (0.1, 0.2, 0.5, 1, 2, 4, 8)


def _retrying(op: Any, args: dict[str, Any]) -> Any:
    """`op(**args)`, retried while SQLite says "database is locked" (parallel jobs)."""
    for wait in RETRY_SECONDS:
        try:
            return op(**args)
        except Exception as error:
            if "database is locked" not in str(error):
                raise
            time.sleep(wait)
    return op(**args)


def serve(uri: str) -> None:
    # Bookkeeping yields the CPU to the job it serves (2-core machines feel the difference).
    os.nice(10)
    # Replies own stdout; anything MLflow prints (its "View run at" links for a tracking
    # server) goes to stderr instead of being read as a reply.
    replies, sys.stdout = sys.stdout, sys.stderr
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:"):
        client.search_experiments(max_results=1)  # create or migrate the tables now
    open_runs: set[str] = set()

    def create_run(experiment_id: str, run_name: str | None, tags: dict[str, str]) -> str:
        run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        open_runs.add(run_id)
        return run_id

    def set_terminated(run_id: str, status: str) -> None:
        client.set_terminated(run_id, status=status)
        open_runs.discard(run_id)

    def finished_run(experiment_id: str, tags: dict[str, str]) -> dict[str, Any] | None:
        """The newest FINISHED run holding all of `tags`, with its metrics (or None)."""
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = client.search_runs(
            [experiment_id],
            filter_string=f"{where} and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            return None
        return {"run_id": found[0].info.run_id, "metrics": found[0].data.metrics}

    ops = {
        "experiment": lambda **a: _experiment(client, **a),
        "finished_run": finished_run,
        "create_run": create_run,
        "log_batch": lambda **a: _log_batch(client, **a),
        "log_artifact": lambda run_id, path, folder: client.log_artifact(run_id, path, folder),
        "set_terminated": set_terminated,
    }
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"ok": True, "result": _retrying(ops[request["op"]], request["args"])}
        except Exception as error:
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    for run_id in open_runs:
        client.set_terminated(run_id, status="KILLED")


if __name__ == "__main__":
    serve(sys.argv[1])
