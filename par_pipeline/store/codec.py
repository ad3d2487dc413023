"""How tokens are stored: float16 / float32 as they are, or int8 with one symmetric scale per token.

int8: scale = max |x| over the token's D values / 127, q = round(x / scale); the scales are stored beside the
tokens (`token_scales`, float32 [rows, N]), so a frame costs N*D + 4*N bytes, about half of float16. The same
codec encodes at extraction (on the device), decodes in the stage-two loader and rounds `par predict`'s
tokens, so prediction sees what training saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def finite_rows(values: torch.Tensor) -> torch.Tensor:
    """Per row (first axis): are all its values finite? A row's sum is NaN/Inf exactly when one of its values is,
    given an accumulator that finite values cannot overflow (float32 for 16-bit values, float64 for 32-bit ones);
    on a CPU that is about 20x cheaper than `isfinite(...).all()`, which the extraction loop would pay per frame."""
    import torch  # here and below: reading a store's attributes (par report) needs no torch

    wide = torch.float64 if values.element_size() >= 4 else torch.float32
    return torch.isfinite(values.flatten(1).sum(1, dtype=wide))


@dataclass(frozen=True)
class TokenCodec:
    name: str

    @property
    def scaled(self) -> bool:
        return self.name == "int8"

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return {"float16": torch.float16, "float32": torch.float32, "int8": torch.int8}[self.name]

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.name)

    def bytes_per_frame(self, num_tokens: int, dim: int) -> int:
        return num_tokens * dim * self.numpy_dtype.itemsize + (4 * num_tokens if self.scaled else 0)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """float [B, N, D] (any device) -> (stored tokens, scales [B, N] float32 or None)."""
        import torch

        if not self.scaled:
            return x.to(self.torch_dtype), None
        x = x.float()
        scale = (x.abs().amax(dim=-1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
        q = torch.round(x / scale.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
        return q, scale

    def decode(self, tokens: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
        """Stored tokens [..., N, D] (+ scales [..., N]) -> float32."""
        x = tokens.float()
        return x * scales.unsqueeze(-1) if self.scaled else x

    def round_trip(self, x: torch.Tensor) -> torch.Tensor:
        """What the store would give back for these tokens (float32)."""
        return self.decode(*self.encode(x))
