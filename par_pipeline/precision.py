"""The one precision vocabulary: fp32, fp16, bf16, and `auto` (bf16 on a GPU, fp32 on a CPU) where training allows
it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ParError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPE_NAMES = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


def autocast_dtype(precision: str, device: "torch.device") -> "torch.dtype | None":
    """The autocast dtype of a precision on a device (None: full float32)."""
    import torch

    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in _DTYPE_NAMES:
        raise ParError(f"precision must be one of {['auto', *PRECISIONS]}, not '{precision}'")
    name = _DTYPE_NAMES[precision]
    return None if name is None else getattr(torch, name)


def autocast(device: "torch.device", dtype: "torch.dtype | None") -> "torch.autocast":
    import torch

    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def input_dtype(device: "torch.device", precision: str) -> "torch.dtype":
    """dtype of the tokens fed to the model: the autocast dtype when there is one (its first Linear rounds to it
    anyway, and it halves the bytes moved to the GPU), else float32."""
    import torch

    return autocast_dtype(precision, device) or torch.float32
