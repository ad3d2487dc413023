"""Probabilities of a split from the store (the deterministic evaluation frames by default)."""
from __future__ import annotations

import numpy as np
import torch

from ..precision import autocast
from .tokens import EpochBatches, TrackletTokens, tracklet_batches


@torch.no_grad()
def predict_split(model: torch.nn.Module, dataset: TrackletTokens, indices: np.ndarray, workers: int,
                  device: torch.device, amp: torch.dtype | None, batch_size: int = 64) -> np.ndarray:
    """Sigmoid probabilities [n, A] of the tracklets `indices`, in that order."""
    model.eval()
    batches = EpochBatches(indices, batch_size, 0, shuffle=False)
    loader = tracklet_batches(dataset, batches, workers, device.type == "cuda")
    out = []
    for x, _, _ in loader:
        with autocast(device, amp):
            logits = model(x.to(device, non_blocking=True))
        out.append(torch.sigmoid(logits.float()))  # on the device: one copy to the host at the end, no sync a batch
    if not out:
        return np.zeros((0, len(dataset.store.attribute_names)), np.float32)
    return torch.cat(out).cpu().numpy()
