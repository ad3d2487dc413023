"""Frames into CLIP-ready uint8 images: the per-row datasets extraction and prediction load through.

A row is one (frame file, view). With the `pil` decoder a loader worker decodes, pads, resizes and applies the
view; with `torchvision` a worker only reads the file's bytes and the main process decodes whole batches on the
extraction device (`decode_rows`). A bad frame (missing, empty, corrupt, truncated) comes back flagged, never
as an exception, so the caller decides between an error naming the file and skipping it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ParError
from .preprocess import Preprocess, View, apply_view, load_frame, prepare_image, prepare_on_device, view_of


class FrameRows(Dataset):
    """Row -> (row, payload, ok, reason). `views[r]`, `tracklet[r]`, `position[r]` say which view of which frame row
    r holds (None: every row is view 0). Payload: uint8 [3, S, S] (pil) or the file's bytes as uint8 [n]
    (torchvision). Consecutive rows of one frame (its views) decode the file once."""

    def __init__(self, paths: Sequence[str], pp: Preprocess, views: np.ndarray | None = None,
                 tracklet: np.ndarray | None = None, position: np.ndarray | None = None, view_seed: int = 0,
                 view_pad: int = 0):
        self.paths, self.pp = paths, pp
        self.views, self.tracklet, self.position = views, tracklet, position
        self.view_seed, self.view_pad = view_seed, view_pad
        self._last: tuple[str, Any, str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def view(self, row: int) -> View:
        if self.views is None or self.views[row] == 0:
            return View()
        return view_of(int(self.views[row]), self.view_seed, int(self.tracklet[row]), int(self.position[row]),
                       self.view_pad)

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor, bool, str]:
        path = self.paths[row]
        if self.pp.decoder == "torchvision":
            try:
                data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
            except OSError as exc:
                return row, torch.zeros(0, dtype=torch.uint8), False, _missing(exc)
            return row, data, data.numel() > 0, "" if data.numel() else "not a readable image (empty file)"
        if self._last is None or self._last[0] != path:
            img, reason = load_frame(path, self.pp)
            self._last = (path, None if img is None else torch.from_numpy(img), reason)
        _, img, reason = self._last
        if img is None:
            return row, torch.zeros(3, self.pp.size, self.pp.size, dtype=torch.uint8), False, reason
        return row, apply_view(img, self.view(row)), True, ""


def _missing(exc: OSError) -> str:
    return "file not found" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc.strerror or exc})"


def collate_rows(batch: list[tuple[int, torch.Tensor, bool, str]]) -> tuple[torch.Tensor, Any, torch.Tensor, list[str]]:
    """(rows, payload, ok, reasons): payload stacked for decoded images, a list of byte tensors otherwise."""
    rows = torch.tensor([b[0] for b in batch], dtype=torch.int64)
    payloads = [b[1] for b in batch]
    payload = torch.stack(payloads) if payloads[0].dim() == 3 else payloads
    return rows, payload, torch.tensor([b[2] for b in batch]), [b[3] for b in batch]


def decode_rows(dataset: Any, rows: torch.Tensor, payload: Any, ok: torch.Tensor, reasons: list[str],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 [B, 3, S, S] on `device` for a loader batch: already decoded (pil), or decoded now on the device
    (torchvision: nvJPEG on CUDA), padded, resized and viewed there. Frames that fail to decode come back zeroed
    with ok False and the reason."""
    if not isinstance(payload, list):
        return payload.to(device, non_blocking=True), ok, reasons
    pp = dataset.pp
    from torchvision.io import ImageReadMode, decode_jpeg

    ok, reasons = ok.clone(), list(reasons)
    good = [i for i in range(len(payload)) if ok[i]]
    decoded: dict[int, torch.Tensor] = {}
    if good:
        try:
            images = decode_jpeg([payload[i] for i in good], mode=ImageReadMode.RGB, device=device)
            decoded = dict(zip(good, images))
        except RuntimeError:  # one bad file fails the batch call: decode one by one to name it
            for i in good:
                try:
                    decoded[i] = decode_jpeg(payload[i], mode=ImageReadMode.RGB, device=device)
                except RuntimeError as exc:
                    ok[i], reasons[i] = False, f"corrupt or truncated image ({str(exc).splitlines()[0]})"
    out = torch.zeros((len(payload), 3, pp.size, pp.size), dtype=torch.uint8, device=device)
    if decoded:
        index = sorted(decoded)
        prepared = prepare_on_device([decoded[i] for i in index], pp)
        views = [dataset.view(int(rows[i])) for i in index]
        plain = [j for j, v in enumerate(views) if v == View()]  # stored as prepared: one copy for all of them
        out[[index[j] for j in plain]] = prepared[plain]
        for j, i in enumerate(index):
            if views[j] != View():
                out[i] = apply_view(prepared[j], views[j])
    return out, ok, reasons


def video_frames(path: Path, pp: Preprocess) -> list[np.ndarray]:
    """Every frame of a video file, prepared as uint8 [3, S, S]."""
    import av

    try:
        with av.open(str(path)) as container:
            frames = [prepare_image(f.to_image(), pp) for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ParError(
            f"{path}: unreadable video ({type(exc).__name__}: {first}); give an mp4/avi of a person crop"
        ) from None
    if not frames:
        raise ParError(f"{path}: the video has no frames; give an mp4/avi of a person crop")
    return frames
