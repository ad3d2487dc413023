"""Stage-two inputs from the store: T frames per tracklet, averaged over time in float32.

Training draws T frames at random each time a tracklet is loaded (without replacement; with
replacement when it has fewer than T). The draw is keyed by (seed, epoch, tracklet), so it does
not depend on worker count, rank or resumption. Evaluation takes T evenly spaced frames:
positions round(linspace(0, n-1, T)) of the tracklet's n valid frames.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .store import TokenStore


def sample_frames(n: int, t: int, rng: np.random.Generator | None) -> np.ndarray:
    """Positions of T frames among n: random (rng given) or evenly spaced (rng None)."""
    if n <= 0:
        raise ValueError("a tracklet with no valid frames cannot be sampled")
    if rng is None:
        return np.linspace(0, n - 1, t).round().astype(np.int64)
    return np.sort(rng.choice(n, size=t, replace=n < t))


class TrackletTokens(Dataset):
    """Key (tracklet index, epoch) -> (mean tokens [N, D], labels [A] float32, index); epoch < 0 selects the
    deterministic evaluation frames. The store is opened lazily in each worker.

    Loaders fetch whole batches (`__getitems__`, see `tracklet_batches`): each frame is read straight into
    a reused buffer, averaged in float32 into a reused accumulator, and cast into its row of the batch,
    which a worker allocates in shared memory; so a sample costs no allocations and no collate copy.
    """

    def __init__(self, store_path: str, frames: int, seed: int = 0, out_dtype: torch.dtype = torch.float32):
        # out_dtype: bf16/fp16 when the model runs under that autocast anyway (its first Linear would round
        # the input the same way), which halves the bytes moved to the GPU; the mean is taken in float32.
        self.store_path, self.frames, self.seed, self.out_dtype = store_path, frames, seed, out_dtype
        self._store: TokenStore | None = None
        self._scratch: tuple[np.ndarray, torch.Tensor] | None = None

    @property
    def store(self) -> TokenStore:
        if self._store is None:
            self._store = TokenStore(self.store_path)
        return self._store

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "_scratch": None}

    def __len__(self) -> int:
        return len(self.store)

    def picked_rows(self, i: int, epoch: int) -> np.ndarray:
        """Store rows of the T frames tracklet i contributes at this epoch (epoch < 0: evaluation)."""
        rows = self.store.valid_rows(i)
        rng = np.random.default_rng([self.seed, epoch, i]) if epoch >= 0 else None
        return rows[sample_frames(len(rows), self.frames, rng)]

    def mean_into(self, i: int, epoch: int, out: torch.Tensor) -> None:
        """out [N, D] (any float dtype) = mean of the tracklet's T chosen frames, taken in float32."""
        if self._scratch is None:
            store = self.store
            self._scratch = (np.empty((self.frames, store.num_tokens, store.dim), dtype=store.tokens.dtype),
                             torch.empty(store.num_tokens, store.dim, dtype=torch.float32))
        frames, acc = self._scratch
        self.store.read_rows_into(self.picked_rows(i, epoch), frames)
        torch.mean(torch.from_numpy(frames), 0, dtype=torch.float32, out=acc)
        out.copy_(acc)

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        store = self.store
        x = _batch_tensor((len(keys), store.num_tokens, store.dim), self.out_dtype)
        index = torch.tensor([i for i, _ in keys], dtype=torch.int64)
        for b, (i, epoch) in enumerate(keys):
            self.mean_into(i, epoch, x[b])
        y = torch.from_numpy(store.labels[index.numpy()].astype(np.float32))
        return x, y, index

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, y, index = self.__getitems__([key])
        return x[0], y[0], int(index[0])


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty batch tensor; in a loader worker it is allocated in shared memory, as torch's default_collate
    does, so handing it to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device=elem.device)
    return elem.new(storage).resize_(*shape)


def _whole_batch(batch: Any) -> Any:
    """collate_fn for datasets that build whole batches themselves (`__getitems__`)."""
    return batch


def tracklet_batches(dataset: TrackletTokens, batches: Sampler, workers: int, pin_memory: bool,
                     persistent: bool = False) -> DataLoader:
    """The one DataLoader over stored tokens (training and evaluation): workers build whole batches."""
    return DataLoader(dataset, batch_sampler=batches, collate_fn=_whole_batch, num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=persistent and workers > 0,
                      prefetch_factor=4 if workers > 0 else None)


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
