"""The streamed path (`dataset.in_memory=false`, or data past `memory_limit_gb`): the same
batches, fingerprint and accuracy as in memory, through a real DataLoader with workers."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from compress.cli.main import main
from compress.data import DataBundle, Preprocessing, StreamedSplit, TensorSplit, load_dataset
from compress.data.augment import parse_augment
from compress.errors import ConfigError
from compress.models.mlp import MLPConfig
from compress.run.pipeline import run
from compress.train.loop import accuracy, fit
from compress.train.recipe import RuntimeConfig, TrainRecipe
from tests.support import QUICK, compose_config, mlflow_runs, run_cli
from tests.test_data_image_folder import write_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images"), {"train": 10, "test": 4})


def both(cfg: dict[str, object], **streamed: object) -> tuple[DataBundle, DataBundle]:
    memory = load_dataset({**cfg, "in_memory": True})
    stream = load_dataset({**cfg, "in_memory": False, "workers": 0, **streamed})
    assert isinstance(memory.train, TensorSplit) and isinstance(stream.train, StreamedSplit)
    return memory, stream


def assert_same_batches(a: DataBundle, b: DataBundle, **options: object) -> None:
    for key in ("train", "val", "test"):
        pairs = zip(
            getattr(a, key).loader(7, **options), getattr(b, key).loader(7, **options), strict=True
        )
        for x, y in pairs:
            assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y) and torch.equal(x.idx, y.idx)


@pytest.mark.parametrize("source", ["digits", "image_folder"])
def test_streamed_batches_equal_the_in_memory_ones(source: str, folder: Path) -> None:
    folder_cfg = {"name": "image_folder", "root": str(folder)}
    cfg = {"name": "digits"} if source == "digits" else folder_cfg
    memory, stream = both(cfg)
    assert memory.normalization == stream.normalization and memory.input_shape == stream.input_shape
    assert (len(memory.train), len(memory.val), len(memory.test)) == (
        len(stream.train), len(stream.val), len(stream.test),
    )  # fmt: skip
    assert_same_batches(memory, stream)  # in order
    assert_same_batches(memory, stream, seed=5)  # shuffled alike
    if source == "digits":  # tensors hash alike on both paths; a folder hashes its files
        assert memory.fingerprint == stream.fingerprint


def test_an_image_folder_streamed_with_two_workers_gives_the_same_accuracy(folder: Path) -> None:
    cfg = {"name": "image_folder", "root": str(folder), "image_size": 8}
    memory, stream = both(cfg, workers=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    recipe = TrainRecipe(epochs=8, batch_size=8, lr=0.05)
    runtime = RuntimeConfig(progress=False)
    trained = [fit(model, data, recipe, runtime, seed=1, label="t") for data in (stream,)]
    assert trained[0][-1].train_acc > 0.5
    assert accuracy(model, memory.test) == accuracy(model, stream.test) > 0.8
    assert accuracy(model, memory.val) == accuracy(model, stream.val)


def test_the_size_threshold_picks_the_path(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"name": "image_folder", "root": str(folder)}
    assert isinstance(load_dataset(cfg).train, TensorSplit)  # tiny: in memory
    with caplog.at_level(logging.INFO, logger="compress.data"):
        bundle = load_dataset({**cfg, "memory_limit_gb": 1e-6, "workers": 0})
    assert isinstance(bundle.train, StreamedSplit) and "streamed" in caplog.text


def test_streamed_augmentation_changes_training_batches_only(folder: Path) -> None:
    _, stream = both({"name": "image_folder", "root": str(folder)})
    shift = parse_augment({"name": "flip_crop"})
    plain = [b.x for b in stream.train.loader(8, seed=3)]
    first = [b.x for b in stream.train.loader(8, seed=3, augment=shift)]
    again = [b.x for b in stream.train.loader(8, seed=3, augment=shift)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # seeded
    assert not all(torch.equal(a, b) for a, b in zip(plain, first, strict=True))
    # a crop of the zero-padded raw image: padding is black (its normalised value)
    black = -torch.tensor(stream.normalization.mean) / torch.tensor(stream.normalization.std)
    edges = torch.cat([x[:, :, :, 0].flatten(2) for x in first], dim=0)
    assert any(torch.allclose(e, black[:, None].expand_as(e)) for e in edges)


def test_the_pipeline_runs_streamed_with_workers(folder: Path, tmp_path: Path) -> None:
    overrides = (*QUICK, "dataset=image_folder", f"dataset.root={folder}", "dataset.image_size=8")
    memory = run(compose_config(tmp_path / "m", *overrides, "dataset.in_memory=true"))
    stream = run(
        compose_config(
            tmp_path / "s", *overrides, "dataset.in_memory=false", "dataset.workers=2",
            "augment=shift", "method=prune", "distill=kd",
        )
    )  # fmt: skip
    assert memory.metrics["baseline/acc"] > 0.9 and stream.metrics["baseline/acc"] > 0.9
    (mlrun,) = mlflow_runs(tmp_path / "s")
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["dataset.in_memory"] == "false"
    assert mlrun.data.tags["data.streamed"] == "true"


class Squares(Dataset):
    """A user's Dataset: float images whose brightness says the class."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(n)
        self.labels = torch.arange(n) % 2
        self.images = (
            torch.rand(n, 1, 6, 6, generator=generator) * 0.5
            + 0.5 * self.labels[:, None, None, None]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def squares() -> tuple[Dataset, Dataset]:
    return Squares(40), Squares(10)


def test_a_custom_dataset_streams_with_the_in_memory_fingerprint() -> None:
    cfg = {"name": "custom", "factory": f"{__name__}.squares"}
    memory, stream = both(cfg)
    assert memory.fingerprint == stream.fingerprint and stream.num_classes == 2
    assert_same_batches(memory, stream, seed=2)


def test_preprocessing_resizes_and_normalises_alike_on_both_paths(folder: Path) -> None:
    weights = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), resize=(16,), crop=(14,))
    cfg = {"name": "image_folder", "root": str(folder), "channels": 1}
    memory = load_dataset({**cfg, "in_memory": True}, preprocessing=weights)
    stream = load_dataset({**cfg, "in_memory": False, "workers": 0}, preprocessing=weights)
    assert memory.input_shape == stream.input_shape == (3, 14, 14)  # grey repeated to RGB
    assert memory.normalization.mean == (0.5, 0.4, 0.3) and memory.normalization.mode == "explicit"
    assert_same_batches(memory, stream)
    plain = load_dataset({**cfg, "in_memory": True})
    assert plain.fingerprint != memory.fingerprint  # other inputs: never the same cache entry


def test_a_broken_image_is_named_before_streaming_starts(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"train": 2, "test": 1})
    broken = root / "test" / "eel" / "00.png"
    broken.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ConfigError, match=f"file {broken} could not be read") as caught:
        load_dataset({"name": "image_folder", "root": str(root), "in_memory": False})
    assert "\n" not in str(caught.value)


def test_a_file_that_breaks_mid_epoch_is_one_line_from_a_worker(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"train": 4, "test": 1})
    bundle = load_dataset(
        {"name": "image_folder", "root": str(root), "in_memory": False, "workers": 2}
    )
    broken = root / "train" / "dog" / "01.png"
    broken.write_bytes(b"not a png any more")
    with pytest.raises(ConfigError) as caught:
        list(bundle.train.loader(4))
    assert f"file {broken} could not be read" in str(caught.value)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.in_memory=maybe", "dataset.in_memory must be auto, true or false"),
        ("dataset.workers=-1", "dataset.workers must be an integer >= 0"),
        ("dataset.memory_limit_gb=0", "dataset.memory_limit_gb must be > 0"),
    ],
)
def test_bad_streaming_options_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    code, _, err = run_cli(main, [f"paths.outputs={tmp_path}", override], capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_the_teacher_cache_is_filled_from_streamed_batches(folder: Path) -> None:
    from compress.distill.teacher import Teacher

    memory, stream = both({"name": "image_folder", "root": str(folder)}, workers=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 10 * 12, 3))
    caches = []
    for data in (memory, stream):
        teacher = Teacher(model, batch_size=8)
        teacher.cache_train(data.train)
        assert teacher.cache is not None
        caches.append(teacher.cache[0])
    torch.testing.assert_close(caches[0], caches[1], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(caches[0], model(memory.train.x))


@dataclasses.dataclass(frozen=True)
class PretrainedLikeMLP(MLPConfig):
    """An MLP whose (pretend) weights expect 3 x 12 x 12 inputs with their own statistics."""

    def preprocessing(self) -> Preprocessing | None:
        return Preprocessing(mean=(0.4, 0.4, 0.4), std=(0.3, 0.3, 0.3), resize=(12,), crop=(12,))


def test_the_pipeline_feeds_data_as_the_model_weights_expect(tmp_path: Path) -> None:
    target = f"+model._target_={__name__}.PretrainedLikeMLP"
    cfg = compose_config(tmp_path, *QUICK, "model=mlp", target)
    run(cfg)
    (mlrun,) = mlflow_runs(tmp_path)
    tags = mlrun.data.tags
    assert mlrun.info.status == "FINISHED" and tags["data.input_shape"] == "[3, 12, 12]"
    assert tags["data.normalize"] == "explicit" and tags["data.normalize.mean"] == "[0.4, 0.4, 0.4]"
