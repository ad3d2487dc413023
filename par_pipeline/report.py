"""Tables and figures from metrics: the paper's per-group table (Table 2) and run comparisons."""
from __future__ import annotations

import csv
import io
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
