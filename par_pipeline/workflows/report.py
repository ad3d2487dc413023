"""`par report`: several runs side by side (the paper's Table 2 layout per group), as report.md and report.png."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import ParError
from ..outputs import replace_dir
from ..reports import bar_plot, markdown_table, pct
from ..run import reported_results

REPORT_KIND = "report"


def compare_runs(paths: Sequence[Path], out: Path) -> str:
    if not paths:
        raise ParError("give at least one run folder or evaluation folder")
    rows = [row for p in paths for row in reported_results(p)]
    groups = [g["name"] for g in rows[0][1]["protocol"]["groups"]]
    for label, m in rows[1:]:
        if [g["name"] for g in m["protocol"]["groups"]] != groups:
            raise ParError(f"{label}: its attribute groups differ from {rows[0][0]}'s; compare runs of one schema")
    means = [[label, *(pct(m["protocol"]["mean"][k]) for k in ("precision", "recall", "f1", "mA")),
              pct(m["standard"]["label_mA"])] for label, m in rows]
    per_group = [[g, *(pct(m["protocol"]["groups"][i]["f1"]) for _, m in rows)] for i, g in enumerate(groups)]
    md = ("# Runs side by side\n\n" +
          markdown_table(["run", "Precision", "Recall", "F1", "mA", "label mA"], means) +
          f"\nMeans over the {len(groups)} attribute groups, percent. 'test-selected' checkpoints were chosen on the "
          f"split they are scored on, as the reference does: an optimistic figure; train with --val-fraction for an "
          f"honest selection.\n\n## Per-group F1 (the paper's Table 2 layout)\n\n" +
          markdown_table(["group", *(label for label, _ in rows)], per_group))

    def build(folder: Path) -> None:
        (folder / "report.md").write_text(md)
        bar_plot(folder / "report.png", groups, {label: [100 * g["f1"] for g in m["protocol"]["groups"]]
                                                 for label, m in rows}, "F1 (%)", "per-group F1")

    replace_dir(out, REPORT_KIND, build)
    return md
