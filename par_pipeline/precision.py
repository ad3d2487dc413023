"""The one precision vocabulary: fp32, fp16, bf16, and `auto` (bf16 on a GPU, fp32 on a CPU) where training allows it."""
from __future__ import annotations

import torch

from .errors import ParError

AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision on a device (None: full float32)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in AUTOCAST:
        raise ParError(f"precision must be one of {['auto', *AUTOCAST]}, not '{precision}'")
    return AUTOCAST[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
