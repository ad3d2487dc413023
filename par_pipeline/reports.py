"""Tables and figures from metrics: the paper's per-group table (Table 2), run comparisons, line and bar plots.

Rendering only: what is compared and where it is read from is the callers' business.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

GROUP_HEADER = ["group", "precision", "recall", "f1", "mA", "accuracy"]
ACCURACY_NOTE = ("accuracy: (TP+TN)/N for a binary group, mean instance IoU for a multi-class group (the reference "
                 "prints label mA in that column for binary groups: see mA)")


def accuracy_sentence() -> str:
    """ACCURACY_NOTE as a sentence under a table (report.md, groups.md, report.html)."""
    return ACCURACY_NOTE[0].upper() + ACCURACY_NOTE[1:] + "."


def pct(x: float | None) -> str:
    """A fraction as the percent every table and page shows (two decimals); nothing for a missing value."""
    return "" if x is None else f"{100 * x:.2f}"


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean and standard deviation over repeated runs (seeds, scenes): the sample standard deviation (ddof 1), the
    spread one expects of another run; 0 for a single run."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def plus_minus(mean: float, std: float, scale: float = 100.0) -> str:
    """`mean ± std` (as percent by default, scale 1 for counts)."""
    return f"{scale * mean:.2f} ± {scale * std:.2f}"


def pct_spread(row: dict[str, Any], key: str) -> str:
    """An ablation row's figure in percent, with its spread over seeds when it has several."""
    return plus_minus(row[key], row[key + "_std"]) if row["seeds"] > 1 else pct(row[key])


def group_rows(metrics: dict[str, Any]) -> list[list[str]]:
    keys = GROUP_HEADER[1:]
    rows = [[g["name"], *(pct(g[k]) for k in keys)] for g in metrics["protocol"]["groups"]]
    rows.append(["mean", *(pct(metrics["protocol"]["mean"][k]) for k in keys)])
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """What the numbers are: the checkpoint's selection, the last epoch beside it, the baseline, the standard
    metrics."""
    s = metrics["standard"]
    lines = []
    if "selection" in metrics:
        lines.append(f"Checkpoint: {metrics['selection']}; {metrics['split']} split, T={metrics['frames']} "
                     f"({metrics['sampling']} frames), threshold {metrics['threshold']} (present when above).")
    if "last_epoch" in metrics:
        m = metrics["last_epoch"]["protocol_mean"]
        lines.append(
            f"Last epoch ({metrics['last_epoch']['epoch']}) on the {metrics['last_epoch']['split']} split, "
            f"from training: P {pct(m['precision'])}, R {pct(m['recall'])}, F1 {pct(m['f1'])}, mA {pct(m['mA'])}."
        )
    if "baseline" in metrics:
        b = metrics["baseline"]["protocol"]["mean"]
        lines.append(f"Majority-value baseline: P {pct(b['precision'])}, R {pct(b['recall'])}, F1 {pct(b['f1'])}, "
                     f"mA {pct(b['mA'])}.")
    lines.append(
        f"Standard metrics over all {len(s['label_mA_per_attribute'])} columns: label mA {pct(s['label_mA'])}, "
        f"instance accuracy {pct(s['instance_accuracy'])}, precision {pct(s['instance_precision'])}, "
        f"recall {pct(s['instance_recall'])}, F1 {pct(s['instance_f1'])}."
    )
    lines.append(accuracy_sentence())
    return lines


def group_table_markdown(metrics: dict[str, Any]) -> str:
    return markdown_table(GROUP_HEADER, group_rows(metrics)) + "\n" + "\n".join(summary_lines(metrics)) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_plot(path: Path, series: dict[str, tuple[list[float], list[float], list[float] | None]], xlabel: str,
              ylabel: str, title: str) -> None:
    """One line per series (x, y, optional std as error bars), saved as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, (xs, ys, err) in series.items():
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), format="png")
    plt.close(fig)


def bar_plot(path: Path, groups: list[str], series: dict[str, list[float]], ylabel: str, title: str) -> None:
    """Grouped bars: one bar per series in every group, saved as PNG."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, len(groups) * 0.6), 4), dpi=120)
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), format="png")
    plt.close(fig)
