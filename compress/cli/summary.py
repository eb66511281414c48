"""The table printed at the end of a run: baseline against compressed, ratios by axis."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from compress.run.plan import Result


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n}"


def summary_table(result: Result) -> Table:
    m, base, ours = result.metrics, result.baseline, result.compressed
    table = Table(title="compress: baseline vs compressed (the saved artifact, reloaded)")
    for column in ("", "baseline", "compressed", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row(
        "top-1 accuracy",
        f"{base.acc:.2%}",
        f"{ours.acc:.2%}",
        f"drop {100 * m['acc_drop']:+.2f} pt",
    )
    table.add_row("params", _count(base.params), _count(ours.params), "")
    table.add_row(
        "nonzero params", _count(base.nonzeros), _count(ours.nonzeros), f"{m['ratio/params']:.2f}x"
    )
    # The two MAC rows say what they count (compress.measure.macs): every multiply of a
    # matmul or conv; and those left when only products with a zero weight are skipped.
    table.add_row(
        "MACs, every multiply (attn. too)",
        _count(base.macs),
        _count(ours.macs),
        "",
    )
    table.add_row(
        "MACs, zero-weight products skipped",
        _count(base.macs_nonzero),
        _count(ours.macs_nonzero),
        f"{m['ratio/macs']:.2f}x",
    )
    table.add_row(
        "artifact bytes", _bytes(base.bytes), _bytes(ours.bytes), f"{m['ratio/size']:.2f}x"
    )
    for batch, ms in ours.latency_ms.items():
        table.add_row(
            f"latency, batch {batch}",
            f"{base.latency_ms[batch]:.3f} ms",
            f"{ms:.3f} ms",
            f"{m[f'speedup/latency/b{batch}']:.2f}x",
        )
    for batch in ours.latency_ms:
        if f"baseline/latency_ms_compiled/b{batch}" in m:
            table.add_row(
                f"  vs fp32 compiled, batch {batch}",
                f"{m[f'baseline/latency_ms_compiled/b{batch}']:.3f} ms",
                "",
                f"{m[f'speedup/latency_vs_compiled/b{batch}']:.2f}x",
            )
    for batch in ours.latency_ms:
        if f"onnx/latency_ms/b{batch}" in m:
            table.add_row(
                f"ONNX Runtime, batch {batch}",
                f"{m[f'baseline/onnx/latency_ms/b{batch}']:.3f} ms",
                f"{m[f'onnx/latency_ms/b{batch}']:.3f} ms",
                f"{m[f'speedup/onnx/b{batch}']:.2f}x",
            )
    for batch in ours.latency_ms:
        if f"onnx_int8/latency_ms/b{batch}" in m:
            table.add_row(
                f"  ORT's own int8, batch {batch}",
                "",
                f"{m[f'onnx_int8/latency_ms/b{batch}']:.3f} ms",
                f"{m[f'speedup/onnx_int8/b{batch}']:.2f}x",
            )
    if "teacher/acc" in m:
        table.add_row(
            "teacher (accuracy, params)",
            f"{m['teacher/acc']:.2%}",
            f"{m['teacher/params']:,.0f}",
            "",
        )
    if "quant/bits" in m:
        table.add_row("weight bits (mean)", "32", f"{m['quant/bits']:.2f}", "")
    if "quant/compile_s" in m:  # Inductor's compile of the int8 model, in no latency above
        table.add_row("int8 compile (apart)", "", f"{m['quant/compile_s']:.1f} s", "")
    return table


def print_summary(result: Result, console: Console | None = None) -> None:
    console = console or Console()
    console.print(summary_table(result))
    if "sparsity" in result.metrics:
        console.print(f"sparsity reached: {result.metrics['sparsity']:.2%}")
    cached = "reused from cache" if result.baseline_cached else "trained and cached"
    console.print(f"baseline: {result.baseline_origin or cached}")
    # Paths and commands stay on one line so they can be copied.
    console.print(f"artifact: {result.artifact}", soft_wrap=True)
    console.print(f"tracking: {result.tracking}", soft_wrap=True)
    if result.tracking_uri and result.tracking_uri.startswith("sqlite:"):
        console.print(
            f"open the UI: uv run mlflow ui --backend-store-uri {result.tracking_uri}",
            soft_wrap=True,
        )
