"""`compress`: the command line. Hydra composes the config; the pipeline does the work."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from compress.cli.config_dir import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    plain = OmegaConf.to_container(cfg, resolve=True)

    from compress.errors import AlreadyFinished, CompressError
    from compress.reporting.console import print_summary
    from compress.run.pipeline import record_failure, run

    hydra_cfg = HydraConfig.get()
    tags = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if "/" not in k}
    tags["overrides"] = " ".join(hydra_cfg.overrides.task)[:5000]
    try:
        result = run(plain, tags=tags)
    except AlreadyFinished as done:
        print(f"compress: skipped: {done}")
        return done.metrics.get("acc", float("nan"))
    except CompressError as error:
        print(f"compress: error: {error}", file=sys.stderr)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(1)
        # One job of a sweep: it fails alone (FAILED in tracking), the others go on.
        record_failure(plain, error, {**tags, "sweep.job": str(hydra_cfg.job.num)})
        return float("nan")
    print_summary(result)
    return result.metrics["acc"]
