"""Cache entries are verified before they are trusted: a truncated, altered or unrecorded
baseline, baseline artifact or teacher is rebuilt with a warning, never measured."""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from compress.artifact.cache_entry import (
    Entry,
    Untrusted,
    read_entry,
    record_path,
    write_entry,
)
from compress.data import DataBundle
from compress.models import build_model
from compress.run.baseline import load_or_train
from compress.run.pipeline import Result, run
from compress.train.recipe import RuntimeConfig, TrainRecipe
from tests.support import QUICK, compose_config, mlflow_runs

pytestmark = pytest.mark.usefixtures("one_thread")


def truncate(path: Path) -> None:
    os.truncate(path, min(500, path.stat().st_size // 2))  # the issue's `truncate -s 500`


def flip(path: Path) -> None:
    """One byte in the middle changed, the size kept."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def unrecord(path: Path) -> None:
    """As an earlier version left it: no record beside it."""
    record_path(path).unlink()


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated": truncate,
    "flipped": flip,
    "unrecorded": unrecord,
}


# --- the entry itself ----------------------------------------------------------------------


def saved(path: Path) -> int:
    return write_entry(path, lambda tmp: torch.save({"x": torch.arange(300.0)}, tmp))


def test_an_entry_reads_back_only_as_written(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "e.pt"
    assert read_entry(path) is None  # none yet: no warning, nothing to discard
    size = saved(path)
    assert read_entry(path) == Entry(path.read_bytes()) and size == path.stat().st_size
    assert sorted(p.name for p in path.parent.iterdir()) == ["e.pt", "e.pt.record.json"]
    for corrupt, reason in [
        (truncate, "bytes where its record says"),
        (flip, "SHA-256 differs"),
        (unrecord, "no record beside it"),
    ]:
        saved(path)
        corrupt(path)
        with pytest.raises(Untrusted, match=reason):
            read_entry(path)
    saved(path)
    record_path(path).write_text("{not json")
    with pytest.raises(Untrusted, match=r"record e\.pt\.record\.json is unreadable"):
        read_entry(path)


def test_an_unrecorded_entry_passes_only_with_intact_zip_checksums(tmp_path: Path) -> None:
    path = tmp_path / "e.pt"
    saved(path)
    unrecord(path)
    assert read_entry(path, unrecorded=True) == Entry(path.read_bytes(), recorded=False)
    flip(path)  # in the tensor's bytes: torch.load alone would not notice
    with pytest.raises(Untrusted, match="fails its CRC-32"):
        read_entry(path, unrecorded=True)
    truncate(path)
    with pytest.raises(Untrusted, match="not an intact zip"):
        read_entry(path, unrecorded=True)


def test_a_failed_write_leaves_the_entry_before_it(tmp_path: Path) -> None:
    path = tmp_path / "e.pt"
    saved(path)
    before = read_entry(path)

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_entry(path, broken)
    assert read_entry(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt", "e.pt.record.json"]


def test_an_old_baseline_is_reused_only_when_it_checks_out(
    tmp_path: Path, data: DataBundle, caplog: pytest.LogCaptureFixture
) -> None:
    """A baseline an earlier version cached (no record) is recorded if its zip checksums
    pass and it loads; altered, it is retrained."""
    recipe = TrainRecipe(epochs=1, batch_size=64)

    def baseline() -> bool:
        torch.manual_seed(0)
        model = build_model({"name": "mlp", "hidden": [16]}, data.input_shape, data.num_classes)
        kwargs = {"seed": 0, "key": "k", "cache_dir": tmp_path}
        return load_or_train(model, data, recipe, RuntimeConfig(), **kwargs).cached

    path = tmp_path / "k.pt"
    assert not baseline()
    unrecord(path)
    assert baseline()
    assert "had no record" in caplog.text and str(path) in caplog.text
    assert read_entry(path) is not None  # recorded now
    caplog.clear()
    unrecord(path)
    flip(path)
    assert not baseline()
    assert f"baseline cache {path} is not used" in caplog.text and "CRC-32" in caplog.text
    assert read_entry(path) is not None


# --- every cache of the pipeline -------------------------------------------------------------

TEACHER = ["distill=kd", "distill.teacher={name:mlp,hidden:[32]}"]
OVERRIDES = [*QUICK, "dataset=fake", *TEACHER]
#: Figures that do not depend on timing: a rebuilt entry must give them exactly.
EXACT = (
    "acc",
    "baseline/acc",
    "bytes",
    "baseline/bytes",
    "ratio/size",
    "nonzeros",
    "teacher/acc",
    "teacher/bytes",
)


def entries(outputs: Path) -> dict[str, Path]:
    """The four cache entries of a run that distills from a separate teacher."""
    (mlrun,) = mlflow_runs(outputs)
    key = mlrun.data.tags["baseline.key"]
    (teacher,) = {p.stem for p in (outputs / "cache" / "baselines").glob("*.pt")} - {key}
    files = {}
    for name, entry_key in (("baseline", key), ("teacher", teacher)):
        files[name] = outputs / "cache" / "baselines" / f"{entry_key}.pt"
        files[f"{name} artifact"] = outputs / "cache" / "baseline_artifacts" / f"{entry_key}.pt"
    return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    outputs = tmp_path_factory.mktemp("reference")
    return outputs, run(compose_config(outputs, *OVERRIDES, run_dir=outputs / "run"))


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("kind", ["baseline", "baseline artifact", "teacher", "teacher artifact"])
def test_an_untrusted_entry_is_rebuilt_with_a_warning(
    reference: tuple[Path, Result],
    tmp_path: Path,
    kind: str,
    corruption: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first_outputs, first = reference
    outputs = tmp_path / "outputs"
    shutil.copytree(first_outputs, outputs, ignore=shutil.ignore_patterns("run"))
    files = entries(outputs)
    before = {name: path.read_bytes() for name, path in files.items()}
    path = files[kind]
    CORRUPTIONS[corruption](path)
    caplog.set_level(logging.INFO)

    second = run(compose_config(outputs, *OVERRIDES, run_dir=tmp_path / "run"))

    (mlrun,) = [r for r in mlflow_runs(outputs) if r.info.run_id == second.run_id]
    assert mlrun.info.status == "FINISHED"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in m for m in warnings), warnings
    assert {k: second.metrics[k] for k in EXACT} == {k: first.metrics[k] for k in EXACT}
    messages = caplog.text
    if kind.endswith("artifact"):  # saved again, as it was
        assert path.read_bytes() == before[kind]
    elif corruption == "unrecorded":  # intact weights from an earlier version: recorded
        assert "had no record" in messages and f"reusing {path}" in messages
        assert path.read_bytes() == before[kind]
    else:  # retrained: the same weights (only the training time differs)
        assert f"cached at {path}" in messages
        assert torch.equal(weights(path), weights_of(before[kind]))
    for entry in files.values():
        assert read_entry(entry) is not None  # every entry verified again afterwards


def weights(path: Path) -> torch.Tensor:
    return weights_of(path.read_bytes())


def weights_of(data: bytes) -> torch.Tensor:
    state = torch.load(io.BytesIO(data), weights_only=True)["state_dict"]
    return torch.cat([t.flatten().float() for t in state.values()])
