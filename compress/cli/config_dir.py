"""Where the shipped configs live: `conf/` beside the package in a checkout."""

from __future__ import annotations

from pathlib import Path

#: conf/ sits at the project root in a checkout (the project is installed editable).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
