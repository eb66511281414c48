"""The baseline cache under concurrency: jobs needing the same baseline train it once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from compress.data import DataBundle
from compress.models import build_model
from compress.run.baseline import Baseline, load_or_train
from compress.train.recipe import RuntimeConfig, TrainRecipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_concurrent_jobs_train_a_baseline_once_and_share_it(
    tmp_path: Path, data: DataBundle
) -> None:
    recipe = TrainRecipe(epochs=2, batch_size=64)
    results: list[Baseline] = []
    models = []
    start = threading.Barrier(3)

    def job() -> None:
        torch.manual_seed(0)
        model = build_model({"name": "mlp", "hidden": [32]}, data.input_shape, data.num_classes)
        start.wait()  # all three ask for the baseline at the same moment
        results.append(
            load_or_train(model, data, recipe, RuntimeConfig(), seed=0, key="k", cache_dir=tmp_path)
        )
        models.append(model)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.cached for r in results) == [False, True, True]  # trained once
    reference = models[0].state_dict()
    for model in models[1:]:
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, reference[name]), name
    assert [p.name for p in tmp_path.glob("*.pt")] == ["k.pt"]


def test_a_filesystem_without_locks_warns_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno
    import fcntl

    from compress.artifact.cache_entry import exclusive

    def no_locks(*args: object) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    entered = []
    with exclusive(tmp_path / "cache" / ".key.lock"):
        entered.append(True)
    assert entered == [True]
    assert "cannot be locked" in caplog.text

    def broken(*args: object) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", broken)
    with (
        pytest.raises(OSError, match="Bad file descriptor"),
        exclusive(tmp_path / "cache" / ".key.lock"),
    ):
        pass
