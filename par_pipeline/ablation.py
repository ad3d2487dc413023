"""Frame-count sweeps and component ablations from ONE token store (never re-extracted).

Each point (variant, T, seed) is a training run in `OUT/runs/<key>/`, keyed by its whole
configuration and the store's identity: a finished run is reused, an interrupted one resumes
from its last epoch. Results: ablation.json / .csv / .md (the paper's Table 1 and Table 3
layouts) and ablation.png (F1 against frames, one line per variant).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .atomic import write_json_atomic, write_text_atomic
from .errors import ParError
from .evaluate import evaluate_checkpoint
from .report import csv_text, line_plot, markdown_table
from .resources import load_json
from .store import TokenStore
from .train import TrainConfig, train

ABLATION_FORMAT = "par-ablation"
ABLATION_VERSION = 1


@dataclass
class SweepPoint:
    variant: str
    frames: int
    seed: int
    config: TrainConfig
    key: str


def load_variants(name_or_path: str = "variants") -> dict[str, dict[str, Any]]:
    return load_json("ablation", name_or_path)


def plan_sweep(store_path: str, out: Path, frames: list[int], variants: list[str], seeds: int,
               base: dict[str, Any]) -> list[SweepPoint]:
    known = load_variants()
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ParError(f"unknown ablation variant(s) {unknown}; known: {sorted(known)} (data_manifests/ablation/variants.json)")
    if not frames or min(frames) < 1 or seeds < 1:
        raise ParError("--frames needs at least one T >= 1 and --seeds at least 1")
    store = TokenStore(store_path)
    identity = {**store.identity, "manifest_sha256": store.attrs.get("manifest_sha256")}
    store.close()
    points = []
    for variant in variants:
        for T in frames:
            for seed in range(seeds):
                cfg = TrainConfig(**{**base, **known[variant]["options"], "store": str(store_path), "frames": T, "seed": seed})
                keyed = {k: v for k, v in asdict(cfg).items() if k not in ("out", "store", "workers", "device")}
                digest = hashlib.sha256(json.dumps({"train": keyed, "store": identity}, sort_keys=True).encode()).hexdigest()[:10]
                key = f"{variant}-T{T}-s{seed}-{digest}"
                cfg.out = str(out / "runs" / key)
                points.append(SweepPoint(variant, T, seed, cfg, key))
    return points


def run_point(point: SweepPoint, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume, or reuse) one point and evaluate its best checkpoint; returns metrics.json's content."""
    run = Path(point.config.out)
    metrics_path = run / "eval" / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    state = run / "last.state.pt"
    finished = False
    if state.exists():
        import torch

        finished = int(torch.load(state, map_location="cpu", weights_only=False)["epoch"]) >= point.config.epochs
    if not finished:
        train(point.config, resume=state.exists(), on_epoch=on_epoch)
    return evaluate_checkpoint(point.config.store, str(run), str(run / "eval"), workers=point.config.workers,
                               device=point.config.device)


def summarise(points: list[SweepPoint], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p, m in zip(points, results):
        rows.setdefault((p.variant, p.frames), []).append({"seed": p.seed, "run": p.key, **m["protocol"]["mean"],
                                                          "label_mA": m["standard"]["label_mA"],
                                                          "group_f1": {g["name"]: g["f1"] for g in m["protocol"]["groups"]}})
    out = []
    for (variant, T), runs in rows.items():
        row: dict[str, Any] = {"variant": variant, "frames": T, "seeds": len(runs)}
        for k in ("precision", "recall", "f1", "mA", "label_mA"):
            vals = np.array([r[k] for r in runs])
            row[k], row[f"{k}_std"] = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        row["runs"] = runs
        out.append(row)
    return out


def _cell(row: dict[str, Any], k: str) -> str:
    return f"{100 * row[k]:.2f}" + (f" ± {100 * row[k + '_std']:.2f}" if row["seeds"] > 1 else "")


def write_results(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    variants = load_variants()
    header = ["variant", "frames", "seeds", "precision", "recall", "f1", "mA", "label_mA",
              "precision_std", "recall_std", "f1_std", "mA_std", "label_mA_std"]
    csv_rows = [[r["variant"], r["frames"], r["seeds"], *(f"{100 * r[k]:.2f}" for k in header[3:])] for r in rows]
    write_json_atomic(out / "ablation.json", {"format": ABLATION_FORMAT, "version": ABLATION_VERSION, **meta, "rows": rows})
    write_text_atomic(out / "ablation.csv", csv_text(header, csv_rows))
    frames = sorted({r["frames"] for r in rows})
    t_main = 6 if 6 in frames else frames[-1]
    t1 = [[variants[r["variant"]]["label"], _cell(r, "precision"), _cell(r, "recall"), _cell(r, "f1")]
          for r in rows if r["frames"] == t_main]
    first = rows[0]["variant"]
    t3 = [[r["frames"], _cell(r, "precision"), _cell(r, "recall"), _cell(r, "f1")]
          for r in sorted(rows, key=lambda r: r["frames"]) if r["variant"] == first]
    grid = [[r["variant"], r["frames"], _cell(r, "precision"), _cell(r, "recall"), _cell(r, "f1"), _cell(r, "mA")] for r in rows]
    md = (f"# Ablation on {meta['store']}\n\n{meta['epochs']} epochs per run, {meta['seeds']} seed(s), model "
          f"`{meta['model']}`; protocol means over the 14 groups, threshold 0.45 (percent).\n\n"
          f"## Table 1 layout: components (T = {t_main})\n\n" + markdown_table(["method", "Precision", "Recall", "F1"], t1) +
          f"\n## Table 3 layout: number of frames ({variants[first]['label']})\n\n" +
          markdown_table(["frames", "Precision", "Recall", "F1"], t3) +
          "\n## All points\n\n" + markdown_table(["variant", "frames", "Precision", "Recall", "F1", "mA"], grid))
    write_text_atomic(out / "ablation.md", md)
    series = {}
    for v in dict.fromkeys(r["variant"] for r in rows):
        pts = sorted((r for r in rows if r["variant"] == v), key=lambda r: r["frames"])
        series[variants[v]["label"]] = ([p["frames"] for p in pts], [100 * p["f1"] for p in pts],
                                        [100 * p["f1_std"] for p in pts] if meta["seeds"] > 1 else None)
    from .atomic import atomic_path

    with atomic_path(out / "ablation.png") as tmp:
        line_plot(str(tmp), series, "frames per tracklet (T)", "F1 (%)", "VTF-PAR ablation: F1 against frames")


def run_ablation(store_path: str, out: Path, frames: list[int], variants: list[str], seeds: int, base: dict[str, Any],
                 on_point: Callable[[int, int, SweepPoint, bool], None] | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = plan_sweep(store_path, out, frames, variants, seeds, base)
    results = []
    for i, p in enumerate(points):
        reused = (Path(p.config.out) / "eval" / "metrics.json").exists()
        if on_point:
            on_point(i, len(points), p, reused)
        results.append(run_point(p, on_epoch))
    rows = summarise(points, results)
    write_results(out, rows, {"store": str(store_path), "epochs": base.get("epochs"), "seeds": seeds,
                              "model": base.get("model", "vtf-par"), "frames": frames, "variants": variants})
    return rows
