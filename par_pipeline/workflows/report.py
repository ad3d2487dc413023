"""`par report`: runs, evaluations and ablations side by side: report.md and report.png (the paper's Table 2 layout
per group) and report.html (README: report.html), one folder written whole."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import ParError
from ..outputs import replace_dir
from ..pages.report_page import report_html
from ..reports import bar_plot, markdown_table, pct
from ..run import reported_results

REPORT_KIND = "report"


def is_ablation(path: Path) -> bool:
    return (Path(path) / "ablation.json").is_file()


def compare_runs(paths: Sequence[Path], out: Path, manifest: str | None = None) -> str:
    """Write the report folder `out` for run, evaluation and ablation folders; returns report.md's text."""
    if not paths:
        raise ParError("give at least one run folder, evaluation folder or ablation folder")
    ablations = [Path(p) for p in paths if is_ablation(p)]
    rows = [row for p in paths if not is_ablation(p) for row in reported_results(p)]
    md = "# Runs side by side\n\n"
    groups: list[str] = []
    if rows:
        groups = [g["name"] for g in rows[0].metrics["protocol"]["groups"]]
        for row in rows[1:]:
            if [g["name"] for g in row.metrics["protocol"]["groups"]] != groups:
                raise ParError(f"{row.label}: its attribute groups differ from {rows[0].label}'s; compare runs of "
                               f"one schema")
        means = [[r.label, *(pct(r.metrics["protocol"]["mean"][k]) for k in ("precision", "recall", "f1", "mA")),
                  pct(r.metrics["standard"]["label_mA"])] for r in rows]
        per_group = [[g, *(pct(r.metrics["protocol"]["groups"][i]["f1"]) for r in rows)] for i, g in enumerate(groups)]
        md += (markdown_table(["run", "Precision", "Recall", "F1", "mA", "label mA"], means) +
               f"\nMeans over the {len(groups)} attribute groups, percent. 'test-selected' checkpoints were chosen on "
               f"the split they are scored on, as the reference does: an optimistic figure; train with --val-fraction "
               f"for an honest selection.\n\n## Per-group F1 (the paper's Table 2 layout)\n\n" +
               markdown_table(["group", *(r.label for r in rows)], per_group))
    for a in ablations:
        md += f"\n## Ablation {a}\n\n" + (a / "ablation.md").read_text().split("\n", 1)[1]
    html = report_html(rows, ablations, manifest)  # computed before the folder is touched: errors leave it as it was

    def build(folder: Path) -> None:
        (folder / "report.md").write_text(md)
        (folder / "report.html").write_text(html)
        if rows:
            bar_plot(folder / "report.png", groups, {r.label: [100 * g["f1"] for g in r.metrics["protocol"]["groups"]]
                                                     for r in rows}, "F1 (%)", "per-group F1")

    replace_dir(out, REPORT_KIND, build)
    return md
