"""`dataset=custom dataset._target_=...`: a factory defined here returns torch Datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from compress.cli.main import main
from compress.data import load_dataset
from compress.errors import ConfigError
from tests.support import compose_config, mlflow_runs, run_cli

HERE = __name__


class Bars(Dataset):
    """Class k: a bright k-th row in a 4x4 uint8 image, as (tensor, int) items."""

    classes: ClassVar[list[str]] = ["top", "upper", "lower", "bottom"]

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = index % 4
        image = torch.zeros(1, 4, 4, dtype=torch.uint8)
        image[0, label] = 200 + index % 50
        return image, label


def bars(train: int = 40, test: int = 12, val: int = 0) -> Any:
    if val:
        return {"train": Bars(train), "test": Bars(test), "val": Bars(val)}
    return Bars(train), Bars(test)


def floats() -> tuple[Dataset, Dataset]:
    x = torch.rand(20, 3, 2, 2)
    y = torch.arange(20) % 2
    return TensorDataset(x, y), TensorDataset(x[:6], y[:6])  # float in [0, 1], tensor labels


def test_a_factory_defined_here_loads_by_target() -> None:
    bundle = load_dataset(
        {"name": "custom", "_target_": f"{HERE}.bars", "args": {"test": 8}, "normalize": "none"}
    )
    assert bundle.name == "custom" and bundle.input_shape == (1, 4, 4)
    assert bundle.class_names == ("top", "upper", "lower", "bottom") and bundle.num_classes == 4
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (36, 4, 8)
    assert bundle.test.y.tolist() == [0, 1, 2, 3] * 2
    assert bundle.test.x[1, 0, 1].tolist() == pytest.approx([201 / 255] * 4)
    assert bundle.test.x[1, 0, 0].sum() == 0


def test_a_val_split_floats_and_given_class_names() -> None:
    with_val = load_dataset({"name": "custom", "_target_": f"{HERE}.bars", "args": {"val": 8}})
    assert (len(with_val.train), len(with_val.val), len(with_val.test)) == (40, 8, 12)
    cfg = {"name": "custom", "_target_": f"{HERE}.floats", "normalize": "none"}
    bundle = load_dataset({**cfg, "class_names": ["no", "yes"]})
    assert bundle.class_names == ("no", "yes") and bundle.input_shape == (3, 2, 2)
    assert bundle.train.x.max() <= 1 and bundle.normalization.mean == (0.0, 0.0, 0.0)
    assert load_dataset(cfg).class_names == ("0", "1")


def test_a_dataset_config_by_target_still_works() -> None:
    from tests.test_data import Stripes

    bundle = load_dataset({"_target_": f"{Stripes.__module__}.Stripes"})
    assert bundle.name == "Stripes"


def refuses() -> None:
    raise ValueError("no files under /data/x")


def three() -> tuple[Dataset, Dataset, Dataset]:
    return Bars(4), Bars(4), Bars(4)


def a_list() -> tuple[list, Dataset]:
    return [(torch.zeros(1, 2, 2), 0)], Bars(4)


def pairs_missing() -> tuple[Dataset, Dataset]:
    return TensorDataset(torch.zeros(4, 1, 2, 2)), Bars(4)


def too_few_labels() -> tuple[Dataset, Dataset]:
    x = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    return TensorDataset(x, torch.tensor([0, 1, 2, 9])), Bars(4)


def mismatched() -> tuple[Dataset, Dataset]:
    return TensorDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])), Bars(4)


BAD = {
    "no target": ({"_target_": None}, "dataset 'custom' needs dataset._target_="),
    "not importable": ({"_target_": "nowhere.factory"}, "cannot import 'nowhere.factory'"),
    "raises": ({"_target_": f"{HERE}.refuses"}, "refuses() raised ValueError: no files under"),
    "three": ({"_target_": f"{HERE}.three"}, "must return (train, test) or a mapping"),
    "not a dataset": ({"_target_": f"{HERE}.a_list"}, "returned a list of 1 as train, not a"),
    "not a pair": ({"_target_": f"{HERE}.pairs_missing"}, "train item 0 must be a pair"),
    "bad args": ({"_target_": f"{HERE}.bars", "args": {"nope": 1}}, "unexpected keyword"),
    "labels": (
        {"_target_": f"{HERE}.too_few_labels", "class_names": ["a", "b", "c"]},
        "label 9 is out of range for 3 classes",
    ),
    "mismatched": (
        {"_target_": f"{HERE}.mismatched"},
        "test images are torch.uint8 (1, 4, 4) but train images are torch.float32 (1, 2, 2)",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_factory_is_one_line(case: str) -> None:
    options, message = BAD[case]
    with pytest.raises(ConfigError) as caught:
        load_dataset({"name": "custom", **options})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_custom_composes_and_fails_in_one_line_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config(tmp_path, "dataset=custom", f"dataset._target_={HERE}.bars")
    assert load_dataset(cfg["dataset"]).num_classes == 4
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    code, _, err = run_cli(
        main,
        [f"paths.outputs={tmp_path}", "dataset=custom", f"dataset._target_={HERE}.refuses"],
        capsys,
    )
    assert code == 2 and err.splitlines() == [
        f"compress: error: dataset 'custom': {HERE}.refuses() raised ValueError: "
        "no files under /data/x"
    ]
    assert not any(r.info.status == "FINISHED" for r in mlflow_runs(tmp_path))
