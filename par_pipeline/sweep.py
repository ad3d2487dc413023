"""The ablation sweep's definitions: its variants (data_manifests/ablation/variants.json) and the frame count its
Table 1 view shows; read by `par ablation` and by the report pages."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .resources import load_json


def load_variants(name_or_path: str = "variants") -> dict[str, dict[str, Any]]:
    return load_json("ablation", name_or_path)


def main_frames(frames: list[int]) -> int:
    """The T of the Table 1 view: the paper's 6 when the sweep has it, else the largest."""
    return 6 if 6 in frames else frames[-1]


@dataclass
class F1Series:
    """One variant's F1 (%) against T, with the spread over seeds as error bars (None for one seed)."""
    frames: list[int]
    f1: list[float]
    std: list[float] | None


def f1_against_frames(rows: list[dict[str, Any]]) -> dict[str, F1Series]:
    """The F1-against-frames chart of an ablation's rows, per variant label in the rows' order: ablation.png and the
    report page draw this same data."""
    labels = {k: v["label"] for k, v in load_variants().items()}
    out = {}
    for v in dict.fromkeys(r["variant"] for r in rows):
        pts = sorted((r for r in rows if r["variant"] == v), key=lambda r: r["frames"])
        several = all(p["seeds"] > 1 for p in pts)
        out[labels.get(v, v)] = F1Series([p["frames"] for p in pts], [100 * p["f1"] for p in pts],
                                         [100 * p["f1_std"] for p in pts] if several else None)
    return out
