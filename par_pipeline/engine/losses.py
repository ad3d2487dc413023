"""The training loss of the reference (loss/CE_loss.py: CEL_Sigmoid with ratio2weight)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attribute_loss(logits: torch.Tensor, labels: torch.Tensor, pos_rate: torch.Tensor | None) -> torch.Tensor:
    """BCE-with-logits summed over attributes and divided by the batch size.

    With `pos_rate` (r_j, the training positive fraction of attribute j) each element is weighted
    exp(1 - r_j) where the label is 1 and exp(r_j) where it is 0; without it, plain BCE.
    """
    weight = None
    if pos_rate is not None:
        weight = torch.where(labels > 0.5, torch.exp(1 - pos_rate), torch.exp(pos_rate))
    return F.binary_cross_entropy_with_logits(logits, labels, weight=weight, reduction="sum") / logits.shape[0]
