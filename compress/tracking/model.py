"""The compressed model as an MLflow model (an MLflow 3 logged model), beside our artifact.

Our artifact (`model/model.pt`) holds the real compressed bytes and is what `ratio/size`
measures; the MLflow model is the same network in a form MLflow lists under the run's
logged models, loads (`mlflow.pytorch.load_model`), serves and registers
(`mlflow.register_model`), with a signature and an input example (two test inputs,
normalised as the model expects them: see the run's `data.normalize.*` tags).

How it is serialized: a float model (pruned, channel-pruned, weight-quantized) as `pt2`
(torch.export: a graph, no pickled code; MLflow's default), and so is a static int8 or QAT
model: its int8 graph (aten and `quantized_decomposed` ops; loading it needs that op
library registered, which `import torch.ao.quantization.fx._decomposed` or
`compress.quant.decomposed_ops.ensure()` does). A dynamic int8 model converted by
torch.ao holds packed C++ parameters that torch.export cannot flatten, and its modules do
not survive pickling (a quantized ConvReLU2d loads without its module state), so it goes as
TorchScript, traced: a graph torch.jit loads, which needs no compress code either. A model
that neither way serializes is logged as no MLflow model, with a warning; the run stands.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.quant.compiled import CompiledInference

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: The logged model's tag saying how it was serialized.
FORMAT_TAG = "compress.serialization"
#: The step the model is logged at. MLflow links every metric the run has at that step to
#: the model; at step 0 that would be the first epoch of each training curve (a loss of the
#: untrained baseline shown as the model's). No metric is logged at this step, so MLflow
#: links none, and `_link` gives the model the run's final figures instead.
NO_STEP = -1
#: MLflow's tag for a description (of a run or a logged model).
NOTE_TAG = "mlflow.note.content"


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to `uri` for the duration: `log_model` writes through
    it, not through the client a job holds. Restored after (set_tracking_uri mirrors its
    value into MLFLOW_TRACKING_URI, so the variable says what it was)."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None: unset again


def _traced(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch.jit says it is deprecated: no other way for int8
        warnings.simplefilter("ignore")
        return torch.jit.trace(model, example)


def serializable(model: nn.Module, example: torch.Tensor, converted: bool) -> tuple[nn.Module, str]:
    """What to hand MLflow and in which format: the model itself as pt2, or, converted to
    int8 by torch.ao (or refused by torch.export), its TorchScript trace. A lowered int8
    graph (PT2E) goes as its graph, in pt2."""
    if isinstance(model, CompiledInference):
        model, converted = model.eager, False
    if not converted:
        try:
            torch.export.export(model, (example,))
        except Exception as error:  # data-dependent control flow, say: a trace still works
            log.info("mlflow model: torch.export refused the model (%s); traced instead", error)
        else:
            return model, "pt2"
    return _traced(model, example), "pickle"


def log_model(
    client: MlflowClient,
    uri: str,
    experiment_id: str,
    run_id: str,
    model: nn.Module,
    example: torch.Tensor,
    *,
    name: str,
    converted: bool,
    params: Mapping[str, str],
    metrics: Sequence[str] = (),
    description: str = "",
) -> str | None:
    """Log `model` (run on `example`, a batch of two) as an MLflow model of run `run_id`,
    with its `params`, the run's final `metrics` (names: logged at step 0) and a
    `description`; its id, or None (with a warning) when it could not be logged."""
    import mlflow
    from mlflow.models import infer_signature

    started = time.perf_counter()
    model = model.cpu().eval() if _on_cpu(model) else _cpu_copy(model)
    example = example[:2].detach().cpu()
    created = None
    try:
        with torch.no_grad():
            output = model(example)
            net, fmt = serializable(model, example, converted)
        shown = "torchscript" if fmt == "pickle" else fmt
        created = client.create_logged_model(
            experiment_id,
            name=re.sub(r"[/:.%\"']", "-", name),  # what MLflow refuses in a model name
            source_run_id=run_id,
            params=dict(params),
            tags={FORMAT_TAG: shown, NOTE_TAG: f"{description}\n\nSerialized as {shown}."},
        )
        with _tracking_uri(uri), _quiet_mlflow():
            mlflow.pytorch.log_model(
                net,
                name=created.name,
                model_id=created.model_id,
                run_id=run_id,
                signature=infer_signature(example.numpy(), output.numpy()),
                input_example=example.numpy(),
                serialization_format=fmt,
                step=NO_STEP,
                pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                validate_serving_input=False,  # a warning at most, for ~1 s: the tests load it
            )
        _link(client, run_id, created.model_id, metrics)
        client.finalize_logged_model(created.model_id, "READY")
    except Exception as error:
        log.warning("mlflow: compressed model not logged as an MLflow model: %s", error)
        if created is not None:
            with contextlib.suppress(Exception):
                client.finalize_logged_model(created.model_id, "FAILED")
        return None
    took = time.perf_counter() - started
    log.info("mlflow: logged model %s (%s, %.1f s)", created.model_id, shown, took)
    return created.model_id


def _link(client: MlflowClient, run_id: str, model_id: str, names: Sequence[str]) -> None:
    """The run's step-0 points of `names` linked to the model, as MLflow links them: the
    same points again, now naming the model (the run's history gets no new point)."""
    from mlflow.entities import Metric

    points = [
        Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=run_id)
        for name in names
        for m in client.get_metric_history(run_id, name)
        if m.step == 0
    ]
    if points:
        client.log_batch(run_id, metrics=points)


def _on_cpu(model: nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu().eval()


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's notes while logging stay out of the job's log: a uv project found, no pip in
    a uv environment (for conda.yaml, which we do not use), pickle's caution for a
    TorchScript file it does not pickle. Errors still show."""
    names = ("mlflow.utils.uv_utils", "mlflow.utils.environment", "mlflow.pytorch")
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
