"""Bad input reaches the user as one line and exit code 2, before any data is loaded or
tracking opens: misspelled keys, values Python cannot use, Hydra's own refusals, a device
or folder this machine lacks, and the same for every command (compress.cli.exits)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir

from compress.cli import main as compress_cli
from compress.cli import rerun as rerun_cli
from compress.cli import search as search_cli
from compress.cli.config_dir import CONFIG_DIR
from compress.errors import ConfigError
from compress.run.plan import SECTIONS, Plan
from tests.support import assert_refused_before_training, compose_config, run_cli

COMPRESS = str(Path(sys.executable).with_name("compress"))


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading data fails the test: these refusals come before it."""

    def loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data was loaded")

    monkeypatch.setattr("compress.run.pipeline.load_dataset", loading)


def one_line(err: str, command: str = "compress") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{command}: error: "), err
    return lines[0]


# -- values the pipeline refuses (compress.run.plan)

REFUSED = {
    "misspelled top-level key": (
        ["+sead=3"],
        "unknown top-level key(s) sead (did you mean seed?); valid: analysis, augment,",
    ),
    "a seed that is no integer": (["seed=abc"], "seed must be an integer, got 'abc'"),
    "infinite learning rate": (
        ["schedule.train.lr=inf"],
        "schedule.train.lr must be a finite number, got inf",
    ),
    "NaN in a method": (["method.amount=nan"], "method.amount must be a finite number, got nan"),
    "infinite list item": (
        ["measure.batch_sizes=[1,inf]"],
        "measure.batch_sizes[1] must be a finite number, got inf",
    ),
    "infinite value in a free-form section": (
        ["+model.width=-inf"],
        "model.width must be a finite number, got -inf",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
@pytest.mark.usefixtures("no_data")
def test_bad_values_are_refused_before_data_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    overrides, message = REFUSED[case]
    assert_refused_before_training(tmp_path, monkeypatch, overrides, message)


@pytest.mark.usefixtures("no_data")
def test_a_gpu_this_machine_lacks_is_refused_before_data_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    message = "runtime.device=cuda: no CUDA GPU is visible here (use auto or cpu)"
    assert_refused_before_training(tmp_path, monkeypatch, ["runtime.device=cuda"], message)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    message = "runtime.device=cuda:1: only 1 CUDA GPU(s) here (cuda:0..cuda:0)"
    assert_refused_before_training(tmp_path, monkeypatch, ["runtime.device=cuda:1"], message)


def test_the_valid_top_level_keys_are_what_the_configs_compose(tmp_path: Path) -> None:
    assert set(compose_config(tmp_path)) | {"study"} == set(SECTIONS)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        search = compose("search", overrides=[f"paths.outputs={tmp_path}"])
    assert set(search) - set(SECTIONS) == {"search"}  # compress-search reads it itself
    with pytest.raises(ConfigError, match="unknown top-level key"):
        Plan.from_config(compose_config(tmp_path, "+sead=3"), also=("search",))


def test_search_refuses_an_unknown_key_before_loading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("compress.data.load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    argv = [f"paths.outputs={tmp_path}", "tracking=none", "+serach.trials=3"]
    code, _, err = run_cli(search_cli.main, argv, capsys)
    assert code == 2
    assert "unknown top-level key(s) serach (did you mean search?)" in one_line(
        err, "compress-search"
    )


# -- Hydra's refusals, in our words (compress.cli.hydra_entry)

HYDRA = {
    "unknown method": (
        ["method=prunee"],
        "Could not find 'method/prunee' (did you mean 'prune'?); valid options in 'method': "
        "deep_compression, none, prune,",
    ),
    "unknown model": (["model=lenet"], "valid options in 'model': custom, lenet300, lenet5,"),
    "misspelled key": (
        ["method.amout=0.5"],
        "Could not override 'method.amout'; no key 'amout' in 'method' (did you mean 'amount'?) "
        "(valid: name, amount,",
    ),
    "unparsable override": (["a=b=c"], "cannot parse override 'a=b=c': mismatched input '='"),
    "interpolation to nothing": (["seed=${nope}"], "seed: Interpolation key 'nope' not found"),
}


@pytest.mark.parametrize("case", HYDRA, ids=list(HYDRA))
def test_hydra_refusals_are_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    overrides, message = HYDRA[case]
    code, out, err = run_cli(compress_cli.main, [f"paths.outputs={tmp_path}", *overrides], capsys)
    assert code == 2
    assert message in one_line(err)
    assert "baseline" not in out
    assert os.environ["HYDRA_FULL_ERROR"] == "0"  # the user's setting, as it was
    if case == "misspelled key":
        assert err.rstrip().endswith("to append to your config use +method.amout=0.5")


def test_a_run_folder_hydra_cannot_create_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("in the way")
    outputs = tmp_path / "file" / "outputs"
    code, _, err = run_cli(compress_cli.main, [f"paths.outputs={outputs}"], capsys)
    assert code == 2
    line = one_line(err)
    assert f"cannot create {outputs}/runs/" in line and "Not a directory" in line


def test_help_and_cfg_are_hydras(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(compress_cli.main, ["--help"], capsys)
    assert code == 0 and "== Configuration groups ==" in out and "method: " in out
    code, out, _ = run_cli(compress_cli.main, ["--cfg", "job", "method.amount=0.3"], capsys)
    assert code == 0 and "amount: 0.3" in out and "\nhydra:" not in out


def test_the_console_script_refuses_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """The real script: Hydra's refusal and ours exit 2 in one line; neither leaves an
    MLflow store, nor a process of its group behind."""
    for overrides, message in (
        (["method=prunee"], "compress: error: Could not find 'method/prunee'"),
        (["+sead=3"], "compress: error: unknown top-level key(s) sead"),
    ):
        job = subprocess.Popen(
            [COMPRESS, f"paths.outputs={tmp_path}", *overrides],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        )
        _, err = job.communicate(timeout=300)
        assert job.returncode == 2, err
        assert err.splitlines()[0].startswith(message) and len(err.splitlines()) == 1, err
        with pytest.raises(ProcessLookupError):
            os.killpg(job.pid, 0)  # no helper of the job outlives it
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "cache").exists()


def test_a_refused_job_opens_no_tracking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(threading.enumerate())
    code, _, err = run_cli(compress_cli.main, [f"paths.outputs={tmp_path}", "+sead=3"], capsys)
    assert code == 2 and "sead" in one_line(err)
    assert not (tmp_path / "mlflow.db").exists()
    assert set(threading.enumerate()) <= before  # no writer thread, nothing left running


# -- compress-rerun follows the same policy


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run1", "--tracking-uri", "garbage://x"], "cannot open the MLflow store garbage://x: "),
        (["run1", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required: run_id"),
    ],
)
def test_rerun_bad_arguments_are_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as done:
        rerun_cli.main(argv)
    assert done.value.code == 2
    assert message in one_line(capsys.readouterr().err, "compress-rerun")


def test_rerun_on_a_missing_store_creates_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "outputs" / "mlflow.db"
    with pytest.raises(SystemExit) as done:
        rerun_cli.main(["run1", "--tracking-uri", f"sqlite:///{store}"])
    assert done.value.code == 2
    assert one_line(capsys.readouterr().err, "compress-rerun") == (
        f"compress-rerun: error: no MLflow store at {store} (nothing logged there yet?)"
    )
    assert not store.exists()
