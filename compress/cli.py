"""`compress`: the command line. Hydra composes the config; the pipeline does the work."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

#: conf/ sits beside the package at the project root (the project is installed editable).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from compress.tracking import warm_up

    plain = OmegaConf.to_container(cfg, resolve=True)
    warm_up(plain.get("tracking"))  # MLflow loads in its own process while torch loads here

    from compress.errors import CompressError
    from compress.pipeline import run
    from compress.summary import print_summary

    choices = {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if "/" not in k}
    try:
        result = run(plain, tags=choices)
    except CompressError as error:
        print(f"compress: error: {error}", file=sys.stderr)
        sys.exit(1)
    print_summary(result)
    return result.metrics["acc"]
