"""Stage-two inputs from the store: T frames per tracklet, averaged over time in float32.

Training draws T frames at random each time a tracklet is loaded (without replacement; with
replacement when it has fewer than T). The draw is keyed by (seed, epoch, tracklet), so it does
not depend on worker count, rank or resumption. Evaluation takes T evenly spaced frames:
positions round(linspace(0, n-1, T)) of the tracklet's n valid frames.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .store import TokenStore


def sample_frames(n: int, t: int, rng: np.random.Generator | None) -> np.ndarray:
    """Positions of T frames among n: random (rng given) or evenly spaced (rng None)."""
    if n <= 0:
        raise ValueError("a tracklet with no valid frames cannot be sampled")
    if rng is None:
        return np.linspace(0, n - 1, t).round().astype(np.int64)
    return np.sort(rng.choice(n, size=t, replace=n < t))


class TrackletTokens(Dataset):
    """Item (tracklet index, epoch) -> (mean tokens [N, D] float32, labels [A] float32, index).

    epoch < 0 selects the deterministic evaluation frames. The store is opened lazily in each worker.
    """

    def __init__(self, store_path: str, frames: int, seed: int = 0, out_dtype: torch.dtype = torch.float32):
        # out_dtype: bf16/fp16 when the model runs under that autocast anyway (its first Linear would round
        # the input the same way), which halves the bytes moved to the GPU; the mean is taken in float32.
        self.store_path, self.frames, self.seed, self.out_dtype = store_path, frames, seed, out_dtype
        self._store: TokenStore | None = None

    @property
    def store(self) -> TokenStore:
        if self._store is None:
            self._store = TokenStore(self.store_path)
        return self._store

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None}

    def __len__(self) -> int:
        return len(self.store)

    def mean_tokens(self, i: int, epoch: int) -> torch.Tensor:
        """Mean of the tracklet's T chosen frames in float32 [N, D] (torch: several times faster than numpy's float16 path)."""
        rows = self.store.valid_rows(i)
        rng = np.random.default_rng([self.seed, epoch, i]) if epoch >= 0 else None
        picked = rows[sample_frames(len(rows), self.frames, rng)]
        return torch.from_numpy(self.store.read_rows(picked)).float().mean(0)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        i, epoch = key
        x = self.mean_tokens(i, epoch).to(self.out_dtype)
        y = torch.from_numpy(self.store.labels[i].astype(np.float32))
        return x, y, i


class EpochBatches(Sampler):
    """Batches of (tracklet, epoch) keys. Training: a permutation keyed by (seed, epoch), final batch of one dropped
    (BatchNorm needs two); this rank keeps every world-th item of each global batch."""

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size, self.seed, self.shuffle, self.rank, self.world = batch_size, seed, shuffle, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.indices) if self.shuffle else self.indices
        batches = [order[b:b + self.batch_size] for b in range(0, len(order), self.batch_size)]
        if self.shuffle and batches and len(batches[-1]) < max(2, self.world):
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        tag = self.epoch if self.shuffle else -1
        for batch in self.global_batches():
            yield [(int(i), tag) for i in batch[self.rank::self.world]]

    def __len__(self) -> int:
        return len(self.global_batches())
