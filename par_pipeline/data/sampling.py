"""Which frames of a tracklet are used: the one frame-choice rule of extraction (`--max-frames-per-tracklet`),
training, evaluation and prediction.

Random draws are keyed, not sequential: each (seed, epoch, tracklet) has its own uniform keys (a counter-based hash,
`keyed_uniform`), so a tracklet's frames do not depend on which batch, worker, rank or resumed run asks, and a whole
batch is drawn in a few array operations (no per-tracklet Python: on a GPU the host must keep ahead of the model).
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
KEY_BITS = 48  # of a frame's key in the sort; the 16 above them number the batch's tracklets
MAX_BATCH = 1 << (64 - KEY_BITS)
VIEW_STREAM, REPLACE_STREAM = 1, 2  # keys of a frame's view, and of a short tracklet's draw with replacement


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    return x ^ (x >> _S31)


def keyed_uniform(*parts: int | np.ndarray) -> np.ndarray:
    """64-bit keys, uniform and independent across distinct integer tuples (broadcast arrays): SplitMix64 chained
    over the parts. The same tuple gives the same key on every machine."""
    with np.errstate(over="ignore"):
        key = np.zeros((), dtype=np.uint64)
        for part in parts:
            part = np.asarray(part)
            key = _splitmix64(key ^ (part if part.dtype == np.uint64 else part.astype(np.int64).astype(np.uint64)))
    return np.asarray(key)


def evenly_spaced(counts: np.ndarray, t: int) -> np.ndarray:
    """[B, T] positions round(linspace(0, n-1, T)) for each n of `counts` (numpy's linspace arithmetic, batched)."""
    counts = np.asarray(counts, dtype=np.int64)
    if t == 1:
        return np.zeros((len(counts), 1), dtype=np.int64)
    positions = np.arange(t, dtype=np.float64)[None, :] * ((counts - 1) / (t - 1))[:, None]
    positions[:, -1] = counts - 1
    return positions.round().astype(np.int64)


def sample_frames(n: int, t: int, rng: np.random.Generator | None) -> np.ndarray:
    """Positions of T frames among n: random (rng given; without replacement, with it when n < T) or evenly spaced
    (rng None: round(linspace(0, n-1, T)))."""
    if n <= 0:
        raise ValueError("a tracklet with no valid frames cannot be sampled")
    if rng is None:
        return evenly_spaced(np.array([n]), t)[0]
    return np.sort(rng.choice(n, size=t, replace=n < t))


def keyed_draws(counts: np.ndarray, t: int, views: np.ndarray | int, seed: int, epoch: int,
                tracklets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B, T] positions (sorted per tracklet) of T frames among each tracklet's counts[b] frames, and the view of
    each: the random draw of training (and of `--eval-sampling random`), keyed by (seed, epoch, tracklet).

    Each frame gets a uniform key; a tracklet's T frames are the T with the smallest keys, i.e. the first T of one
    seeded permutation (uniform, without replacement, as the reference), so the draw for T = 6 holds those for
    T = 1, 2 and 4 and one read serves every T of a sweep. A tracklet with fewer than T frames takes the reference's
    draw with replacement, keyed by T as well. A frame's view is keyed by the frame, so it is the same for every T."""
    counts = np.asarray(counts, dtype=np.int64)
    tracklets = np.asarray(tracklets, dtype=np.int64)
    views = np.broadcast_to(np.asarray(views, dtype=np.int64), counts.shape)
    if (counts <= 0).any():
        raise ValueError("a tracklet with no valid frames cannot be sampled")
    if len(counts) > MAX_BATCH:
        parts = [keyed_draws(counts[s:s + MAX_BATCH], t, views[s:s + MAX_BATCH], seed, epoch,
                             tracklets[s:s + MAX_BATCH]) for s in range(0, len(counts), MAX_BATCH)]
        return np.concatenate([p for p, _ in parts]), np.concatenate([v for _, v in parts])
    base = keyed_uniform(seed, epoch, tracklets)  # [B]
    # every frame of the batch, tracklet after tracklet: its tracklet's row b and its position j
    starts = np.cumsum(counts) - counts
    row = np.repeat(np.arange(len(counts)), counts)
    position = np.arange(int(counts.sum())) - np.repeat(starts, counts)
    # one sort orders every tracklet's frames by key: the batch row in the high 16 bits, the top 48 bits of its
    # frames' keys below (a stable sort of one integer array is several times faster than lexsort on two; equal
    # 48-bit keys, about n^2 / 2^49 likely in a tracklet of n frames, keep position order, whatever the batch)
    keys = keyed_uniform(base[row], position) >> np.uint64(64 - KEY_BITS)
    order = np.argsort((row.astype(np.uint64) << np.uint64(KEY_BITS)) | keys, kind="stable")
    short = counts < t
    picked = np.empty((len(counts), t), dtype=np.int64)
    full = np.flatnonzero(~short)
    picked[full] = position[order[starts[full, None] + np.arange(t)]]
    if short.any():
        b = np.flatnonzero(short)
        draw = keyed_uniform(base[b, None], REPLACE_STREAM, t, np.arange(t))
        picked[b] = (draw % counts[b, None].astype(np.uint64)).astype(np.int64)
    picked.sort(axis=1)
    view = (keyed_uniform(base[:, None], VIEW_STREAM, picked) % views[:, None].astype(np.uint64)).astype(np.int64)
    return picked, view
