"""Run names that say what a run is, not `rare-deer-443`: a job by its method and the
overrides that set it apart (`prune amount=0.9`), a sweep's parent by what it sweeps
(`sweep method.amount=0.5,0.8,0.9`).

MLflow's runs table shows about 40 characters of a name, so names keep within `MAX_NAME`
(whole overrides, `…` for those left out) and keys are cut to the shortest dotted tail that
still tells them apart (`amount` for `method.amount`; `train.lr` and `finetune.lr` for the
two schedules' `lr`). Names are made from the overrides alone, so the same command gives
the same names; the full overrides stay in the run's `overrides` tag.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from compress.tracking.params import is_internal

#: What MLflow's runs table shows of a name, about.
MAX_NAME = 40
#: The keys a sweep varies, space-separated: from its parent's process to the jobs, which
#: see only their own values.
SWEPT_ENV = "COMPRESS_SWEPT"
ELLIPSIS = "…"


#: Where an override starts: `key=`, `+key=`, `~key` (a piece that does not start one is
#: part of the previous override's value, which held a space). Reports split the same way.
_OVERRIDE = re.compile(r"^(~|\+\+?)?[A-Za-z_][\w.@/\-\[\]]*(=|$)")


def split_overrides(text: str) -> list[str]:
    """The overrides of an `overrides` tag (space-joined), values with spaces kept whole."""
    tokens: list[str] = []
    for piece in text.split():
        if tokens and not _OVERRIDE.match(piece):
            tokens[-1] += f" {piece}"
        else:
            tokens.append(piece)
    return tokens


def swept_keys() -> list[str]:
    """The keys the current job's sweep varies (none outside a sweep)."""
    return os.environ.get(SWEPT_ENV, "").split()


def short_keys(keys: Sequence[str]) -> list[str]:
    """Each key cut to its shortest dotted tail that no other key of `keys` ends with."""

    def clashes(tail: str, key: str) -> bool:
        return any(k != key and (k == tail or k.endswith(f".{tail}")) for k in keys)

    short = []
    for key in keys:
        parts = key.split(".")
        tails = (".".join(parts[-n:]) for n in range(1, len(parts) + 1))
        short.append(next((t for t in tails if not clashes(t, key)), key))
    return short


def fit(words: Sequence[str], limit: int = MAX_NAME) -> str:
    """`words` joined by spaces, as many whole ones as fit in `limit` (then `…`)."""
    name = ""
    for i, word in enumerate(words):
        joined = f"{name} {word}" if name else word
        rest = i + 1 < len(words)
        if len(joined) + (2 if rest else 0) <= limit:
            name = joined
            continue
        if not name:  # even the first word is too long: cut it
            return word[: limit - 1] + ELLIPSIS
        return f"{name} {ELLIPSIS}"
    return name


def override_pairs(overrides: str) -> list[tuple[str, str]]:
    """(key, value) of each override that sets a value, internals (paths, ...) left out."""
    pairs = []
    for token in split_overrides(overrides):
        key, sep, value = token.partition("=")
        key = key.lstrip("~+")
        if sep and not is_internal(key):
            pairs.append((key, value))
    return pairs


def job_name(method: str, overrides: str, swept: Sequence[str] = ()) -> str:
    """`prune amount=0.9`: the method, then (in a sweep) the values of the swept keys, or
    (alone) the overrides given, the method's own first. `method=` itself is the first word."""
    pairs = [(k, v) for k, v in override_pairs(overrides) if k != "method"]
    if swept:
        pairs = [(k, v) for k, v in pairs if k in swept]
    else:
        pairs.sort(key=lambda pair: not pair[0].startswith("method."))
    keys = short_keys([k for k, _ in pairs])
    return fit([method, *(f"{k}={v}" for k, (_, v) in zip(keys, pairs, strict=True))])


def sweep_name(swept_overrides: Sequence[str], fallback: str) -> str:
    """`sweep method.amount=0.5,0.8,0.9`: the sweep's swept overrides as written, keys cut
    short where the full ones do not fit; `fallback` for a sweep that varies nothing."""
    pairs = override_pairs(" ".join(swept_overrides))
    if not pairs:
        return fallback
    full = ["sweep", *(f"{k}={v}" for k, v in pairs)]
    if len(" ".join(full)) <= MAX_NAME:
        return " ".join(full)
    keys = short_keys([k for k, _ in pairs])
    return fit(["sweep", *(f"{k}={v}" for k, (_, v) in zip(keys, pairs, strict=True))])


def run_name(tags: Mapping[str, str]) -> str:
    """A job's name from its tags: its method and overrides, or a search's trial number."""
    method = tags.get("method") or "job"
    if "search.trial" in tags:
        return fit([method, "trial", tags["search.trial"]])
    return job_name(method, tags.get("overrides", ""), swept_keys())
