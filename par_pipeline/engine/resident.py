"""Tokens resident in memory (`--cache ram|device|auto`): the rows a run can draw, read from the store once (each
row's checksum verified as it is read), then served without touching the disk.

- `ram`: the rows in host memory as stored (float16/float32, or int8 with its scales); a batch is one gather by
  index, the int8 scaling and the T-mean there, then one copy to the GPU.
- `device`: the same rows and the same code on the run's GPU: no host work per batch but an index array.
  The batched arithmetic is the per-tracklet one of `TrackletTokens.tokens_into`: a run from `ram` (or `device` on a
  CPU run, which is `ram`) ends with the checkpoint of the run from `disk`, bit for bit on a CPU (tested).
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
    """Store rows held as stored (sorted by row) in torch tensors on `device`: host memory for `ram`, the GPU for
    `device`. A batch is built from them by one gather (`batch`)."""

    def __init__(self, store: TokenStore, rows: np.ndarray, device: torch.device,
                 progress: Callable[[int, int], None] | None = None):
        import torch

        self.path = store.path
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        n, shape = len(self.rows), (store.num_tokens, store.dim)
        self.tokens = torch.empty((n, *shape), dtype=store.codec.torch_dtype, device=device)
        self.scales = torch.empty((n, shape[0]), device=device) if store.codec.scaled else None
        host = device.type == "cpu"
        # read a chunk at a time (straight into the tensor in host memory; through one chunk buffer for a GPU, so the
        # host never holds the whole set)
        chunk = None if host else np.empty((LOAD_CHUNK, *shape), dtype=store.codec.numpy_dtype)
        chunk_scales = None if host or self.scales is None else np.empty((LOAD_CHUNK, shape[0]), dtype=np.float32)
        for start in range(0, n, LOAD_CHUNK):
            end = min(n, start + LOAD_CHUNK)
            if host:
                store.read_rows_into(self.rows[start:end], self.tokens[start:end].numpy(),
                                     None if self.scales is None else self.scales[start:end].numpy())
            else:
                k = end - start
                store.read_rows_into(self.rows[start:end], chunk[:k], None if chunk_scales is None else
                                     chunk_scales[:k])
                self.tokens[start:end].copy_(torch.from_numpy(chunk[:k]))
                if self.scales is not None:
                    self.scales[start:end].copy_(torch.from_numpy(chunk_scales[:k]))
            if progress:
                progress(end, n)

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def slots(self, rows: np.ndarray) -> np.ndarray:
        slots = np.searchsorted(self.rows, rows)
        if (slots >= len(self.rows)).any() or (self.rows[np.minimum(slots, len(self.rows) - 1)] != rows).any():
            raise ParError(f"{self.path}: a row outside the ones held in memory was asked for; use --cache disk "
                           f"and report this")
        return slots

    def batch(self, rows: np.ndarray, keep_frames: bool, dtype: torch.dtype) -> torch.Tensor:
        """A batch from rows [B, T]: one gather, int8 scaled, combined over T in float32 (the arithmetic of
        `TrackletTokens.tokens_into`, batched)."""
        import torch

        b, t = rows.shape
        index = torch.from_numpy(self.slots(rows.reshape(-1))).to(self.device, non_blocking=True)
        x = self.tokens.index_select(0, index).view(b, t, *self.tokens.shape[1:]).float()
        if self.scales is not None:
            x.mul_(self.scales.index_select(0, index).view(b, t, -1, 1))
        return (x if keep_frames else x.mean(1)).to(dtype)


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


def hold(requested: str, store: TokenStore, rows: np.ndarray, device: torch.device,
         loading: Callable[[str, int, int], None] | None = None, note: str = "") -> ResidentRows | None:
    """The --cache decision for `rows` and, for ram/device, the rows loaded; None for disk. `loading(what, done,
    total)` hears the tier and why (with `note` when rows are held), then the rows as they load."""
    import torch

    needed = len(rows) * store.codec.bytes_per_frame(store.num_tokens, store.dim)  # a row as stored: tokens, scales
    tier, why = choose_cache(requested, needed, available_memory(), device_free_memory(device))
    held = tier in ("ram", "device")
    said = f"cache {tier}: {why}" + (note if held else "")
    if loading:
        loading(said, 0, len(rows) if held else 0)
    if not held:
        return None
    return ResidentRows(store, rows, device if tier == "device" else torch.device("cpu"),
                        (lambda done, total: loading(said, done, total)) if loading else None)


def rows_of(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(parts)
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
