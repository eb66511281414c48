"""What the entry points do about the process they run in: the job's start time, shared
by every process of a data-parallel job, and SIGTERM, which ends a job as an error.

torchrun stops the surviving processes of a job with SIGTERM when one of them dies, and
SLURM does at the end of a job's time: `terminated_as_error` turns it into `Terminated`,
so the job's MLflow run ends KILLED, its lock files are let go and nothing half-written
stays, instead of a run left RUNNING until a later command reaps it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType

from compress.cli.config_dir import STARTED_ENV
from compress.errors import Terminated


@contextmanager
def job_processes() -> Iterator[None]:
    """For one call of an entry point: this process's world connected (when started as one
    of several), the job's start time fixed for `${started:...}` (rank 0's, on every
    process), and SIGTERM raising `Terminated`."""
    started = datetime.now().isoformat()
    world = None
    if _maybe_several():  # else torch is not imported: `--help` and Hydra's refusals stay quick
        from compress.distributed import join, launched

        world = join(launched())
        started = world.broadcast(started)
    try:
        with environment(STARTED_ENV, started), terminated_as_error():
            yield
    finally:
        if world is not None:
            from compress.distributed import leave

            leave()


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """The environment variable `name` set to `value` for the block, as it was after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _maybe_several() -> bool:
    """Whether the environment may say this process is one of several (torchrun's
    variables, or a submitit job's, which `compress.distributed.launched` reads)."""
    env = os.environ
    return env.get("WORLD_SIZE", "1") != "1" or env.get("SUBMITIT_EXECUTOR") in ("slurm", "local")


@contextmanager
def terminated_as_error() -> Iterator[None]:
    """Inside the block, SIGTERM raises `Terminated` (once: a second one while the job
    cleans up is ignored). Only the main thread can handle signals: elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
