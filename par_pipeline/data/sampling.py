"""Which frames of a tracklet are used: the one frame-choice rule of extraction (`--max-frames-per-tracklet`),
training, evaluation and prediction."""
from __future__ import annotations

import numpy as np


def sample_frames(n: int, t: int, rng: np.random.Generator | None) -> np.ndarray:
    """Positions of T frames among n: random (rng given; without replacement, with it when n < T) or evenly spaced
    (rng None: round(linspace(0, n-1, T)))."""
    if n <= 0:
        raise ValueError("a tracklet with no valid frames cannot be sampled")
    if rng is None:
        return np.linspace(0, n - 1, t).round().astype(np.int64)
    return np.sort(rng.choice(n, size=t, replace=n < t))
