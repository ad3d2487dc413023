"""Tables and figures from metrics: the paper's per-group table (Table 2) and run comparisons."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def group_rows(metrics: dict[str, Any]) -> list[list[str]]:
    rows = [[g["name"], _pct(g["precision"]), _pct(g["recall"]), _pct(g["f1"]), _pct(g["mA"]), _pct(g["accuracy"])]
            for g in metrics["protocol"]["groups"]]
    m = metrics["protocol"]["mean"]
    rows.append(["mean", _pct(m["precision"]), _pct(m["recall"]), _pct(m["f1"]), _pct(m["mA"]), _pct(m["accuracy"])])
    return rows


GROUP_HEADER = ["group", "precision", "recall", "f1", "mA", "accuracy"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def group_table_markdown(metrics: dict[str, Any]) -> str:
    s = metrics["standard"]
    return (markdown_table(GROUP_HEADER, group_rows(metrics)) +
            f"\nStandard metrics over all {len(s['label_mA_per_attribute'])} columns: label mA {_pct(s['label_mA'])}, "
            f"instance accuracy {_pct(s['instance_accuracy'])}, precision {_pct(s['instance_precision'])}, "
            f"recall {_pct(s['instance_recall'])}, F1 {_pct(s['instance_f1'])}.\n")


def line_plot(path: str, series: dict[str, tuple[list[float], list[float], list[float] | None]], xlabel: str,
              ylabel: str, title: str) -> None:
    """One line per series (x, y, optional std as error bars), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, (xs, ys, err) in series.items():
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def load_run_metrics(path: Path) -> tuple[str, dict[str, Any]]:
    """(label, metrics) from an eval folder (metrics.json) or a run folder (best.json's metrics)."""
    import json

    from .errors import ParError

    path = Path(path)
    for candidate, key in ((path / "metrics.json", None), (path / "eval" / "metrics.json", None), (path / "best.json", "metrics")):
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            return path.name, data[key] if key else data
    raise ParError(f"{path}: no metrics.json or best.json; give run folders from `par train` or folders from `par eval`")


def compare_runs(paths: Sequence[Path], out: Path) -> str:
    from .atomic import atomic_path, write_text_atomic

    runs = [load_run_metrics(p) for p in paths]
    means = [[name, *(_pct(m["protocol"]["mean"][k]) for k in ("precision", "recall", "f1", "mA")),
              _pct(m["standard"]["label_mA"])] for name, m in runs]
    groups = [g["name"] for g in runs[0][1]["protocol"]["groups"]]
    per_group = [[g, *(_pct(next(x["f1"] for x in m["protocol"]["groups"] if x["name"] == g)) for _, m in runs)] for g in groups]
    md = ("# Runs side by side\n\n" + markdown_table(["run", "Precision", "Recall", "F1", "mA", "label mA"], means) +
          "\n## Per-group F1 (the paper's Table 2 layout)\n\n" + markdown_table(["group", *(n for n, _ in runs)], per_group))
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out) / "report.md", md)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, len(groups) * 0.6), 4), dpi=120)
    width = 0.8 / len(runs)
    for i, (name, m) in enumerate(runs):
        ax.bar(np.arange(len(groups)) + i * width, [100 * x["f1"] for x in m["protocol"]["groups"]], width, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=45, ha="right")
    ax.set_ylabel("F1 (%)")
    ax.set_title("per-group F1")
    ax.legend()
    fig.tight_layout()
    with atomic_path(Path(out) / "report.png") as tmp:
        fig.savefig(str(tmp), format="png")
    plt.close(fig)
    return md
