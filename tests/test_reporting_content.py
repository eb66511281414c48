"""What a report shows: the baseline, spreads only over seeds, whole labels, resumed jobs by
their overrides, a legend that matches one front point, baselines kept apart.

Each test logs runs the way `compress` does into a real MLflow store under tmp_path and
reads report.md, report.csv and the figure saved as report.png.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import pytest

from compress.reporting.report import Report, build_report
from tests.support import log_run


class Lab:
    """An MLflow store with one experiment; jobs logged like `compress` logs them."""

    def __init__(self, root: Path) -> None:
        from mlflow import MlflowClient

        self.root, self.uri = root, f"sqlite:///{root}/mlflow.db"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = self.client.create_experiment(
            "compress", artifact_location=(root / "mlartifacts").as_uri()
        )
        self.clock = itertools.count(1_000_000, 1000)

    def sweep(self, **tags: str) -> str:
        name = "sweep 2026-12-01 10-00-00"
        tags = {"sweep": name, "sweep.dir": str(self.root / "multirun"), **tags}
        return self.client.create_run(self.experiment, tags=tags).info.run_id

    def job(
        self,
        amount: float,
        acc: float,
        *,
        seed: int = 0,
        size: float | None = None,
        model: str = "small_cnn",
        baseline_acc: float = 0.99,
        overrides: str | None = None,
        parent: str | None = None,
    ) -> str:
        params = {
            "seed": seed,
            "model.name": model,
            "dataset.name": "digits",
            "dataset.root": self.root / "data",
            "method.name": "prune",
            "method.amount": amount,
            "schedule.train.epochs": 20,
            "paths.run_dir": self.root / "runs" / str(next(self.clock)),
            "tracking.uri": self.uri,
        }
        if overrides is None:
            overrides = f"method.amount={amount}" + (f" seed={seed}" if seed else "")
        tags = {
            "method": "prune",
            "model": model,
            "dataset": "digits",
            "overrides": overrides,
            "data.fingerprint": "4eeae40474e2a375",
            "baseline.key": f"{model}-{seed}",
            **({"mlflow.parentRunId": parent} if parent else {}),
        }
        metrics = {
            "acc": acc,
            "baseline/acc": baseline_acc,
            "ratio/size": size or 1 / (1 - amount),
        }
        start = next(self.clock)
        return log_run(
            self.client, self.experiment, params=params, metrics=metrics, tags=tags, start=start
        )

    def report(self, target: str) -> Report:
        return build_report(self.uri, target, "ratio/size", self.root / "report")

    def text(self) -> str:
        return (self.root / "report" / "report.md").read_text()

    def rows(self) -> list[dict[str, str]]:
        with (self.root / "report" / "report.csv").open() as f:
            return list(csv.DictReader(f))


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every matplotlib figure saved (report.png), kept to look inside."""
    from matplotlib.figure import Figure

    saved: list[Any] = []
    save = Figure.savefig

    def keep(self: Figure, *args: Any, **kwargs: Any) -> None:
        saved.append(self)
        save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def legend(ax: Any) -> dict[str, Any]:
    found = ax.get_legend()
    return {t.get_text(): h for t, h in zip(found.get_texts(), found.legend_handles, strict=True)}


def test_the_baseline_is_a_row_of_the_table_and_a_point_of_the_figure(
    lab: Lab, figures: list[Any]
) -> None:
    parent = lab.sweep()
    for seed, base in ((0, 0.99), (1, 0.97)):
        lab.job(0.5, 0.96, seed=seed, baseline_acc=base, parent=parent)
    lab.report(parent)
    assert "| baseline | - | 2 | 98.00 ± 1.41 | 1.00x |  |" in table_lines(lab.text())[1]
    (base,) = [r for r in lab.rows() if r["method"] == "baseline"]
    assert (base["n_seeds"], float(base["acc_mean"]), float(base["axis_mean"])) == ("2", 0.98, 1)
    (fig,) = figures
    (ax,) = fig.axes
    assert "baseline (2 seeds)" in legend(ax)
    points = [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()]
    assert ([1.0], [pytest.approx(0.98)]) in points


def test_one_seed_shows_no_spread(lab: Lab) -> None:
    parent = lab.sweep()
    lab.job(0.5, 0.97, seed=0, size=2.0, parent=parent)
    lab.job(0.5, 0.95, seed=1, size=2.2, baseline_acc=0.97, parent=parent)
    lab.job(0.9, 0.90, parent=parent)  # run once
    lab.report(parent)
    text = lab.text()
    assert "| baseline | - | 2 | 98.00 ± 1.41 | 1.00x |" in text  # 1x by definition
    assert "| prune | `method.amount=0.9` | 1 | 90.00 | 10.00x |" in text
    assert "| prune | `method.amount=0.5` | 2 | 96.00 ± 1.41 | 2.10x ± 0.14 |" in text
    assert "± 0.00" not in text


def test_a_resumed_job_is_labelled_by_its_overrides(lab: Lab) -> None:
    """`compress` ran once (amount 0.8, the default: no overrides); a sweep over 0.5 and 0.8
    then skipped its 0.8 job to that run and named it on its parent."""
    earlier = lab.job(0.8, 0.96, overrides="")
    parent = lab.sweep(**{"resumed.43cee2a896621204e68081e3": earlier})
    lab.job(0.5, 0.98, parent=parent)
    report = lab.report(parent)
    labels = {c.label: c.run_ids for c in report.configurations}
    assert labels == {
        "method.amount=0.5": labels["method.amount=0.5"],
        "method.amount=0.8": [earlier],
    }
    assert "| prune | `method.amount=0.8` | 1 | 96.00 | 5.00x | **front** |" in lab.text()


def test_labels_stay_inside_the_figure(lab: Lab, figures: list[Any]) -> None:
    parent = lab.sweep()
    stack = "+method.stages={prune:{amount:0.95},quantize_weights:{bits:2,granularity:group}}"
    lab.job(0.5, 0.97, parent=parent, overrides="method.amount=0.5 schedule.finetune.epochs=30")
    lab.job(0.95, 0.99, parent=parent, overrides=f"{stack} schedule.finetune.epochs=30")
    lab.job(0.9, 0.60, parent=parent, overrides="method.amount=0.9 distill=kd distill.alpha=0.9")
    lab.report(parent)
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    inside = fig.bbox
    texts = [fig._suptitle] if fig._suptitle else []
    for ax in fig.axes:  # ours: tick labels are matplotlib's, laid out by it
        texts += [*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label]
        texts += ax.get_legend().get_texts()
    texts = [t for t in texts if t.get_text().strip()]
    assert any("quantize_weights" in t.get_text() for t in texts)
    for text in texts:
        box = text.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, text.get_text()
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, text.get_text()


def test_a_single_front_point_has_a_legend_entry_that_looks_like_it(
    lab: Lab, figures: list[Any]
) -> None:
    parent = lab.sweep()
    lab.job(0.8, 0.97, parent=parent)
    lab.report(parent)
    (ax,) = figures[0].axes
    handle = legend(ax)["Pareto front"]
    assert handle.get_marker() == "o" and handle.get_markerfacecolor() == "none"


def test_an_experiment_report_keeps_baselines_apart(lab: Lab, figures: list[Any]) -> None:
    """Two models pruned in one experiment: two baselines, each with its own front."""
    for model, base, accs in (("small_cnn", 0.99, (0.98, 0.95)), ("mlp", 0.96, (0.94, 0.90))):
        for amount, acc in zip((0.5, 0.9), accs, strict=True):
            overrides = f"model={model} method.amount={amount}"
            lab.job(amount, acc, model=model, baseline_acc=base, overrides=overrides)
    report = lab.report("compress")
    assert all(c.pareto for c in report.configurations)  # mlp's are not behind small_cnn's
    (fig,) = figures
    assert len(fig.axes) == 2
    for ax, accs in zip(fig.axes, ({0.94, 0.90}, {0.98, 0.95}), strict=True):
        (series,) = [c for c in ax.containers if c.get_label() == "prune"]
        assert sorted(series.lines[0].get_ydata()) == pytest.approx(sorted(accs))
    assert {b.label: b.acc_mean for b in report.baselines} == {
        "model.name=mlp": pytest.approx(0.96),
        "model.name=small_cnn": pytest.approx(0.99),
    }
    rows = lab.rows()
    assert [r["method"] for r in rows].count("baseline") == 2
    assert {(r["baseline"], r["label"]) for r in rows if r["method"] == "prune"} == {
        (f"model.name={m}", f"model={m} method.amount={a}")
        for m in ("mlp", "small_cnn")
        for a in (0.5, 0.9)
    }
    assert lab.text().count("## Baseline `model.name=") == 2


def test_table_text_is_the_report_for_a_terminal(lab: Lab) -> None:
    from compress.reporting.report import table_text

    parent = lab.sweep()
    lab.job(0.5, 0.97, seed=0, size=2.0, parent=parent)
    lab.job(0.5, 0.95, seed=1, size=2.2, parent=parent)
    lab.job(0.9, 0.90, parent=parent)
    text = table_text(lab.report(parent))
    lines = text.splitlines()
    assert "\x1b" not in text and len(max(lines, key=len)) <= 120
    (base,) = [line for line in lines if "baseline" in line and "│" in line]
    assert "99.00" in base and "1.00x" in base
    assert any("method.amount=0.5" in line and "96.00 ± 1.41" in line for line in lines)
    assert any(
        "method.amount=0.9" in line and "90.00 " in line and "±" not in line for line in lines
    )
