"""`compress`: the command line. Hydra composes the config; the pipeline does the work."""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from compress.cli.config_dir import CONFIG_DIR
from compress.cli.hydra_entry import hydra_entry, job_started, overrides, resolved


def main() -> Any:
    """The console script: Hydra's app, its refusals on one line (exit code 2)."""
    return hydra_entry("compress", _job)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _job(cfg: DictConfig) -> float:
    job_started()
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from compress.cli.exits import fail
    from compress.cli.summary import print_summary
    from compress.distributed import launched
    from compress.errors import AlreadyFinished, CompressError
    from compress.run.pipeline import record_failure, run

    world = launched()
    speaks = world.local_rank == 0  # one line per node, not one per process
    if not world.main:  # rank 0 tells how the job goes; the others only what goes wrong
        logging.getLogger().setLevel(logging.WARNING)
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    tags = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if "/" not in k}
    tags["overrides"] = overrides()
    plain: dict[str, Any] = {}
    try:
        plain = resolved(cfg)
        result = run(plain, tags=tags)
    except AlreadyFinished as done:
        if world.main:
            print(f"compress: skipped: {done}")
        return done.metrics.get("acc", float("nan"))
    except CompressError as error:
        if not in_sweep:
            fail("compress", error, quiet=not speaks)
        # One job of a sweep: it fails alone (FAILED in tracking), the others go on.
        if speaks:
            print(f"compress: error: {error}", file=sys.stderr)
        if world.main:
            record_failure(plain, error, {**tags, "sweep.job": str(hydra_cfg.job.num)})
        return float("nan")
    if result is None:  # another process than rank 0 of a data-parallel job: it reports
        return float("nan")
    print_summary(result)
    return result.metrics["acc"]
