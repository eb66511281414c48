"""`compress-search`: the command line of `compress.search.study.search`. Hydra composes
conf/search.yaml; bad input is one line on stderr and exit code 2 (`compress.cli.exits`)."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from compress.cli.config_dir import CONFIG_DIR
from compress.cli.hydra_entry import hydra_entry, job_started, overrides, resolved

#: Why a search is not started as several processes.
ONE_PROCESS = (
    "compress-search runs each trial on one process; start it without torchrun or SLURM tasks"
)


def main() -> Any:
    """The console script: Hydra's app, its refusals on one line (exit code 2)."""
    return hydra_entry("compress-search", _search)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="search")
def _search(cfg: DictConfig) -> None:
    job_started()
    from compress.cli.exits import fail
    from compress.distributed import launched
    from compress.errors import CompressError, ConfigError
    from compress.search.study import search

    try:
        if launched().parallel:
            raise ConfigError(ONE_PROCESS)
        search(resolved(cfg), overrides())
    except CompressError as error:
        fail("compress-search", error)
