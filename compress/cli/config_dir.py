"""Where the shipped configs live, in a checkout and in an installed wheel alike.

A checkout keeps them at the top of the repository (`conf/`, with `conf/experiment`
linking to `experiments/`); the wheel ships the same files inside the package as
`compress/conf` (see pyproject.toml). Users add their own with Hydra's `--config-dir`
or `hydra.searchpath`, which search before these.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
#: The configs inside an installed wheel.
PACKAGED = _PACKAGE / "conf"
#: The configs of a checkout (the project installed editable, or run from its tree).
CHECKOUT = _PACKAGE.parent / "conf"

#: The primary config folder of every entry point: an absolute path, as Hydra's
#: `@hydra.main(config_path=...)` and `initialize_config_dir` both take it.
CONFIG_DIR = str(PACKAGED if PACKAGED.is_dir() else CHECKOUT)
