"""A job's MLflow run as a user meets it: named by what it is, params that tell runs apart
(internals as tags), and the compressed model as an MLflow model that loads back and
predicts what our artifact predicts, for pruned, channel-pruned and int8 models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from compress.artifact.store import load_artifact
from compress.quant.compiled import CompiledInference
from compress.run.pipeline import Result, run
from tests.support import QUICK, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

#: Method option -> the overrides of the job, as `compress` would tag them.
JOBS = {
    "prune": ["method.amount=0.7"],
    "prune_channels": ["method=prune_channels", "method.amount=0.25"],
    "quantize_static": ["method=quantize_static"],
}


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    root = tmp_path_factory.mktemp("runs")
    done = {}
    for method, overrides in JOBS.items():
        command = [*QUICK, "dataset=fake", *overrides]
        cfg = compose_config(root, *command, run_dir=root / method)
        tags = {"method": method, "overrides": " ".join([f"paths.outputs={root}", *command])}
        done[method] = run(cfg, tags=tags)
    return done


@pytest.fixture
def tracking_uri(jobs: dict[str, Result]) -> Iterator[str]:
    """MLflow's fluent API (load_model, register_model) pointed at the jobs' store."""
    uri = str(jobs["prune"].tracking_uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def _run(result: Result) -> Any:
    return MlflowClient(tracking_uri=result.tracking_uri).get_run(str(result.run_id))


def test_a_job_is_named_by_its_method_and_overrides(jobs: dict[str, Result]) -> None:
    names = {method: _run(result).info.run_name for method, result in jobs.items()}
    # QUICK's settings follow the method's own; what does not fit in ~40 characters is cut.
    assert names["prune"] == "prune amount=0.7 train.epochs=3 …"
    assert names["prune_channels"] == "prune_channels amount=0.25 …"
    assert names["quantize_static"] == "quantize_static train.epochs=3 …"
    assert all(len(name) <= 40 for name in names.values())
    full = _run(jobs["prune"]).data.tags["overrides"]
    assert "method.amount=0.7" in full and "measure.probes=[]" in full  # all of them, here


def test_internals_are_tags_and_params_are_what_the_run_computed(
    jobs: dict[str, Result],
) -> None:
    logged = _run(jobs["prune"])
    params, tags = logged.data.params, logged.data.tags
    internal = [k for k in params if k.split(".")[0] in ("paths", "tracking", "hydra")]
    assert internal == [] and "runtime.progress" not in params
    assert params["method.amount"] == "0.7" and params["schedule.train.epochs"] == "3"
    assert tags["paths.run_dir"] == str(jobs["prune"].run_dir)
    assert tags["tracking.uri"] == jobs["prune"].tracking_uri
    assert tags["runtime.progress"] == "false"


@pytest.mark.parametrize("method", list(JOBS))
def test_the_compressed_model_is_an_mlflow_model_that_predicts_as_ours(
    jobs: dict[str, Result], tracking_uri: str, method: str
) -> None:
    result = jobs[method]
    client = MlflowClient(tracking_uri=tracking_uri)
    logged = _run(result)
    # Listed under the run's logged models, finished, with the run's figures.
    (output,) = logged.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.source_run_id == result.run_id and str(model.status) == "READY"
    assert model.name == method
    # The run's final figures, not the first epoch of its curves (also logged at step 0).
    linked = {m.key: m.value for m in model.metrics}
    assert linked["acc"] == logged.data.metrics["acc"] and "ratio/size" in linked
    assert not any(k.startswith(("baseline/loss", "finetune/")) for k in linked)
    history = MlflowClient(tracking_uri=tracking_uri).get_metric_history(logged.info.run_id, "acc")
    assert len(history) == 1  # linking added no point to the run's own history
    assert model.params["method.name"] == method
    assert "model/model.pt" in model.tags["mlflow.note.content"]  # its description
    info = mlflow.models.get_model_info(model.model_uri)
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 8, 8)
    assert info.saved_input_example_info["type"] == "ndarray"
    # It loads back and predicts what the artifact (the real compressed bytes) predicts.
    back = mlflow.pytorch.load_model(model.model_uri)
    ours = load_artifact(result.artifact).cpu().eval()
    # A lowered int8 graph is logged as its graph: what it computes before Inductor.
    ours = ours.eager if isinstance(ours, CompiledInference) else ours
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(back(x), ours(x))
        pyfunc = mlflow.pyfunc.load_model(model.model_uri)
        assert np.array_equal(pyfunc.predict(x.numpy()), ours(x).numpy())
    # Our artifact is still there, as it was.
    assert [f.path for f in client.list_artifacts(str(result.run_id), "model")] == [
        "model/model.pt"
    ]
    if method == "quantize_static":  # int8: the int8 graph, exported as it is
        assert model.tags["compress.serialization"] == "pt2"
        ops = {str(n.target) for n in back.graph.nodes if n.op == "call_function"}
        assert "quantized_decomposed.dequantize_per_channel.default" in ops


def test_the_logged_model_can_be_registered(jobs: dict[str, Result], tracking_uri: str) -> None:
    (output,) = _run(jobs["prune_channels"]).outputs.model_outputs
    version = mlflow.register_model(f"models:/{output.model_id}", "small-cnn-channels")
    assert int(version.version) == 1
    loaded = mlflow.pytorch.load_model("models:/small-cnn-channels/1")
    shrunk = load_artifact(jobs["prune_channels"].artifact)
    assert loaded(torch.zeros(2, 1, 8, 8)).shape == shrunk(torch.zeros(2, 1, 8, 8)).shape
