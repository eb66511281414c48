"""A job's config as MLflow params: one flat name per leaf, values as MLflow accepts them."""

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
