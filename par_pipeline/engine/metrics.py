"""The evaluation protocol the paper's numbers were computed with (the reference's tools/function.py), and the
standard image-PAR metrics. The threshold rule is the reference's: an attribute is predicted present when its
probability is strictly above the threshold (0.45 in every recipe)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..data.schema import AttributeSchema

EPS = 1e-20


def is_positive(probs: np.ndarray | float, threshold: float) -> np.ndarray | bool:
    """The one threshold rule: present when the probability is above the threshold (`prob > threshold`)."""
    return probs > threshold


def group_answers(probs: np.ndarray, groups: Sequence[Any], threshold: float) -> list[tuple[int, float]]:
    """Per attribute group (schema order) the answer as a value index and the probability behind it: a binary group
    is 1 when its attribute is present by the threshold rule; a multi-class group takes its most probable value."""
    answers = []
    for g in groups:
        if g.is_binary:
            p = float(probs[g.start])
            answers.append((int(bool(is_positive(p, threshold))), p))
        else:
            k = int(np.argmax(probs[g.start:g.end]))
            answers.append((k, float(probs[g.start + k])))
    return answers


def _label_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, ...]:
    tp = (pred & gt).sum(0).astype(np.float64)
    fp = (pred & ~gt).sum(0).astype(np.float64)
    fn = (~pred & gt).sum(0).astype(np.float64)
    tn = (~pred & ~gt).sum(0).astype(np.float64)
    return tp, fp, fn, tn


def label_ma(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per column (TPR + TNR) / 2."""
    tp, fp, fn, tn = _label_counts(pred, gt)
    return (tp / (tp + fn + EPS) + tn / (tn + fp + EPS)) / 2


def per_sample(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Per sample |pred∧gt| / |pred| (precision), / |gt| (recall), their F1, and / |pred∨gt| (accuracy)."""
    inter = (pred & gt).sum(1).astype(np.float64)
    union = (pred | gt).sum(1).astype(np.float64)
    p = inter / (pred.sum(1) + EPS)
    r = inter / (gt.sum(1) + EPS)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r + EPS), "accuracy": inter / (union + EPS)}


def instance_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The per-sample figures, each averaged over samples."""
    return {k: float(v.mean()) for k, v in per_sample(pred, gt).items()}


def group_metrics(probs: np.ndarray, labels: np.ndarray, boundaries: Sequence[int], names: Sequence[str],
                  threshold: float) -> dict[str, Any]:
    """The paper's protocol: per group P, R, F1, mA, accuracy; reported numbers are the means over groups.

    A one-column group is scored label-level on its positive class; a multi-column group instance-level
    over its columns, with mA the mean of its columns' label mA. F1 is the mean of group F1s.
    """
    pred = is_positive(probs, threshold)
    gt = labels.astype(bool)
    groups = []
    for g in range(len(boundaries) - 1):
        s, e = boundaries[g], boundaries[g + 1]
        name = names[g]
        if e - s == 1:
            tp, fp, fn, tn = (float(c[0]) for c in _label_counts(pred[:, s:e], gt[:, s:e]))
            p, r = tp / (tp + fp + EPS), tp / (tp + fn + EPS)
            m = {
                "precision": p,
                "recall": r,
                "f1": 2 * p * r / (p + r + EPS),
                "accuracy": (tp + tn) / max(1.0, tp + fp + fn + tn),
                "mA": float(label_ma(pred[:, s:e], gt[:, s:e])[0]),
            }
            kind = "binary"
        else:
            m = instance_metrics(pred[:, s:e], gt[:, s:e])
            m["mA"] = float(label_ma(pred[:, s:e], gt[:, s:e]).mean())
            kind = "multiclass"
        groups.append({"name": name, "kind": kind, "columns": [s, e], **{k: float(v) for k, v in m.items()}})
    means = {k: float(np.mean([g[k] for g in groups])) for k in ("precision", "recall", "f1", "mA", "accuracy")}
    return {"groups": groups, "mean": means}


def standard_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Rethinking-of-PAR style: label mA over all columns; instance accuracy/precision/recall/F1 over all columns."""
    pred = is_positive(probs, threshold)
    gt = labels.astype(bool)
    ma = label_ma(pred, gt)
    inst = instance_metrics(pred, gt)
    f1 = 2 * inst["precision"] * inst["recall"] / (inst["precision"] + inst["recall"] + EPS)
    return {"label_mA": float(ma.mean()), "label_mA_per_attribute": [float(x) for x in ma],
            "instance_accuracy": inst["accuracy"], "instance_precision": inst["precision"],
            "instance_recall": inst["recall"], "instance_f1": float(f1)}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's figures as log.jsonl, the ablation table and the experiment trackers carry them: the protocol
    means over groups, label mA, and each group's F1."""
    mean = metrics["protocol"]["mean"]
    return {**{k: mean[k] for k in ("precision", "recall", "f1", "mA")}, "label_mA": metrics["standard"]["label_mA"],
            "group_f1": {g["name"]: g["f1"] for g in metrics["protocol"]["groups"]}}


def evaluate_predictions(probs: np.ndarray, labels: np.ndarray, boundaries: Sequence[int], group_names: Sequence[str],
                         threshold: float) -> dict[str, Any]:
    return {"threshold": threshold, "num_tracklets": int(len(labels)),
            "protocol": group_metrics(probs, labels, boundaries, group_names, threshold),
            "standard": standard_metrics(probs, labels, threshold)}


def majority_baseline(train_labels: np.ndarray, test_labels: np.ndarray, boundaries: Sequence[int]) -> np.ndarray:
    """Probabilities that always predict each attribute's training majority (the most frequent value per group)."""
    probs = np.zeros(test_labels.shape, dtype=np.float32)
    for g in range(len(boundaries) - 1):
        s, e = boundaries[g], boundaries[g + 1]
        freq = train_labels[:, s:e].mean(0)
        if e - s == 1:
            probs[:, s] = 1.0 if freq[0] >= 0.5 else 0.0
        else:
            probs[:, s + int(np.argmax(freq))] = 1.0
    return probs


def threshold_curves(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """One attribute column at each threshold, by the threshold rule: precision, recall and F1 (precision is 1 where
    nothing is predicted, the convention of PR curves)."""
    pred = is_positive(probs[None, :], thresholds[:, None])
    gt = labels.astype(bool)[None, :]
    tp = (pred & gt).sum(1).astype(np.float64)
    predicted, actual = pred.sum(1).astype(np.float64), float(gt.sum())
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 1.0)
    recall = tp / actual if actual else np.zeros_like(tp)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall + EPS), 0.0)
    return {"threshold": thresholds, "precision": precision, "recall": recall, "f1": f1}


def best_threshold(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """The threshold of the highest F1 for one column (the lowest such threshold on a tie) and that F1."""
    f1 = threshold_curves(probs, labels, thresholds)["f1"]
    k = int(np.argmax(f1))
    return float(thresholds[k]), float(f1[k])


def tracklet_f1(probs: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Each tracklet's instance F1 over all attribute columns (the standard metric's per-sample term)."""
    return per_sample(is_positive(probs, threshold), labels.astype(bool))["f1"]


def confusion_matrix(probs: np.ndarray, labels: np.ndarray, start: int, end: int) -> np.ndarray:
    """A multi-class group's counts [true value, answered value]: the answer is the most probable value (as
    group_answers), the truth the labelled one; tracklets without a labelled value are left out."""
    truth = labels[:, start:end]
    has = truth.sum(1) > 0
    k = end - start
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (truth[has].argmax(1), probs[has, start:end].argmax(1)), 1)
    return counts


def describe(probs: np.ndarray, schema: AttributeSchema, threshold: float) -> tuple[dict[str, str], dict[str, float]]:
    """Per group the answer's name and the probability behind it (`engine.metrics.group_answers`)."""
    answers = group_answers(probs, schema.groups, threshold)
    return ({g.name: g.value_names[k] for g, (k, _) in zip(schema.groups, answers)},
            {g.name: p for g, (_, p) in zip(schema.groups, answers)})
