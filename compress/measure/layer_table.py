"""`layer_macs.csv`: where the MACs of the baseline and of the compressed model are, module
by module, so a reader sees which layers a method made cheaper (and that attention's
matmuls, counted under their attention module, did not change)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from compress.measure.macs import ROOT, Macs

COLUMNS = ("module", "baseline_dense", "baseline_nonzero", "compressed_dense", "compressed_nonzero")
#: How the model's own forward (work outside every submodule) is named in the table.
ROOT_LABEL = "(model)"


def write_layer_macs(
    path: Path, baseline: Mapping[str, Macs], compressed: Mapping[str, Macs]
) -> Path:
    """One row per module that runs MACs in either model (the baseline's order first);
    a module one model lacks (a removed layer, an int8 graph's op outside every module)
    has blank cells for it. Each column sums to that model's total."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for module in dict.fromkeys([*baseline, *compressed]):
            cells = [ROOT_LABEL if module == ROOT else module]
            for macs in (baseline.get(module), compressed.get(module)):
                cells += ["", ""] if macs is None else [macs.dense, macs.nonzero]
            writer.writerow(cells)
    return path
