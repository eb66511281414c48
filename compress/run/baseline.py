"""The trained baseline, cached by a hash of everything that determines its weights.

A later run with the same model, data, training recipe, seed and numerics reuses the
file instead of training again. Files are written atomically and loaded with
`weights_only=True`; a file that does not load is retrained, never a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from compress.artifact.store import atomic_torch_save
from compress.data import DataBundle
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
) -> str:
    """Hex digest of what determines the baseline's weights (data by its fingerprint, the
    weights it starts from by `weights`, a hash of their file)."""
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
    with _exclusive(cache_dir / f".{key}.lock"):
        cached = _load(path, model)
        if cached is not None:
            log.info("baseline: reusing %s", path)
            return cached
        return _train(model, data, recipe, runtime, seed=seed, key=key, path=path)


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock` (released by the OS if the process dies).

    A filesystem without locks (Lustre mounted without `flock`) gets a warning, not a
    crash: jobs may then train the same baseline twice, and the atomic save keeps the
    cache whole either way.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            if not _try_lock(handle):
                log.info("baseline: another job is training it; waiting for %s", lock)
                fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            log.warning("baseline: %s cannot be locked (%s); not waiting", lock, error)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: What flock raises where the filesystem does not support it.
_NO_LOCKS = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


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
    atomic_torch_save(
        {
            "format": FORMAT,
            "key": key,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "history": [dataclasses.asdict(h) for h in history],
            "train_seconds": seconds,
        },
        path,
    )
    log.info("baseline: trained in %.1f s, cached at %s", seconds, path)
    return Baseline(cached=False, path=path, history=history, train_seconds=seconds)


def _load(path: Path, model: nn.Module) -> Baseline | None:
    if not path.exists():
        return None
    # load_state_dict may copy some tensors before it fails: keep the fresh init to restore.
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}")
        model.load_state_dict(payload["state_dict"])
        history = [EpochStats(**h) for h in payload["history"]]
    except Exception as error:  # any unreadable file is retrained, not fatal
        log.warning("baseline cache %s is unusable (%s); retraining", path, error)
        path.unlink(missing_ok=True)
        model.load_state_dict(initial)
        return None
    return Baseline(cached=True, path=path, history=history, train_seconds=payload["train_seconds"])
