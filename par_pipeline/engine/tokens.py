"""Stage-two inputs from the store: T frames per tracklet, combined over time in float32.

Training draws T frames at random each time a tracklet is loaded (without replacement; with replacement when
it has fewer than T), and, when the store holds several views of the training frames, one view per drawn frame
(`data.sampling.keyed_draws`: nested prefixes of one permutation, so a sweep's frame counts share one read).
The draw depends only on (seed, epoch, tracklet), so neither worker count, rank nor resumption changes it.
Evaluation takes T evenly spaced frames (positions round(linspace(0, n-1, T)) of the tracklet's n valid
frames), or with `sampling="random"` the same keyed draw keyed by (seed, tracklet), as the reference's test loader
draws at random.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..data.sampling import evenly_spaced, keyed_draws
from ..errors import ParError
from ..store.reader import TokenStore
from ..workers import stop_with_parent
from .resident import ResidentRows

EVAL = -1  # the epoch of evaluation keys


class TrackletTokens(Dataset):
    """Key (tracklet index, epoch) -> (tokens, labels [A] float32, index): tokens are the mean of the T picked frames
    [N, D], or the frames themselves [T, N, D] with keep_frames (temporal models). epoch EVAL picks evaluation
    frames. The store is opened lazily in each worker.

    Loaders fetch whole batches (`__getitems__`): each batch's rows are first announced to the kernel (readahead,
    so a cold disk serves them together), then read straight into a reused buffer, decoded and combined in
    float32, and cast into the batch, which a worker allocates in shared memory (no collate copy)."""

    def __init__(self, store_path: str, frames: int, seed: int = 0, out_dtype: torch.dtype = torch.float32,
                 keep_frames: bool = False, use_views: bool = False, sampling: str = "fixed", readahead: bool = True):
        # out_dtype: bf16/fp16 when the model runs under that autocast anyway (its first Linear would round the
        # input the same way), which halves the bytes moved to the GPU; the mean is taken in float32.
        if frames < 1:
            raise ParError(f"frames per tracklet must be at least 1, got {frames}")
        if sampling not in ("fixed", "random"):
            raise ParError(f"evaluation sampling must be fixed or random, not '{sampling}'")
        self.store_path, self.frames, self.seed, self.out_dtype = store_path, frames, seed, out_dtype
        self.keep_frames, self.use_views, self.sampling, self.readahead = keep_frames, use_views, sampling, readahead
        self.resident: ResidentRows | None = None  # --cache ram/device: batches from memory (engine.resident)
        self._store: TokenStore | None = None
        self._scratch: dict[str, Any] | None = None

    @property
    def store(self) -> TokenStore:
        if self._store is None:
            self._store = TokenStore(self.store_path)
        return self._store

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "_scratch": None}

    def __len__(self) -> int:
        return len(self.store)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        s = self.store
        return (self.frames, s.num_tokens, s.dim) if self.keep_frames else (s.num_tokens, s.dim)

    def batch_rows(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        """[B, T] store rows of the T frames (and views) each of these tracklets contributes under this key: a few
        array operations for the whole batch (`data.sampling`), no per-tracklet Python."""
        store = self.store
        indices = np.asarray(indices, dtype=np.int64)
        counts = store.valid_counts(indices)
        if not counts.all():
            raise ParError(f"{self.store_path}: tracklet {store.tracklets[indices[counts == 0][0]]} has no readable "
                           f"frames (all were skipped at extraction); fix or replace its frames and extract again")
        if epoch >= 0 or self.sampling == "random":
            views = store.views[indices] if self.use_views and epoch >= 0 else 1
            picks, view = keyed_draws(counts, self.frames, views, self.seed, epoch, indices)
            return store.rows_of_picks(indices, picks, view)
        return store.rows_of_picks(indices, evenly_spaced(counts, self.frames))

    def picked_rows(self, i: int, epoch: int) -> np.ndarray:
        """Store rows of the T frames (and views) tracklet i contributes under this key."""
        return self.batch_rows(np.array([i]), epoch)[0]

    def possible_rows(self, indices: np.ndarray, training: bool) -> np.ndarray:
        """Every store row these tracklets can contribute: in training any valid frame and (with use_views) any view;
        in evaluation their fixed frames, or any valid frame's first view with random sampling."""
        if not training and self.sampling == "fixed":
            return self.batch_rows(indices, EVAL).reshape(-1)
        return self.store.valid_rows(indices, all_views=training and self.use_views)

    def _buffers(self) -> dict[str, Any]:
        if self._scratch is None:
            s = self.store
            self._scratch = {
                "raw": np.empty((self.frames, s.num_tokens, s.dim), dtype=s.codec.numpy_dtype),
                "scales": np.empty((self.frames, s.num_tokens), dtype=np.float32) if s.codec.scaled else None,
                "float": torch.empty(self.frames, s.num_tokens, s.dim, dtype=torch.float32),
                "acc": torch.empty(s.num_tokens, s.dim, dtype=torch.float32),
            }
        return self._scratch

    def tokens_into(self, rows: np.ndarray, out: torch.Tensor, source: Any = None) -> None:
        """out = the rows' tokens in float32, their mean [N, D] or all of them [T, N, D], cast to out's dtype; read
        from the store, or from `source` (rows already read: `RowBlock`)."""
        b = self._buffers()
        (source or self.store).read_rows_into(rows, b["raw"], b["scales"])
        raw = torch.from_numpy(b["raw"])
        if b["scales"] is None and not self.keep_frames:
            torch.mean(raw, 0, dtype=torch.float32, out=b["acc"])
            out.copy_(b["acc"])
            return
        frames = b["float"]
        frames.copy_(raw)
        if b["scales"] is not None:
            frames.mul_(torch.from_numpy(b["scales"]).unsqueeze(-1))
        if self.keep_frames:
            out.copy_(frames)
        else:
            torch.mean(frames, 0, out=b["acc"])
            out.copy_(b["acc"])

    @property
    def on_device(self) -> bool:
        """Batches are built on the run's GPU (`--cache device`), not in host memory."""
        return self.resident is not None and self.resident.device.type != "cpu"

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        store = self.store
        indices, epoch = batch_key(keys)
        rows = self.batch_rows(indices, epoch)
        y = torch.from_numpy(store.labels[indices].astype(np.float32))
        index = torch.from_numpy(indices)
        if self.resident is not None:
            return self.resident.batch(rows, self.keep_frames, self.out_dtype), y, index
        x = _batch_tensor((len(keys), *self.sample_shape), self.out_dtype)
        if self.readahead:
            store.prefetch(rows.reshape(-1))
        for b, r in enumerate(rows):
            self.tokens_into(r, x[b])
        return x, y, index

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, y, index = self.__getitems__([key])
        return x[0], y[0], int(index[0])


class RowBlock:
    """Store rows read once (sorted), served to `TrackletTokens.tokens_into` as the store serves them."""

    def __init__(self, store: TokenStore, rows: np.ndarray):
        self.rows = rows
        self.tokens, self.scales = store.read_rows(rows)

    def read_rows_into(self, rows: np.ndarray, tokens: np.ndarray, scales: np.ndarray | None = None) -> None:
        slots = np.searchsorted(self.rows, rows)
        np.take(self.tokens, slots, axis=0, out=tokens)
        if scales is not None:
            np.take(self.scales, slots, axis=0, out=scales)


class TogetherTokens(Dataset):
    """Batches for runs trained side by side (a fused sweep), keyed like `sets` (one dataset per input kind: frames
    T, and whether frames are kept): per tracklet the rows every kind's draw takes (nested prefixes of one draw) are
    read once, their union, and each kind's input is computed from them by its own dataset's code, so each run gets
    exactly the batch it reads alone."""

    def __init__(self, sets: dict[Any, TrackletTokens]):
        self.sets = sets
        self.first = next(iter(sets.values()))

    def __len__(self) -> int:
        return len(self.first)

    @property
    def on_device(self) -> bool:
        return self.first.on_device

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> tuple[dict[Any, torch.Tensor], torch.Tensor,
                                                                     torch.Tensor]:
        store = self.first.store
        indices, epoch = batch_key(keys)
        y = torch.from_numpy(store.labels[indices].astype(np.float32))
        index = torch.from_numpy(indices)
        rows = {k: s.batch_rows(indices, epoch) for k, s in self.sets.items()}
        if self.first.resident is not None:
            return ({k: self.first.resident.batch(rows[k], s.keep_frames, s.out_dtype)
                     for k, s in self.sets.items()}, y, index)
        xs = {k: _batch_tensor((len(keys), *s.sample_shape), s.out_dtype) for k, s in self.sets.items()}
        if self.first.readahead:
            store.prefetch(np.concatenate([r.reshape(-1) for r in rows.values()]))
        for b in range(len(keys)):
            block = RowBlock(store, np.unique(np.concatenate([rows[k][b] for k in self.sets])))
            for k, s in self.sets.items():
                s.tokens_into(rows[k][b], xs[k][b], block)
        return xs, y, index


def batch_key(keys: Sequence[tuple[int, int]]) -> tuple[np.ndarray, int]:
    """The tracklets of a batch of (tracklet, epoch) keys, and their epoch (one per batch: `EpochBatches`)."""
    indices = np.fromiter((i for i, _ in keys), dtype=np.int64, count=len(keys))
    epochs = {epoch for _, epoch in keys} or {EVAL}
    if len(epochs) != 1:
        raise ValueError(f"a batch mixes epochs {sorted(epochs)}")
    return indices, epochs.pop()


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty batch tensor; in a loader worker it is allocated in shared memory, as torch's default_collate does,
    so handing it to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device=elem.device)
    return elem.new(storage).resize_(*shape)


def _whole_batch(batch: Any) -> Any:
    """collate_fn for datasets that build whole batches themselves (`__getitems__`)."""
    return batch


def tracklet_batches(dataset: TrackletTokens | TogetherTokens, batches: Sampler, workers: int, pin_memory: bool,
                     persistent: bool = False) -> DataLoader:
    """The one DataLoader over stored tokens (training and evaluation): workers build whole batches."""
    # its own generator: iterating a loader then draws nothing from the global RNG, which is the model's alone
    # (initialisation, DropPath), so runs trained side by side (a fused sweep) draw as each would alone
    return DataLoader(dataset, batch_sampler=batches, collate_fn=_whole_batch, num_workers=workers,
                      generator=torch.Generator().manual_seed(0),
                      pin_memory=pin_memory and not dataset.on_device, persistent_workers=persistent and workers > 0,
                      prefetch_factor=4 if workers > 0 else None, worker_init_fn=stop_with_parent())


class EpochBatches(Sampler):
    """Batches of (tracklet, epoch) keys. Training: a permutation keyed by (seed, epoch), a final batch too small for
    BatchNorm dropped; this rank keeps every world-th item of each global batch. Evaluation: in order, epoch EVAL."""

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, shuffle: bool, rank: int = 0,
                 world: int = 1):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size, self.seed, self.shuffle, self.rank, self.world = batch_size, seed, shuffle, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        order = rng.permutation(self.indices) if self.shuffle else self.indices
        batches = [order[b:b + self.batch_size] for b in range(0, len(order), self.batch_size)]
        if self.shuffle and batches and len(batches[-1]) < max(2, self.world):
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        tag = self.epoch if self.shuffle else EVAL
        for batch in self.global_batches():
            yield [(int(i), tag) for i in batch[self.rank::self.world]]

    def __len__(self) -> int:
        return len(self.global_batches())


def default_workers(requested: int | None, device: torch.device) -> int:
    """`--workers`, or by default: on a GPU the CPUs this rank may use, less two (the training loop and the pin-memory
    thread), at most 16; on a CPU of up to 4 cores none (the model's own threads already use every core; in-process
    loading measured as fast as 2 workers on 2 cores and spares the processes), else 2."""
    if requested is not None:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    per_rank = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type != "cuda":
        return 0 if per_rank <= 4 else 2
    return max(1, min(16, per_rank - 2))
