"""Tokens resident in memory (`--cache ram|device|auto`): the rows a run can draw, read from the store once (each
row's checksum verified as it is read), then served without touching the disk.

- `ram`: the rows in host memory as stored (float16/float32, or int8 with its scales); each batch is built by the
  same code as from the store (`TrackletTokens.tokens_into`), so a run trained from `ram` ends with the checkpoint
  of the run trained from `disk`, bit for bit on a CPU.
- `device`: the rows as a tensor on the run's device (the GPU); a batch is one gather by index, the int8 scaling
  and the T-mean on the device: no host work but an index array. On a CPU run the tensor is in host memory and the
  same code runs, which is how it is tested.
- `auto`: `device` on a GPU when the rows fit its free memory with the margin, else `ram` when they fit the host's,
  else `disk`; it says which and why.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from ..errors import ParError

if TYPE_CHECKING:  # config.py names the tiers: this module stays light to import
    import torch

    from ..store.reader import TokenStore

CACHE_TIERS = ("disk", "ram", "device", "auto")
MEMORY_MARGIN = 0.2  # a tier is chosen by `auto` only while a fifth of that memory stays free
LOAD_CHUNK = 256  # rows per read while loading: large reads, and a progress step


class ResidentRows:
    """Store rows held in memory as stored, sorted by row; with `device`, as torch tensors there."""

    def __init__(self, store: TokenStore, rows: np.ndarray, progress: Callable[[int, int], None] | None = None,
                 device: torch.device | None = None):
        import torch

        self.path = store.path
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        n, shape = len(self.rows), (store.num_tokens, store.dim)
        self.tokens = np.empty((n, *shape), dtype=store.codec.numpy_dtype)
        self.scales = np.empty((n, shape[0]), dtype=np.float32) if store.codec.scaled else None
        self.device = device
        on_device = device is not None and device.type != "cpu"
        chunk_tokens, chunk_scales = self.tokens, self.scales
        if on_device:  # loaded a chunk at a time through host memory: the host never holds the whole set
            self.tokens_t = torch.empty((n, *shape), dtype=torch.from_numpy(self.tokens[:0]).dtype, device=device)
            self.scales_t = None if self.scales is None else torch.empty((n, shape[0]), device=device)
            chunk_tokens = np.empty((LOAD_CHUNK, *shape), dtype=store.codec.numpy_dtype)
            chunk_scales = None if self.scales is None else np.empty((LOAD_CHUNK, shape[0]), dtype=np.float32)
            self.tokens = self.scales = None
        for start in range(0, n, LOAD_CHUNK):
            end = min(n, start + LOAD_CHUNK)
            at = slice(0, end - start) if on_device else slice(start, end)
            store.read_rows_into(self.rows[start:end], chunk_tokens[at], None if chunk_scales is None else
                                 chunk_scales[at])
            if on_device:
                self.tokens_t[start:end].copy_(torch.from_numpy(chunk_tokens[at]))
                if self.scales_t is not None:
                    self.scales_t[start:end].copy_(torch.from_numpy(chunk_scales[at]))
            if progress:
                progress(end, n)
        if device is not None and not on_device:
            self.tokens_t = torch.from_numpy(self.tokens)
            self.scales_t = None if self.scales is None else torch.from_numpy(self.scales)

    def slots(self, rows: np.ndarray) -> np.ndarray:
        slots = np.searchsorted(self.rows, rows)
        if (slots >= len(self.rows)).any() or (self.rows[np.minimum(slots, len(self.rows) - 1)] != rows).any():
            raise ParError(f"{self.path}: a row outside the ones held in memory was asked for; use --cache disk "
                           f"and report this")
        return slots

    def read_rows_into(self, rows: np.ndarray, tokens: np.ndarray, scales: np.ndarray | None = None) -> None:
        """As `TokenStore.read_rows_into`, from host memory (`ram`)."""
        slots = self.slots(rows)
        np.take(self.tokens, slots, axis=0, out=tokens)
        if scales is not None:
            np.take(self.scales, slots, axis=0, out=scales)

    def batch(self, rows: np.ndarray, keep_frames: bool, dtype: torch.dtype) -> torch.Tensor:
        """A batch from rows [B, T] on the device (`device`): one gather, int8 scaled, combined over T in float32."""
        import torch

        b, t = rows.shape
        index = torch.from_numpy(self.slots(rows.reshape(-1))).to(self.tokens_t.device, non_blocking=True)
        x = self.tokens_t.index_select(0, index).view(b, t, *self.tokens_t.shape[1:]).float()
        if self.scales_t is not None:
            x.mul_(self.scales_t.index_select(0, index).view(b, t, -1, 1))
        return (x if keep_frames else x.mean(1)).to(dtype)


def row_bytes(store: TokenStore) -> int:
    """Bytes one resident row takes (its tokens, and int8's per-token scales)."""
    return store.num_tokens * store.dim * np.dtype(store.codec.numpy_dtype).itemsize + \
        (store.num_tokens * 4 if store.codec.scaled else 0)


def available_memory() -> int:
    """Host memory the kernel could give now without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_free_memory(device: torch.device) -> int | None:
    """Free memory of a CUDA device (None for a CPU run)."""
    if device.type != "cuda":
        return None
    import torch

    return torch.cuda.mem_get_info(device)[0]


def choose_cache(requested: str, needed: int, host: int, device: int | None) -> tuple[str, str]:
    """(tier, why) for `needed` bytes of rows, `host` bytes of available host memory and `device` bytes free on the
    run's GPU (None: a CPU run). An explicit tier that cannot hold the rows at all is refused in one line before
    anything is loaded; `auto` keeps the margin free, never an out-of-memory crash."""
    def sizes(free: int, where: str) -> str:
        return f"{needed / 1e9:.2f} GB of rows, {free / 1e9:.2f} GB {where}"

    if requested == "disk":
        return "disk", "asked for"
    if requested in ("ram", "device"):
        free, where = (device, "free on the GPU") if requested == "device" and device is not None else \
            (host, "of host memory available")
        if needed > free:
            raise ParError(f"--cache {requested} needs {sizes(free, where)}; use --cache auto (or disk)")
        return requested, f"asked for ({sizes(free, where)})"
    if device is not None and needed <= (1 - MEMORY_MARGIN) * device:
        return "device", f"auto: {sizes(device, 'free on the GPU')}, a {MEMORY_MARGIN:.0%} margin kept"
    if needed <= (1 - MEMORY_MARGIN) * host:
        return "ram", f"auto: {sizes(host, 'of host memory available')}, a {MEMORY_MARGIN:.0%} margin kept" + \
            ("" if device is None else "; too many for the GPU")
    return "disk", f"auto: {sizes(host, 'of host memory available')} do not fit with a {MEMORY_MARGIN:.0%} margin"


def rows_of(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(parts)
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
