"""The trained baseline, cached by a hash of everything that determines its weights.

A later run with the same model, data, training recipe, seed and numerics reuses the
file instead of training again. Files are cache entries (`compress.artifact.cache_entry`):
written atomically with a record of their size and hash, verified before they are loaded
(with `weights_only=True`); a file that fails either is retrained, never a crash.

A file from before records existed is reused only if its zip checksums pass and it
loads whole (retraining can cost hours); it is then recorded, with a warning.

In a data-parallel job rank 0 alone looks up and writes the cache (holding its lock):
the processes train together if it has no entry, and the others then read the entry rank
0 wrote, so every process starts compressing from the same verified file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.artifact.cache_entry import discard, exclusive, read_entry, record, write_entry
from compress.data import DataBundle
from compress.distributed import World, current
from compress.errors import JobFailedError
from compress.train.callbacks import EpochStats
from compress.train.loop import fit
from compress.train.recipe import RuntimeConfig, TrainRecipe

log = logging.getLogger(__name__)

FORMAT = "compress.baseline/1"


def baseline_key(
    model_config: Mapping[str, Any],
    data: DataBundle,
    recipe: TrainRecipe,
    seed: int,
    runtime: RuntimeConfig,
    device: torch.device,
    weights: str | None = None,
    world: World | None = None,
) -> str:
    """Hex digest of what determines the baseline's weights (data by its fingerprint, the
    weights it starts from by `weights`, a hash of their file, and how many processes
    trained it data-parallel)."""
    identity = {
        "format": FORMAT,
        "model": dict(model_config),
        "data": data.fingerprint,
        "train": recipe.key(),
        "seed": seed,
        "device": device.type,
        "amp": runtime.amp and device.type == "cuda",
    }
    if weights is not None:  # absent otherwise: the keys of baselines cached before stay
        identity["weights"] = weights
    if world is not None and world.parallel:  # likewise: one process's keys stay
        identity["world_size"] = world.size
        identity["sync_bn"] = runtime.sync_bn
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@dataclass(frozen=True)
class Baseline:
    cached: bool
    path: Path
    history: list[EpochStats]
    train_seconds: float


def load_or_train(
    model: nn.Module,
    data: DataBundle,
    recipe: TrainRecipe,
    runtime: RuntimeConfig,
    *,
    seed: int,
    key: str,
    cache_dir: Path,
) -> Baseline:
    """Fill `model` with the baseline weights: from the cache, or by training and caching.

    Jobs that need the same baseline at the same time (a parallel sweep) take turns on
    a lock file: the first trains and caches it, the others wait and then load it.
    """
    path = cache_dir / f"{key}.pt"
    world = current()
    with exclusive(cache_dir / f".{key}.lock") if world.main else nullcontext():
        baseline = _load(path, model) if world.main else None
        if baseline is not None:
            log.info("baseline: reusing %s", path)
        if not world.broadcast(baseline is not None):
            baseline = _train(model, data, recipe, runtime, seed=seed, key=key, path=path)
        if not world.parallel:
            return baseline
        world.barrier()  # rank 0's entry is there
        if not world.main:
            baseline = _load(path, model, discard_untrusted=False)
        world.barrier()  # and read by the others: rank 0 lets go of the lock
    if baseline is None:
        raise JobFailedError(
            f"rank {world.rank} cannot read the baseline {path} that rank 0 cached; "
            "paths.outputs must be a folder every node of the job sees"
        )
    return baseline


def _train(
    model: nn.Module,
    data: DataBundle,
    recipe: TrainRecipe,
    runtime: RuntimeConfig,
    *,
    seed: int,
    key: str,
    path: Path,
) -> Baseline:
    started = time.perf_counter()
    history = fit(model, data, recipe, runtime, seed=seed, label="baseline")
    seconds = time.perf_counter() - started
    if not current().main:
        return Baseline(cached=False, path=path, history=history, train_seconds=seconds)
    payload = {
        "format": FORMAT,
        "key": key,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": [dataclasses.asdict(h) for h in history],
        "train_seconds": seconds,
    }
    write_entry(path, lambda tmp: torch.save(payload, tmp))
    log.info("baseline: trained in %.1f s, cached at %s", seconds, path)
    return Baseline(cached=False, path=path, history=history, train_seconds=seconds)


def _load(path: Path, model: nn.Module, discard_untrusted: bool = True) -> Baseline | None:
    if not path.exists():
        return None
    # load_state_dict may copy some tensors before it fails: keep the fresh init to restore.
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        entry = read_entry(path, unrecorded=True)
        if entry is None:
            return None
        payload = torch.load(io.BytesIO(entry.data), map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}")
        if payload.get("key") != path.stem:
            raise ValueError(f"it holds the baseline of key {payload.get('key')!r}")
        model.load_state_dict(payload["state_dict"])
        history = [EpochStats(**h) for h in payload["history"]]
        train_seconds = float(payload["train_seconds"])
    except Exception as error:  # any file not verified or not loading is retrained
        log.warning("baseline cache %s is not used (%s); retraining", path, error)
        if discard_untrusted:
            discard(path)
        model.load_state_dict(initial)
        return None
    if not entry.recorded:
        record(path, entry.data)
        log.warning(
            "baseline cache %s had no record of its size and hash (an earlier version wrote "
            "it); its zip checksums pass and it loads whole, so it is reused and recorded now",
            path,
        )
    return Baseline(cached=True, path=path, history=history, train_seconds=train_seconds)
