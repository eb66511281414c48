"""Every figure we report, measured on the model as it really is.

footprint: params, nonzeros, MACs; macs: MACs module by module (FlopCounterMode, attention
included); layer_tensors: a layer's weights in any form; layer_table: layer_macs.csv;
latency: timed forward passes; measurement: one model's figures and the ratios between
two; probes/: extra views (compiled fp32, ONNX Runtime) listed in `measure.probes`;
onnx_runtime: the ONNX export and timing they use.
"""

from compress.measure.config import MeasureConfig
from compress.measure.footprint import (
    Footprint,
    count_macs,
    count_nonzero,
    count_params,
    model_tensors,
)
from compress.measure.latency import latency_ms, paired_latency_ms, torch_threads
from compress.measure.layer_table import write_layer_macs
from compress.measure.layer_tensors import layer_weight, rnn_weights
from compress.measure.macs import Macs, layer_macs
from compress.measure.measurement import Measurement, compare, measure_model, measure_models
from compress.measure.probes.base import (
    ProbeConfig,
    ProbeContext,
    ProbeResult,
    parse_probes,
    run_probes,
)

__all__ = [
    "Footprint",
    "Macs",
    "MeasureConfig",
    "Measurement",
    "ProbeConfig",
    "ProbeContext",
    "ProbeResult",
    "compare",
    "count_macs",
    "count_nonzero",
    "count_params",
    "latency_ms",
    "layer_macs",
    "layer_weight",
    "measure_model",
    "measure_models",
    "model_tensors",
    "paired_latency_ms",
    "parse_probes",
    "rnn_weights",
    "run_probes",
    "torch_threads",
    "write_layer_macs",
]
