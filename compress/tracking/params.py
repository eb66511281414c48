"""A job's config as MLflow params: one flat name per leaf, values as MLflow accepts them;
where it wrote and how it was tracked (`paths`, `tracking`, ...) go to tags instead."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

#: The characters MLflow accepts in a param name.
_PARAM_NAME = re.compile(r"^[/\w.\- :]*$")

#: MLflow's limit on one param value.
PARAM_LIMIT = 6000


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`; lists become JSON, None becomes "null".

    A mapping whose keys MLflow would refuse as names (module-path globs such as
    `layer1.*.conv1`) stays whole, one JSON param under its own name.
    """
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and all(_PARAM_NAME.match(str(k)) for k in value):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, Mapping):
            flat[name] = json.dumps(value, sort_keys=True)
        elif isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


#: Config roots and keys that say where a run wrote and how it was tracked, not what it
#: computed: their values differ between any two runs (the run folder), so as params they
#: would fill MLflow's compare view with differences that mean nothing. They are tags.
INTERNAL_ROOTS = ("paths", "tracking", "hydra")
INTERNAL_KEYS = ("runtime.progress",)


def is_internal(name: str) -> bool:
    """Whether a flat config name (or an override's key: `hydra/launcher`) is internal."""
    root = re.split(r"[./]", name.lstrip("~+"), maxsplit=1)[0]
    return root in INTERNAL_ROOTS or name in INTERNAL_KEYS


def split_internal(flat: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """`flat` (see `flatten`) as (params: what the run computed, tags: the internals)."""
    params = {k: v for k, v in flat.items() if not is_internal(k)}
    return params, {k: v for k, v in flat.items() if is_internal(k)}
