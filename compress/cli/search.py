"""`compress-search`: the command line of `compress.search.study.search`. Hydra composes
conf/search.yaml; bad input is one line on stderr and exit code 2 (`compress.cli.exits`)."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from compress.cli.config_dir import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="search")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]

    from compress.cli.exits import fail
    from compress.errors import CompressError
    from compress.search.study import search

    try:
        search(plain, " ".join(HydraConfig.get().overrides.task)[:5000])
    except CompressError as error:
        fail("compress-search", error)
