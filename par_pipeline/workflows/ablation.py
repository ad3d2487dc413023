"""Frame-count sweeps and component ablations from ONE token store (never re-extracted).

Each point (variant, T, seed) is a training run in `OUT/runs/<key>/`, keyed by every option that changes its
results (the same list `--resume` compares) and the store's identity: a finished point is reused, an interrupted
one resumes from its last committed epoch, whatever device or worker count the sweep is resumed with. Results:
ablation.json / .csv / .md (the paper's Table 1 and Table 3 layouts) and ablation.png (F1 against frames).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..config import EvalConfig, TrainConfig, configure
from ..engine.metrics import headline
from ..engine.resident import ResidentRows, hold, rows_of
from ..errors import ParError
from ..experiments import Warn, check_trackers, open_sweep, sweep_figures
from ..options import results_view
from ..outputs import atomic_write, claim_dir, exclusive, write_json, write_text
from ..reports import csv_text, line_plot, markdown_table, pct, pct_spread, spread
from ..run import RunFolder, read_checkpoint_meta
from ..store.reader import TokenStore
from ..sweep import f1_against_frames, load_variants, main_frames
from .evaluate import evaluate_checkpoint
from .train import TOGETHER_KEYS, Loading, rows_to_hold, train_together

ABLATION_FORMAT = "par-ablation"
ABLATION_VERSION = 2
ABLATION_KIND = "ablation"


@dataclass
class SweepPoint:
    variant: str
    frames: int
    seed: int
    config: TrainConfig
    recipe: dict[str, Any]
    key: str


def plan_sweep(store_path: str, out: Path, frames: list[int], variants: list[str], seeds: int, recipe: str | None,
               base: Mapping[str, Any]) -> list[SweepPoint]:
    """Every point's config, checked before anything is written."""
    known = load_variants()
    unknown = [v for v in variants if v not in known]
    if unknown or not variants:
        raise ParError(f"unknown ablation variant(s) {unknown or variants}; known: {sorted(known)} "
                       f"(data_manifests/ablation/variants.json)")
    if not frames or min(frames) < 1 or seeds < 1:
        raise ParError("--sweep-frames needs at least one T >= 1 and --seeds at least 1")
    store = TokenStore(store_path)
    identity = {**store.identity, "manifest_sha256": store.attrs.get("manifest_sha256")}
    store.close()
    points = []
    for variant in variants:
        for T in frames:
            for seed in range(seeds):
                cfg, rec = configure("train", recipe, [("ablation options", base),
                                                       (f"variant {variant}", known[variant]["options"]),
                                                       ("sweep point", {"store": str(store_path), "frames": T,
                                                                        "seed": seed})])
                keyed = json.dumps({"train": results_view(cfg), "store": identity}, sort_keys=True)
                key = f"{variant}-T{T}-s{seed}-{hashlib.sha256(keyed.encode()).hexdigest()[:10]}"
                cfg.out = str(out / "runs" / key)
                points.append(SweepPoint(variant, T, seed, cfg, rec, key))
    return points


def evaluate_point(point: SweepPoint, warn: Warn | None = None) -> dict[str, Any]:
    """A trained point's selected checkpoint evaluated (or its evaluation reused); returns the metrics. Points are
    trained before, side by side (`_train_together`)."""
    metrics_path = point_metrics(point)
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    return evaluate_checkpoint(EvalConfig(store=point.config.store, checkpoint=point.config.out,
                                          out=str(metrics_path.parent), workers=point.config.workers,
                                          device=point.config.device), warn)


def to_train(point: SweepPoint) -> bool:
    """The point has no evaluation yet and its run is not finished (absent, or killed before its last epoch)."""
    run = RunFolder(point.config.out)
    if point_metrics(point).exists():
        return False
    return not (run.exists() and read_checkpoint_meta(run.checkpoint_json("last"))[1]["epoch"] >= point.config.epochs)


def _train_together(points: list[SweepPoint], on_epoch: Callable[[dict[str, Any]], None] | None,
                    group: dict[str, dict[str, Any]] | None, warn: Warn | None, resident: ResidentRows | None,
                    on_together: Callable[[list[SweepPoint]], None] | None) -> None:
    """Every point still to train, in groups that read the same batches (one seed: all frame counts and variants),
    each group side by side from one read of each batch (`train_together`); each point resumes from its own last
    committed epoch."""
    groups: dict[str, list[SweepPoint]] = {}
    for p in points:
        if to_train(p):
            key = json.dumps({k: getattr(p.config, k) for k in TOGETHER_KEYS}, sort_keys=True, default=str)
            groups.setdefault(key, []).append(p)
    for members in groups.values():
        if on_together:
            on_together(members)
        train_together([(p.config, p.recipe, RunFolder(p.config.out).config_path.exists()) for p in members],
                       on_epoch, group, warn, resident)


def _hold_for_sweep(points: list[SweepPoint], loading: Loading | None) -> ResidentRows | None:
    """--cache ram/device for a sweep: the rows every point still to train can draw, loaded once for all of them
    (the same bytes each point would load itself)."""
    todo = [p for p in points if not point_metrics(p).exists()]
    first = points[0].config
    if first.cache == "disk" or not todo:
        return None
    store = TokenStore(first.store)
    store.check_shards()
    return hold(first.cache, store, rows_of(rows_to_hold(p.config, store) for p in todo), torch.device(first.device),
                loading, "; loaded once for the sweep's points")


def point_metrics(point: SweepPoint) -> Path:
    return RunFolder(point.config.out).eval_dir(point.config.eval_split) / "metrics.json"


def summarise(points: list[SweepPoint], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p, m in zip(points, results):
        rows.setdefault((p.variant, p.frames), []).append(
            {"seed": p.seed, "run": p.key, **m["protocol"]["mean"], **headline(m)}
        )
    out = []
    for (variant, T), runs in rows.items():
        row: dict[str, Any] = {"variant": variant, "frames": T, "seeds": len(runs)}
        for k in ("precision", "recall", "f1", "mA", "label_mA"):
            s = spread([r[k] for r in runs])
            row[k], row[f"{k}_std"] = s["mean"], s["std"]
        row["runs"] = runs
        out.append(row)
    return out


def results_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    variants = load_variants()
    frames = sorted({r["frames"] for r in rows})
    t_main = main_frames(frames)
    table1 = [[variants[r["variant"]]["label"], *(pct_spread(r, k) for k in ("precision", "recall", "f1"))]
              for r in rows if r["frames"] == t_main]
    by_variant = {
        v: {r["frames"]: r for r in rows if r["variant"] == v} for v in dict.fromkeys(r["variant"] for r in rows)
    }
    table3 = [[variants[v]["label"], *(pct_spread(cells[T], "f1") if T in cells else "" for T in frames)]
              for v, cells in by_variant.items()]
    grid = [[r["variant"], r["frames"], *(pct_spread(r, k) for k in ("precision", "recall", "f1", "mA"))] for r in rows]
    return (f"# Ablation on {meta['store']}\n\nRecipe {meta['recipe']}, {meta['epochs']} epochs per run, "
            f"{meta['seeds']} seed(s) (mean ± std over seeds), model `{meta['model']}`; protocol means over the "
            f"{meta['groups']} attribute groups, threshold {meta['threshold']} (present when above), percent. Each "
            f"run's checkpoint is {meta['selection']}.\n\n"
            f"## Table 1 layout: components (T = {t_main})\n\n" +
            markdown_table(["method", "Precision", "Recall", "F1"], table1) +
            "\n## Table 3 layout: F1 by number of frames\n\n" +
            markdown_table(["method", *(f"T = {T}" for T in frames)], table3) +
            "\n## All points\n\n" + markdown_table(["variant", "frames", "Precision", "Recall", "F1", "mA"], grid))


def write_results(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    keys = ["precision", "recall", "f1", "mA", "label_mA"]
    header = ["variant", "frames", "seeds", *keys, *(f"{k}_std" for k in keys)]
    csv_rows = [[r["variant"], r["frames"], r["seeds"], *(pct(r[k]) for k in header[3:])] for r in rows]
    write_json(out / "ablation.json", {"format": ABLATION_FORMAT, "version": ABLATION_VERSION, **meta, "rows": rows})
    write_text(out / "ablation.csv", csv_text(header, csv_rows))
    write_text(out / "ablation.md", results_markdown(rows, meta))
    series = {label: (s.frames, s.f1, s.std) for label, s in f1_against_frames(rows).items()}
    atomic_write(out / "ablation.png", lambda tmp: line_plot(tmp, series, "frames per tracklet (T)", "F1 (%)",
                                                              "VTF-PAR ablation: F1 against frames"))


def run_ablation(store_path: str, out: Path, frames: list[int], variants: list[str], seeds: int, recipe: str | None,
                 base: Mapping[str, Any], on_point: Callable[[int, int, SweepPoint, bool], None] | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 warn: Warn | None = None, loading: Loading | None = None,
                 on_together: Callable[[list[SweepPoint]], None] | None = None) -> list[dict[str, Any]]:
    """Train every point (those that read the same batches side by side: `on_together(points)` before each such
    group, `on_epoch(record)` after each point's epoch), evaluate each, write the results; returns the rows."""
    out = Path(out)
    points = plan_sweep(store_path, out, frames, variants, seeds, recipe, base)
    first = points[0].config
    check_trackers(first.log_to)
    claim_dir(out, ABLATION_KIND)
    with exclusive(out, "ablation"):
        sweep = open_sweep(first.log_to, out, first.experiment, warn) if first.log_to else None
        try:
            resident = _hold_for_sweep(points, loading)
            _train_together(points, on_epoch, sweep.group() if sweep else None, warn, resident, on_together)
            results = []
            for i, p in enumerate(points):
                if on_point:
                    on_point(i, len(points), p, point_metrics(p).exists())
                results.append(evaluate_point(p, warn))
        except BaseException:
            if sweep:
                sweep.close(ok=False)
            raise
        rows = summarise(points, results)
        if sweep:
            sweep.final(sweep_figures(rows), 0)
            sweep.close(ok=True)
        store = TokenStore(store_path)
        write_results(out, rows, {"store": str(store_path), "recipe": points[0].recipe, "epochs": first.epochs,
                                  "seeds": seeds, "model": first.model, "frames": frames, "variants": variants,
                                  "groups": len(store.attrs["groups"]), "threshold": first.threshold,
                                  "selection": "test-selected (the reference's rule)" if first.selection == "test"
                                  else "selected on held-out training persons"})
        store.close()
    return rows
