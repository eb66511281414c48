"""Where the shipped configs live, in a checkout and in an installed wheel alike.

A checkout keeps them at the top of the repository (`conf/`, with `conf/experiment`
linking to `experiments/`); the wheel ships the same files inside the package as
`compress/conf` (see pyproject.toml). Users add their own with Hydra's `--config-dir`
or `hydra.searchpath`, which search before these.

Importing this module also registers `${started:...}`, the resolver the configs' run and
sweep folders are named with.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE = Path(__file__).resolve().parents[1]
#: The configs inside an installed wheel.
PACKAGED = _PACKAGE / "conf"
#: The configs of a checkout (the project installed editable, or run from its tree).
CHECKOUT = _PACKAGE.parent / "conf"

#: The primary config folder of every entry point: an absolute path, as Hydra's
#: `@hydra.main(config_path=...)` and `initialize_config_dir` both take it.
CONFIG_DIR = str(PACKAGED if PACKAGED.is_dir() else CHECKOUT)


#: When the job started (ISO 8601), set by the entry points for the length of one call:
#: rank 0's time for every process of a data-parallel job, so that they share one folder.
STARTED_ENV = "COMPRESS_STARTED"


def started(pattern: str) -> str:
    """The `${started:%Y-%m-%d}` of run and sweep folders: Hydra's `${now:...}`, but the
    job's start as the entry point fixed it (now, where no entry point did)."""
    stamp = os.environ.get(STARTED_ENV)
    return (datetime.fromisoformat(stamp) if stamp else datetime.now()).strftime(pattern)


# Cached like `now`: Hydra hands the cache to each job of a sweep, so they agree on it too.
OmegaConf.register_new_resolver("started", started, use_cache=True, replace=True)
