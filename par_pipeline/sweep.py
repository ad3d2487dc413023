"""The ablation sweep's definitions: its variants (data_manifests/ablation/variants.json) and the frame count its
Table 1 view shows; read by `par ablation` and by the report pages."""
from __future__ import annotations

from typing import Any

from .resources import load_json


def load_variants(name_or_path: str = "variants") -> dict[str, dict[str, Any]]:
    return load_json("ablation", name_or_path)


def main_frames(frames: list[int]) -> int:
    """The T of the Table 1 view: the paper's 6 when the sweep has it, else the largest."""
    return 6 if 6 in frames else frames[-1]
