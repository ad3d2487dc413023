"""Which frames of a tracklet are used: the one frame-choice rule of extraction (`--max-frames-per-tracklet`),
training, evaluation and prediction."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def sample_frames(n: int, t: int, rng: np.random.Generator | None) -> np.ndarray:
    """Positions of T frames among n: random (rng given; without replacement, with it when n < T) or evenly spaced
    (rng None: round(linspace(0, n-1, T)))."""
    if n <= 0:
        raise ValueError("a tracklet with no valid frames cannot be sampled")
    if rng is None:
        return np.linspace(0, n - 1, t).round().astype(np.int64)
    return np.sort(rng.choice(n, size=t, replace=n < t))


def training_draw(n: int, t: int, views: int, key: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions (sorted) of T training frames among n, and the stored view of each, drawn as nested prefixes: one
    seeded permutation of the n frames per key (seed, epoch, tracklet) whose first T positions are T's frames
    (uniform, without replacement, as the reference), so the draw for T = 6 holds those for T = 1, 2 and 4 and one
    read serves every T of a sweep. A tracklet with fewer than T frames takes the reference's draw with replacement,
    keyed by T as well. Each frame position gets one view per key, so a frame carries the same view for every T."""
    rng = np.random.default_rng(list(key))
    order = rng.permutation(n)
    view_of = rng.integers(views, size=n) if views > 1 else np.zeros(n, dtype=np.int64)
    picked = order[:t] if n >= t else np.random.default_rng([*key, t]).choice(n, size=t, replace=True)
    picked = np.sort(picked)
    return picked, view_of[picked]
