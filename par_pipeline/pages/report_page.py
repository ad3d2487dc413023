"""report.html: runs, evaluations and ablations side by side, per attribute, with the tracklets behind the numbers.

Every figure is computed here from the files `par eval` and `par ablation` wrote (metrics.json, predictions.npz,
ablation.json); nothing is tuned on the split that is scored: a threshold that maximises F1 is shown only when the
run's held-out validation persons were evaluated (`par eval --split val`), and it is applied to the scored split.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..data.manifest import read_manifest
from ..data.schema import schema_from_dict
from ..engine.metrics import (
    best_threshold,
    confusion_matrix,
    group_answers,
    is_positive,
    label_ma,
    threshold_curves,
    tracklet_f1,
)
from ..errors import ParError
from ..reports import accuracy_sentence, pct, pct_spread
from ..run import Reported, read_checkpoint_meta
from .render import PALETTE, Chart, render_page, thumbnail_uri

CURVE_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)  # where the curves are drawn
TUNING_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)  # where a validation-tuned threshold is searched
GALLERY_SIZE = 12  # worst and random tracklets per evaluation
THUMBS_PER_TRACKLET = 6
GALLERY_SEED = 0


def num(value: float, text: str | None = None) -> dict[str, str]:
    """A table cell that sorts by its value: percent text unless given."""
    return {"value": f"{value:.6g}", "text": pct(value) if text is None else text, "title": ""}


@dataclass
class Evaluation:
    """A reported row that has predictions beside it (an evaluation folder)."""
    label: str
    metrics: dict[str, Any]
    folder: Path
    probs: np.ndarray
    labels: np.ndarray
    tracklets: list[str]
    color: str
    validation: tuple[np.ndarray, np.ndarray, Path] | None  # the run's held-out persons: probs, labels, folder


def load_predictions(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    path = folder / "predictions.npz"
    try:
        with np.load(path) as z:
            probs, labels, tracklets = z["probs"], z["labels"], [str(t) for t in z["tracklets"]]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise ParError(f"{path}: missing or damaged; run the `par eval` that wrote {folder} again") from None
    if probs.shape != labels.shape or len(tracklets) != len(probs):
        raise ParError(f"{path}: its arrays disagree in shape; run the `par eval` that wrote {folder} again")
    return probs, labels, tracklets


def validation_of(metrics: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, Path] | None:
    """The same checkpoint's predictions on its run's held-out validation persons with the same frames, when `par
    eval --split val` wrote them (where par eval puts them by default), and the scored split is another one."""
    from ..engine.splits import HELD_OUT_SPLIT
    from ..run import default_eval_dir

    checkpoint = Path(metrics.get("checkpoint", ""))
    if metrics.get("split") == HELD_OUT_SPLIT or not checkpoint.is_file():
        return None
    _, meta = read_checkpoint_meta(checkpoint)
    frames = None if metrics["frames"] == meta["eval_frames"] else metrics["frames"]
    folder = default_eval_dir(str(checkpoint), HELD_OUT_SPLIT, frames, metrics["sampling"], metrics["seed"])
    try:
        val = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    same = {k: val.get(k) for k in ("split", "frames", "sampling", "seed", "attributes")}
    if Path(val.get("checkpoint", "")).resolve() != checkpoint.resolve() or same != {
            "split": HELD_OUT_SPLIT, **{k: metrics[k] for k in ("frames", "sampling", "seed", "attributes")}}:
        return None
    probs, labels, _ = load_predictions(folder)
    return probs, labels, folder


def gather(rows: Sequence[Reported]) -> list[Evaluation]:
    out = []
    for row in rows:
        if row.eval_dir is None:
            continue
        probs, labels, tracklets = load_predictions(row.eval_dir)
        out.append(Evaluation(row.label, row.metrics, row.eval_dir, probs, labels, tracklets,
                              PALETTE[len(out) % len(PALETTE)], validation_of(row.metrics)))
    return out


def summary_rows(rows: Sequence[Reported]) -> list[list[Any]]:
    """A row per reported result, and one for the majority-value baseline an evaluation scored beside it."""
    table = []
    for r in rows:
        m = r.metrics
        scored = [(r.label, m)] + ([(f"{r.label}: majority-value baseline", m["baseline"])] if "baseline" in m else [])
        for label, s in scored:
            mean, std = s["protocol"]["mean"], s["standard"]
            table.append([label, m.get("split", ""), m.get("frames", ""), m["threshold"], m["num_tracklets"],
                          *(num(mean[k]) for k in ("precision", "recall", "f1", "mA", "accuracy")),
                          num(std["label_mA"]), num(std["instance_f1"])])
    return table


def group_table(rows: Sequence[Reported], key: str) -> tuple[list[str], list[list[Any]]]:
    groups = [g["name"] for g in rows[0].metrics["protocol"]["groups"]]
    body = [[g, *(num(r.metrics["protocol"]["groups"][i][key]) for r in rows)] for i, g in enumerate(groups)]
    return ["group", *(r.label for r in rows)], body


def group_details(rows: Sequence[Reported]) -> list[dict[str, Any]]:
    """Every row's per-group P, R, F1, mA and accuracy (the protocol's groups, as groups.md has them)."""
    keys = ("precision", "recall", "f1", "mA", "accuracy")
    return [{"label": r.label, "rows": [[g["name"], g["kind"], *(num(g[k]) for k in keys)]
                                        for g in r.metrics["protocol"]["groups"]]} for r in rows]


def attribute_section(evals: list[Evaluation], attributes: list[str]) -> dict[str, Any]:
    """Per attribute: the table (support, P, R, F1 at the run's threshold, label mA, the validation-tuned threshold
    and the scored split's F1 under it) and the PR and F1-against-threshold charts of every evaluation."""
    tables, charts = [], []
    at_threshold: dict[int, list[dict[str, np.ndarray]]] = {}  # per evaluation, per attribute: P, R, F1 there
    tuned: dict[int, list[tuple[float, float]]] = {}  # per evaluation with held-out persons: threshold, val F1
    for e, ev in enumerate(evals):
        t = ev.metrics["threshold"]
        at_threshold[e] = [threshold_curves(ev.probs[:, j], ev.labels[:, j], np.array([t]))
                           for j in range(len(attributes))]
        if ev.validation is not None:
            tuned[e] = [best_threshold(ev.validation[0][:, j], ev.validation[1][:, j], TUNING_THRESHOLDS)
                        for j in range(len(attributes))]
        gt = ev.labels.astype(bool)
        ma = label_ma(is_positive(ev.probs, t), gt)
        rows = []
        for j, name in enumerate(attributes):
            at = at_threshold[e][j]
            row = [name, num(float(gt[:, j].sum()), str(int(gt[:, j].sum()))),
                   num(at["precision"][0]), num(at["recall"][0]), num(at["f1"][0]), num(float(ma[j]))]
            if e in tuned:
                threshold, val_f1 = tuned[e][j]
                scored = threshold_curves(ev.probs[:, j], ev.labels[:, j], np.array([threshold]))["f1"][0]
                row += [num(threshold, f"{threshold:.2f}"), num(val_f1), num(scored)]
            rows.append(row)
        header = ["attribute", "positives", "precision", "recall", "F1", "label mA"]
        if e in tuned:
            header += ["threshold tuned on val", "val F1 there", f"{ev.metrics['split']} F1 there"]
        tables.append({"label": ev.label, "header": header, "rows": rows, "threshold": t,
                       "validation": str(ev.validation[2]) if ev.validation is not None else None})
    for j, name in enumerate(attributes):
        pr = Chart(f"{name}: precision-recall", "recall", "precision")
        f1 = Chart(f"{name}: F1 against threshold", "threshold", "F1")
        for e, ev in enumerate(evals):
            c = threshold_curves(ev.probs[:, j], ev.labels[:, j], CURVE_THRESHOLDS)
            pr.line(c["recall"], c["precision"], ev.color, ev.label)
            f1.line(c["threshold"], c["f1"], ev.color, ev.label)
            t, at = ev.metrics["threshold"], at_threshold[e][j]
            pr.point(at["recall"][0], at["precision"][0], ev.color, f"{ev.label}: threshold {t}")
            f1.point(t, at["f1"][0], ev.color, f"{ev.label}: threshold {t}, F1 {pct(at['f1'][0])}")
            if e in tuned:
                f1.vertical_rule(tuned[e][j][0], ev.color,
                                 f"{ev.label}: threshold tuned on the validation persons {tuned[e][j][0]:.2f}")
        charts.append({"attribute": name, "pr": pr, "f1": f1})
    return {"tables": tables, "charts": charts}


def confusion_section(evals: list[Evaluation], schema_definition: dict[str, Any]) -> list[dict[str, Any]]:
    schema = schema_from_dict(schema_definition)
    out = []
    for ev in evals:
        matrices = []
        for g in schema.groups:
            if g.is_binary:
                continue
            counts = confusion_matrix(ev.probs, ev.labels, g.start, g.end)
            peak = max(1, int(counts.max()))
            matrices.append({"group": g.name, "names": list(g.value_names), "counts": counts.tolist(),
                             "shade": [[round(0.85 * c / peak, 3) for c in row] for row in counts.tolist()],
                             "total": int(counts.sum()), "correct": int(np.trace(counts))})
        out.append({"label": ev.label, "matrices": matrices})
    return out


class FrameFinder:
    """Where an evaluation's tracklets' frames are on disk: the store's manifest (recorded at extraction, or given
    with --manifest), checked to be the very manifest the store was built from."""

    def __init__(self, metrics: dict[str, Any], manifest: str | None):
        from ..data.manifest import manifest_digest
        from ..engine.tokens import TrackletTokens
        from ..store.reader import TokenStore

        self.problem: str | None = None
        self._records: dict[str, Any] = {}
        try:
            store = TokenStore(metrics["store"])
        except ParError as exc:
            self.problem = f"the store is not readable here ({exc})"
            return
        path = manifest or store.attrs.get("manifest_path")
        if not path:
            self.problem = (f"{metrics['store']} does not record its manifest (made before par 0.2); pass "
                            f"--manifest FILE")
            return
        try:
            man = read_manifest(path)
        except ParError as exc:
            self.problem = f"{exc}; pass --manifest FILE where it is now"
            return
        if manifest_digest(man) != store.attrs.get("manifest_sha256"):
            self.problem = f"{path} is not the manifest {metrics['store']} was built from; pass --manifest FILE"
            return
        self.store, self.manifest = store, man
        self._index = {name: i for i, name in enumerate(store.tracklets)}
        self._records = {r.tracklet: r for r in man.records}
        self._tokens = TrackletTokens(metrics["store"], metrics["frames"], metrics["seed"],
                                      sampling=metrics["sampling"])

    def frames(self, tracklet: str) -> list[Path]:
        """The frames the evaluation used for this tracklet (at most THUMBS_PER_TRACKLET of them, evenly spaced)."""
        i = self._index[tracklet]
        rows = self._tokens.picked_rows(i, -1)
        if len(rows) > THUMBS_PER_TRACKLET:
            rows = rows[np.linspace(0, len(rows) - 1, THUMBS_PER_TRACKLET).round().astype(int)]
        record = self._records[tracklet]
        return [self.manifest.resolve(record.frames[int(k)]) for k in self.store.frame_index[rows]]


def thumbnails(paths: list[Path]) -> tuple[list[str], list[str]]:
    images, missing = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(thumbnail_uri(im))
        except (OSError, ValueError):
            missing.append(str(p))
    return images, missing


def gallery_section(evals: list[Evaluation], schema_definition: dict[str, Any], manifest: str | None
                    ) -> list[dict[str, Any]]:
    """Per evaluation: the worst tracklets by their own F1 and a seeded random sample, with their frames and each
    group's true and predicted answer."""
    schema = schema_from_dict(schema_definition)
    out = []
    for ev in evals:
        t = ev.metrics["threshold"]
        scores = tracklet_f1(ev.probs, ev.labels, t)
        worst = np.argsort(scores, kind="stable")[:GALLERY_SIZE]
        rest = np.setdiff1d(np.arange(len(scores)), worst)
        rng = np.random.default_rng(GALLERY_SEED)
        sample = np.sort(rng.choice(rest, size=min(GALLERY_SIZE, len(rest)), replace=False))
        finder = FrameFinder(ev.metrics, manifest)
        unreachable: list[str] = []

        def card(k: int) -> dict[str, Any]:
            truth = group_answers(ev.labels[k].astype(np.float32), schema.groups, 0.5)
            answer = group_answers(ev.probs[k], schema.groups, t)
            groups = [{"group": g.name, "truth": g.value_names[a[0]], "answer": g.value_names[b[0]], "p": b[1],
                       "wrong": a[0] != b[0]} for g, a, b in zip(schema.groups, truth, answer)]
            images: list[str] = []
            if finder.problem is None:
                images, missing = thumbnails(finder.frames(ev.tracklets[k]))
                unreachable.extend(missing)
            return {"tracklet": ev.tracklets[k], "f1": float(scores[k]), "groups": groups, "images": images,
                    "errors": sum(g["wrong"] for g in groups)}

        cards = {"worst": [card(int(k)) for k in worst], "random": [card(int(k)) for k in sample]}
        note = None
        if finder.problem:
            note = f"Thumbnails are not shown: {finder.problem}."
        elif unreachable:
            note = (f"{len(unreachable)} frame image(s) could not be read (e.g. {unreachable[0]}); the dataset has "
                    f"moved or is not mounted here - pass --manifest FILE where it is now.")
        out.append({"label": ev.label, "cards": cards, "note": note, "tracklets": len(scores)})
    return out


def ablation_section(folder: Path) -> dict[str, Any]:
    """The paper's Table 1 and Table 3 views of an ablation folder, F1 against frames with the seed spread, and the
    per-group F1 of every variant at the main T."""
    from ..sweep import f1_against_frames, load_variants, main_frames

    doc = json.loads((folder / "ablation.json").read_text())
    rows, labels = doc["rows"], {k: v["label"] for k, v in load_variants().items()}
    frames = sorted({r["frames"] for r in rows})
    t_main = main_frames(frames)
    variants = list(dict.fromkeys(r["variant"] for r in rows))

    def cell(r: dict[str, Any], k: str) -> dict[str, str]:
        return {**num(r[k], pct_spread(r, k)), "title": f"{r['seeds']} seed(s)"}

    table1 = [[labels.get(r["variant"], r["variant"]), *(cell(r, k) for k in ("precision", "recall", "f1", "mA"))]
              for r in rows if r["frames"] == t_main]
    by = {(r["variant"], r["frames"]): r for r in rows}
    table3 = [[labels.get(v, v), *(cell(by[v, T], "f1") if (v, T) in by else "" for T in frames)] for v in variants]
    series = f1_against_frames(rows)
    lo = min(y - e for s in series.values() for y, e in zip(s.f1, s.std or [0.0] * len(s.f1)))
    hi = max(y + e for s in series.values() for y, e in zip(s.f1, s.std or [0.0] * len(s.f1)))
    pad = max(1.0, 0.1 * (hi - lo))
    chart = Chart("F1 (%) against frames (mean ± std over seeds)", "frames per tracklet (T)", "F1 (%)", width=420,
                  height=260, left=52, x_range=(min(frames) - 0.5, max(frames) + 0.5), y_range=(lo - pad, hi + pad),
                  x_ticks=frames, y_ticks=list(np.linspace(lo - pad, hi + pad, 5)), y_tick_format="{:.1f}")
    for i, (label, s) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        chart.line(s.frames, s.f1, color, label, s.std)
        for t, y in zip(s.frames, s.f1):
            chart.point(t, y, color, f"{label}, T={t}: F1 {y:.2f}")
    main = [r for r in rows if r["frames"] == t_main]
    groups = list(main[0]["runs"][0]["group_f1"]) if main else []
    per_group = [[g, *(num(float(np.mean([x["group_f1"][g] for x in r["runs"]]))) for r in main)] for g in groups]
    recipe = doc["recipe"]
    # the sweep sets frames and seed per point: the rest is what every point shares
    overrides = ", ".join(f"{k} {v}" for k, v in (recipe.get("overrides") or {}).items() if k not in ("frames", "seed"))
    return {"folder": str(folder), "meta": doc, "t_main": t_main,
            "recipe": recipe["name"] + (f" (overridden: {overrides})" if overrides else ""), "frames": frames,
            "table1": table1, "table3": table3, "chart": chart, "variant_names": [labels.get(v, v) for v in variants],
            "per_group_header": ["group", *(labels.get(r["variant"], r["variant"]) for r in main)],
            "per_group": per_group}


def report_html(rows: Sequence[Reported], ablations: Sequence[Path], manifest: str | None = None) -> str:
    """The whole page (README: report.html)."""
    evals = gather(rows)
    context: dict[str, Any] = {"rows": rows, "evals": evals, "ablations": [ablation_section(a) for a in ablations]}
    if rows:
        context["summary"] = summary_rows(rows)
        context["group_f1"] = group_table(rows, "f1")
        context["group_details"] = group_details(rows)
        context["accuracy_note"] = accuracy_sentence()
        context["without_predictions"] = [r.label for r in rows if r.eval_dir is None]
    if evals:
        first = evals[0].metrics
        attributes = first["attributes"]
        for ev in evals[1:]:
            if ev.metrics["attributes"] != attributes:
                raise ParError(f"{ev.folder}: its attributes differ from {evals[0].folder}'s; report runs of one "
                               f"schema together")
        definition = read_checkpoint_meta(first["checkpoint"])[1]["schema_definition"]
        context["attributes"] = attribute_section(evals, attributes)
        context["confusion"] = confusion_section(evals, definition)
        context["gallery"] = gallery_section(evals, definition, manifest)
    return render_page("report.html.j2", **context)

